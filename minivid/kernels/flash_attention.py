r"""FlashAttention-2 in Triton: a fused forward (K1, K2) and backward (K3) attention kernel.

The math path (:func:`minivid.kernels.reference.attention_reference`) forms the ``N_q × N_k`` score
matrix ``S = Q Kᵀ · scale`` and its softmax ``P`` in global memory: memory and traffic grow as N².
Here one Triton *program* owns a tile of ``BLOCK_M`` queries, keeps its running output in registers,
and streams the keys and values past it in blocks of ``BLOCK_N`` (K2, the online softmax)::

    m = -inf, l = 0, O = 0                      # per query row, float32
    for each key block j:
        S_j = Q K_jᵀ · scale                    # (BLOCK_M, BLOCK_N), never written out   (K1)
        m'  = max(m, rowmax(S_j))                                                         (K2)
        l   = l · e^{m − m'} + rowsum(e^{S_j − m'})                                       (K2)
        O   = O · e^{m − m'} + e^{S_j − m'} V_j                                           (K2)
        m   = m'
    O /= l ;  store O and lse = m + log l       # one float per query row for the backward (K2)

The backward pass (K3) recomputes ``P = exp(S − lse)`` block by block instead of storing it:
``D = rowsum(dO ∘ O)`` (a small pre-pass kernel), then one kernel per key block accumulates
``dV = Pᵀ dO`` and ``dK = dSᵀ Q · scale`` with ``dP = dO Vᵀ`` and ``dS = P ∘ (dP − D)``, and one kernel
per query block accumulates ``dQ = dS K · scale``. No atomics: the result is deterministic. Short
sequences that one tile covers (N_q, N_k <= 64: temporal attention) take a single kernel instead, which
reads q, k, v, O, dO once and writes dQ, dK, dV once (8 tensors of traffic instead of 13); in float32 on
CUDA only where it fits in registers (16-wide tiles, or 32-wide with D <= 64; see ``_short_backward_fits``).

The kernels work in base 2 (``exp2`` is the hardware instruction): scores are multiplied by
``scale · log2(e)`` and the saved log-sum-exp is ``log2``-based. :func:`flash_attention_forward`
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

Supported: any head dim from 16 to 128 (``SUPPORTED_HEAD_DIMS``; e.g. 72, Latte-XL's 1152 / 16 heads): the
tiles are ``BLOCK_D`` = D rounded up to a power of two wide, the lanes past D are masked on every load (read
as 0, so they add nothing to any product) and never stored; float16, bfloat16 and float32 on CUDA
(float32 accumulation always; float32 inputs use IEEE fp32 products, not TF32); float32 and float16
in Triton's CPU interpreter (``TRITON_INTERPRET=1``, which has no bfloat16). Any ``N_q, N_k >= 1``.

Block sizes: long sequences use tiles of 64-128 queries × 32-128 keys; short sequences (temporal
attention, N <= 64 tokens over a huge batch) use 16-64 wide tiles that just cover N and let one
program handle ``rows`` (batch, head) pairs in turn. On CUDA the first call for each shape class
times a handful of candidate configurations with ``triton.testing.do_bench`` and keeps the fastest
(``MINIVID_FLASH_AUTOTUNE=0`` uses the first, heuristic, candidate instead).

GPU status: every kernel compiles for sm_90 (H100/H200) with Triton 3.6 and 3.8, without a GPU
(:func:`compile_for_gpu`, specialised as a launch on contiguous inputs is); ``ptxas -v`` on the result
(:func:`ptxas_resources`) shows every bf16/fp16 candidate tiling within 255 registers per thread without
spills and within shared memory, the key/query loops software-pipelined (asynchronous copies), and the
defaults on Hopper's ``wgmma`` instructions (``bench/kernel_resources.py`` sweeps the tilings;
``tests/kernels`` checks the defaults in CI, for D = 64, 128 and the padded 72 and 40). Float32 (the
secondary path, no tensor cores) has its own tiles, every candidate spill-free with both Triton versions
too. Padded head dims compile like the next power of two when their
rows are 16-byte aligned (D · element size a multiple of 16: 72, 40, 24 in 16-bit types): the ``ALIGN``
hint tells Triton so, which it cannot learn from strides that are multiples of 8 elements only; without it
the loads of D = 72 were neither vectorised nor pipelined (the forward at 255 registers, 4 bytes spilled
with Triton 3.8). The compiled kernels have not yet run on a GPU: correctness is tested in the interpreter,
timings are the job of ``bench/attention.py`` on a GPU.

Importing this module imports Triton; whether kernels run compiled (CUDA) or interpreted (CPU) is
decided by ``TRITON_INTERPRET`` *at import time*, so set it before the first import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import subprocess
import tempfile

import torch

try:
    import triton
    import triton.language as tl
except ImportError as err:  # pragma: no cover - triton is a declared dependency
    raise ImportError(
        "minivid.kernels.flash_attention needs the `triton` package (pip install triton); "
        "minivid.kernels.attention_reference works without it"
    ) from err

from .reference import LAYOUTS, attention_flops, to_bhnd

__all__ = [
    "flash_attention",
    "flash_attention_forward",
    "FlashAttentionFunction",
    "KernelConfig",
    "SUPPORTED_HEAD_DIMS",
    "SUPPORTED_DTYPES",
    "attention_flops",
    "compile_for_gpu",
    "ptxas_resources",
    "interpreter_active",
    "kernel_config",
    "last_configs",
    "poisoned_outputs",
]

SUPPORTED_HEAD_DIMS = range(16, 129)  # any D in 16..128; a D that is not a power of two is padded in registers
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
LOG2E = 1.4426950408889634  # log2(e): e^x = 2^(x·log2 e)
LN2 = 0.6931471805599453  # ln(2): converts the base-2 log-sum-exp back to natural log


# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _rows(base, offs, s_n, offs_d, s_d, ALIGN: tl.constexpr):
    """Pointers to rows ``offs`` (every head-dim lane) from ``base``: shape (len(offs), BLOCK_D).

    ``ALIGN = 16``: the host has checked that every tensor starts at a multiple of 16 bytes and that every stride
    but the head dim's is a multiple of 16 bytes, and the kernel tells the compiler that each row starts 16-byte
    aligned. Triton learns alignment only from arguments divisible by 16 (elements); without the hint, rows of
    D = 72 (144 bytes in bf16) are loaded element by element, not in 16-byte vectors, and not pipelined."""
    ptrs = base + offs[:, None] * s_n + offs_d[None, :] * s_d
    if ALIGN > 1:
        ptrs = tl.multiple_of(ptrs, [1, ALIGN])
    return ptrs


@triton.jit
def _tile_ptrs(X, b, h, s_b, s_h, offs, s_n, offs_d, s_d, ALIGN: tl.constexpr):
    """Pointers to rows ``offs`` (every head-dim lane) of the (b, h) slice of X: shape (len(offs), BLOCK_D)."""
    return _rows(X + b * s_b + h * s_h, offs, s_n, offs_d, s_d, ALIGN)


@triton.jit
def _load_rows(ptrs, row_ok, d_ok, D_MASK: tl.constexpr):
    """Load a (rows, BLOCK_D) tile: rows outside ``row_ok`` read 0, and with ``D_MASK`` (a head dim that is
    not a power of two, padded up to BLOCK_D) so do the lanes past D, which then add nothing to any product."""
    if D_MASK:
        x = tl.load(ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    else:
        x = tl.load(ptrs, mask=row_ok[:, None], other=0.0)
    return x


@triton.jit
def _load_full_rows(ptrs, d_ok, D_MASK: tl.constexpr):
    """Load a tile whose rows are all in range (no bounds mask unless the head dim is padded)."""
    if D_MASK:
        x = tl.load(ptrs, mask=d_ok[None, :], other=0.0)
    else:
        x = tl.load(ptrs)
    return x


@triton.jit
def _store_rows(ptrs, x, row_ok, d_ok, D_MASK: tl.constexpr):
    """Store a (rows, BLOCK_D) tile: only rows in ``row_ok`` and (with ``D_MASK``) lanes below D."""
    if D_MASK:
        tl.store(ptrs, x, mask=row_ok[:, None] & d_ok[None, :])
    else:
        tl.store(ptrs, x, mask=row_ok[:, None])


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, k_base, v_base, kpm_base, s_kn, s_kd, s_vn, s_vd, s_mn, offs_m, offs_d, d_ok,
               hi, mask_from, N_K, qk_scale,
               BLOCK_N: tl.constexpr, EVEN_K: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr,
               DOT_PRECISION: tl.constexpr, D_MASK: tl.constexpr, ALIGN: tl.constexpr):
    """Online softmax (K2) of one query tile over the key blocks starting in [0, hi).

    Blocks from ``mask_from`` on are the last, partial one and (if CAUSAL) those on the diagonal:
    only they pay for the bounds / causal mask. (One loop with a uniform branch rather than two
    loops: two pipelined loops need more registers than the GPU has and spill.)
    """
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in tl.range(0, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        k_ptrs = _rows(k_base, offs_n, s_kn, offs_d, s_kd, ALIGN)
        v_ptrs = _rows(v_base, offs_n, s_vn, offs_d, s_vd, ALIGN)
        if EVEN_K:  # N_K is a multiple of BLOCK_N: no load needs a bounds mask
            k = _load_full_rows(k_ptrs, d_ok, D_MASK)  # (BLOCK_N, BLOCK_D)
            v = _load_full_rows(v_ptrs, d_ok, D_MASK)
        else:
            k = _load_rows(k_ptrs, offs_n < N_K, d_ok, D_MASK)
            v = _load_rows(v_ptrs, offs_n < N_K, d_ok, D_MASK)
        # K1: S_j = Q K_jᵀ · scale, here in log2 units (qk_scale = scale · log2 e)   (BLOCK_M, BLOCK_N)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        if start_n >= mask_from:  # the same for the whole program: no divergence
            keep = (offs_n < N_K)[None, :]
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= offs_n[None, :])  # query i sees keys j <= i
            s = tl.where(keep, s, float("-inf"))
        if HAS_KPM:
            kp = tl.load(kpm_base + offs_n * s_mn, mask=offs_n < N_K, other=0)  # True = keep
            s = tl.where(kp[None, :] != 0, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))  # K2: m' = max(m, rowmax(S_j))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no visible key yet
        alpha = tl.math.exp2(m_i - m_safe)  # K2: e^{m − m'}
        p = tl.math.exp2(s - m_safe[:, None])  # K2: e^{S_j − m'}
        l_i = l_i * alpha + tl.sum(p, 1)  # K2: l' = l·e^{m−m'} + rowsum(e^{S_j−m'})
        acc = acc * alpha[:, None]  # K2: O' = O·e^{m−m'} + e^{S_j−m'} V_j
        acc = tl.dot(p.to(v.dtype), v, acc=acc, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, KPM,
                s_qb, s_qh, s_qn, s_qd, s_kb, s_kh, s_kn, s_kd, s_vb, s_vh, s_vn, s_vd,
                s_ob, s_oh, s_on, s_od, s_mb, s_mn,
                H, BH, N_Q, N_K, N_M_BLOCKS, qk_scale,
                HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                ROWS: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, EVEN_K: tl.constexpr,
                DOT_PRECISION: tl.constexpr, ALIGN: tl.constexpr):
    """Forward pass (K1, K2). Program p handles query tile p % N_M_BLOCKS of ROWS (batch·head) rows."""
    pid = tl.program_id(0)
    pid_m = pid % N_M_BLOCKS  # query tiles of one (b, h) are neighbours: they share K, V in L2
    pid_g = pid // N_M_BLOCKS
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)  # HEAD_DIM padded to a power of two
    d_ok = offs_d < HEAD_DIM
    D_MASK: tl.constexpr = BLOCK_D != HEAD_DIM  # a head dim that is not a power of two: mask its padding
    in_q = offs_m < N_Q
    # Key blocks from mask_from on need a mask: the partial last block, and with CAUSAL those that
    # reach past the tile's first query. Keys beyond the tile's last query are never visited.
    if CAUSAL:
        hi = tl.minimum(N_K, start_m + BLOCK_M)
        mask_from = tl.minimum((N_K // BLOCK_N) * BLOCK_N, (start_m // BLOCK_N) * BLOCK_N)
    else:
        hi = N_K
        mask_from = (N_K // BLOCK_N) * BLOCK_N
    for r in tl.static_range(ROWS):
        # The last group may run past B·H: it repeats row BH-1, writing the same values again.
        bh = tl.minimum(pid_g * ROWS + r, BH - 1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        q_base = Q + b * s_qb + h * s_qh
        k_base = K + b * s_kb + h * s_kh
        v_base = V + b * s_vb + h * s_vh
        o_base = O + b * s_ob + h * s_oh
        kpm_base = KPM + b * s_mb
        q = _load_rows(_rows(q_base, offs_m, s_qn, offs_d, s_qd, ALIGN), in_q, d_ok, D_MASK)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running row max (log2 units)
        l_i = tl.zeros([BLOCK_M], tl.float32)  # running row sum of exponentials
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)  # running unnormalised output
        acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, kpm_base, s_kn, s_kd, s_vn, s_vd, s_mn,
                                   offs_m, offs_d, d_ok, hi, mask_from, N_K, qk_scale,
                                   BLOCK_N, EVEN_K, CAUSAL, HAS_KPM, DOT_PRECISION, D_MASK, ALIGN)
        # K2: O /= l at the end. A row with every key masked has l = 0 and acc = 0: it returns 0.
        l_safe = tl.where(l_i == 0.0, 1.0, l_i)
        o = acc / l_safe[:, None]
        # K2: store lse = m + log l (log2 units); +inf for a fully masked row so exp(S − lse) = 0.
        lse = tl.where(l_i == 0.0, float("inf"), m_i + tl.math.log2(l_safe))
        _store_rows(_rows(o_base, offs_m, s_on, offs_d, s_od, ALIGN), o.to(O.dtype.element_ty), in_q, d_ok,
                    D_MASK)
        tl.store(LSE + bh.to(tl.int64) * N_Q + offs_m, lse, mask=in_q)


@triton.jit
def _bwd_preprocess_kernel(O, DO, DELTA, s_ob, s_oh, s_on, s_od, s_db, s_dh, s_dn, s_dd,
                           H, N_Q, N_M_BLOCKS, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                           ALIGN: tl.constexpr):
    """K3 pre-pass: D = rowsum(dO ∘ O), one float32 per query row."""
    pid = tl.program_id(0)
    pid_m = pid % N_M_BLOCKS
    bh = pid // N_M_BLOCKS
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)  # HEAD_DIM padded to a power of two
    d_ok = offs_d < HEAD_DIM
    D_MASK: tl.constexpr = BLOCK_D != HEAD_DIM  # a head dim that is not a power of two: mask its padding
    in_q = offs_m < N_Q
    o = _load_rows(_tile_ptrs(O, b, h, s_ob, s_oh, offs_m, s_on, offs_d, s_od, ALIGN), in_q, d_ok, D_MASK)
    do = _load_rows(_tile_ptrs(DO, b, h, s_db, s_dh, offs_m, s_dn, offs_d, s_dd, ALIGN), in_q, d_ok, D_MASK)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # K3: D = rowsum(dO ∘ O)
    tl.store(DELTA + bh.to(tl.int64) * N_Q + offs_m, delta, mask=in_q)


@triton.jit
def _bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, s_qn, s_qd, s_dn, s_dd,
                    offs_n, offs_d, d_ok, lo, mask_to, N_Q, qk_scale,
                    BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr, D_MASK: tl.constexpr,
                    ALIGN: tl.constexpr):
    """Accumulate dK, dV of one key tile over the query blocks starting in [lo, N_Q) (K3).

    Works with the transposed scores Sᵀ (keys × queries) so no tile has to be transposed. Query
    blocks before ``mask_to`` straddle the diagonal and need the causal mask. Out-of-range queries
    load lse = +inf, hence P = 0: no mask is needed for them.
    """
    offs_m0 = tl.arange(0, BLOCK_M)
    for start_m in tl.range(lo, N_Q, BLOCK_M):
        offs_m = start_m + offs_m0
        in_q = offs_m < N_Q
        q = _load_rows(_rows(q_base, offs_m, s_qn, offs_d, s_qd, ALIGN), in_q, d_ok, D_MASK)
        do = _load_rows(_rows(do_base, offs_m, s_dn, offs_d, s_dd, ALIGN), in_q, d_ok, D_MASK)
        lse = tl.load(lse_base + offs_m, mask=in_q, other=float("inf"))
        delta = tl.load(delta_base + offs_m, mask=in_q, other=0.0)
        st = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale  # Sᵀ (BLOCK_N, BLOCK_M)
        pt = tl.math.exp2(st - lse[None, :])  # Pᵀ = exp(S − lse), recomputed
        if CAUSAL:
            if start_m < mask_to:
                pt = tl.where(offs_m[None, :] >= offs_n[:, None], pt, 0.0)
        dv = tl.dot(pt.to(do.dtype), do, acc=dv, input_precision=DOT_PRECISION)  # K3: dV = Pᵀ dO
        dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)  # K3: dP = dO Vᵀ (transposed)
        dst = pt * (dpt - delta[None, :])  # K3: dS = P ∘ (dP − D) (transposed)
        dk = tl.dot(dst.to(q.dtype), q, acc=dk, input_precision=DOT_PRECISION)  # K3: dK = dSᵀ Q (·scale later)
    return dk, dv


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, KPM,
                     s_qb, s_qh, s_qn, s_qd, s_kb, s_kh, s_kn, s_kd, s_vb, s_vh, s_vn, s_vd,
                     s_db, s_dh, s_dn, s_dd, s_dkb, s_dkh, s_dkn, s_dkd, s_dvb, s_dvh, s_dvn, s_dvd,
                     s_mb, s_mn,
                     H, BH, N_Q, N_K, N_N_BLOCKS, qk_scale, sm_scale,
                     HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     ROWS: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, DOT_PRECISION: tl.constexpr,
                     ALIGN: tl.constexpr):
    """Backward pass for dK, dV (K3): program p owns key tile p % N_N_BLOCKS and loops over queries."""
    pid = tl.program_id(0)
    pid_n = pid % N_N_BLOCKS
    pid_g = pid // N_N_BLOCKS
    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)  # HEAD_DIM padded to a power of two
    d_ok = offs_d < HEAD_DIM
    D_MASK: tl.constexpr = BLOCK_D != HEAD_DIM  # a head dim that is not a power of two: mask its padding
    in_k = offs_n < N_K
    for r in tl.static_range(ROWS):
        bh = tl.minimum(pid_g * ROWS + r, BH - 1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        q_base = Q + b * s_qb + h * s_qh
        do_base = DO + b * s_db + h * s_dh
        lse_base = LSE + bh.to(tl.int64) * N_Q
        delta_base = DELTA + bh.to(tl.int64) * N_Q
        k = _load_rows(_tile_ptrs(K, b, h, s_kb, s_kh, offs_n, s_kn, offs_d, s_kd, ALIGN), in_k, d_ok, D_MASK)
        v = _load_rows(_tile_ptrs(V, b, h, s_vb, s_vh, offs_n, s_vn, offs_d, s_vd, ALIGN), in_k, d_ok, D_MASK)
        dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        if CAUSAL:
            # Queries before start_n see none of these keys; query tiles that start before
            # start_n + BLOCK_N straddle the diagonal and need the causal mask; later ones do not.
            lo = (start_n // BLOCK_M) * BLOCK_M
            mask_to = start_n + BLOCK_N
        else:
            lo = 0
            mask_to = 0
        dk, dv = _bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, s_qn, s_qd, s_dn, s_dd,
                                 offs_n, offs_d, d_ok, lo, mask_to, N_Q, qk_scale,
                                 BLOCK_M, CAUSAL, DOT_PRECISION, D_MASK, ALIGN)
        if HAS_KPM:
            # A padding key's row of dK and dV only ever collects its own (masked) column of P and dS:
            # zero it once here instead of masking every tile.
            kp = tl.load(KPM + b * s_mb + offs_n * s_mn, mask=in_k, other=0)
            dk = tl.where(kp[:, None] != 0, dk, 0.0)
            dv = tl.where(kp[:, None] != 0, dv, 0.0)
        dk = dk * sm_scale  # K3: dK = dSᵀ Q · scale
        _store_rows(_tile_ptrs(DK, b, h, s_dkb, s_dkh, offs_n, s_dkn, offs_d, s_dkd, ALIGN),
                    dk.to(DK.dtype.element_ty), in_k, d_ok, D_MASK)
        _store_rows(_tile_ptrs(DV, b, h, s_dvb, s_dvh, offs_n, s_dvn, offs_d, s_dvd, ALIGN),
                    dv.to(DV.dtype.element_ty), in_k, d_ok, D_MASK)


@triton.jit
def _bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, kpm_base, s_kn, s_kd, s_vn, s_vd, s_mn,
                  offs_m, offs_d, d_ok, hi, mask_from, N_K, qk_scale,
                  BLOCK_N: tl.constexpr, EVEN_K: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr,
                  DOT_PRECISION: tl.constexpr, D_MASK: tl.constexpr, ALIGN: tl.constexpr):
    """Accumulate dQ of one query tile over the key blocks starting in [0, hi) (K3)."""
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in tl.range(0, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        k_ptrs = _rows(k_base, offs_n, s_kn, offs_d, s_kd, ALIGN)
        v_ptrs = _rows(v_base, offs_n, s_vn, offs_d, s_vd, ALIGN)
        if EVEN_K:
            k = _load_full_rows(k_ptrs, d_ok, D_MASK)
            v = _load_full_rows(v_ptrs, d_ok, D_MASK)
        else:
            k = _load_rows(k_ptrs, offs_n < N_K, d_ok, D_MASK)
            v = _load_rows(v_ptrs, offs_n < N_K, d_ok, D_MASK)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # S (BLOCK_M, BLOCK_N)
        if start_n >= mask_from:
            keep = (offs_n < N_K)[None, :]
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= offs_n[None, :])
            s = tl.where(keep, s, float("-inf"))
        if HAS_KPM:
            kp = tl.load(kpm_base + offs_n * s_mn, mask=offs_n < N_K, other=0)
            s = tl.where(kp[None, :] != 0, s, float("-inf"))
        p = tl.math.exp2(s - lse[:, None])  # P = exp(S − lse), recomputed
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)  # K3: dP = dO Vᵀ
        ds = p * (dp - delta[:, None])  # K3: dS = P ∘ (dP − D)
        dq = tl.dot(ds.to(k.dtype), k, acc=dq, input_precision=DOT_PRECISION)  # K3: dQ = dS K (·scale later)
    return dq


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, KPM,
                   s_qb, s_qh, s_qn, s_qd, s_kb, s_kh, s_kn, s_kd, s_vb, s_vh, s_vn, s_vd,
                   s_db, s_dh, s_dn, s_dd, s_dqb, s_dqh, s_dqn, s_dqd, s_mb, s_mn,
                   H, BH, N_Q, N_K, N_M_BLOCKS, qk_scale, sm_scale,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   ROWS: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, EVEN_K: tl.constexpr,
                   DOT_PRECISION: tl.constexpr, ALIGN: tl.constexpr):
    """Backward pass for dQ (K3): program p owns query tile p % N_M_BLOCKS and loops over keys."""
    pid = tl.program_id(0)
    pid_m = pid % N_M_BLOCKS
    pid_g = pid // N_M_BLOCKS
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)  # HEAD_DIM padded to a power of two
    d_ok = offs_d < HEAD_DIM
    D_MASK: tl.constexpr = BLOCK_D != HEAD_DIM  # a head dim that is not a power of two: mask its padding
    in_q = offs_m < N_Q
    if CAUSAL:  # the same key ranges as the forward kernel
        hi = tl.minimum(N_K, start_m + BLOCK_M)
        mask_from = tl.minimum((N_K // BLOCK_N) * BLOCK_N, (start_m // BLOCK_N) * BLOCK_N)
    else:
        hi = N_K
        mask_from = (N_K // BLOCK_N) * BLOCK_N
    for r in tl.static_range(ROWS):
        bh = tl.minimum(pid_g * ROWS + r, BH - 1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        k_base = K + b * s_kb + h * s_kh
        v_base = V + b * s_vb + h * s_vh
        kpm_base = KPM + b * s_mb
        q = _load_rows(_tile_ptrs(Q, b, h, s_qb, s_qh, offs_m, s_qn, offs_d, s_qd, ALIGN), in_q, d_ok, D_MASK)
        do = _load_rows(_tile_ptrs(DO, b, h, s_db, s_dh, offs_m, s_dn, offs_d, s_dd, ALIGN), in_q, d_ok, D_MASK)
        lse = tl.load(LSE + bh.to(tl.int64) * N_Q + offs_m, mask=in_q, other=float("inf"))
        delta = tl.load(DELTA + bh.to(tl.int64) * N_Q + offs_m, mask=in_q, other=0.0)
        dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        dq = _bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, kpm_base, s_kn, s_kd, s_vn, s_vd, s_mn,
                           offs_m, offs_d, d_ok, hi, mask_from, N_K, qk_scale,
                           BLOCK_N, EVEN_K, CAUSAL, HAS_KPM, DOT_PRECISION, D_MASK, ALIGN)
        dq = dq * sm_scale  # K3: dQ = dS K · scale
        _store_rows(_tile_ptrs(DQ, b, h, s_dqb, s_dqh, offs_m, s_dqn, offs_d, s_dqd, ALIGN),
                    dq.to(DQ.dtype.element_ty), in_q, d_ok, D_MASK)


@triton.jit
def _bwd_short_kernel(Q, K, V, O, DO, LSE, DQ, DK, DV, KPM,
                      s_qb, s_qh, s_qn, s_qd, s_kb, s_kh, s_kn, s_kd, s_vb, s_vh, s_vn, s_vd,
                      s_ob, s_oh, s_on, s_od, s_db, s_dh, s_dn, s_dd, s_dqb, s_dqh, s_dqn, s_dqd,
                      s_dkb, s_dkh, s_dkn, s_dkd, s_dvb, s_dvh, s_dvn, s_dvd, s_mb, s_mn,
                      H, BH, N_Q, N_K, qk_scale, sm_scale,
                      HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      ROWS: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, DOT_PRECISION: tl.constexpr,
                      ALIGN: tl.constexpr):
    """The whole backward pass (K3) of short sequences, N_q <= BLOCK_M and N_k <= BLOCK_N, in one kernel.

    One tile then holds every query and every key of a (batch, head) row, so the program computes
    D = rowsum(dO ∘ O), P, dP, dS and all of dQ, dK, dV from a single read of q, k, v, O, dO and lse:
    8 tensors of traffic instead of the 13 of the pre-pass + dK/dV + dQ kernels (temporal attention,
    N = 4-64 tokens over hundreds of thousands of rows, is bound by memory, not by FLOPs).
    Program p handles (batch, head) rows p·ROWS ... p·ROWS + ROWS − 1.
    """
    pid = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)  # HEAD_DIM padded to a power of two
    d_ok = offs_d < HEAD_DIM
    D_MASK: tl.constexpr = BLOCK_D != HEAD_DIM  # a head dim that is not a power of two: mask its padding
    in_q = offs_m < N_Q
    in_k = offs_n < N_K
    keep = in_k[None, :]
    if CAUSAL:
        keep = keep & (offs_m[:, None] >= offs_n[None, :])  # query i sees keys j <= i
    for r in tl.static_range(ROWS):
        bh = tl.minimum(pid * ROWS + r, BH - 1)  # the last program may repeat row BH-1: same values again
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        q = _load_rows(_tile_ptrs(Q, b, h, s_qb, s_qh, offs_m, s_qn, offs_d, s_qd, ALIGN), in_q, d_ok, D_MASK)
        do = _load_rows(_tile_ptrs(DO, b, h, s_db, s_dh, offs_m, s_dn, offs_d, s_dd, ALIGN), in_q, d_ok, D_MASK)
        o = _load_rows(_tile_ptrs(O, b, h, s_ob, s_oh, offs_m, s_on, offs_d, s_od, ALIGN), in_q, d_ok, D_MASK)
        k = _load_rows(_tile_ptrs(K, b, h, s_kb, s_kh, offs_n, s_kn, offs_d, s_kd, ALIGN), in_k, d_ok, D_MASK)
        v = _load_rows(_tile_ptrs(V, b, h, s_vb, s_vh, offs_n, s_vn, offs_d, s_vd, ALIGN), in_k, d_ok, D_MASK)
        lse = tl.load(LSE + bh.to(tl.int64) * N_Q + offs_m, mask=in_q, other=float("inf"))
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # K3: D = rowsum(dO ∘ O)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # S (BLOCK_M, BLOCK_N), log2 units
        row_keep = keep
        if HAS_KPM:
            kp = tl.load(KPM + b * s_mb + offs_n * s_mn, mask=in_k, other=0)  # True = keep
            row_keep = row_keep & (kp[None, :] != 0)
        # P = exp(S − lse), recomputed; 0 for masked keys, missing queries (lse = +inf) and fully masked rows.
        p = tl.where(row_keep, tl.math.exp2(s - lse[:, None]), 0.0)
        dv = tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PRECISION)  # K3: dV = Pᵀ dO
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)  # K3: dP = dO Vᵀ
        ds = p * (dp - delta[:, None])  # K3: dS = P ∘ (dP − D)
        dq = tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION) * sm_scale  # K3: dQ = dS K · scale
        dk = tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=DOT_PRECISION) * sm_scale  # K3: dK = dSᵀ Q · scale
        _store_rows(_tile_ptrs(DQ, b, h, s_dqb, s_dqh, offs_m, s_dqn, offs_d, s_dqd, ALIGN),
                    dq.to(DQ.dtype.element_ty), in_q, d_ok, D_MASK)
        _store_rows(_tile_ptrs(DK, b, h, s_dkb, s_dkh, offs_n, s_dkn, offs_d, s_dkd, ALIGN),
                    dk.to(DK.dtype.element_ty), in_k, d_ok, D_MASK)
        _store_rows(_tile_ptrs(DV, b, h, s_dvb, s_dvh, offs_n, s_dvn, offs_d, s_dvd, ALIGN),
                    dv.to(DV.dtype.element_ty), in_k, d_ok, D_MASK)


# --------------------------------------------------------------------------------------------------
# Configurations: block sizes per shape class, optional autotuning on CUDA
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Launch parameters of one kernel.

    ``block_m`` queries × ``block_n`` keys per tile; ``rows``: (batch, head) pairs handled one after
    the other by each program (for short sequences); ``num_warps``, ``num_stages``: Triton's.
    """

    block_m: int
    block_n: int
    rows: int = 1
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self):
        for name in ("block_m", "block_n"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 16 or v & (v - 1):
                raise ValueError(f"{name}={v!r} must be a power of two >= 16 (tl.dot needs 16-wide tiles)")
        for name in ("rows", "num_warps", "num_stages"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive integer")
        if self.num_warps & (self.num_warps - 1):
            raise ValueError(f"num_warps={self.num_warps} must be a power of two")


SHORT_SEQUENCE = 64  # N_q, N_k <= this: the "temporal attention" shape class
_INTERPRETER_CONFIG = KernelConfig(32, 32, 1, 1, 1)  # the interpreter costs per op: few, larger tiles
_OVERRIDE: dict[str, KernelConfig] = {}
_TUNED: dict[tuple, KernelConfig] = {}
_LAST: dict[str, KernelConfig] = {}
_POISON: list[float] = []


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(n)))


