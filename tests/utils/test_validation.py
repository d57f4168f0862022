"""check_device: the device argument of the trainers and samplers is checked before any work, with a message that
names the argument, the value and what is allowed."""

import pytest
import torch

from minivid.utils.validation import check_device


def test_check_device_accepts_cpu_and_cuda_names():
    assert check_device("device", "cpu") == torch.device("cpu")
    assert check_device("device", torch.device("cpu")) == torch.device("cpu")
    if torch.cuda.is_available():
        assert check_device("device", "cuda").type == "cuda"
        assert check_device("device", "cuda:0") == torch.device("cuda:0")


@pytest.mark.parametrize("bad", ["tpu", "mps", "cuda:x", "", 3, None, 1.5])
def test_check_device_names_the_argument_and_what_is_allowed(bad):
    with pytest.raises(ValueError, match=r"^where=.* is invalid: expected 'cpu', 'cuda' or 'cuda:N'$"):
        check_device("where", bad)


def test_check_device_refuses_cuda_devices_this_machine_lacks():
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=r"where='cuda:99' is invalid"):
        check_device("where", "cuda:99")
    if n == 0:
        with pytest.raises(ValueError, match="CUDA is not available here"):
            check_device("where", "cuda")
    else:
        with pytest.raises(ValueError, match=f"this machine has {n} CUDA device"):
            check_device("where", f"cuda:{n}")
