r"""Attention in plain PyTorch: the math path (K1), the same algorithm block by block (K2, K3), and
what it costs (K4).

Everything here is readable PyTorch with no Triton, so it runs anywhere. It serves three readers:

* the tests of the Triton kernel (:mod:`minivid.kernels.flash`), which compare it with
  :func:`attention_reference` computed in float64;
* notebook ``07_triton_attention``, which builds the online softmax (K2) cell by cell and then asserts
  against :func:`attention_blockwise` and :func:`attention_backward_reference`;
* the attention module's ``backend="math"``, which calls :func:`attention_reference`.

Conventions (shared with the kernel, and matching ``torch.nn.functional.scaled_dot_product_attention``)
------------------------------------------------------------------------------------------------------
* ``layout="bhnd"``: tensors are ``(B, H, N, D)`` (batch, heads, tokens, head dim); ``layout="bnhd"``:
  ``(B, N, H, D)``. Queries have ``N_q`` tokens, keys and values ``N_k``.
* ``key_padding_mask``: bool ``(B, N_k)``, **True = keep** (attend to this key), False = padding.
  This is SDPA's boolean ``attn_mask`` convention broadcast over heads and queries.
* ``causal=True``: query ``i`` sees keys ``j <= i`` (top-left aligned, as SDPA's ``is_causal``; this
  only matters when ``N_q != N_k``).
* A query row whose keys are all masked returns **zeros** (and zero gradients), as SDPA does; its
  log-sum-exp is reported as ``+inf`` (so that ``exp(S - lse) = 0`` in the backward pass).
* ``scale`` defaults to ``1 / sqrt(D)``.

Equations (``docs/equations.md``)
---------------------------------
K1: :math:`O = \mathrm{softmax}(S)\,V` with :math:`S = Q K^\top \cdot \mathrm{scale}`, masked entries
:math:`-\infty`.

K2: online softmax over key blocks :math:`S_j`: :math:`m' = \max(m, \mathrm{rowmax}(S_j))`,
:math:`\ell' = \ell\,e^{m-m'} + \mathrm{rowsum}(e^{S_j-m'})`, :math:`O' = O\,e^{m-m'} + e^{S_j-m'} V_j`;
finally :math:`O /= \ell` and store :math:`\mathrm{lse} = m + \log \ell`.

K3: :math:`D = \mathrm{rowsum}(dO \circ O)`, :math:`dV = P^\top dO`, :math:`dP = dO\,V^\top`,
:math:`dS = P \circ (dP - D)`, :math:`dQ = dS\,K \cdot \mathrm{scale}`,
:math:`dK = dS^\top Q \cdot \mathrm{scale}`.

K4: forward FLOPs :math:`4 B H N_q N_k D` (halved if causal), backward 2.5 times the forward.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "LAYOUTS",
    "to_bhnd",
    "from_bhnd",
    "attention_scores",
    "attention_reference",
    "attention_blockwise",
    "attention_backward_reference",
    "attention_flops",
    "attention_bytes",
]

LAYOUTS = ("bhnd", "bnhd")


def to_bhnd(x: torch.Tensor, layout: str) -> torch.Tensor:
    """View ``x`` as ``(B, H, N, D)`` (no copy)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return x if layout == "bhnd" else x.transpose(1, 2)  # (B, N, H, D) -> (B, H, N, D)


def from_bhnd(x: torch.Tensor, layout: str) -> torch.Tensor:
    """Inverse of :func:`to_bhnd` (a view)."""
    return to_bhnd(x, layout)  # the transpose is its own inverse


def _keep_mask(n_q: int, n_k: int, causal: bool, key_padding_mask, device) -> torch.Tensor | None:
    """Bool mask broadcastable to (B, H, N_q, N_k), True = keep, or None when nothing is masked."""
    keep = None
    if causal:  # query i sees keys j <= i (top-left aligned, as SDPA's is_causal)
        keep = torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril()  # (N_q, N_k)
    if key_padding_mask is not None:
        kpm = key_padding_mask.to(device=device, dtype=torch.bool)[:, None, None, :]  # (B, 1, 1, N_k)
        keep = kpm if keep is None else keep & kpm
    return keep


def attention_scores(q, k, causal=False, key_padding_mask=None, scale=None, layout="bhnd"):
    """S = Q Kᵀ · scale with masked entries set to -inf (the argument of the softmax in K1).

    Returns ``(B, H, N_q, N_k)`` whatever the layout.
    """
    q, k = to_bhnd(q, layout), to_bhnd(k, layout)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.einsum("bhid,bhjd->bhij", q, k) * scale  # (B, H, N_q, N_k)
    keep = _keep_mask(q.shape[2], k.shape[2], causal, key_padding_mask, q.device)
    if keep is not None:
        s = s.masked_fill(~keep, float("-inf"))
    return s


