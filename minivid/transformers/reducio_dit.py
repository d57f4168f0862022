r"""Reducio-DiT: a PixArt-α-style DiT on Reducio's extremely compressed video latents (R4-R7).

A Reducio latent z (B, |z|, T/f_t, H/f_s, W/f_s) (R1, R2; |z| = 16) is denoised by a DiT with

- **patches**: :class:`~minivid.transformers.embeddings.PatchEmbed` (p_t × p_s × p_s tubes; ``tubelet`` and
  ``patch_size``) plus the fixed 2D sin-cos table of each frame (L1);
- **AdaLN-single (R5, L5)**: c = MLP(sinusoid(t)), one shared regression E = Linear(SiLU(c)) and a learned table per
  block (PixArt-α); a new model's gates are zero (so every block starts as the identity) and its decoder is zero;
- **R6 size and aspect-ratio embedding** (``size_embedding=True``, PixArt-α's micro-conditioning): the video's
  (H, W) and its aspect ratio H/W each go through a sinusoid and an MLP (:class:`SizeEmbedding`), and the result is
  **added to the timestep embedding** c before the adaLN-single regression (and the final layer), so the size
  reaches the network only through c;
- **R4 cross-attention** :math:`z_i = \mathrm{CAttn}(z_i, e)` in every block, after the self-attention and before
  the feed-forward (:class:`~minivid.nn.DiTBlock` with ``context_dim``; ungated, un-normalised, as PixArt-α), to the
  condition tokens :math:`e = [e_{img}, e_p]` with :math:`e_{img} = \mathrm{MLP}(e_s) \oplus \mathrm{MLP}(e_c)`
  (OpenCLIP and SD-VAE features of the content frame V_{T/2}) and :math:`e_p = \mathrm{MLP}(\mathrm{T5}(prompt))`.
  The encoders and those MLPs live with the conditioning code: this model takes the tokens, in ``cond_dim``;
- **R5 attention**: the image DiT's 2D self-attention becomes **3D full attention** over all (t, h, w) tokens of the
  clip with **no new parameters** (``attention="full"``, default); time enters through a 1D RoPE of the frame index,
  which has no parameters and is the identity at frame 0, so a one-frame clip is exactly an image.
  ``attention="factorised"`` is the alternative of R5: a temporal DiT block (temporal self-attention + MLP, its own
  adaLN-single table, RoPE over frames) added after each spatial block. ``attention="spatial"`` is the **image DiT**
  itself: every frame attends only to itself, so a clip is a batch of independent images.
  :meth:`ReducioDiT.from_image_dit` turns an image DiT into either video model (for ``"full"`` the very same
  parameters; for ``"factorised"`` plus the new temporal blocks, whose output projections start at zero so the new
  model still computes the image DiT frame by frame);
- **R7 Deepstack** (``deepstack=True``, high resolution): the content-image tokens, a grid (B, h_c, w_c, cond_dim),
  are split into 4 interleaved 2×2 sub-grids (:func:`deepstack_groups`: group 2a + b holds the tokens at rows
  a, a+2, ... and columns b, b+2, ..., each h_c/2 × w_c/2), and cross-attention layer i attends to group i % 4
  concatenated with the other condition tokens (the text): each layer sees a quarter of the content tokens.
- **output**: PixArt's final layer (LayerNorm, (shift, scale) = table + c, linear) and the inverse patchify.

Call: ``model(z, t, cond, cond_mask=None, content=None, size=None)``

- ``z`` (B, C, T, H, W) noisy latents, ``t`` (B,) timesteps (or a scalar);
- ``cond`` (B, L, cond_dim) condition tokens and ``cond_mask`` (B, L) (True = a real token, e.g. not T5 padding);
- ``content`` (B, h_c, w_c, cond_dim) or None: a grid of content-image tokens. Without Deepstack all of them are
  put in front of ``cond`` in every layer (so ``e = [e_img, e_p]`` can be passed as content + cond, or already
  concatenated as cond alone); with Deepstack it is required and layer i gets ``[group_{i % 4}, cond]``;
- ``size`` (B, 2) or an (H, W) pair: the video's height and width in pixels, required when ``size_embedding``.

Returns (B, C_out, T, H, W), C_out = 2C with ``learn_sigma``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ..nn import BACKENDS, AdaLNSingle, DiTBlock, Model, ModelConfig, TimestepEmbedding, modulate, rope_1d, sincos_2d
from ..nn.blocks import zero_adaln_single_gates_
from ..utils.validation import check_choice, check_positive_ints, is_number
from .embeddings import PatchDecoder, PatchEmbed
from .stdit import _check_mask, _check_timesteps, _check_tokens, embed_scalars

ATTENTIONS = ("full", "factorised", "spatial")  # R5: 3D full (default) | added temporal layers | the image DiT
DEEPSTACK_GROUPS = 4  # R7: 2x2 interleaved sub-grids


@dataclass
class ReducioDiTConfig(ModelConfig):
    """Configuration of a :class:`ReducioDiT`. ``in_channels``: the Reducio latent's |z| (R1); ``patch_size`` /
    ``tubelet``: p_s / p_t of the patch embedding; ``cond_dim``: width of the condition tokens e (R4)."""

    in_channels: int = 16
    patch_size: int = 1
    tubelet: int = 1
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    cond_dim: int = 64
    attention: str = "full"  # R5
    size_embedding: bool = False  # R6
    deepstack: bool = False  # R7
    learn_sigma: bool = False  # L8 / D6: 2x output channels
    qk_norm: bool = False
    attention_backend: str = "sdpa"
    freq_dim: int = 256
    rope_theta: float = 10000.0

    def __post_init__(self):
        check_positive_ints(self, ("in_channels", "patch_size", "tubelet", "dim", "depth", "heads", "cond_dim",
                                   "freq_dim"))
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        if self.dim % 4:
            raise ValueError(f"dim={self.dim} must be divisible by 4 (2D sin-cos position embedding)")
        check_choice("attention", self.attention, ATTENTIONS)
        if self.attention != "spatial" and (self.dim // self.heads) % 2:
            raise ValueError(f"attention={self.attention!r} needs an even head_dim for the temporal RoPE, got "
                             f"dim/heads = {self.dim // self.heads}")
        if not is_number(self.mlp_ratio) or not int(self.dim * self.mlp_ratio) >= 1:
            raise ValueError(f"mlp_ratio={self.mlp_ratio!r} must be a positive number with int(dim * mlp_ratio) >= 1 "
                             f"(the MLP's hidden width; dim={self.dim})")
        for name in ("size_embedding", "deepstack", "learn_sigma", "qk_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: expected True or False")
        check_choice("attention_backend", self.attention_backend, BACKENDS)

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels


def deepstack_groups(content: torch.Tensor) -> torch.Tensor:
    """R7: a content token grid (B, h_c, w_c, c) -> its 4 interleaved 2×2 sub-grids (B, 4, h_c/2 · w_c/2, c); group
    2a + b holds the tokens at rows a, a + 2, ... and columns b, b + 2, ... (row-major within the group)."""
    if content.ndim != 4 or content.shape[1] % 2 or content.shape[2] % 2:
        raise ValueError(f"content must be a token grid (B, h_c, w_c, cond_dim) with even h_c and w_c for the 2x2 "
                         f"Deepstack groups, got {tuple(content.shape)}")
    return rearrange(content, "b (h a) (w q) c -> b (a q) (h w) c", a=2, q=2)


class SizeEmbedding(nn.Module):
    """R6 (PixArt-α's micro-conditioning): size (B, 2) = (H, W) -> (B, dim), added to the timestep embedding.

    H and W each go through the timestep sinusoid and one shared MLP to d_s = dim // 3 channels (PixArt's
    ``csize_embedder``), the aspect ratio H / W through another to d_a = dim - 2 d_s (``ar_embedder``); the three
    are concatenated [E_s(H), E_s(W), E_a(H/W)]. For PixArt's d = 1152 that is 384 each."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        if dim < 3:
            raise ValueError(f"dim={dim} must be >= 3 for the size embedding (H, W and H/W each get dim // 3)")
        self.size_dim = dim // 3
        self.size_mlp = TimestepEmbedding(self.size_dim, freq_dim)  # E_s, shared by H and W
        self.ar_mlp = TimestepEmbedding(dim - 2 * self.size_dim, freq_dim)  # E_a

    def forward(self, size: torch.Tensor) -> torch.Tensor:
        hw = embed_scalars(self.size_mlp, size.reshape(-1))  # (B·2, d_s): E_s(H), E_s(W), shared MLP
        hw = rearrange(hw, "(b two) d -> b (two d)", two=2)
        ar = embed_scalars(self.ar_mlp, size[:, 0] / size[:, 1])  # E_a(H / W)
        return torch.cat([hw, ar], dim=1)


