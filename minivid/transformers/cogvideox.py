r"""CogVideoX's expert transformer (C2-C5), block for block the layout of the released 2B / 5B models.

A video latent x (B, C, T, H, W) and a text embedding (B, L, text_dim) become one token sequence:

- **Patches (C2).** Each (C, q, p, p) tube of the latent is flattened in (c, q, p, p) order and mapped linearly to
  the model width d = heads · head_dim: q = 1 (``patch_size_t=1``) is CogVideoX 1.0's spatial patchify (a Conv2d
  with kernel = stride = p, the same linear map), q = 2 is CogVideoX 1.5's temporal patchify. Tokens are ordered
  (t, h, w) row-major, after the L text tokens (a linear map text_dim -> d).
- **Positions (C3).** Either a 3D RoPE on the video tokens only (the text tokens are not rotated): d/4 channels of
  each head turn with the token's t coordinate, 3d/8 with h and 3d/8 with w, θ = 10000 (:func:`cogvideox_rope`);
  or, as the 2B model does, a fixed 3D sin-cos table added to the video tokens (:func:`cogvideox_sincos`).
- **Expert AdaLN (C4).** One LayerNorm shared by all tokens, but two modulations regressed from the timestep
  embedding: (shift, scale, gate) for the vision tokens and another (shift, scale, gate) for the text tokens
  (:class:`ExpertAdaLN`, six d-vectors per sub-layer).
- **3D full attention (C5).** Self-attention over all L + T·H·W/p² tokens at once, with LayerNorm on every
  head's queries and keys (QK-norm), through the attention backend switch (so the Triton kernel serves it, with
  the text's key-padding mask); then one feed-forward shared by text and video. Both sub-layers are gated
  residuals.
- **Output.** LayerNorm, an AdaLN (shift, scale) from the timestep, a linear map to q·p·p·C_out values per token,
  and the inverse of the patchify; the text tokens are dropped.

The timestep embedding is the cos-first sinusoid of width d followed by a SiLU MLP to ``time_embed_dim``
(CogVideoX 1.5's image-to-video model adds an "ofs" embedding of the same form).

**Which positions RoPE sees.** ``rope_grid="slice"`` uses integer token coordinates (0, 1, 2, ...), as diffusers'
CogVideoX 1.5 pipeline does. ``rope_grid="linspace"`` reproduces the 1.0 pipeline: the token grid (n_h, n_w) is
fitted inside the training grid ``base_size / p`` (720 × 480 pixels = 60 × 90 latents = 30 × 45 tokens) by
:func:`resize_crop_region`, and the h (w) coordinates are ``linspace(top, bottom · (n_h − 1) / n_h, n_h)``, so a
smaller video is rotated as if it were stretched over the base grid (at the base size both give 0, 1, 2, ...).

**RoPE at small head widths.** C3 gives time d/4 of a head's channels, so a pair i turns by
:math:`t\,\theta^{-8i/d}` per frame, starting at 1 rad per frame. The release's d = 64 has 8 temporal pairs (1, 0.32,
0.1, ... rad per frame) and tells 13 latent frames apart; at d = 16 there are 2 pairs, 1 and 0.01 rad per frame at
θ = 10⁴, so frames 6 apart turn by 6 − 2π = −0.28 and 0.06 rad, almost the same position. A small model trained so
confuses frames 0-1 with 6-7 of an 8-frame clip (measured on the zoo's ``t2v``: 4-frame windows of its samples pass
the sprite check at 97% in the middle and 62-66% at the ends). A smaller ``rope_theta`` spreads the pairs (θ = 10:
1 and 0.32 rad per frame): the zoo's ``t2v`` uses it (sprite check 89% of 64 held-out captions, 52% at θ = 10⁴).

**Released weights.** :func:`from_diffusers` builds this model from a diffusers ``CogVideoXTransformer3DModel``
(an instance, or a folder written by its ``save_pretrained``, read with safetensors, without importing diffusers)
and copies every weight; the tests check the outputs agree to 1e-5 on tiny random models of the three released
layouts. A model trained from scratch here starts with zero modulations and a zero output layer (``zero_init``,
adaLN-Zero as in DiT), so a new model predicts zero; diffusers initialises them at random.

Call convention: ``model(x, t, text, text_mask=None)`` with latents x (B, C, T, H, W), timesteps t (B,) and text
embeddings (B, L, text_dim); ``text_mask`` (B, L) marks the real text tokens (True = attend; the released models
attend to T5's padding too, so leave it None to reproduce them). Returns (B, C_out, T, H, W).

**Mixed image-video batches (C6).** ``frame_mask`` (B, T) marks each clip's real latent frames when clips of
different lengths (an image is a one-frame clip) are padded at the end to one length
(:func:`minivid.data.pack_clips`): padded frames are removed from the keys of every attention, so a real token's
output is exactly that of the unpadded clip (RoPE and the sin-cos table give frame k the same position either
way); the outputs at padded frames are meaningless and the loss leaves them out (``frame_mask`` of
:func:`minivid.diffusion.training_losses`).

**Tora's fuser hook (T7).** ``forward(..., fuser=..., motion_features=[f_0, ..., f_{depth-1}])`` calls
``fuser_i(h, f_i)`` in block i on the video tokens after the block's first expert AdaLN and before the attention (the
site of Tora's CogVideoX release), as a grid (B, n_t, n_h, n_w, d); it must return that shape. One fuser for every
block or a sequence of ``depth``; the model never imports them (:mod:`minivid.conditioning.motion` makes them).

**Pooled text in the modulation** (``pooled_text=True``, minivid's option, not in CogVideoX): the mean of the real
text embeddings (over ``text_mask``'s True tokens, all tokens without a mask) goes through a zero-initialised linear
map to ``time_embed_dim`` and is added to the timestep embedding, so every expert AdaLN and the output AdaLN see the
caption as a global vector, as SD3's MMDiT adds its pooled CLIP vector and Latte its class embedding. Zero-initialised,
a model with it starts as the same model without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..nn import BACKENDS, MLP, Attention, Model, ModelConfig, TimestepEmbedding
from ..nn.embeddings import sincos_1d, sincos_2d
from ..nn.rope import RotaryEmbedding
from ..nn.blocks import grid_fuse_hook, resolve_fusers
from ..utils.checkpoint import copy_mapped_state, diffusers_state
from ..utils.validation import check_choice, check_positive_ints

POSITIONALS = ("rope", "sincos")
ROPE_GRIDS = ("slice", "linspace")


@dataclass
class ExpertTransformerConfig(ModelConfig):
    """The expert transformer's shape. The defaults are CogVideoX-5B's (``from_diffusers`` fills them from a release).

    ``base_size`` is the (H, W) of the latents the model was trained at (diffusers' ``sample_height`` /
    ``sample_width``): the 1.0 RoPE grid is rescaled to it. ``zero_init`` zeroes every modulation regression and
    the output layer at construction (training from scratch); loading weights overwrites them."""

    in_channels: int = 16
    out_channels: int | None = None  # default: in_channels
    patch_size: int = 2
    patch_size_t: int = 1  # 1: CogVideoX 1.0 (spatial patches, C2's q = 1); 2: CogVideoX 1.5
    heads: int = 48
    head_dim: int = 64
    depth: int = 42
    time_embed_dim: int = 512
    text_dim: int = 4096
    max_text_len: int = 226  # the released pipelines pad T5 prompts to this length
    positional: str = "rope"  # "rope" (C3) | "sincos" (the 2B model's fixed 3D table)
    rope_grid: str = "linspace"  # "linspace": the 1.0 pipeline | "slice": integer positions (1.5 pipeline)
    rope_theta: float = 10000.0
    base_size: tuple[int, int] = (60, 90)
    spatial_interpolation_scale: float = 1.875  # sincos only: spatial coordinates are divided by it
    temporal_interpolation_scale: float = 1.0
    ofs_embed_dim: int = 0  # CogVideoX 1.5 image-to-video: an extra embedding of the "ofs" scalar
    pooled_text: bool = False  # minivid's option: the masked mean of the text embeddings added to the modulation
    ff_inner_dim: int | None = None  # default 4 d
    norm_eps: float = 1e-5
    norm_affine: bool = True
    attention_bias: bool = True
    patch_bias: bool = True
    zero_init: bool = True
    attention_backend: str = "sdpa"

    def __post_init__(self):
        check_positive_ints(self, ("in_channels", "patch_size", "patch_size_t", "heads", "head_dim", "depth",
                                   "time_embed_dim", "text_dim", "max_text_len"))
        if self.out_channels is None:
            self.out_channels = self.in_channels
        check_positive_ints(self, ("out_channels",))
        check_choice("positional", self.positional, POSITIONALS)
        check_choice("rope_grid", self.rope_grid, ROPE_GRIDS)
        check_choice("attention_backend", self.attention_backend, BACKENDS)
        self.base_size = tuple(int(v) for v in self.base_size)
        if len(self.base_size) != 2 or min(self.base_size) < self.patch_size:
            raise ValueError(f"base_size={self.base_size} must be an (H, W) pair of latent sizes >= patch_size="
                             f"{self.patch_size}")
        if self.positional == "rope" and self.head_dim % 16:
            raise ValueError(f"head_dim={self.head_dim} must be a multiple of 16 for the 3D RoPE (C3 splits it "
                             "d/4 : 3d/8 : 3d/8 into even slices); allowed: 16, 32, 48, 64, ...")
        if self.positional == "sincos" and self.dim % 16:
            raise ValueError(f"heads * head_dim = {self.dim} must be a multiple of 16 for the 3D sin-cos table "
                             "(d/4 for time, 3d/8 for each spatial axis)")
        if self.ofs_embed_dim and self.ofs_embed_dim != self.time_embed_dim:
            raise ValueError(f"ofs_embed_dim={self.ofs_embed_dim} must equal time_embed_dim={self.time_embed_dim} "
                             "(the two embeddings are added), or be 0 (no ofs embedding)")
        if self.ff_inner_dim is not None:
            check_positive_ints(self, ("ff_inner_dim",))

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def patch_volume(self) -> int:
        return self.patch_size_t * self.patch_size * self.patch_size


# ---------------------------------------------------------------------------------------------------
# Positions (C3)
# ---------------------------------------------------------------------------------------------------


def resize_crop_region(grid: tuple[int, int], base_width: int, base_height: int
                       ) -> tuple[tuple[int, int], tuple[int, int]]:
    """The CogVideoX 1.0 pipeline's fit of a token grid (n_h, n_w) into the base grid (base_height, base_width):
    scale it to touch the base grid's limiting side, centre it; returns ((top, left), (bottom, right))."""
    h, w = grid
    if h / w > base_height / base_width:
        rh, rw = base_height, int(round(base_height / h * w))
    else:
        rw, rh = base_width, int(round(base_width / w * h))
    top, left = int(round((base_height - rh) / 2.0)), int(round((base_width - rw) / 2.0))
    return (top, left), (top + rh, left + rw)