def attention_reference(q, k, v, causal=False, key_padding_mask=None, scale=None, layout="bhnd",
                        return_lse=False):
    """The math path of attention (K1): materialise S and P = softmax(S), then O = P V.

    Same arguments and conventions as :func:`minivid.kernels.flash_attention` (see the module
    docstring). Half-precision inputs are computed in float32 and the result cast back; float32 and
    float64 are computed in their own precision (the tests use float64). Differentiable.

    Args:
        q: ``(B, H, N_q, D)`` for ``layout="bhnd"``, ``(B, N_q, H, D)`` for ``"bnhd"``.
        k, v: same as ``q`` with ``N_k`` tokens.
        causal: query i sees keys j <= i.
        key_padding_mask: bool ``(B, N_k)``, True = keep.
        scale: multiplies Q Kᵀ; default ``1/sqrt(D)``.
        layout: ``"bhnd"`` or ``"bnhd"``; the output has the layout of ``q``.
        return_lse: also return the natural-log log-sum-exp of each row, ``(B, H, N_q)`` float,
            ``+inf`` where every key is masked.
    """
    dtype = q.dtype
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    qc, kc, vc = (to_bhnd(t, layout).to(compute) for t in (q, k, v))
    s = attention_scores(qc, kc, causal, key_padding_mask, scale, "bhnd")  # K1: S = Q Kᵀ·scale
    # "Safe" softmax: a row with every key masked gives P = 0 (hence O = 0), not NaN.
    m = s.amax(dim=-1, keepdim=True).detach()  # softmax is invariant to m: no gradient needed
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)  # masked entries: exp(-inf) = 0
    l = e.sum(dim=-1, keepdim=True)
    p = e / torch.where(l > 0, l, torch.ones_like(l))  # K1: P = softmax(S)
    o = torch.einsum("bhij,bhjd->bhid", p, vc)  # K1: O = P V
    o = from_bhnd(o.to(dtype), layout)
    if not return_lse:
        return o
    lse = torch.where(l > 0, m + torch.log(l), torch.full_like(l, float("inf")))[..., 0]
    return o, lse.detach()


def attention_blockwise(q, k, v, causal=False, key_padding_mask=None, scale=None, layout="bhnd",
                        block_n=16):
    """K2 in plain PyTorch: one pass over key blocks with the online softmax, never forming P.

    The Triton forward kernel does exactly this for a tile of queries; here all queries are
    processed at once and the loop runs over blocks of ``block_n`` keys. Returns ``(O, lse)`` with
    ``lse = m + log l`` in natural log (``+inf`` for fully masked rows), as the kernel saves it.
    """
    dtype = q.dtype
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    qc, kc, vc = (to_bhnd(t, layout).to(compute) for t in (q, k, v))
    b, h, n_q, d = qc.shape
    n_k = kc.shape[2]  # only one (N_q × block_n) block of scores exists at a time
    m = torch.full((b, h, n_q, 1), float("-inf"), dtype=compute, device=qc.device)  # running max
    l = torch.zeros((b, h, n_q, 1), dtype=compute, device=qc.device)  # running sum of exp
    acc = torch.zeros((b, h, n_q, d), dtype=compute, device=qc.device)  # unnormalised output
    for start in range(0, n_k, block_n):
        kj, vj = kc[:, :, start:start + block_n], vc[:, :, start:start + block_n]
        kpm_j = None if key_padding_mask is None else key_padding_mask[:, start:start + block_n]
        s_j = attention_scores(qc, kj, False, kpm_j, scale, "bhnd")  # (B, H, N_q, block_n)
        if causal:
            qi = torch.arange(n_q, device=qc.device)[:, None]
            kj_idx = torch.arange(start, start + kj.shape[2], device=qc.device)[None, :]
            s_j = s_j.masked_fill(kj_idx > qi, float("-inf"))
        m_new = torch.maximum(m, s_j.amax(dim=-1, keepdim=True))  # K2: m' = max(m, rowmax(S_j))
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))  # all masked so far
        alpha = torch.exp(m - m_safe)  # K2: e^{m - m'} (0 while m = -inf)
        p_j = torch.exp(s_j - m_safe)  # K2: e^{S_j - m'}
        l = l * alpha + p_j.sum(dim=-1, keepdim=True)  # K2: l' = l e^{m-m'} + rowsum(e^{S_j-m'})
        acc = acc * alpha + p_j @ vj  # K2: O' = O e^{m-m'} + e^{S_j-m'} V_j
        m = m_new
    o = acc / torch.where(l > 0, l, torch.ones_like(l))  # K2: O /= l at the end (0 if all masked)
    lse = torch.where(l > 0, m + torch.log(l), torch.full_like(l, float("inf")))[..., 0]  # K2: m + log l
    return from_bhnd(o.to(dtype), layout), lse


