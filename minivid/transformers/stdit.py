r"""ST-DiT: OpenSora's spatial-temporal diffusion transformer, Tora's base (T1-T3), with a hook for a motion fuser.

A video latent x (B, C, T, H, W) (Tora: the 3D VAE's l×h×w×4 latent, T1) and text embeddings (B, L, text_dim) (T5)
go through:

1. **Patches (T1, L1).** :class:`~minivid.transformers.embeddings.PatchEmbed` (OpenSora's patch (1, p, p)) to tokens
   :math:`I \in \mathbb R^{l\times s\times d}`, s = hw/p², viewed as (B, n_f, t, d); plus the fixed 2D sin-cos
   table of each frame and the 1D sin-cos table of the frame index, both added at the input (OpenSora 1.0 adds the
   temporal table just before the first temporal attention; a per-frame constant either way).
2. **Timestep (L5, adaLN-single).** PixArt-α / OpenSora: c = MLP(sinusoid(t)) (B, d), one shared regression
   E = Linear(SiLU(c)) (B, 3k, d) for all blocks, and each block adds its own learned table S_ℓ (k = 2 branches, or 3
   in the ``"factorised"`` layout). The text goes through OpenSora's caption MLP (text_dim -> d -> d, GELU).
3. **Blocks (T2, T3)**, :class:`~minivid.nn.DiTBlock` with a cross-attention branch, on the normalised tokens
   :math:`I_{norm}` whose queries, keys and values are :math:`Q = W_Q I_{norm},\ K = W_K I_{norm},\ V = W_V I_{norm}`
   (T2). ``layout`` chooses whose block structure:

   =============== ==================================================================================================
   ``alternating`` T3 (and OpenSora 1.2's STDiT3): ``depth`` ST-DiT blocks, each a spatial block (spatial
                   self-attention -> cross-attention to the text -> feed-forward) followed by a temporal block (the
                   same with temporal self-attention); 2·depth DiT blocks in ``self.blocks``, [S, T, S, T, ...].
   ``factorised``  OpenSora 1.0's STDiTBlock: one block = spatial self-attention, temporal self-attention,
                   cross-attention, feed-forward (``DiTBlock(kind="factorised")``); ``depth`` blocks. OpenSora 1.0
                   feeds the temporal attention the un-normalised tokens and reuses the spatial gate; here the
                   temporal branch has its own LayerNorm and (shift, scale, gate), as Latte's variant 3 (L3).
   =============== ==================================================================================================

   Self-attention and the feed-forward are pre-normed, modulated and gated (adaLN-single); the cross-attention is
   ungated and un-normalised, keyed by the text with its key-padding mask (``text_mask``, True = a real token),
   as in PixArt-α and OpenSora.
4. **Output (L8).** LayerNorm, (shift, scale) = table + c (PixArt's T2I final layer), a linear decoder, and the
   inverse of the patchify -> (B, C_out, T, H, W), C_out = 2C with ``learn_sigma``.

**Motion fuser hook (T6, T7).** ``forward(..., fuser=..., motion_features=[f_0, ..., f_{depth-1}])`` hands in
Tora's motion-guidance fuser: in ST-DiT block i it is called as ``fuser_i(h, f_i)`` on the block's hidden tokens
``h`` (B, n_f, n_h, n_w, d) after the input norm (and adaLN modulation) and before the self-attention (T7 [code]),
and must return the same shape; its result replaces h as the attention's input. ``fuser`` is one callable used in
every block or a sequence (e.g. an ``nn.ModuleList``) of ``depth`` callables; f_i is passed through untouched
(any shape the fuser understands, T6's per-block motion feature). With the ``alternating`` layout the fuser acts in
block i's temporal DiT block (``fuser_at="temporal"``, default; Tora trains the temporal blocks with the fuser) or
its spatial one (``"spatial"``); with ``factorised`` before the block's spatial attention (its input norm). The
model never imports ``minivid.conditioning``: the fuser is handed to it.

**Channel conditions.** ``cond_channels`` > 0 widens the patch embedding's input: ``forward(..., cond=c)`` with c
(B, cond_channels, T, H, W) concatenated to x along the channels before the patches (the output keeps
``in_channels``). Tora uses it for the first frame's clean latent repeated over every frame (``ToraConfig``'s
``first_frame_channels``), the image condition of SVD and CogVideoX-I2V: OpenSora 1.2 and Tora condition on an image
only through the un-noised first frame (T8), which an ST-DiT sees from another frame only through a temporal block
at the same place followed by a spatial one.

**Initialisation.** A new model predicts zeros: the decoder is zero, and, adaLN-Zero's idea applied to
adaLN-single, every gate row of E and of the tables is zero and every cross-attention's output projection is zero,
so each block starts as the identity.

Call convention (as CogVideoX's expert transformer): ``model(x, t, text, text_mask=None)`` -> (B, C_out, T, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from einops import rearrange
from torch import nn

from ..nn import (BACKENDS, AdaLNSingle, DiTBlock, Model, ModelConfig, TimestepEmbedding, modulate, sincos_1d,
                  sincos_2d, timestep_embedding)
from ..nn.blocks import grid_fuse_hook, resolve_fusers, zero_adaln_single_gates_
from ..utils.validation import check_choice, check_positive_ints, is_number
from .embeddings import PatchDecoder, PatchEmbed

LAYOUTS = ("alternating", "factorised")  # T3 (OpenSora 1.2) | OpenSora 1.0's in-block order
FUSER_SITES = ("temporal", "spatial")


@dataclass
class STDiTConfig(ModelConfig):
    """Configuration of an :class:`STDiT`. ``depth`` counts ST-DiT blocks (one motion feature each): with the
    ``alternating`` layout each is a spatial and a temporal DiT block."""

    in_channels: int = 4
    patch_size: int = 2
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 64
    layout: str = "alternating"  # T3
    fuser_at: str = "temporal"  # which DiT block of an alternating ST-DiT block the fuser acts in
    learn_sigma: bool = False  # L8 / D6: 2x output channels
    qk_norm: bool = False
    attention_backend: str = "sdpa"
    freq_dim: int = 256
    cond_channels: int = 0  # channels of ``cond`` concatenated to x before the patches (0: none)

    def __post_init__(self):
        check_positive_ints(self, ("in_channels", "patch_size", "dim", "depth", "heads", "text_dim", "freq_dim"))
        if isinstance(self.cond_channels, bool) or not isinstance(self.cond_channels, int) or self.cond_channels < 0:
            raise ValueError(f"cond_channels={self.cond_channels!r} must be an integer >= 0")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        if self.dim % 4:
            raise ValueError(f"dim={self.dim} must be divisible by 4 (2D sin-cos position embedding)")
        if not is_number(self.mlp_ratio) or not int(self.dim * self.mlp_ratio) >= 1:
            raise ValueError(f"mlp_ratio={self.mlp_ratio!r} must be a positive number with int(dim * mlp_ratio) >= 1 "
                             f"(the MLP's hidden width; dim={self.dim})")
        check_choice("layout", self.layout, LAYOUTS)
        check_choice("fuser_at", self.fuser_at, FUSER_SITES)
        check_choice("attention_backend", self.attention_backend, BACKENDS)

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def block_kinds(self) -> list[str]:
        """The kind of each DiT block in ``STDiT.blocks`` (T3)."""
        if self.layout == "alternating":
            return ["spatial", "temporal"] * self.depth
        return ["factorised"] * self.depth

    @property
    def fuser_blocks(self) -> list[int]:
        """Index in ``STDiT.blocks`` of the DiT block where ST-DiT block i's fuser acts, for i < depth."""
        if self.layout == "factorised":
            return list(range(self.depth))
        return [2 * i + (self.fuser_at == "temporal") for i in range(self.depth)]