def _block_d(head_dim: int) -> int:
    """The head dim of the kernels' tiles: D rounded up to a power of two (16, 32, 64 or 128); the lanes past D
    are masked on every load (read as 0, so they add nothing to Q Kᵀ, P V, ...) and never stored."""
    return triton.next_power_of_2(head_dim)


# Candidate tilings (block_m, block_n, rows, num_warps, num_stages), the heuristic default first. Chosen without
# a GPU from `bench/kernel_resources.py` (sm_90, bf16, compiled as a launch on contiguous inputs is; its JSON in
# bench/results/ for Triton 3.6.0, the lent GPU machines' version, and 3.8.0, CI's): with both versions, plain and
# causal + padding mask + partial tile, every candidate fits in the 255 registers a thread can have without
# spilling and in the H100's 227 KiB of shared memory, and its key (query) loop is software-pipelined; every
# default has at least 64 rows in its matrix products (queries for fwd/dq, keys for dkdv), the smallest tile
# Hopper's wgmma instructions take (16- and 32-row tiles fall back to Ampere's mma.sync). Which one is fastest
# is for the autotuner to time on the GPU.
_LONG = {
    ("fwd", 64): [(128, 64, 1, 8, 3), (128, 128, 1, 8, 3), (64, 128, 1, 8, 3), (64, 64, 1, 4, 3), (128, 64, 1, 4, 3)],
    ("fwd", 128): [(128, 64, 1, 8, 3), (128, 128, 1, 8, 2), (64, 64, 1, 8, 3), (64, 128, 1, 8, 2), (128, 32, 1, 8, 3)],
    ("dq", 64): [(128, 64, 1, 8, 3), (64, 64, 1, 4, 3), (128, 128, 1, 8, 2), (64, 128, 1, 8, 3), (64, 64, 1, 8, 3)],
    ("dq", 128): [(64, 64, 1, 8, 3), (128, 64, 1, 8, 2), (64, 128, 1, 8, 2), (64, 32, 1, 8, 3), (64, 64, 1, 4, 2)],
    ("dkdv", 64): [(64, 128, 1, 8, 3), (64, 64, 1, 8, 3), (32, 128, 1, 8, 3), (32, 64, 1, 4, 3), (64, 64, 1, 4, 2)],
    ("dkdv", 128): [(32, 64, 1, 8, 3), (64, 64, 1, 8, 2), (32, 128, 1, 8, 2), (32, 64, 1, 8, 2), (32, 32, 1, 8, 3)],
}
# float32 (IEEE products on FMA units, no tensor cores; every operand at full width): small tiles, per kernel and
# head dim, each spill-free and pipelined in both cases with Triton 3.6 and 3.8 (a sweep of 16-64 x 16-64 tiles in
# 4 and 8 warps; the JSON of the candidates: bench/results/kernel_resources-sm90-triton-*-fp32.json), also after the
# short class's split backward halves them (16x64 dK/dV at D = 128 would become 16x32 in 8 warps: 24 bytes). Triton 3.6
# allocates float32 tiles worse than 3.8: the lists chosen with 3.8 alone spilled there (64x32 forward in 4 warps:
# 12 bytes; 32x32 dK/dV in 4 warps at D = 64: 616 bytes).
_LONG_FP32 = {
    ("fwd", 64): [(64, 32, 1, 8, 2), (32, 64, 1, 4, 2), (32, 64, 1, 8, 2), (32, 32, 1, 4, 2)],
    ("fwd", 128): [(32, 64, 1, 8, 2), (64, 16, 1, 8, 2), (32, 32, 1, 8, 2), (32, 32, 1, 4, 2)],
    ("dq", 64): [(64, 32, 1, 8, 2), (32, 64, 1, 8, 2), (32, 32, 1, 4, 2), (64, 16, 1, 8, 2)],
    ("dq", 128): [(32, 32, 1, 8, 2), (64, 16, 1, 8, 2), (16, 64, 1, 8, 2), (32, 16, 1, 8, 2)],
    ("dkdv", 64): [(32, 32, 1, 8, 2), (64, 16, 1, 8, 2), (16, 64, 1, 8, 2), (32, 16, 1, 8, 2)],
    ("dkdv", 128): [(32, 16, 1, 4, 2), (16, 32, 1, 4, 2), (16, 16, 1, 8, 2), (16, 16, 1, 4, 2)],
}
# float32 in the short class, (kind, tile side, D > 64) -> (rows, num_warps, num_stages): one row per program, the
# warp counts that are spill-free in both cases on sm_90 with Triton 3.6 and 3.8 (the one-kernel backward only
# where `_short_backward_fits` allows it). No 64-wide forward tile fits at D = 128 in both versions (4 warps: 616-716
# bytes spilled with 3.6): that forward takes the long-sequence tiles (an empty list).
_SHORT_FP32 = {
    ("fwd", 16, False): [(1, 4, 1), (1, 8, 1)], ("fwd", 16, True): [(1, 4, 1), (1, 8, 1)],
    ("fwd", 32, False): [(1, 4, 1), (1, 2, 1)], ("fwd", 32, True): [(1, 8, 1), (1, 4, 1)],
    ("fwd", 64, False): [(1, 8, 1)], ("fwd", 64, True): [],
    ("bwd", 16, False): [(1, 4, 1), (1, 8, 1)], ("bwd", 16, True): [(1, 4, 1), (1, 8, 1)],
    ("bwd", 32, False): [(1, 8, 1), (1, 4, 1)],
}

