r"""FlashAttention-2 for PyTorch: argument checks, kernel launches and autograd around the Triton kernels.

:func:`flash_attention` computes softmax(Q Kᵀ · scale) V with the forward kernel (K1 via the online softmax K2)
and differentiates it with the backward kernels (K3), all in :mod:`minivid.kernels.triton_kernels`; the tile
sizes of each launch come from :mod:`minivid.kernels.tiles`. The forward saves one log-sum-exp per query row
(base 2, as the kernels compute it) instead of the N_q × N_k probabilities; :func:`flash_attention_forward`
converts it back to natural log for readers and tests.

Conventions (the same as :mod:`minivid.kernels.reference` and ``torch.nn.functional.
scaled_dot_product_attention``):

* layouts ``"bhnd"`` = ``(B, H, N, D)`` and ``"bnhd"`` = ``(B, N, H, D)``; any strides (e.g. q, k, v
  sliced out of one packed qkv tensor) are used as they are, without copies. The output has q's
  layout.
* ``key_padding_mask``: bool ``(B, N_k)``, **True = keep**, False = padding key.
* ``causal``: query i sees keys j <= i (top-left aligned, as SDPA's ``is_causal``).
* a query row with every key masked returns **zeros** and gets zero gradients (as SDPA); its
  log-sum-exp is ``+inf``.

Supported: any head dim from 16 to 128 (``SUPPORTED_HEAD_DIMS``; e.g. 72, Latte-XL's 1152 / 16 heads), padded
in the kernels' tiles to the next power of two; float16, bfloat16 and float32 on CUDA (float32 accumulation
always; float32 inputs use IEEE fp32 products, not TF32); float32 and float16 in Triton's CPU interpreter
(``TRITON_INTERPRET=1``, which has no bfloat16). Any ``N_q, N_k >= 1``. Rows of a padded head dim that start
16-byte aligned (D · element size a multiple of 16: 72, 40, 24 in 16-bit types) get the kernels' ``ALIGN`` hint
(:func:`_stride_align`), so they are loaded like those of the next power of two.

Correctness is tested against the float64 math path in the interpreter (``tests/kernels/test_flash.py``) and, on
a GPU, by that file's ``gpu`` tests; timings are the job of ``bench/attention.py`` on a GPU (stored runs and their
status: ``bench/results/measurements.md``).

Importing this module imports Triton; whether kernels run compiled (CUDA) or interpreted (CPU) is
decided by ``TRITON_INTERPRET`` *at import time*, so set it before the first import.
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton

from .reference import LAYOUTS, to_bhnd
from .tiles import _LAST, SHORT_SEQUENCE, KernelConfig, _block_d, _bucket, _choose, _pow2
from .triton_kernels import (
    _bwd_dkdv_kernel,
    _bwd_dq_kernel,
    _bwd_preprocess_kernel,
    _bwd_short_kernel,
    _fwd_kernel,
    interpreter_active,
)

__all__ = [
    "flash_attention",
    "flash_attention_forward",
    "FlashAttentionFunction",
    "SUPPORTED_HEAD_DIMS",
    "SUPPORTED_DTYPES",
    "interpreter_active",
    "poisoned_outputs",
]

SUPPORTED_HEAD_DIMS = range(16, 129)  # any D in 16..128; a D that is not a power of two is padded in registers
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
LOG2E = 1.4426950408889634  # log2(e): e^x = 2^(x·log2 e)
LN2 = 0.6931471805599453  # ln(2): converts the base-2 log-sum-exp back to natural log
_POISON: list[float] = []


# --------------------------------------------------------------------------------------------------
# Output buffers
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def poisoned_outputs(value: float = float("nan")):
    """Inside the block, every buffer the kernels write (O, lse, D, dQ, dK, dV) starts filled with
    ``value`` instead of uninitialised memory, so an element a kernel forgets to write shows up."""
    _POISON.append(value)
    try:
        yield
    finally:
        _POISON.pop()


def _new(shape_or_like, dtype=None, device=None) -> torch.Tensor:
    if isinstance(shape_or_like, torch.Tensor):
        t = torch.empty_like(shape_or_like)
    else:
        t = torch.empty(shape_or_like, dtype=dtype, device=device)
    if _POISON:
        t.fill_(_POISON[-1])
    return t


# --------------------------------------------------------------------------------------------------
# Checks and launches
# --------------------------------------------------------------------------------------------------


def _strides(t: torch.Tensor, layout: str) -> tuple[int, int, int, int]:
    """Strides of ``t`` along (b, h, n, d) whatever its layout: this is how "bnhd" needs no copy."""
    sb, s1, s2, sd = t.stride()
    return (sb, s1, s2, sd) if layout == "bhnd" else (sb, s2, s1, sd)


def _check(q, k, v, causal, key_padding_mask, scale, layout):
    """Validate the arguments before any work; return (B, H, N_q, N_k, D, scale)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D ({'B, H, N, D' if layout == 'bhnd' else 'B, N, H, D'} "
                             f"for layout={layout!r}), got shape {tuple(t.shape)}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be one of {SUPPORTED_DTYPES}, got {q.dtype}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if layout == "bhnd":
        (B, H, n_q, D), (Bk, Hk, n_k, Dk) = q.shape, k.shape
    else:
        (B, n_q, H, D), (Bk, n_k, Hk, Dk) = q.shape, k.shape
    if (B, H, D) != (Bk, Hk, Dk):
        raise ValueError(f"q and k must agree in batch, heads and head dim (layout={layout!r}), "
                         f"got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if D not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim must be in {SUPPORTED_HEAD_DIMS.start}..{SUPPORTED_HEAD_DIMS.stop - 1}, "
                         f"got head_dim={D} (q {tuple(q.shape)}, layout={layout!r})")
    if min(B, H, n_q, n_k) < 1:
        raise ValueError(f"batch, heads and sequence lengths must be >= 1, got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            raise ValueError("key_padding_mask must be a bool tensor (True = keep), got "
                             f"{getattr(key_padding_mask, 'dtype', type(key_padding_mask).__name__)}")
        if tuple(key_padding_mask.shape) != (B, n_k):
            raise ValueError(f"key_padding_mask must have shape (B, N_k) = {(B, n_k)}, "
                             f"got {tuple(key_padding_mask.shape)}")
        if key_padding_mask.device != q.device:
            raise ValueError(f"key_padding_mask is on {key_padding_mask.device} but q is on {q.device}")
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    else:
        if isinstance(scale, torch.Tensor) and scale.numel() == 1 and not scale.requires_grad:
            scale = scale.item()
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a real number (or None for 1/sqrt(head_dim)), got {scale!r}")
        scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    # The environment: compiled kernels need CUDA, the interpreter runs anywhere but without bf16.
    if interpreter_active():
        if q.dtype == torch.bfloat16:
            raise ValueError("bfloat16 is not supported by Triton's CPU interpreter (TRITON_INTERPRET=1); "
                             "use float16 or float32, or run on a CUDA GPU")
    elif q.device.type != "cuda":
        raise RuntimeError(
            f"flash_attention got tensors on {q.device}: the compiled Triton kernels need a CUDA GPU. On CPU "
            "set TRITON_INTERPRET=1 before Triton is first imported (the first use of minivid.kernels."
            "flash_attention; slow, for tests), or use minivid.kernels.attention_reference / torch SDPA")
    return B, H, n_q, n_k, D, scale


def _stride_align(layout: str, *tensors: torch.Tensor) -> int:
    """The ``ALIGN`` hint of the kernels (see ``_rows``): 16 when every tensor starts at a multiple of 16 bytes, has
    a contiguous head dim, and every (b, h, n) stride is a multiple of 16 bytes but not every one a multiple of 16
    elements (head dims such as 72 or 40); else 1: no hint, because Triton marks arguments divisible by 16
    itself, or because rows are not 16-byte aligned (then they are loaded in narrower pieces)."""
    strides = [s for t in tensors for s in _strides(t, layout)[:3]]
    if all(s % 16 == 0 for s in strides):
        return 1
    size = tensors[0].element_size()
    aligned = (all(t.data_ptr() % 16 == 0 and t.stride(-1) == 1 for t in tensors)
               and all(s * size % 16 == 0 for s in strides))
    return 16 if aligned else 1


def _mask_args(key_padding_mask, q):
    """(pointer tensor, stride_b, stride_n) of the key-padding mask, or a dummy when there is none."""
    if key_padding_mask is None:
        return q, 0, 0
    m = key_padding_mask.view(torch.uint8)  # same bytes, no copy: 1 = keep, 0 = padding
    return m, m.stride(0), m.stride(1)


def _dot_precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"  # fp32 inputs: true fp32 products, not TF32


def _forward(q, k, v, causal, key_padding_mask, scale, layout):
    """Run the forward kernel; returns (O in q's layout, lse (B·H, N_q) float32 in log2 units)."""
    B, H, n_q, n_k, D, scale = _check(q, k, v, causal, key_padding_mask, scale, layout)
    o = _new(q)
    lse = _new((B * H, n_q), torch.float32, q.device)
    kpm, s_mb, s_mn = _mask_args(key_padding_mask, q)

    def launch(cfg: KernelConfig):
        n_m = triton.cdiv(n_q, cfg.block_m)
        grid = (n_m * triton.cdiv(B * H, cfg.rows),)
        _fwd_kernel[grid](
            q, k, v, o, lse, kpm,
            *_strides(q, layout), *_strides(k, layout), *_strides(v, layout), *_strides(o, layout), s_mb, s_mn,
            H, B * H, n_q, n_k, n_m, scale * LOG2E,
            HEAD_DIM=D, BLOCK_D=_block_d(D), BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, ROWS=cfg.rows, CAUSAL=causal,
            HAS_KPM=key_padding_mask is not None, EVEN_K=n_k % cfg.block_n == 0, DOT_PRECISION=_dot_precision(q.dtype),
            ALIGN=align, num_warps=cfg.num_warps, num_stages=cfg.num_stages)

    align = _stride_align(layout, q, k, v, o)
    key = (_bucket(n_q), _bucket(n_k), D, q.dtype, causal, key_padding_mask is not None, _bucket(B * H), align)
    cfg = _choose("fwd", launch, n_q, n_k, D, q.dtype, key)
    _LAST["fwd"] = cfg
    launch(cfg)
    return o, lse, scale


def _backward(do, q, k, v, o, lse, causal, key_padding_mask, scale, layout):
    """Run the three backward kernels (K3); returns dq, dk, dv in the inputs' layout."""
    B, H, n_q, D = to_bhnd(q, layout).shape
    n_k = to_bhnd(k, layout).shape[2]
    BH = B * H
    kpm, s_mb, s_mn = _mask_args(key_padding_mask, q)
    has_kpm = key_padding_mask is not None
    prec = _dot_precision(q.dtype)
    qk_scale = scale * LOG2E
    dq, dk, dv = _new(q), _new(k), _new(v)
    align = _stride_align(layout, q, k, v, o, do, dq, dk, dv)
    key = (_bucket(n_q), _bucket(n_k), D, q.dtype, causal, has_kpm, _bucket(BH), align)
    delta = None

    def launch_short(cfg: KernelConfig):
        """The whole backward of sequences that fit in one tile, in one kernel (no pre-pass, no dQ kernel)."""
        _bwd_short_kernel[(triton.cdiv(BH, cfg.rows),)](
            q, k, v, o, do, lse, dq, dk, dv, kpm,
            *_strides(q, layout), *_strides(k, layout), *_strides(v, layout), *_strides(o, layout),
            *_strides(do, layout), *_strides(dq, layout), *_strides(dk, layout), *_strides(dv, layout), s_mb, s_mn,
            H, BH, n_q, n_k, qk_scale, scale,
            HEAD_DIM=D, BLOCK_D=_block_d(D), BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, ROWS=cfg.rows, CAUSAL=causal,
            HAS_KPM=has_kpm, DOT_PRECISION=prec, ALIGN=align, num_warps=cfg.num_warps, num_stages=cfg.num_stages)

    def launch_dkdv(cfg: KernelConfig):
        n_n = triton.cdiv(n_k, cfg.block_n)
        grid = (n_n * triton.cdiv(BH, cfg.rows),)
        _bwd_dkdv_kernel[grid](
            q, k, v, do, lse, delta, dk, dv, kpm,
            *_strides(q, layout), *_strides(k, layout), *_strides(v, layout), *_strides(do, layout),
            *_strides(dk, layout), *_strides(dv, layout), s_mb, s_mn,
            H, BH, n_q, n_k, n_n, qk_scale, scale,
            HEAD_DIM=D, BLOCK_D=_block_d(D), BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, ROWS=cfg.rows, CAUSAL=causal,
            HAS_KPM=has_kpm, DOT_PRECISION=prec, ALIGN=align, num_warps=cfg.num_warps, num_stages=cfg.num_stages)

    def launch_dq(cfg: KernelConfig):
        n_m = triton.cdiv(n_q, cfg.block_m)
        grid = (n_m * triton.cdiv(BH, cfg.rows),)
        _bwd_dq_kernel[grid](
            q, k, v, do, lse, delta, dq, kpm,
            *_strides(q, layout), *_strides(k, layout), *_strides(v, layout), *_strides(do, layout),
            *_strides(dq, layout), s_mb, s_mn,
            H, BH, n_q, n_k, n_m, qk_scale, scale,
            HEAD_DIM=D, BLOCK_D=_block_d(D), BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, ROWS=cfg.rows, CAUSAL=causal,
            HAS_KPM=has_kpm, EVEN_K=n_k % cfg.block_n == 0, DOT_PRECISION=prec, ALIGN=align,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages)

    def fused(cfg: KernelConfig) -> bool:
        # Short sequences (the temporal shape class) that one tile covers. On CUDA every candidate of that
        # class covers N, so the autotuner compares fused kernels with fused kernels only (float32 beyond
        # 16-wide tiles: none covers N, see _short_backward_fits).
        return max(n_q, n_k) <= SHORT_SEQUENCE and n_q <= cfg.block_m and n_k <= cfg.block_n

    def launch_dkdv_or_short(cfg: KernelConfig):
        if fused(cfg):
            launch_short(cfg)
            return
        nonlocal delta
        if delta is None:  # K3 pre-pass: D = rowsum(dO ∘ O)
            delta = _new((BH, n_q), torch.float32, q.device)
            block = _pow2(n_q, 16, 64)
            n_m = triton.cdiv(n_q, block)
            _bwd_preprocess_kernel[(n_m * BH,)](o, do, delta, *_strides(o, layout), *_strides(do, layout),
                                                H, n_q, n_m, BLOCK_M=block, HEAD_DIM=D, BLOCK_D=_block_d(D),
                                                ALIGN=align)
        launch_dkdv(cfg)

    cfg = _choose("dkdv", launch_dkdv_or_short, n_q, n_k, D, q.dtype, key)
    for name in ("dkdv", "dq", "bwd_short"):
        _LAST.pop(name, None)
    if fused(cfg):
        _LAST["bwd_short"] = cfg
        launch_short(cfg)
        return dq, dk, dv
    _LAST["dkdv"] = cfg
    launch_dkdv_or_short(cfg)
    cfg = _choose("dq", launch_dq, n_q, n_k, D, q.dtype, key)
    _LAST["dq"] = cfg
    launch_dq(cfg)
    return dq, dk, dv


class FlashAttentionFunction(torch.autograd.Function):
    """``torch.autograd.Function`` around the Triton kernels: forward K1-K2, backward K3.

    Saves q, k, v, O and the log-sum-exp (one float per query row) instead of the N_q × N_k
    probabilities. First derivatives only: differentiating the gradients (``create_graph=True``, a gradient
    penalty) raises an error instead of silently dropping a term; use the math path for that.
    """

    @staticmethod
    def forward(ctx, q, k, v, causal=False, key_padding_mask=None, scale=None, layout="bhnd"):
        o, lse, scale = _forward(q, k, v, causal, key_padding_mask, scale, layout)
        ctx.save_for_backward(q, k, v, o, lse, key_padding_mask)
        ctx.causal, ctx.scale, ctx.layout = causal, scale, layout
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable  # the backward kernels are not themselves differentiable
    def backward(ctx, do):
        q, k, v, o, lse, key_padding_mask = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, o, lse, ctx.causal, key_padding_mask, ctx.scale, ctx.layout)
        return dq, dk, dv, None, None, None, None


