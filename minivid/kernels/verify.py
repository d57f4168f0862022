"""An attention implementation checked against PyTorch's SDPA on the same inputs: output and gradients.

A benchmark row of a kernel that computes the wrong thing fast is worth nothing, so ``bench/attention.py`` checks
each shape it times with :func:`check_against_sdpa`; ``tests/kernels/test_verify.py`` runs the same check on the
kernel in Triton's CPU interpreter. Plain PyTorch: importing this module does not import Triton.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["SDPA_TOLERANCE", "check_against_sdpa"]

# How far a kernel may be from SDPA on the same inputs (max |difference| / max |SDPA|), per dtype: the
# rounding of the inputs and outputs, with float32 accumulation in both.
SDPA_TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 1e-2, torch.float32: 1e-3}


def _sdpa(q, k, v, causal):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # PyTorch's default backend


def check_against_sdpa(prov, shape, dtype, causal, device) -> dict:
    """O, dQ, dK and dV of ``prov`` against PyTorch SDPA (its default backend) on the same random inputs:
    ``{"O": err, "dQ": err, ...}`` with err = max |difference| / max |SDPA's value|.

    ``prov(q, k, v, causal)`` takes ``(B, H, N, D)`` tensors; ``shape`` is a dict with keys ``B, H, N, D``;
    the inputs are drawn from a generator seeded with 1 on ``device``. Compare the errors with
    ``SDPA_TOLERANCE[dtype]``.
    """
    B, H, N, D = shape["B"], shape["H"], shape["N"], shape["D"]
    gen = torch.Generator(device=device).manual_seed(1)
    q, k, v, do = (torch.randn(B, H, N, D, device=device, dtype=dtype, generator=gen) for _ in range(4))
    results = []
    for fn in (prov, _sdpa):
        x = [t.clone().requires_grad_() for t in (q, k, v)]
        o = fn(*x, causal)
        o.backward(do)
        results.append((o.detach(), *(t.grad for t in x)))
    return {name: ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6)).item()
            for name, a, b in zip(("O", "dQ", "dK", "dV"), *results)}
