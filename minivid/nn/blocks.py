r"""The DiT block family for video tokens (L2, L3, L5), shared by every transformer in minivid: Latte's
variants, PVDM's divided space-time transformers and axis projectors, and the later video transformers.

A block works on the token grid ``z`` of shape (B, n_f, t, d), t = n_h·n_w tokens per frame, and differs
only in *who attends to whom* (``kind``, see :data:`BLOCK_KINDS`):

- ``"spatial"``: attention within each frame, over :math:`z_s \in \mathbb R^{n_f\times t\times d}` (L2),
  i.e. ``(b n_f) t d`` sequences of length t;
- ``"temporal"``: attention across frames at each spatial position, over
  :math:`z_t \in \mathbb R^{t\times n_f\times d}` (L2), ``(b t) n_f d`` sequences of length n_f;
- ``"factorised"`` (Latte variant 3, L3): one block = spatial MHA, then temporal MHA, then the MLP;
  ``temporal_first=True`` puts the temporal MHA first, as TimeSformer's divided space-time attention and
  PVDM's encoder and decoder do (P2);
- ``"split"`` (Latte variant 4, L3): one MHA whose heads are split in two halves: H/2 heads attend
  spatially, H/2 temporally; the temporal result is reshaped back to (n_f, t, d) and **added** to the
  spatial one. Each half is an :class:`~minivid.nn.Attention` with H/2 heads of d/H channels;
  the sum of their output projections is one projection of the concatenated heads;
- ``"full"``: 3D attention over all n_f·t tokens (the CogVideoX style, C5), the reference the factorised
  kinds approximate.

Each residual branch is pre-normalised and conditioned by one of the modulations of
:mod:`minivid.nn.modulation` (L5): ``x + α_c · f(γ_c · LN(x) + β_c)``; ``modulation="none"`` gives the plain
pre-norm block ``x + f(LN(x))`` of a transformer without a condition (PVDM's autoencoder). The patterns
themselves (:func:`~minivid.nn.attention.spatial_attention`, ...) live in :mod:`minivid.nn.attention`.

Image-video joint training (L7): with ``num_video_frames = n`` < n_f, frames n.. are images appended to
the clip; they are excluded from temporal attention (a ``"temporal"`` block passes them through untouched,
as Latte's release does; in ``"factorised"`` / ``"split"`` blocks they get no temporal contribution).

**Cross-attention (optional, off by default).** ``DiTBlock(..., context_dim=c)`` adds a third kind of residual
branch between the self-attention(s) and the MLP, as PixArt-α, OpenSora's ST-DiT (T3) and Reducio-DiT (R4, R5)
place it: :math:`z \leftarrow z + \mathrm{CAttn}(z, e)`, every token of the clip a query (``b (n_f t) d``)
and the condition tokens e (B, L, c) keys and values, with a key-padding mask (True = a real token). As in
PixArt-α and OpenSora the branch has no LayerNorm, no modulation and no gate; its output projection is
zero-initialised (OpenSora's ``cross_attn.proj``), so a new cross-attention branch is the identity. A block
without ``context_dim`` has exactly the parameters, names and function it had before.

**Pre-attention hook.** ``forward(..., fuse=f)`` applies ``f`` to the normalised, modulated input of the block's
main attention branch (``norm1``), :math:`h \leftarrow f(\gamma_c\,\mathrm{LN}(z) + \beta_c)`, before the
attention: where Tora's motion-guidance fuser acts (T7 [code]). The model hands the fuser in; the block only
calls it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from einops import rearrange
from torch import nn

from .attention import Attention, Rope, full_attention, spatial_attention, temporal_attention
from .mlp import MLP
from .modulation import AdaLN, AdaLNSingle, gate, make_block_modulation, modulate

BLOCK_KINDS = ("spatial", "temporal", "factorised", "split", "full")


def grid_fuse_hook(fn: Callable, f_i, tokens: str, grid: str, **sizes) -> Callable[[torch.Tensor], torch.Tensor]:
    """T7: a block hook on hidden tokens laid out as the einops pattern ``tokens`` (e.g. ``"b n_f (n_h n_w) d"``) that
    calls Tora's ``fn(h, f_i)`` on their grid ``grid`` (e.g. ``"b n_f n_h n_w d"``; ``sizes`` give the split axes) and
    checks that the fuser returns the grid's shape."""

    def fuse(h: torch.Tensor) -> torch.Tensor:
        g = rearrange(h, f"{tokens} -> {grid}", **sizes)
        out = fn(g, f_i)
        if not isinstance(out, torch.Tensor) or out.shape != g.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the fuser must return the hidden tokens' shape ({', '.join('B' if a == 'b' else a for a in grid.split())}) = "
                             f"{tuple(g.shape)}, got {got}")
        return rearrange(out, f"{grid} -> {tokens}")

    return fuse