# Short sequences (rows, num_warps, num_stages) by the side of the tile that covers N (16, 32 or 64) and by head
# dim (up to 64, or 128): one tile covers N; memory-bound, so the choice is between more (b, h) rows per program
# (independent loads in flight) and more programs. "bwd" is the one-kernel backward `_bwd_short_kernel`. Drawn
# from a sweep of rows 1-8 x 1-8 warps compiled with generic strides (bigger tiles and wider heads need more
# warps per row: the one-kernel backward on a 64-wide tile, D = 64, one row in 2 warps, spilled 350-788 bytes);
# every entry is spill-free in the kernel_resources JSON (both Triton versions, both cases).
_SHORT = {
    ("fwd", 16, False): [(4, 2, 1), (1, 2, 1), (2, 2, 1), (8, 4, 1), (4, 4, 1), (8, 2, 1)],
    ("fwd", 16, True): [(1, 2, 1), (2, 4, 1), (1, 4, 1), (4, 4, 1)],
    ("fwd", 32, False): [(1, 2, 1), (1, 4, 1), (2, 8, 1), (4, 8, 1)],
    ("fwd", 32, True): [(1, 4, 1), (1, 8, 1), (2, 8, 1)],
    ("fwd", 64, False): [(1, 4, 1), (1, 8, 1), (2, 8, 1)],
    ("fwd", 64, True): [(1, 8, 1), (2, 8, 1)],
    ("bwd", 16, False): [(1, 2, 1), (2, 4, 1), (4, 4, 1), (2, 2, 1), (4, 2, 1), (1, 1, 1)],
    ("bwd", 16, True): [(1, 2, 1), (2, 4, 1), (4, 4, 1), (1, 4, 1)],
    ("bwd", 32, False): [(1, 2, 1), (2, 4, 1), (1, 4, 1), (2, 8, 1), (4, 8, 1)],
    ("bwd", 32, True): [(1, 4, 1), (2, 8, 1), (1, 8, 1)],
    ("bwd", 64, False): [(1, 4, 1), (1, 8, 1)],
    ("bwd", 64, True): [(1, 8, 1)],
}