def cogvideox_rope_positions(n_t: int, n_h: int, n_w: int, grid: str = "slice",
                             base_grid: tuple[int, int] | None = None) -> torch.Tensor:
    """(n_t·n_h·n_w, 3) float64 (t, h, w) coordinates of the video tokens in (t, h, w) row-major order (C3).

    ``grid="slice"``: integer coordinates. ``grid="linspace"``: t integer, h and w rescaled to the base token
    grid ``base_grid`` = (rows, cols) as the CogVideoX 1.0 pipeline does (module docstring)."""
    check_choice("grid", grid, ROPE_GRIDS)
    t = torch.arange(n_t, dtype=torch.float64)
    if grid == "slice":
        h, w = torch.arange(n_h, dtype=torch.float64), torch.arange(n_w, dtype=torch.float64)
    else:
        if base_grid is None:
            raise ValueError("grid='linspace' needs base_grid=(rows, cols), the token grid of the training size")
        (top, left), (bottom, right) = resize_crop_region((n_h, n_w), base_grid[1], base_grid[0])
        # float32 as the pipeline computes them (the endpoints are not exact multiples)
        h = torch.linspace(top, bottom * (n_h - 1) / n_h, n_h, dtype=torch.float32).double()
        w = torch.linspace(left, right * (n_w - 1) / n_w, n_w, dtype=torch.float32).double()
    tt, hh, ww = torch.meshgrid(t, h, w, indexing="ij")
    return torch.stack([tt.flatten(), hh.flatten(), ww.flatten()], dim=1)


