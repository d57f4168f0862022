"""saved_tensor_bytes: the activation memory of a step, against closed forms."""

import torch

from minivid.utils.memory import saved_tensor_bytes


def test_a_linear_layer_and_a_relu_save_their_input_and_output():
    """y = relu(x W^T + b).sum() with x needing a gradient: the linear layer saves x and W (excluded as a parameter),
    the ReLU its output: 4·8 + 4·16 float32 values, and 16·8 more with W counted."""
    lin = torch.nn.Linear(8, 16)
    x = torch.randn(4, 8, requires_grad=True)
    nbytes, out = saved_tensor_bytes(lambda: torch.relu(lin(x)).sum(), exclude=lin.parameters())
    assert nbytes == 4 * (4 * 8 + 4 * 16) and out.shape == ()
    with_weights, _ = saved_tensor_bytes(lambda: torch.relu(lin(x)).sum())
    assert with_weights == nbytes + 4 * 16 * 8  # the weight (no bias: the backward needs none)


def test_views_of_one_storage_count_once_and_nothing_is_saved_without_grad():
    w = torch.randn(6, 6, requires_grad=True)
    nbytes, _ = saved_tensor_bytes(lambda: (w[:3] * w[3:]).sum() + (w.T * 2).exp().sum())
    # the two halves of w are views of its storage (6·6 values, once); exp saves its own output (6·6)
    assert nbytes == 4 * (36 + 36)
    with torch.no_grad():
        assert saved_tensor_bytes(lambda: (w * w).exp().sum())[0] == 0
