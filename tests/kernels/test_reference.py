"""Tests of minivid.kernels.reference: the math-path helpers, K2 and K3 in plain PyTorch, and K4; and that
importing minivid.kernels (and using the reference) never imports Triton."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from minivid.kernels import (
    attention_backward_reference,
    attention_blockwise,
    attention_bytes,
    attention_flops,
    attention_reference,
)


@pytest.mark.parametrize("block_n", (1, 3, 16))
@pytest.mark.parametrize("causal", (False, True), ids=("full", "causal"))
def test_blockwise_online_softmax_equals_softmax(block_n, causal):
    """K2 in plain PyTorch (what the kernel does per tile) equals the one-shot softmax (K1)."""
    g = torch.Generator().manual_seed(block_n)
    q, k, v = (torch.randn(2, 2, 10, 16, generator=g, dtype=torch.float64) for _ in range(3))
    kpm = torch.rand(2, 10, generator=g) < 0.6
    kpm[0] = False
    o, lse = attention_blockwise(q, k, v, causal=causal, key_padding_mask=kpm, block_n=block_n)
    o_ref, lse_ref = attention_reference(q, k, v, causal=causal, key_padding_mask=kpm, return_lse=True)
    torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lse, lse_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ("bhnd", "bnhd"))
def test_backward_formulas_equal_autograd(layout):
    """K3 written out (D = rowsum(dO∘O), dS = P∘(dP − D), ...) equals autograd of the math path."""
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 7, 3, 16, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3))
    if layout == "bhnd":
        q, k, v = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
    kpm = torch.rand(2, 7, generator=g) < 0.7
    kpm[1] = False
    o, lse = attention_reference(q, k, v, causal=True, key_padding_mask=kpm, layout=layout, return_lse=True)
    do = torch.randn(o.shape, generator=g, dtype=torch.float64)
    expected = torch.autograd.grad(o, (q, k, v), do)
    got = attention_backward_reference(q, k, v, o.detach(), do, lse, causal=True, key_padding_mask=kpm,
                                       layout=layout)
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_flop_count():
    """K4: forward 4·B·H·N²·D, halved if causal; backward 2.5× forward."""
    assert attention_flops(2, 3, 5, head_dim=16) == 4 * 2 * 3 * 5 * 5 * 16
    assert attention_flops(2, 3, 5, head_dim=16, causal=True) == 2 * 2 * 3 * 5 * 5 * 16
    assert attention_flops(1, 1, 8, 4, head_dim=64) == 4 * 8 * 4 * 64
    assert attention_flops(1, 1, 8, head_dim=64, mode="bwd") == 2.5 * attention_flops(1, 1, 8, head_dim=64)
    assert attention_flops(1, 1, 8, head_dim=64, mode="fwd+bwd") == 3.5 * attention_flops(1, 1, 8, head_dim=64)
    with pytest.raises(ValueError):
        attention_flops(1, 1, 8, mode="backward")


def test_bytes_model_quadratic_vs_linear():
    small, big = (attention_bytes(1, 1, n, 64, method="math") for n in (1024, 2048))
    assert 3.5 < big / small <= 4  # N² dominates the math path
    small, big = (attention_bytes(1, 1, n, 64, method="flash-ideal") for n in (1024, 2048))
    assert math.isclose(big / small, 2)


def test_import_does_not_need_triton_backend():
    """`import minivid.kernels` does not import triton; the reference works without it."""
    code = ("import sys, torch, minivid.kernels as mk; assert 'triton' not in sys.modules; "
            "x = torch.randn(1, 1, 3, 16); mk.attention_reference(x, x, x); assert 'triton' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
