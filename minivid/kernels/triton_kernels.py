r"""FlashAttention-2 in Triton: the ``@triton.jit`` kernels of the forward (K1, K2) and backward (K3) pass.

Only the kernels and their jit helpers live here. Launching them (argument checks, strides, autograd) is
:mod:`minivid.kernels.flash`; their tile sizes are :mod:`minivid.kernels.tiles`; compiling them ahead of time for
a GPU that is not there is :mod:`minivid.kernels.compile`.

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
CUDA only where it fits in registers (see :func:`minivid.kernels.tiles._short_backward_fits`).

The kernels work in base 2 (``exp2`` is the hardware instruction): scores are multiplied by
``scale · log2(e)`` and the saved log-sum-exp is ``log2``-based (the launcher converts it back).

Strides: every tensor comes with its own (b, h, n, d) strides, so both layouts and views such as q, k, v sliced
out of one packed qkv tensor are read in place. Head dims that are not a power of two: the tiles are
``BLOCK_D`` = D rounded up to a power of two wide, and with ``D_MASK`` the lanes past D are masked on every load
(read as 0, so they add nothing to any product) and every store.

Importing this module imports Triton; whether the kernels are compiled (CUDA) or interpreted (CPU) is
decided by ``TRITON_INTERPRET`` *at import time*, so set it before the first import.
"""

from __future__ import annotations

try:
    import triton
    import triton.language as tl
except ImportError as err:  # pragma: no cover - triton is a declared dependency
    raise ImportError(
        "minivid.kernels.flash_attention needs the `triton` package (pip install triton); "
        "minivid.kernels.attention_reference works without it"
    ) from err

__all__ = ["interpreter_active"]


@triton.jit
def _rows(base, offs, s_n, offs_d, s_d, ALIGN: tl.constexpr):
    """Pointers to rows ``offs`` (every head-dim lane) from ``base``: shape (len(offs), BLOCK_D).

    ``ALIGN = 16``: the host has checked that every tensor starts at a multiple of 16 bytes and that every stride
    but the head dim's is a multiple of 16 bytes, and the kernel tells the compiler that each row starts 16-byte
    aligned. Triton learns alignment only from arguments divisible by 16 (elements): without the hint it cannot
    prove that rows of, e.g., D = 72 (144 bytes in bf16) start 16-byte aligned, so it cannot load them in 16-byte
    vectors nor pipeline those loads."""
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


def interpreter_active() -> bool:
    """True when the kernels were built for Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return type(_fwd_kernel).__name__ == "InterpretedFunction"