class ReducioDiT(Model):
    """Reducio-DiT (R4-R7); see the module docstring for the call ``model(z, t, cond, cond_mask=None, content=None,
    size=None)``."""

    config_class = ReducioDiTConfig

    def __init__(self, config: ReducioDiTConfig | None = None, **fields):
        super().__init__(config, **fields)
        cfg = self.config
        d = cfg.dim
        self.patch_embed = PatchEmbed(cfg.in_channels, d, cfg.patch_size, cfg.tubelet)
        self.t_embed = TimestepEmbedding(d, cfg.freq_dim)
        self.size_embed = SizeEmbedding(d, cfg.freq_dim) if cfg.size_embedding else None  # R6
        self.shared_modulation = AdaLNSingle(d, d, 2)  # R5: AdaLN-single, E = Linear(SiLU(c))
        kind = "full" if cfg.attention == "full" else "spatial"  # R5: the same parameters, 2D or 3D attention
        block = dict(modulation="adaln-single", cond_dim=d, mlp_ratio=cfg.mlp_ratio, qk_norm=cfg.qk_norm,
                     backend=cfg.attention_backend)
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.heads, kind, context_dim=cfg.cond_dim, **block)  # R4: CAttn
                                    for _ in range(cfg.depth))
        if cfg.attention == "factorised":  # R5's alternative: added temporal layers
            self.temporal_blocks = nn.ModuleList(DiTBlock(d, cfg.heads, "temporal", **block) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_table = nn.Parameter(torch.randn(2, d) / d**0.5)  # PixArt: final (shift, scale) = table + c
        self.decoder = PatchDecoder(d, cfg.out_channels, cfg.patch_size, cfg.tubelet)
        self._init_weights()
        self._rope_cache: dict = {}

    @property
    def all_blocks(self) -> list[DiTBlock]:
        return list(self.blocks) + list(getattr(self, "temporal_blocks", []))

    def _init_weights(self) -> None:
        """PixArt-α: Xavier linear layers, N(0, 0.02) for the timestep / size MLPs and E; then zero gates, zero
        cross-attention outputs and a zero decoder, so a new model predicts zeros."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        mlps = [self.t_embed] + ([self.size_embed.size_mlp, self.size_embed.ar_mlp] if self.size_embed else [])
        for mlp in mlps:
            nn.init.normal_(mlp.mlp[0].weight, std=0.02)
            nn.init.normal_(mlp.mlp[2].weight, std=0.02)
        nn.init.normal_(self.shared_modulation.linear.weight, std=0.02)
        zero_adaln_single_gates_(self.shared_modulation, self.all_blocks)
        for block in self.blocks:
            nn.init.zeros_(block.cross_attn.to_out.weight)
            nn.init.zeros_(block.cross_attn.to_out.bias)
        for p in self.decoder.parameters():
            nn.init.zeros_(p)

    # ------------------------------------------------------------------------------------------- conditions

    def condition(self, t: torch.Tensor, size: torch.Tensor | None = None) -> torch.Tensor:
        """c = MLP(sinusoid(t)) (+ R6: the size and aspect-ratio embedding), (B, d): what the adaLN-single
        regression and the final layer see."""
        c = embed_scalars(self.t_embed, t)
        if self.size_embed is not None:
            c = c + self.size_embed(size)  # R6: added to the timestep embedding before the adaLN-single MLP
        return c

    def _check_size(self, size, batch: int, device) -> torch.Tensor | None:
        if not self.config.size_embedding:
            if size is not None:
                raise ValueError("size was given but this model has no size embedding (size_embedding=False)")
            return None
        if size is None:
            raise ValueError("this model has a size embedding (size_embedding=True, R6): pass size, the videos' (H, W) "
                             "in pixels, as a (B, 2) tensor or an (H, W) pair")
        size = torch.as_tensor(size, dtype=torch.float32, device=device)
        if size.shape == (2,):
            size = size.expand(batch, 2)
        if size.shape != (batch, 2) or not bool((size > 0).all()):
            raise ValueError(f"size must be positive (H, W) sizes of shape (B, 2) = ({batch}, 2) or an (H, W) pair, "
                             f"got shape {tuple(size.shape)}")
        return size

    def contexts(self, cond: torch.Tensor, cond_mask: torch.Tensor | None = None,
                 content: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The (context, mask) of each cross-attention layer (R4, R7): [content tokens, cond] for every layer, or
        with Deepstack [group_{i % 4} of the content, cond] for layer i."""
        cfg, b = self.config, cond.shape[0]
        if content is None:
            if cfg.deepstack:
                raise ValueError("this model uses Deepstack (deepstack=True, R7): pass content, the content-image "
                                 "token grid (B, h_c, w_c, cond_dim)")
            return [(cond, cond_mask)] * cfg.depth
        if not isinstance(content, torch.Tensor) or content.ndim != 4 or content.shape[0] != b \
                or content.shape[-1] != cfg.cond_dim:
            got = tuple(content.shape) if isinstance(content, torch.Tensor) else type(content).__name__
            raise ValueError(f"content must be a content-image token grid (B={b}, h_c, w_c, cond_dim={cfg.cond_dim}), "
                             f"got {got}")
        groups = deepstack_groups(content) if cfg.deepstack else rearrange(content, "b h w c -> b 1 (h w) c")
        out = []
        for k in range(groups.shape[1]):
            ctx = torch.cat([groups[:, k], cond], dim=1)  # R4: e = [e_img, e_p]; R7: one group per layer
            mask = None
            if cond_mask is not None:
                ones = torch.ones(b, groups.shape[2], dtype=torch.bool, device=cond.device)
                mask = torch.cat([ones, cond_mask.to(torch.bool)], dim=1)
            out.append((ctx, mask))
        return [out[i % len(out)] for i in range(cfg.depth)]  # R7: layer i takes group i % 4

    def _ropes(self, n_f: int, t: int):
        """R5: the parameter-free temporal positions, a 1D RoPE of the frame index: over the n_f·t tokens of full
        attention (identity at frame 0) and over the n_f frames of a temporal block."""
        cfg = self.config
        key = (cfg.attention, n_f, t)
        if key not in self._rope_cache:
            frames = torch.arange(n_f).repeat_interleave(t)  # the frame of each (f, p) token
            full = rope_1d(frames, cfg.head_dim, cfg.rope_theta) if cfg.attention == "full" else None
            temporal = rope_1d(n_f, cfg.head_dim, cfg.rope_theta) if cfg.attention == "factorised" else None
            self._rope_cache[key] = (full, temporal)
        return self._rope_cache[key]

    # ------------------------------------------------------------------------------------------- forward

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor | None = None,
                content: torch.Tensor | None = None, size: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if not isinstance(z, torch.Tensor) or z.ndim != 5 or z.shape[1] != cfg.in_channels:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must be Reducio latents (B, C={cfg.in_channels}, T, H, W), got {got}")
        b = z.shape[0]
        t = _check_timesteps(t, b, z.device)
        _check_tokens("cond", cond, b, cfg.cond_dim, "cond_dim")
        _check_mask("cond_mask", cond_mask, "cond", cond)
        size = self._check_size(size, b, z.device)
        contexts = self.contexts(cond, cond_mask, content)
        n_f, n_h, n_w = self.patch_embed.grid(*z.shape[2:])
        h = rearrange(self.patch_embed(z), "b n_f n_h n_w d -> b n_f (n_h n_w) d")
        h = h + sincos_2d(n_h, n_w, cfg.dim).to(h)[None, None]  # L1: the image DiT's spatial table, every frame
        c = self.condition(t, size).to(h.dtype)  # (B, d), R6 inside
        shared = self.shared_modulation(c)  # AdaLN-single: E (B, 6, d)
        rope_full, rope_t = self._ropes(n_f, n_h * n_w)
        for i, block in enumerate(self.blocks):
            ctx, mask = contexts[i]
            h = block(h, shared, rope_full=rope_full, context=ctx, context_mask=mask)  # R5 attention, R4 CAttn
            if cfg.attention == "factorised":
                h = self.temporal_blocks[i](h, shared, rope_t=rope_t)  # R5: the added temporal layer
        h = self.final_norm(h)
        shift, scale = (self.final_table[None] + c[:, None]).unbind(1)
        h = rearrange(modulate(h, shift, scale), "b n_f (n_h n_w) d -> b n_f n_h n_w d", n_h=n_h)
        return self.decoder(h)

    # ------------------------------------------------------------------------------------------- R5

    @classmethod
    @torch.no_grad()
    def from_image_dit(cls, image_model: "ReducioDiT", attention: str = "full") -> "ReducioDiT":
        """R5: a video Reducio-DiT from an image DiT (a :class:`ReducioDiT` with ``attention="spatial"``).

        ``attention="full"``: the same parameters, every one copied; only the attention pattern changes (2D within
        each frame -> 3D over the clip). ``"factorised"``: every parameter copied, plus new temporal blocks whose
        attention and MLP output projections are zero, so the new model still equals the image DiT frame by frame
        until they are trained."""
        if not isinstance(image_model, ReducioDiT) or image_model.config.attention != "spatial":
            got = image_model.config.attention if isinstance(image_model, ReducioDiT) else type(image_model).__name__
            raise ValueError(f"image_model must be an image Reducio-DiT (attention='spatial'), got {got!r}")
        check_choice("attention", attention, ("full", "factorised"))
        model = cls(dataclasses.replace(image_model.config, attention=attention))
        ref = next(image_model.parameters())
        model.to(device=ref.device, dtype=ref.dtype)
        missing, unexpected = model.load_state_dict(image_model.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("temporal_blocks.") for k in missing), (missing, unexpected)
        for block in getattr(model, "temporal_blocks", []):  # the added layers start as the identity
            for layer in (block.attn.to_out, block.mlp.fc2):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        return model.train(image_model.training)