def _short_backward_fits(dtype: torch.dtype, tile: int, head_dim: int) -> bool:
    """Whether the one-kernel short backward fits in registers on the GPU. In float32 its eleven tiles of
    full-width values do not fit beyond 16-wide tiles (32 with D <= 64): a 32-wide tile at D = 128 spills
    176 bytes even in 8 warps, a 64-wide one 1.7-55 KB (sm_90, Triton 3.8; 3.6 agrees); those take the split
    kernels."""
    return dtype != torch.float32 or tile == 16 or (tile == 32 and head_dim <= 64)


def _candidates(kind: str, n_q: int, n_k: int, head_dim: int, dtype: torch.dtype) -> list[KernelConfig]:
    """Candidate configurations for CUDA, the heuristic default first.

    kind: "fwd" (query tiles, loop over keys), "dq" (the same shape of work), "dkdv" (key tiles,
    loop over queries; for N_q, N_k <= 64 the tiles of the one-kernel backward, which then replaces
    dK/dV and dQ).
    """
    head_dim = _block_d(head_dim)  # the tiles' width: a padded D costs what the next power of two does
    bm, bn = _pow2(n_q, 16, 64), _pow2(n_k, 16, 64)
    tile = max(bm, bn)
    short_class = max(n_q, n_k) <= SHORT_SEQUENCE
    short = []
    if short_class and (kind == "fwd" or _short_backward_fits(dtype, tile, head_dim)):
        table = _SHORT_FP32 if dtype == torch.float32 else _SHORT
        short = table[("fwd" if kind == "fwd" else "bwd", tile, head_dim > 64)]
    if short:  # temporal attention: one tile covers N; pack (b, h) rows per program
        return [KernelConfig(bm, bn, *c) for c in short]
    if dtype == torch.float32:
        cands = [KernelConfig(*c) for c in _LONG_FP32[(kind, 128 if head_dim > 64 else 64)]]
        if short_class and kind != "fwd":  # the split backward: tiles must not cover N, or the fused kernel would run
            cands = [dataclasses.replace(c, block_m=max(16, min(c.block_m, bm // 2)),
                                         block_n=max(16, min(c.block_n, bn // 2))) for c in cands]
    else:
        cands = [KernelConfig(*c) for c in _LONG[(kind, 128 if head_dim > 64 else 64)]]
    # Do not tile far beyond the sequence.
    cands = [dataclasses.replace(c, block_m=min(c.block_m, _pow2(n_q, 16, 128)),
                                 block_n=min(c.block_n, _pow2(n_k, 16, 128))) for c in cands]
    return list(dict.fromkeys(cands))  # dedupe, keep order


def _autotune_enabled() -> bool:
    return os.environ.get("MINIVID_FLASH_AUTOTUNE", "1") not in ("0", "false", "False", "")


def _choose(kind: str, launch, n_q: int, n_k: int, head_dim: int, dtype: torch.dtype, key: tuple):
    """Pick (and on CUDA possibly time) the configuration for one kernel launch."""
    if kind in _OVERRIDE:
        return _OVERRIDE[kind]
    if interpreter_active():
        return _INTERPRETER_CONFIG
    cands = _candidates(kind, n_q, n_k, head_dim, dtype)
    if not _autotune_enabled() or len(cands) == 1:
        return cands[0]
    key = (kind,) + key
    if key not in _TUNED:
        best, best_ms, last_err = None, float("inf"), None
        for cfg in cands:
            try:  # a configuration may not fit in shared memory or registers on this GPU
                ms = triton.testing.do_bench(lambda: launch(cfg), warmup=5, rep=20, return_mode="median")
            except Exception as err:  # noqa: BLE001 - any compile/launch failure rules the config out
                last_err = err
                continue
            if ms < best_ms:
                best, best_ms = cfg, ms
        if best is None:
            raise RuntimeError(f"no {kind} kernel configuration could run for this shape") from last_err
        _TUNED[key] = best
    return _TUNED[key]


@contextlib.contextmanager
def kernel_config(fwd: KernelConfig | None = None, dq: KernelConfig | None = None,
                  dkdv: KernelConfig | None = None):
    """Force the launch configuration of the forward / dQ / dK-dV kernels inside a ``with`` block.

    ``dkdv`` also configures the one-kernel backward of short sequences (N_q, N_k <= 64), which runs
    instead of dK-dV + dQ whenever its tile covers both sequences.

    Used by the tests (to exercise several tilings in the interpreter) and the benchmark.
    """
    saved = dict(_OVERRIDE)
    for name, cfg in (("fwd", fwd), ("dq", dq), ("dkdv", dkdv)):
        if cfg is not None:
            _OVERRIDE[name] = cfg
    try:
        yield
    finally:
        _OVERRIDE.clear()
        _OVERRIDE.update(saved)


def last_configs() -> dict[str, KernelConfig]:
    """The configurations used by the most recent forward / backward launches (for reports)."""
    return dict(_LAST)


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


def interpreter_active() -> bool:
    """True when the kernels were built for Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return type(_fwd_kernel).__name__ == "InterpretedFunction"


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
            "set TRITON_INTERPRET=1 before minivid.kernels.flash_attention is first imported (slow; for "
            "tests), or use minivid.kernels.attention_reference / torch SDPA")
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


def _bucket(n: int) -> int:
    return triton.next_power_of_2(n)


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


def compile_for_gpu(kind: str, dtype: torch.dtype = torch.bfloat16, head_dim: int = 64,
                    config: KernelConfig | None = None, causal: bool = True, has_kpm: bool = True,
                    even_k: bool = False, arch: int = 90, specialize: bool = True):
    """Compile one kernel ahead of time for an NVIDIA GPU of compute capability ``arch`` (90 = H100),
    on any machine, GPU or not (Triton ships ``ptxas``). Returns Triton's compiled kernel, whose
    ``metadata.shared`` and ``asm["ptx"]`` / ``asm["ttgir"]`` can be inspected.

    ``specialize=True`` compiles what a launch on ordinary inputs compiles: Triton specialises every
    integer argument equal to 1 into a constant and marks integers and pointers divisible by 16, and
    that decides whether loads are vectorised and pipelined. Here the head dim is contiguous (every
    ``s_*d`` stride and the mask's ``s_mn`` are 1, in both layouts) and the other strides, the sizes and
    the pointers are multiples of 16 (true for D a multiple of 16 and sequence lengths that are multiples
    of 16, as in the benchmark). For other head dims the strides are not marked, and where D · element size
    is a multiple of 16 bytes (72 or 40 in bf16) the ``ALIGN`` hint is set, as ``_stride_align`` sets it for
    contiguous inputs. ``specialize=False``: every integer generic, the slowest code.

    The tests use it to check on a CPU-only machine that the kernels compile for the GPU; it needs
    the compiled (not interpreted) kernels, i.e. a process without ``TRITON_INTERPRET=1``.
    ``kind``: "fwd", "dq", "dkdv", "preprocess" or "bwd_short" (the one-kernel backward of short sequences).
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if interpreter_active():
        raise RuntimeError("compile_for_gpu needs the compiled kernels: run without TRITON_INTERPRET=1")
    kernels = {"fwd": _fwd_kernel, "dq": _bwd_dq_kernel, "dkdv": _bwd_dkdv_kernel,
               "preprocess": _bwd_preprocess_kernel, "bwd_short": _bwd_short_kernel}
    if kind not in kernels:
        raise ValueError(f"kind must be one of {tuple(kernels)}, got {kind!r}")
    fn = kernels[kind]
    if config is None:  # the default tiles: long sequences, or (bwd_short) the temporal shape class
        n = SHORT_SEQUENCE if kind == "bwd_short" else 4096
        config = _candidates({"preprocess": "fwd", "bwd_short": "dkdv"}.get(kind, kind), n, n, head_dim, dtype)[0]
    cfg = config
    elem = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    # Contiguous inputs: every (b, h, n) stride is a multiple of D; Triton sees multiples of 16 elements itself, and
    # the ALIGN hint says 16 bytes where D is not one but D · element size is (e.g. 72 in bf16), as a launch would.
    nbytes = torch.tensor([], dtype=dtype).element_size()
    align = 16 if specialize and head_dim % 16 and head_dim * nbytes % 16 == 0 else 1
    consts = dict(HEAD_DIM=head_dim, BLOCK_D=_block_d(head_dim), BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                  ROWS=cfg.rows, CAUSAL=causal, HAS_KPM=has_kpm, EVEN_K=even_k, DOT_PRECISION=_dot_precision(dtype),
                  ALIGN=align)
    consts = {name: val for name, val in consts.items() if name in fn.arg_names}
    if specialize:  # unit strides of the contiguous head dim (and of the mask's key axis) become constants
        consts.update({name: 1 for name in fn.arg_names
                       if name.startswith("s_") and (name.endswith("d") or name == "s_mn")})
    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            signature[name] = "constexpr"
            continue
        if name in ("LSE", "DELTA"):
            signature[name] = "*fp32"
        elif name == "KPM":
            signature[name] = "*u8"
        elif name in ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV"):
            signature[name] = "*" + elem
        elif name in ("qk_scale", "sm_scale"):
            signature[name] = "fp32"
            continue  # Triton does not specialise floats
        else:
            signature[name] = "i32"  # strides, sizes
        if specialize and not (name.startswith("s_") and head_dim % 16):  # strides of D = 72: multiples of 8 only
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=signature, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})


def ptxas_resources(compiled, arch: int = 90) -> dict:
    """Registers, spills and shared memory of a kernel from :func:`compile_for_gpu`, read from
    ``ptxas -v`` (the ``ptxas`` Triton ships) on its PTX: no GPU needed.

    Returns ``{"registers", "spill_stores", "spill_loads", "stack_frame", "shared"}`` (registers per
    thread; the others in bytes, ``shared`` from Triton's metadata). A kernel that spills keeps part of
    its tiles in local memory (L1/L2) instead of registers: slower, still correct.
    """
    from triton.backends.nvidia.compiler import get_ptxas

    ptx = compiled.asm["ptx"]
    gpu = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"  # sm_90a: the wgmma instructions need the "a" target
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        out = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name={gpu}", path, "-o", os.devnull],
                             capture_output=True, text=True, check=True).stderr

    def number(pattern: str) -> int:
        found = re.search(pattern, out)
        if found is None:
            raise RuntimeError(f"could not read {pattern!r} from ptxas -v output:\n{out}")
        return int(found.group(1))

    return {"registers": number(r"Used (\d+) registers"), "spill_stores": number(r"(\d+) bytes spill stores"),
            "spill_loads": number(r"(\d+) bytes spill loads"), "stack_frame": number(r"(\d+) bytes stack frame"),
            "shared": int(compiled.metadata.shared)}