def _check_timesteps(t, batch: int, device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must have shape (B,) = ({batch},) or be a scalar, got {tuple(t.shape)}")
    return t


def embed_scalars(embedding: TimestepEmbedding, values: torch.Tensor) -> torch.Tensor:
    """A :class:`~minivid.nn.TimestepEmbedding` of (B,) values (timesteps, sizes) in the embedding's own dtype: the
    sinusoid in float32, then the MLP in the dtype of its weights (so a float64 model runs in float64)."""
    weight = embedding.mlp[0].weight
    return embedding.mlp(timestep_embedding(values.to(torch.float32), embedding.freq_dim).to(weight.dtype))


def _check_tokens(name: str, tokens, batch: int, width: int, width_name: str) -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3 or tokens.shape[0] != batch \
            or tokens.shape[2] != width:
        got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"{name} must be condition tokens (B={batch}, L, {width_name}={width}), got {got}")


def _check_mask(name: str, mask, tokens_name: str, tokens: torch.Tensor) -> None:
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(tokens.shape[:2]) \
            or mask.dtype.is_floating_point or mask.dtype.is_complex:
        got = (tuple(mask.shape), mask.dtype) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a bool (True = a real token) or 0/1 integer mask of shape (B, L) = "
                         f"{tuple(tokens.shape[:2])} like {tokens_name}, got {got}")


