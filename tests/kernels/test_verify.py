"""Tests of minivid.kernels.verify: the check of an attention implementation against PyTorch's SDPA that
bench/attention.py runs on every shape it times."""

from __future__ import annotations

import torch

from minivid.kernels import SDPA_TOLERANCE, check_against_sdpa, flash_attention

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_benchmark_checks_the_kernel_against_sdpa():
    """The correctness check bench/attention.py runs on each shape it times, run here on the kernel (interpreter on
    a CPU): small errors for the real kernel, and a large one for a provider that is wrong (non-causal where causal
    was asked)."""
    shape = dict(kind="long", B=1, H=2, N=21, D=32)
    kernel = lambda q, k, v, causal: flash_attention(q, k, v, causal=causal)  # noqa: E731
    errs = check_against_sdpa(kernel, shape, torch.float32, True, DEVICE)
    assert set(errs) == {"O", "dQ", "dK", "dV"} and max(errs.values()) < SDPA_TOLERANCE[torch.float32], errs
    wrong = lambda q, k, v, causal: flash_attention(q, k, v, causal=not causal)  # noqa: E731
    assert check_against_sdpa(wrong, shape, torch.float32, True, DEVICE)["O"] > 0.1