def resolve_fusers(fuser, motion_features, depth: int, unit: str = "block") -> list:
    """T6-T7: one ``fuse(h, f_i)`` callable per ``unit`` (``depth`` of them), from one fuser used everywhere or a
    sequence (e.g. an ``nn.ModuleList``) of ``depth`` fusers, checked against ``motion_features`` (a sequence of
    ``depth`` per-block features f_i); ``[None] * depth`` when both are None. A ValueError names what is wrong."""
    if fuser is None and motion_features is None:
        return [None] * depth
    if fuser is None or motion_features is None:
        raise ValueError(f"fuser and motion_features go together: pass both (a fuser and one motion feature per "
                         f"{unit}, depth={depth}) or neither")
    if isinstance(motion_features, torch.Tensor) or not isinstance(motion_features, Sequence) \
            or len(motion_features) != depth:
        got = f"a tensor of shape {tuple(motion_features.shape)}" if isinstance(motion_features, torch.Tensor) \
            else (f"{len(motion_features)} features" if isinstance(motion_features, Sequence)
                  else type(motion_features).__name__)
        raise ValueError(f"motion_features must be a sequence of depth={depth} motion features f_i (T6), got {got}")
    if callable(fuser) and not isinstance(fuser, (nn.ModuleList, list, tuple)):
        return [fuser] * depth
    if not isinstance(fuser, Sequence | nn.ModuleList) or len(fuser) != depth or not all(callable(f) for f in fuser):
        length = f" of length {len(fuser)}" if hasattr(fuser, "__len__") else ""
        raise ValueError(f"fuser must be one callable fuser(h, f_i) or a sequence of depth={depth} of them, got "
                         f"{type(fuser).__name__}{length}")
    return list(fuser)


# ---------------------------------------------------------------------------------------------------
# The block
# ---------------------------------------------------------------------------------------------------


def _check_kind(kind: str) -> str:
    if kind not in BLOCK_KINDS:
        raise ValueError(f"kind={kind!r} is not supported; allowed: {BLOCK_KINDS}")
    return kind


def attention_pattern(kind: str, n_f: int, t: int, num_video_frames: int | None = None) -> torch.Tensor:
    """Who attends to whom: a (N, N) boolean matrix over the N = n_f·t tokens in (f, p) row-major order;
    entry [i, j] is True when token i's output depends on token j after one block of this kind.
    ``"factorised"`` composes spatial then temporal attention, so after one block every token reaches
    every other; ``"split"`` is the union of the spatial and temporal patterns."""
    _check_kind(kind)
    n = n_f if num_video_frames is None else num_video_frames
    f = torch.arange(n_f).repeat_interleave(t)  # frame of each token
    p = torch.arange(t).repeat(n_f)  # spatial position of each token
    same_frame = f[:, None] == f[None, :]
    video = f < n
    same_pos = (p[:, None] == p[None, :]) & video[:, None] & video[None, :]
    temporal = same_pos | torch.eye(n_f * t, dtype=torch.bool)  # an image token only sees itself
    if kind == "spatial":
        return same_frame
    if kind == "temporal":
        return temporal
    if kind == "split":
        return same_frame | temporal
    if kind == "factorised":
        return (temporal.int() @ same_frame.int()) > 0  # temporal after spatial: (f,p) <- (f',p) <- (f',p')
    return torch.ones(n_f * t, n_f * t, dtype=torch.bool)