class STDiT(Model):
    """ST-DiT (T1-T3) with Tora's fuser hook; see the module docstring.

    ``forward(x, t, text, text_mask=None, fuser=None, motion_features=None)``: x (B, C, T, H, W) latents, t (B,)
    (or a scalar) timesteps, text (B, L, text_dim), text_mask (B, L) True = real token; returns (B, C_out, T, H, W).
    """

    config_class = STDiTConfig

    def __init__(self, config: STDiTConfig | None = None, **fields):
        super().__init__(config, **fields)
        cfg = self.config
        d = cfg.dim
        self.patch_embed = PatchEmbed(cfg.in_channels + cfg.cond_channels, d, cfg.patch_size)  # T1 / L1
        self.t_embed = TimestepEmbedding(d, cfg.freq_dim)
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        branches = 3 if cfg.layout == "factorised" else 2
        self.shared_modulation = AdaLNSingle(d, d, branches)  # adaLN-single: E = Linear(SiLU(c))
        self.blocks = nn.ModuleList(  # T3: the ST-DiT's DiT blocks, each with cross-attention to the text
            DiTBlock(d, cfg.heads, kind, "adaln-single", d, cfg.mlp_ratio, cfg.qk_norm, cfg.attention_backend,
                     context_dim=d) for kind in cfg.block_kinds)
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_table = nn.Parameter(torch.randn(2, d) / d**0.5)  # PixArt: final (shift, scale) = table + c
        self.decoder = PatchDecoder(d, cfg.out_channels, cfg.patch_size)  # L8
        self._init_weights()

    def _init_weights(self) -> None:
        """OpenSora / PixArt: Xavier linear layers, N(0, 0.02) for the timestep and caption MLPs and E; then zero
        gates (adaLN-single), zero cross-attention outputs and a zero decoder: a new model predicts zeros."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for lin in (self.t_embed.mlp[0], self.t_embed.mlp[2], self.text_proj[0], self.text_proj[2],
                    self.shared_modulation.linear):
            nn.init.normal_(lin.weight, std=0.02)
        zero_adaln_single_gates_(self.shared_modulation, self.blocks)
        for block in self.blocks:
            nn.init.zeros_(block.cross_attn.to_out.weight)
            nn.init.zeros_(block.cross_attn.to_out.bias)
        for p in self.decoder.parameters():
            nn.init.zeros_(p)

    def _fusers(self, fuser, motion_features) -> list[Callable | None]:
        """One fuse(h, f_i) callable per ST-DiT block (T7), or Nones."""
        return resolve_fusers(fuser, motion_features, self.config.depth, "ST-DiT block")

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None = None,
                fuser=None, motion_features: Sequence | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] != cfg.in_channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be latents (B, C={cfg.in_channels}, T, H, W), got {got}")
        if cfg.cond_channels:
            want = (x.shape[0], cfg.cond_channels, *x.shape[2:])
            if not isinstance(cond, torch.Tensor) or tuple(cond.shape) != want:
                got = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
                raise ValueError(f"cond must be channel conditions of shape (B, cond_channels, T, H, W) = {want} "
                                 f"(config.cond_channels={cfg.cond_channels}), got {got}")
            x = torch.cat([x, cond.to(x)], dim=1)
        elif cond is not None:
            raise ValueError("cond was given but config.cond_channels=0: this model takes no channel conditions")
        b = x.shape[0]
        t = _check_timesteps(t, b, x.device)
        _check_tokens("text", text, b, cfg.text_dim, "text_dim")
        _check_mask("text_mask", text_mask, "text", text)
        fusers = self._fusers(fuser, motion_features)
        n_f, n_h, n_w = self.patch_embed.grid(*x.shape[2:])
        z = rearrange(self.patch_embed(x), "b n_f n_h n_w d -> b n_f (n_h n_w) d")  # T1: I (B, l, s, d)
        p_s = sincos_2d(n_h, n_w, cfg.dim).to(z)  # (s, d) spatial position
        p_t = sincos_1d(n_f, cfg.dim).to(z)  # (l, d) temporal position
        z = z + p_s[None, None] + p_t[None, :, None]
        c = embed_scalars(self.t_embed, t).to(z.dtype)  # (B, d)
        shared = self.shared_modulation(c)  # adaLN-single: E (B, 3k, d)
        e = self.text_proj(text)  # OpenSora's caption MLP: (B, L, d)
        site = dict(zip(cfg.fuser_blocks, range(cfg.depth)))  # DiT block index -> ST-DiT block i
        for j, block in enumerate(self.blocks):
            i = site.get(j)
            fuse = None
            if i is not None and fusers[i] is not None:
                fuse = grid_fuse_hook(fusers[i], motion_features[i], "b n_f (n_h n_w) d", "b n_f n_h n_w d", n_h=n_h)
            z = block(z, shared, context=e, context_mask=text_mask, fuse=fuse)  # T2-T3
        h = self.final_norm(z)
        shift, scale = (self.final_table[None] + c[:, None]).unbind(1)  # PixArt's T2I final layer
        h = rearrange(modulate(h, shift, scale), "b n_f (n_h n_w) d -> b n_f n_h n_w d", n_h=n_h)
        return self.decoder(h)  # L8: (B, C_out, T, H, W)