def cogvideox_rope(n_t: int, n_h: int, n_w: int, head_dim: int, grid: str = "slice",
                   base_grid: tuple[int, int] | None = None, theta: float = 10000.0) -> RotaryEmbedding:
    """C3: the 3D RoPE of the video tokens, d/4 channels for t, 3d/8 each for h and w (the release's split)."""
    if head_dim % 16:
        raise ValueError(f"head_dim={head_dim} must be a multiple of 16 (d/4 : 3d/8 : 3d/8 in even slices)")
    dims = (head_dim // 4, head_dim // 8 * 3, head_dim // 8 * 3)
    return RotaryEmbedding(cogvideox_rope_positions(n_t, n_h, n_w, grid, base_grid), dims, theta)


def cogvideox_sincos(n_t: int, n_h: int, n_w: int, dim: int, spatial_scale: float = 1.875,
                     temporal_scale: float = 1.0) -> torch.Tensor:
    """The 2B model's fixed 3D sin-cos table (n_t·n_h·n_w, dim): d/4 channels encode t / temporal_scale, the
    other 3d/4 the (w, h) coordinates divided by spatial_scale (first half w, second half h)."""
    d_t = dim // 4
    pt = sincos_1d(torch.arange(n_t, dtype=torch.float64) / temporal_scale, d_t)  # (n_t, d/4)
    ps = sincos_2d(torch.arange(n_h, dtype=torch.float64) / spatial_scale,
                   torch.arange(n_w, dtype=torch.float64) / spatial_scale, dim - d_t)  # (n_h·n_w, 3d/4)
    return torch.cat([pt[:, None].expand(n_t, n_h * n_w, d_t), ps[None].expand(n_t, n_h * n_w, dim - d_t)],
                     dim=-1).reshape(n_t * n_h * n_w, dim)


class _SkipTextRope:
    """Applies a RoPE to the last N tokens of (B, H, L + N, D) queries / keys: the text tokens are not rotated."""

    def __init__(self, rope: RotaryEmbedding, text_len: int):
        self.rope, self.text_len = rope, text_len

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = self.text_len
        return torch.cat([x[..., :n, :], self.rope(x[..., n:, :])], dim=-2)


# ---------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------


class ExpertAdaLN(nn.Module):
    r"""C4: one LayerNorm, two experts. From the timestep embedding e, ``linear(SiLU(e))`` gives six d-vectors:
    (shift, scale, gate) for the vision tokens and (shift, scale, gate) for the text tokens; each group of tokens
    is normalised by the same LayerNorm and modulated by its own (1 + scale, shift). Returns both modulated
    groups and both gates (B, 1, d)."""

    def __init__(self, cond_dim: int, dim: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.linear = nn.Linear(cond_dim, 6 * dim)
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)

    def forward(self, video: torch.Tensor, text: torch.Tensor, emb: torch.Tensor):
        shift, scale, g, t_shift, t_scale, t_g = self.linear(F.silu(emb))[:, None].chunk(6, dim=-1)
        return (self.norm(video) * (1 + scale) + shift, self.norm(text) * (1 + t_scale) + t_shift, g, t_g)


class ExpertBlock(nn.Module):
    """One CogVideoX block: expert AdaLN -> 3D full attention with QK-norm over [text, video] -> gated residuals;
    expert AdaLN -> one feed-forward for all tokens -> gated residuals (C4, C5)."""

    def __init__(self, dim: int, heads: int, head_dim: int, cond_dim: int, ff_inner: int, eps: float = 1e-5,
                 affine: bool = True, qkv_bias: bool = True, backend: str = "sdpa"):
        super().__init__()
        self.norm1 = ExpertAdaLN(cond_dim, dim, eps, affine)
        self.attn = Attention(dim, heads, head_dim, qkv_bias=qkv_bias, qk_norm=True, backend=backend)
        self.norm2 = ExpertAdaLN(cond_dim, dim, eps, affine)
        self.mlp = MLP(dim, ff_inner)

    def forward(self, video: torch.Tensor, text: torch.Tensor, emb: torch.Tensor, rope=None,
                key_padding_mask: torch.Tensor | None = None, fuse=None) -> tuple[torch.Tensor, torch.Tensor]:
        n_text = text.shape[1]
        hv, ht, g, t_g = self.norm1(video, text, emb)
        if fuse is not None:  # T7 [code]: Tora's fuser on the normalised video tokens, before the attention
            hv = fuse(hv)
        a = self.attn(torch.cat([ht, hv], dim=1), key_padding_mask=key_padding_mask, rope=rope)  # C5
        video, text = video + g * a[:, n_text:], text + t_g * a[:, :n_text]
        hv, ht, g, t_g = self.norm2(video, text, emb)
        f = self.mlp(torch.cat([ht, hv], dim=1))
        return video + g * f[:, n_text:], text + t_g * f[:, :n_text]


class ExpertTransformer(Model):
    """CogVideoX's expert transformer (C2-C5): ``model(x, t, text, text_mask=None, ofs=None)``; see the module
    docstring."""

    config_class = ExpertTransformerConfig

    def __init__(self, config: ExpertTransformerConfig | None = None, **fields):
        super().__init__(config, **fields)
        c = self.config
        d = c.dim
        self.patch_embed = nn.Linear(c.in_channels * c.patch_volume, d, bias=c.patch_bias)  # C2
        self.text_proj = nn.Linear(c.text_dim, d)
        self.time_embed = TimestepEmbedding(c.time_embed_dim, freq_dim=d)
        self.ofs_embed = TimestepEmbedding(c.ofs_embed_dim, freq_dim=c.ofs_embed_dim) if c.ofs_embed_dim else None
        self.text_pool = None
        if c.pooled_text:  # minivid's option: zero-initialised, so the model starts as one without it
            self.text_pool = nn.Linear(c.text_dim, c.time_embed_dim)
            nn.init.zeros_(self.text_pool.weight)
            nn.init.zeros_(self.text_pool.bias)
        ff = c.ff_inner_dim or 4 * d
        self.blocks = nn.ModuleList(ExpertBlock(d, c.heads, c.head_dim, c.time_embed_dim, ff, c.norm_eps,
                                                c.norm_affine, c.attention_bias, c.attention_backend)
                                    for _ in range(c.depth))
        self.norm_final = nn.LayerNorm(d, eps=c.norm_eps, elementwise_affine=c.norm_affine)
        self.norm_out_linear = nn.Linear(c.time_embed_dim, 2 * d)  # (shift, scale) of the output AdaLN
        self.norm_out = nn.LayerNorm(d, eps=c.norm_eps, elementwise_affine=c.norm_affine)
        self.proj_out = nn.Linear(d, c.patch_volume * c.out_channels)
        self._cache: dict = {}
        self.gradient_checkpointing = False  # recompute each block in the backward pass (memory for time; training)
        if c.zero_init:
            for m in [b.norm1.linear for b in self.blocks] + [b.norm2.linear for b in self.blocks] + [
                    self.norm_out_linear, self.proj_out]:
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def token_grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(n_t, n_h, n_w) of a latent clip; a clear error when a side does not divide by its patch size."""
        c = self.config
        for name, v, p, pname in (("frames", frames, c.patch_size_t, "patch_size_t"),
                                  ("height", height, c.patch_size, "patch_size"),
                                  ("width", width, c.patch_size, "patch_size")):
            if v < 1 or v % p:
                raise ValueError(f"latent {name}={v} must be a positive multiple of {pname}={p}")
        return frames // c.patch_size_t, height // c.patch_size, width // c.patch_size

    def positions(self, n_t: int, n_h: int, n_w: int, like: torch.Tensor):
        """The RoPE (C3) or the sin-cos table of a token grid, cached per grid."""
        c = self.config
        key = (c.positional, n_t, n_h, n_w, like.device, like.dtype)
        if key not in self._cache:
            if c.positional == "rope":
                base = (c.base_size[0] // c.patch_size, c.base_size[1] // c.patch_size)
                self._cache[key] = cogvideox_rope(n_t, n_h, n_w, c.head_dim, c.rope_grid, base,
                                                  c.rope_theta).to(like.device)
            else:
                self._cache[key] = cogvideox_sincos(n_t, n_h, n_w, c.dim, c.spatial_interpolation_scale,
                                                    c.temporal_interpolation_scale).to(like)
        return self._cache[key]

    def video_token_mask(self, frame_mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """C6: the (B, n_t·n_h·n_w) key mask of the video tokens from a (B, T) mask of real latent frames (True =
        a real frame, False = padding at the end of a shorter clip or an image). A temporal patch (``patch_size_t``
        frames) must be all real or all padding."""
        c = self.config
        b, frames = x.shape[0], x.shape[2]
        if not isinstance(frame_mask, torch.Tensor) or tuple(frame_mask.shape) != (b, frames):
            got = tuple(frame_mask.shape) if isinstance(frame_mask, torch.Tensor) else type(frame_mask).__name__
            raise ValueError(f"frame_mask must be a (B, T) = ({b}, {frames}) mask of the real latent frames, "
                             f"got {got}")
        m = frame_mask.to(device=x.device, dtype=torch.bool).reshape(b, frames // c.patch_size_t, c.patch_size_t)
        if not bool((m.all(-1) | ~m.any(-1)).all()):
            raise ValueError(f"frame_mask splits a temporal patch of patch_size_t={c.patch_size_t} frames into real "
                             "and padded frames: pad clips to a multiple of patch_size_t")
        if not bool(m.any(-1).any(-1).all()):
            raise ValueError("frame_mask has a clip without any real frame")
        n_h, n_w = x.shape[3] // c.patch_size, x.shape[4] // c.patch_size
        return m[..., 0].repeat_interleave(n_h * n_w, dim=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None = None,
                ofs: torch.Tensor | None = None, frame_mask: torch.Tensor | None = None, fuser=None,
                motion_features=None) -> torch.Tensor:
        c = self.config
        if x.ndim != 5 or x.shape[1] != c.in_channels:
            raise ValueError(f"x must be latents (B, C={c.in_channels}, T, H, W), got shape {tuple(x.shape)}")
        b = x.shape[0]
        if text is None or text.ndim != 3 or text.shape[0] != b or text.shape[2] != c.text_dim:
            got = None if text is None else tuple(text.shape)
            raise ValueError(f"text must be text embeddings (B={b}, L, text_dim={c.text_dim}), got {got}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"t must have shape (B,) = ({b},), got {tuple(t.shape)}")
        if text_mask is not None and tuple(text_mask.shape) != tuple(text.shape[:2]):
            raise ValueError(f"text_mask must have shape (B, L) = {tuple(text.shape[:2])}, got "
                             f"{tuple(text_mask.shape)}")
        if (ofs is not None) != (self.ofs_embed is not None):
            raise ValueError("ofs is needed exactly when the model has an ofs embedding (ofs_embed_dim="
                             f"{c.ofs_embed_dim}); got ofs={'a tensor' if ofs is not None else None}")
        n_t, n_h, n_w = self.token_grid(*x.shape[2:])
        v_mask = None if frame_mask is None else self.video_token_mask(frame_mask, x)  # C6, checked before any work
        fusers = resolve_fusers(fuser, motion_features, c.depth)  # T7, checked before any work
        emb = self.time_embed(t.to(torch.float32)).to(x.dtype)
        if self.ofs_embed is not None:
            ofs = torch.as_tensor(ofs, device=x.device).reshape(-1).expand(b)
            emb = emb + self.ofs_embed(ofs.to(torch.float32)).to(x.dtype)
        if self.text_pool is not None:
            emb = emb + self.text_pool(pooled_text(text, text_mask)).to(x.dtype)
        patches = rearrange(x, "b c (n_t s) (n_h p) (n_w q) -> b (n_t n_h n_w) (c s p q)", s=c.patch_size_t,
                            p=c.patch_size, q=c.patch_size)
        video = self.patch_embed(patches)  # C2: (B, N, d)
        text_tokens = self.text_proj(text)  # (B, L, d)
        pos = self.positions(n_t, n_h, n_w, video)
        rope = None
        if c.positional == "sincos":
            video = video + pos
        else:
            rope = _SkipTextRope(pos, text.shape[1])  # C3: video tokens only
        mask = None
        if text_mask is not None or frame_mask is not None:  # keys: real text tokens and real frames (C6)
            t_mask = (torch.ones(text.shape[:2], dtype=torch.bool, device=x.device) if text_mask is None
                      else text_mask.to(device=x.device, dtype=torch.bool))
            if v_mask is None:
                v_mask = torch.ones(b, video.shape[1], dtype=torch.bool, device=x.device)
            mask = torch.cat([t_mask, v_mask], dim=1)
        for block, fn, f_i in zip(self.blocks, fusers, motion_features or [None] * c.depth):
            fuse = None if fn is None else grid_fuse_hook(fn, f_i, "b (n_t n_h n_w) d", "b n_t n_h n_w d", n_t=n_t,
                                                          n_h=n_h, n_w=n_w)  # T7 on the video tokens' grid
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint

                video, text_tokens = checkpoint(block, video, text_tokens, emb, rope, mask, fuse, use_reentrant=False)
            else:
                video, text_tokens = block(video, text_tokens, emb, rope, mask, fuse)
        h = self.norm_final(video)
        shift, scale = self.norm_out_linear(F.silu(emb))[:, None].chunk(2, dim=-1)
        h = self.norm_out(h) * (1 + scale) + shift
        out = self.proj_out(h)  # (B, N, C_out·q·p·p)
        return rearrange(out, "b (n_t n_h n_w) (c s p q) -> b c (n_t s) (n_h p) (n_w q)", n_t=n_t, n_h=n_h,
                         s=c.patch_size_t, p=c.patch_size, q=c.patch_size)


def pooled_text(text: torch.Tensor, text_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The mean of the text embeddings (B, L, D) over the real tokens (``text_mask`` (B, L), True = real; all tokens
    when None) -> (B, D); a caption without any real token gives zeros."""
    if text_mask is None:
        return text.mean(dim=1)
    w = text_mask.to(device=text.device, dtype=text.dtype)[..., None]  # (B, L, 1)
    return (text * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


# ---------------------------------------------------------------------------------------------------
# diffusers' CogVideoXTransformer3DModel -> ExpertTransformer
# ---------------------------------------------------------------------------------------------------

_REQUIRED = {"flip_sin_to_cos": True, "freq_shift": 0, "activation_fn": "gelu-approximate",
             "timestep_activation_fn": "silu", "use_learned_positional_embeddings": False}


def config_from_diffusers(cfg: dict) -> ExpertTransformerConfig:
    """An :class:`ExpertTransformerConfig` from a diffusers ``CogVideoXTransformer3DModel`` config dict; a
    ValueError naming the field when the release uses something minivid does not represent."""
    for key, want in _REQUIRED.items():
        if key in cfg and cfg[key] != want:
            raise ValueError(f"diffusers config field {key}={cfg[key]!r} is not supported by minivid's "
                             f"ExpertTransformer (it implements {key}={want!r})")
    if cfg.get("attention_out_bias", True) is not True:
        raise ValueError("diffusers config field attention_out_bias=False is not supported (minivid's attention "
                         "output projection has a bias)")
    p_t = cfg.get("patch_size_t") or 1
    return ExpertTransformerConfig(
        in_channels=cfg.get("in_channels", 16), out_channels=cfg.get("out_channels") or cfg.get("in_channels", 16),
        patch_size=cfg.get("patch_size", 2), patch_size_t=p_t, heads=cfg.get("num_attention_heads", 30),
        head_dim=cfg.get("attention_head_dim", 64), depth=cfg.get("num_layers", 30),
        time_embed_dim=cfg.get("time_embed_dim", 512), text_dim=cfg.get("text_embed_dim", 4096),
        max_text_len=cfg.get("max_text_seq_length", 226),
        positional="rope" if cfg.get("use_rotary_positional_embeddings", False) else "sincos",
        rope_grid="slice" if p_t > 1 else "linspace",  # as the 1.5 / 1.0 pipelines compute it
        base_size=(cfg.get("sample_height", 60), cfg.get("sample_width", 90)),
        spatial_interpolation_scale=cfg.get("spatial_interpolation_scale", 1.875),
        temporal_interpolation_scale=cfg.get("temporal_interpolation_scale", 1.0),
        ofs_embed_dim=cfg.get("ofs_embed_dim") or 0, norm_eps=cfg.get("norm_eps", 1e-5),
        norm_affine=cfg.get("norm_elementwise_affine", True), attention_bias=cfg.get("attention_bias", True),
        patch_bias=cfg.get("patch_bias", True) if p_t == 1 else True, zero_init=False)


def _diffusers_state(source) -> tuple[dict, dict]:
    """(config dict, state dict) of a diffusers ``CogVideoXTransformer3DModel`` instance or ``save_pretrained`` folder."""
    return diffusers_state(source, "CogVideoXTransformer3DModel")


def _map_diffusers_key(key: str) -> str | None:
    """diffusers parameter name -> minivid's (to_k / to_v are fused into to_kv separately: None)."""
    rules = [("patch_embed.proj.", "patch_embed."), ("patch_embed.text_proj.", "text_proj."),
             ("time_embedding.linear_1.", "time_embed.mlp.0."), ("time_embedding.linear_2.", "time_embed.mlp.2."),
             ("ofs_embedding.linear_1.", "ofs_embed.mlp.0."), ("ofs_embedding.linear_2.", "ofs_embed.mlp.2."),
             ("norm_out.linear.", "norm_out_linear."), ("norm_out.norm.", "norm_out."),
             ("norm_final.", "norm_final."), ("proj_out.", "proj_out.")]
    for src, dst in rules:
        if key.startswith(src):
            return dst + key[len(src):]
    if key.startswith("transformer_blocks."):
        _, i, rest = key.split(".", 2)
        sub = [("norm1.", "norm1."), ("norm2.", "norm2."), ("attn1.to_q.", "attn.to_q."),
               ("attn1.norm_q.", "attn.q_norm."), ("attn1.norm_k.", "attn.k_norm."),
               ("attn1.to_out.0.", "attn.to_out."), ("ff.net.0.proj.", "mlp.fc1."), ("ff.net.2.", "mlp.fc2.")]
        for src, dst in sub:
            if rest.startswith(src):
                return f"blocks.{i}.{dst}{rest[len(src):]}"
        if rest.startswith(("attn1.to_k.", "attn1.to_v.")):
            return None
    raise ValueError(f"diffusers weight {key!r} has no counterpart in minivid's ExpertTransformer")


@torch.no_grad()
def from_diffusers(source, attention_backend: str = "sdpa") -> ExpertTransformer:
    """Build an :class:`ExpertTransformer` from a diffusers ``CogVideoXTransformer3DModel`` (an instance, or a
    folder written by its ``save_pretrained``) with every weight copied; a ValueError names any config field
    or weight minivid cannot represent. The result runs in float32 on the CPU (move it with ``.to``)."""
    cfg, src = _diffusers_state(source)
    config = config_from_diffusers(cfg)
    config.attention_backend = attention_backend
    model = ExpertTransformer(config)
    new: dict[str, torch.Tensor] = {}
    for key, value in src.items():
        if key == "patch_embed.pos_embedding":
            continue  # the sin-cos table: a buffer recomputed from the grid
        mapped = _map_diffusers_key(key)
        if mapped is None:
            continue
        if key == "patch_embed.proj.weight" and value.ndim == 4:  # Conv2d (d, C, p, p) -> Linear (d, C·p·p)
            value = value.reshape(value.shape[0], -1)
        new[mapped] = value
    for i in range(config.depth):
        for kind in ("weight", "bias"):
            k, v = f"transformer_blocks.{i}.attn1.to_k.{kind}", f"transformer_blocks.{i}.attn1.to_v.{kind}"
            if k in src and v in src:
                new[f"blocks.{i}.attn.to_kv.{kind}"] = torch.cat([src[k], src[v]], dim=0)
    return copy_mapped_state(model, new, "ExpertTransformer", strict=True)


__all__ = ["ExpertTransformerConfig", "ExpertTransformer", "ExpertAdaLN", "ExpertBlock", "cogvideox_rope",
           "cogvideox_rope_positions", "cogvideox_sincos", "resize_crop_region", "config_from_diffusers",
           "from_diffusers", "POSITIONALS", "ROPE_GRIDS"]