def cross_attention(attn: Attention, z: torch.Tensor, context: torch.Tensor,
                    context_mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""R4 / T3: :math:`\mathrm{CAttn}(z, e)` for video tokens z (B, n_f, t, d): every token of a clip is a query
    (``b (n_f t) d``, one sequence per clip, so the keys and values of e are computed once per clip), the
    condition tokens e (B, L, c) are the keys and values; ``context_mask`` (B, L), True = a real token."""
    n_f = z.shape[1]
    q = rearrange(z, "b n_f t d -> b (n_f t) d")
    out = attn(q, context=context, key_padding_mask=context_mask)
    return rearrange(out, "b (n_f t) d -> b n_f t d", n_f=n_f)


class DiTBlock(nn.Module):
    """A pre-norm transformer block on z (B, n_f, t, d) with conditioning by ``modulation`` (L5).

    Args:
        dim, heads: token width d and number of heads H (head_dim = d / H).
        kind: one of :data:`BLOCK_KINDS` (attention pattern, see the module docstring).
        modulation: one of :data:`~minivid.nn.modulation.BLOCK_MODULATIONS` (the conditioned ones of
            :data:`~minivid.nn.modulation.MODULATIONS`, or ``"none"``).
        cond_dim: width of the condition c (default d).
        mlp_ratio: MLP hidden width / d.
        qk_norm, backend: passed to every :class:`Attention`.
        temporal_first: for ``"factorised"``, the temporal MHA before the spatial one (TimeSformer, PVDM's P2)
            rather than after it (Latte's variant 3).
        context_dim: width of the condition tokens of an (unmodulated, ungated) cross-attention branch after the
            self-attention(s) and before the MLP (PixArt-α / OpenSora / Reducio-DiT); None (default): no
            cross-attention.

    Residual branches and their modulation, in order: attention (spatial / temporal / full / split),
    MLP, and for ``"factorised"`` a third, temporal attention (so the first 6·d rows of its 9·d adaLN
    regression are an image DiT block's). The forward order is: [temporal MHA if ``temporal_first``], main
    attention, [temporal MHA of ``"factorised"``], [cross-attention], MLP.
    """

    def __init__(self, dim: int, heads: int, kind: str = "spatial", modulation: str = "adaln-zero",
                 cond_dim: int | None = None, mlp_ratio: float = 4.0, qk_norm: bool = False, backend: str = "sdpa",
                 temporal_first: bool = False, context_dim: int | None = None):
        super().__init__()
        self.kind, self.dim, self.heads = _check_kind(kind), dim, heads
        if heads < 1 or dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        if temporal_first and kind != "factorised":
            raise ValueError(f"temporal_first=True orders the two attentions of a 'factorised' block; kind={kind!r}")
        self.head_dim, self.temporal_first = dim // heads, temporal_first
        affine = modulation in ("tokens", "none")  # with AdaLN the modulation replaces LayerNorm's own affine
        kw = dict(qk_norm=qk_norm, backend=backend)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)
        if kind == "split":
            if heads % 2:
                raise ValueError(f"heads={heads} must be even for a head-split block (Latte variant 4: half the "
                                 f"heads attend spatially, half temporally); allowed: 2, 4, 6, ...")
            self.attn = Attention(dim, heads // 2, head_dim=self.head_dim, **kw)  # L3 v4: spatial half
            self.attn_t = Attention(dim, heads // 2, head_dim=self.head_dim, **kw)  # L3 v4: temporal half
        else:
            self.attn = Attention(dim, heads, **kw)
        if kind == "factorised":
            self.norm_t = nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)
            self.attn_t = Attention(dim, heads, **kw)  # L3 v3: temporal MHA after the spatial one
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.branches = 3 if kind == "factorised" else 2
        self.modulation = make_block_modulation(modulation, dim, cond_dim, self.branches)
        if context_dim is not None:
            if not isinstance(context_dim, int) or isinstance(context_dim, bool) or context_dim < 1:
                raise ValueError(f"context_dim={context_dim!r} is invalid: expected a positive int (the width of the "
                                 "condition tokens) or None (no cross-attention)")
            # R4 / T3: z + CAttn(z, e); zero output projection (OpenSora), so the new branch starts as the identity
            self.cross_attn = Attention(dim, heads, context_dim=context_dim, zero_init_out=True, **kw)
        self.context_dim = context_dim

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None, num_video_frames: int | None = None,
                rope_s: Rope = None, rope_t: Rope = None, rope_full: Rope = None, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, fuse: Callable[[torch.Tensor], torch.Tensor] | None = None
                ) -> torch.Tensor:
        """z (B, n_f, t, d) -> (B, n_f, t, d). ``cond``: the condition c (B, cond_dim), the shared
        adaLN-single modulation (B, 3k, d), or None for ``"tokens"`` and ``"none"``. ``rope_s`` / ``rope_t`` / ``rope_full``:
        RoPE callables for the spatial (length t), temporal (length num_video_frames) and full sequences.
        ``context`` (B, L, context_dim) and ``context_mask`` (B, L, True = attend): the condition tokens of the
        cross-attention branch (needed exactly when the block has one). ``fuse``: a callable on the normalised,
        modulated (B, n_f, t, d) input of the main attention, returning the same shape (T7's fuser hook)."""
        if z.ndim != 4 or z.shape[-1] != self.dim:
            raise ValueError(f"z must be (B, n_f, t, {self.dim}), got {tuple(z.shape)}")
        n = z.shape[1] if num_video_frames is None else int(num_video_frames)
        if not 1 <= n <= z.shape[1]:
            raise ValueError(f"num_video_frames={num_video_frames} must lie in 1..n_f={z.shape[1]}")
        if self.context_dim is None and (context is not None or context_mask is not None):
            raise ValueError("this DiTBlock has no cross-attention (context_dim=None): build it with context_dim to "
                             "pass context / context_mask")
        if self.context_dim is not None:
            if context is None or context.ndim != 3 or context.shape[0] != z.shape[0] \
                    or context.shape[-1] != self.context_dim:
                got = None if context is None else tuple(context.shape)
                raise ValueError(f"context must be condition tokens (B={z.shape[0]}, L, context_dim={self.context_dim})"
                                 f" for this block's cross-attention, got {got}")
        if self.kind == "temporal" and n < z.shape[1]:
            # L7: the appended images skip the whole temporal block (Latte's release), its cross-attention too
            out = self._forward(z[:, :n], cond, n, rope_s, rope_t, rope_full, context, context_mask, fuse)
            return torch.cat([out, z[:, n:]], dim=1)
        return self._forward(z, cond, n, rope_s, rope_t, rope_full, context, context_mask, fuse)

    def _forward(self, z, cond, n, rope_s, rope_t, rope_full, context=None, context_mask=None, fuse=None):
        m_attn, m_mlp, *m_rest = self.modulation(cond)  # L5: one (shift, scale, gate) per branch
        if self.kind == "factorised" and self.temporal_first:  # TimeSformer / P2: temporal MHA first
            z = self._temporal_branch(z, m_rest[0], n, rope_t)
        h = modulate(self.norm1(z), m_attn.shift, m_attn.scale)  # L5: gamma_c LN(z) + beta_c
        if fuse is not None:  # T7 [code]: the fuser acts after the block's input norm, before attention
            fused = fuse(h)
            if not isinstance(fused, torch.Tensor) or fused.shape != h.shape:
                got = tuple(fused.shape) if isinstance(fused, torch.Tensor) else type(fused).__name__
                raise ValueError(f"fuse must return the hidden tokens' shape {tuple(h.shape)}, got {got}")
            h = fused
        if self.kind in ("spatial", "factorised"):
            a = spatial_attention(self.attn, h, rope_s)
        elif self.kind == "temporal":
            a = temporal_attention(self.attn, h, n, rope_t)
        elif self.kind == "full":
            a = full_attention(self.attn, h, rope_full)
        else:  # L3 variant 4: H/2 heads spatial + H/2 heads temporal, temporal result reshaped and added
            a = spatial_attention(self.attn, h, rope_s) + temporal_attention(self.attn_t, h, n, rope_t)
        z = z + gate(a, m_attn.gate)  # L5: alpha_c before the residual
        if self.kind == "factorised" and not self.temporal_first:  # L3 variant 3: then temporal MHA
            z = self._temporal_branch(z, m_rest[0], n, rope_t)
        if self.context_dim is not None:  # R4 / T3: z + CAttn(z, e), no norm and no gate (PixArt-α, OpenSora)
            z = z + cross_attention(self.cross_attn, z, context, context_mask)
        h = modulate(self.norm2(z), m_mlp.shift, m_mlp.scale)
        return z + gate(self.mlp(h), m_mlp.gate)

    def _temporal_branch(self, z, m_t, n, rope_t):
        """The third branch of a ``"factorised"`` block: z + α · TemporalMHA(γ LN(z) + β)."""
        h = modulate(self.norm_t(z), m_t.shift, m_t.scale)
        return z + gate(temporal_attention(self.attn_t, h, n, rope_t), m_t.gate)

    def flops(self, batch: int, n_f: int, t: int, num_video_frames: int | None = None,
              context_len: int | None = None) -> dict[str, float]:
        """Forward matmul FLOPs of this block on (batch, n_f, t, d) tokens: see :func:`block_flops`.
        ``context_len``: the number L of condition tokens, needed exactly when the block has cross-attention."""
        if (context_len is None) != (self.context_dim is None):
            raise ValueError(f"context_len={context_len!r}: pass the number of condition tokens exactly when the block "
                             f"has cross-attention (context_dim={self.context_dim})")
        per_block = isinstance(self.modulation, AdaLN)  # adaLN-single / tokens / none: no per-block regression
        return block_flops(self.kind, self.dim, self.heads, batch, n_f, t, num_video_frames,
                           mlp_hidden=self.mlp.fc1.out_features,
                           modulation=self.modulation.kind if per_block else "tokens",
                           cond_dim=self.modulation.linear.in_features if per_block else None,
                           context_len=context_len or 0, context_dim=self.context_dim)


def block_flops(kind: str, dim: int, heads: int, batch: int, n_f: int, t: int, num_video_frames: int | None = None,
                mlp_hidden: int | None = None, modulation: str = "adaln-zero", cond_dim: int | None = None,
                context_len: int = 0, context_dim: int | None = None) -> dict[str, float]:
    """Forward matmul FLOPs (2 per multiply-add) of one :class:`DiTBlock` on (batch, n_f, t, dim) tokens,
    without building it: ``attention`` (the QKᵀ and PV products, K4: 4·seqs·H·L²·D_h) and ``linear``
    (q/kv/out projections, MLP, the block's own adaLN regression). ``context_len`` > 0: a cross-attention
    branch to that many condition tokens of width ``context_dim`` (default dim). Checked against
    ``torch.utils.flop_counter.FlopCounterMode`` in the tests."""
    _check_kind(kind)
    n = n_f if num_video_frames is None else num_video_frames
    if kind == "temporal":
        n_f = n  # images skip the whole block
    dh = dim // heads
    hidden = 4 * dim if mlp_hidden is None else mlp_hidden
    half = kind == "split"
    h_s = heads // 2 if half else heads  # heads of the spatial / temporal attention

    def proj(h: int, tokens: int) -> float:  # q (inner), kv (2 inner), out (inner); inner = h·d_h
        return 2.0 * tokens * dim * h * dh * 4

    def core(seqs: int, length: int, h: int) -> float:
        return 4.0 * seqs * h * length * length * dh  # K4

    all_tokens, video_tokens = batch * n_f * t, batch * n * t
    lin, att = 2.0 * all_tokens * dim * hidden * 2, 0.0  # MLP
    if kind in ("spatial", "factorised", "split"):
        lin, att = lin + proj(h_s, all_tokens), att + core(batch * n_f, t, h_s)
    if kind == "temporal":
        lin, att = lin + proj(heads, all_tokens), att + core(batch * t, n_f, heads)
    if kind in ("factorised", "split"):
        lin, att = lin + proj(h_s, video_tokens), att + core(batch * t, n, h_s)
    if kind == "full":
        lin, att = lin + proj(heads, all_tokens), att + core(batch, n_f * t, heads)
    if context_len:  # cross-attention: every (video) token of a clip queries the clip's L condition tokens
        tokens = video_tokens if kind == "temporal" else all_tokens  # images skip a temporal block
        lin += 2.0 * tokens * dim * heads * dh * 2 + 2.0 * batch * context_len * (context_dim or dim) * 2 * heads * dh
        att += 4.0 * heads * tokens * context_len * dh
    if modulation in ("adaln", "s-adaln", "adaln-zero"):
        branches = 3 if kind == "factorised" else 2
        lin += 2.0 * batch * (cond_dim or dim) * (2 if modulation == "adaln" else 3) * branches * dim
    return {"linear": lin, "attention": att}


@torch.no_grad()
def zero_adaln_single_gates_(shared: AdaLNSingle, blocks) -> None:
    """adaLN-Zero's idea for adaLN-single (L5): zero the gate rows (every third of the 3·branches rows) of the shared
    regression E = Linear(SiLU(c)) and of each block's table S_l, so every gated branch starts at α = 0 and each
    block (``blocks``: DiTBlocks with ``modulation="adaln-single"``) starts as the identity (up to its ungated
    cross-attention, whose output projection is zero-initialised). Used by the ST-DiT and Reducio-DiT models."""
    rows = torch.arange(shared.linear.out_features) // shared.dim  # the modulation row of each output feature
    gates = rows % 3 == 2  # per branch: (shift, scale, gate)
    shared.linear.weight[gates] = 0.0
    shared.linear.bias[gates] = 0.0
    for block in blocks:
        table = block.modulation.table
        table[torch.arange(table.shape[0]) % 3 == 2] = 0.0