def attention_backward_reference(q, k, v, o, do, lse, causal=False, key_padding_mask=None, scale=None,
                                 layout="bhnd"):
    """K3 in plain PyTorch: the gradients (dQ, dK, dV) from O, dO and the saved log-sum-exp.

    ``P`` is recomputed as ``exp(S - lse)`` (this is why the forward pass only stores ``lse``, one
    number per query, instead of the N_q × N_k matrix P). Returns tensors in the input layout.
    """
    dtype = q.dtype
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    qc, kc, vc, oc, doc = (to_bhnd(t, layout).to(compute) for t in (q, k, v, o, do))
    scale = 1.0 / math.sqrt(qc.shape[-1]) if scale is None else scale
    s = attention_scores(qc, kc, causal, key_padding_mask, scale, "bhnd")
    p = torch.exp(s - lse.to(compute)[..., None])  # P recomputed; rows with lse = +inf give 0
    delta = (doc * oc).sum(dim=-1, keepdim=True)  # K3: D = rowsum(dO ∘ O)   (B, H, N_q, 1)
    dv = p.transpose(-1, -2) @ doc  # K3: dV = Pᵀ dO
    dp = doc @ vc.transpose(-1, -2)  # K3: dP = dO Vᵀ
    ds = p * (dp - delta)  # K3: dS = P ∘ (dP − D)
    dq = ds @ kc * scale  # K3: dQ = dS K · scale
    dk = ds.transpose(-1, -2) @ qc * scale  # K3: dK = dSᵀ Q · scale
    return tuple(from_bhnd(t.to(dtype), layout) for t in (dq, dk, dv))


def attention_flops(batch, heads, n_q, n_k=None, head_dim=64, causal=False, mode="fwd") -> float:
    """K4: floating-point operations of attention.

    Forward: two matrix products (Q Kᵀ and P V) of ``2·N_q·N_k·D`` each, so ``4·B·H·N_q·N_k·D``,
    halved when causal (about half of the score matrix is masked). Backward: five products of the
    same size (recompute S, dV, dP, dQ, dK) instead of two, i.e. 2.5× the forward.

    ``mode``: ``"fwd"``, ``"bwd"`` or ``"fwd+bwd"`` (3.5× the forward).
    """
    n_k = n_q if n_k is None else n_k
    fwd = 4.0 * batch * heads * n_q * n_k * head_dim  # K4: 4·B·H·N²·D
    if causal:
        fwd *= 0.5  # K4: halved if causal
    factor = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}  # K4: backward 2.5× forward
    if mode not in factor:
        raise ValueError(f"mode must be one of {tuple(factor)}, got {mode!r}")
    return fwd * factor[mode]


def attention_bytes(batch, heads, n, head_dim, bytes_per_element=2, method="math", block_m=128):
    """A simple model of the global-memory (HBM) traffic of one attention forward pass, in bytes.

    * ``"math"``: S = Q Kᵀ is written, read back by the softmax, P written, read back by P V:
      ``4·N·D`` (Q, K, V, O) plus ``4·N²`` elements — quadratic in N.
    * ``"flash"``: Q read and O written once; K and V streamed once per tile of ``block_m`` queries
      (no cache reuse assumed, an upper bound); plus the float32 log-sum-exp: ``2·N·D +
      2·N·D·ceil(N/block_m)`` elements plus ``4·N`` bytes. No N×N matrix is ever stored.
    * ``"flash-ideal"``: every input and output moved exactly once, ``4·N·D`` elements + ``4·N``
      bytes: linear in N (what the kernel approaches when K and V stay in L2 cache).
    """
    bh = batch * heads
    if method == "math":
        return bh * (4 * n * head_dim + 4 * n * n) * bytes_per_element
    if method == "flash":
        tiles = math.ceil(n / block_m)
        return bh * ((2 * n * head_dim + 2 * n * head_dim * tiles) * bytes_per_element + 4 * n)
    if method == "flash-ideal":
        return bh * (4 * n * head_dim * bytes_per_element + 4 * n)
    raise ValueError(f"method must be 'math', 'flash' or 'flash-ideal', got {method!r}")