def flash_attention(q, k, v, causal=False, key_padding_mask=None, scale=None, layout="bhnd"):
    """softmax(Q Kᵀ · scale) V with FlashAttention-2 kernels (K1 forward via K2, backward K3).

    Args:
        q: ``(B, H, N_q, D)`` for ``layout="bhnd"`` or ``(B, N_q, H, D)`` for ``layout="bnhd"``; any
            strides (no copy is made). ``D`` any integer in 16..128 (``SUPPORTED_HEAD_DIMS``).
        k, v: like ``q`` with ``N_k`` tokens (same B, H, D, dtype and device).
        causal: query i attends to keys j <= i (top-left aligned, as SDPA's ``is_causal``).
        key_padding_mask: optional bool ``(B, N_k)``, **True = keep**, False = padding key. A query
            row whose keys are all masked returns zeros (and zero gradients), as SDPA does.
        scale: multiplies Q Kᵀ; default ``1 / sqrt(D)``.
        layout: ``"bhnd"`` or ``"bnhd"``; the output has the layout (and, when dense, the strides)
            of ``q``.

    Dtypes: float16, bfloat16, float32 on CUDA (float32 accumulation); float32 and float16 in the
    CPU interpreter. Differentiable in q, k and v.

    Raises:
        ValueError: unsupported head dim, dtype or layout; mismatched shapes, devices or dtypes; a
            malformed mask; bfloat16 under the CPU interpreter.
        RuntimeError: CPU tensors while the kernels were compiled for CUDA (no interpreter).
    """
    return FlashAttentionFunction.apply(q, k, v, causal, key_padding_mask, scale, layout)


def flash_attention_forward(q, k, v, causal=False, key_padding_mask=None, scale=None, layout="bhnd"):
    """Forward kernel only, no autograd: returns ``(O, lse)`` with lse ``(B, H, N_q)`` in natural log
    (``m + log l`` of K2; ``+inf`` for fully masked rows), for inspection and tests."""
    with torch.no_grad():
        o, lse2, _ = _forward(q, k, v, causal, key_padding_mask, scale, layout)
    B, H = to_bhnd(q, layout).shape[:2]
    return o, (lse2 * LN2).view(B, H, -1)
