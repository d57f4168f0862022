r"""A small pixel-space video denoiser: a factorised (2+1)-D U-Net.

This is the model of notebook 01's training cell and, on the zoo's ``vae2d`` latents, of the zoo's
``latent-unet``: the simplest video diffusion model that learns MiniSprites on a CPU in minutes. It is not from
one of the five papers; it is the baseline they improve on (PVDM, Reducio and CogVideoX move diffusion into a
compressed latent space; Latte and CogVideoX replace the U-Net by a transformer). The full system (notebook 08)
replaces it.

Structure, for a video x of shape (B, C, T, H, W):

- every residual block (:class:`~minivid.nn.AdaGNResBlock` with ``video=True``) applies a *spatial* 3x3
  convolution to each frame (kernel (1, 3, 3)) and then a *temporal* convolution over 3 frames at each pixel
  (kernel (3, 1, 1)), so it costs about as much as a 2-D U-Net on the frames while still mixing information
  across time;
- the timestep (and, optionally, a class label) enters every residual block as a scale and shift of its
  normalised activations (AdaGN);
- down-sampling halves H and W only; T is kept, so any frame count works;
- at the lowest resolution, self-attention over the pixels of each frame and then over the frames at each
  pixel (the divided space-time attention of TimeSformer / Latte's variant 3, L2's spatial and temporal
  patterns), through the attention backend switch.

Output: the prediction (eps, v or x0, as trained), or twice the channels with ``learn_sigma`` (D6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ..nn import (BACKENDS, AdaGNResBlock, Attention, Model, ModelConfig, TimestepEmbedding, check_labels,
                  spatial_attention, temporal_attention)
from ..utils.validation import check_choice, check_int, check_int_tuple, check_number, check_positive_ints


@dataclass
class VideoUNetConfig(ModelConfig):
    in_channels: int = 3
    channels: int = 32  # width of the first level; level i has channels * channel_mult[i]
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    heads: int = 4  # of the space-time attention at the lowest resolution
    num_classes: int = 0  # 0: unconditional; else class-conditional, label == num_classes is the null class (CFG)
    learn_sigma: bool = False
    dropout: float = 0.0
    norm_groups: int = 8
    attention_backend: str = "sdpa"

    def __post_init__(self):
        self.channel_mult = check_int_tuple("channel_mult", self.channel_mult)
        check_positive_ints(self, ("in_channels", "channels", "num_res_blocks", "heads", "norm_groups"))
        check_int("num_classes", self.num_classes, 0, what="an int >= 0 (0 = unconditional)")
        check_number("dropout", self.dropout, 0.0, 1.0)
        check_choice("attention_backend", self.attention_backend, BACKENDS)
        for m in self.channel_mult:
            if (self.channels * m) % self.norm_groups:
                raise ValueError(f"channels * mult = {self.channels * m} must be divisible by "
                                 f"norm_groups={self.norm_groups}")
        if (self.channels * self.channel_mult[-1]) % self.heads:
            raise ValueError(f"heads={self.heads} must divide the lowest-level width "
                             f"{self.channels * self.channel_mult[-1]}")


class SpaceTimeAttention(nn.Module):
    """At the U-Net's lowest resolution: self-attention over the pixels of each frame, then over the frames at each
    pixel (L2's spatial and temporal patterns), each pre-normalised by GroupNorm, with a residual, and an output
    projection that starts at zero (so the layer starts as the identity)."""

    def __init__(self, channels: int, heads: int, groups: int, backend: str = "sdpa"):
        super().__init__()
        self.norm_s, self.norm_t = nn.GroupNorm(groups, channels), nn.GroupNorm(groups, channels)
        self.attn_s = Attention(channels, heads, backend=backend, zero_init_out=True)
        self.attn_t = Attention(channels, heads, backend=backend, zero_init_out=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[3]
        s = rearrange(self.norm_s(x), "b c t h w -> b t (h w) c")  # z (B, n_f, t, d) of L2
        x = x + rearrange(spatial_attention(self.attn_s, s), "b t (h w) c -> b c t h w", h=h)
        tt = rearrange(self.norm_t(x), "b c t h w -> b t (h w) c")
        return x + rearrange(temporal_attention(self.attn_t, tt), "b t (h w) c -> b c t h w", h=h)


class VideoUNet(Model):
    """``model(x, t, y=None) -> prediction``; x (B, C, T, H, W), t (B,) timestep indices, y (B,) labels.

    H and W must be divisible by 2 ** (len(channel_mult) - 1); any T works."""

    config_class = VideoUNetConfig

    def __init__(self, config: VideoUNetConfig | None = None, **fields):
        super().__init__(config, **fields)
        cfg = self.config
        c0, groups = cfg.channels, cfg.norm_groups
        emb_dim = 4 * c0

        def res(c_in: int, c_out: int) -> AdaGNResBlock:
            return AdaGNResBlock(c_in, c_out, emb_dim, groups, cfg.dropout, video=True)

        self.time_embed = TimestepEmbedding(emb_dim, freq_dim=c0)
        self.label_embed = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes else None
        self.stem = nn.Conv3d(cfg.in_channels, c0, (1, 3, 3), padding=(0, 1, 1))

        self.down = nn.ModuleList()
        skips, c = [c0], c0
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(res(c, c0 * mult))
                c = c0 * mult
                skips.append(c)
            if level < len(cfg.channel_mult) - 1:
                self.down.append(nn.Conv3d(c, c, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
                skips.append(c)
        self.mid1 = res(c, c)
        self.mid_attn = SpaceTimeAttention(c, cfg.heads, groups, cfg.attention_backend)
        self.mid2 = res(c, c)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(res(c + skips.pop(), c0 * mult))
                c = c0 * mult
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=(1, 2, 2), mode="nearest"))
                self.up.append(nn.Conv3d(c, c, (1, 3, 3), padding=(0, 1, 1)))
        out_channels = cfg.in_channels * (2 if cfg.learn_sigma else 1)
        self.head = nn.Sequential(nn.GroupNorm(groups, c), nn.SiLU(), nn.Conv3d(c, out_channels, (1, 3, 3), padding=(0, 1, 1)))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    @property
    def downsample_factor(self) -> int:
        """How much the U-Net halves H and W in all: 2 ** (len(channel_mult) - 1)."""
        return 2 ** (len(self.config.channel_mult) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must have shape (B, {cfg.in_channels}, T, H, W), got {tuple(x.shape)}")
        f = self.downsample_factor
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"H and W must be divisible by {f} for this config, got {tuple(x.shape[-2:])}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        emb = self.time_embed(t)
        if self.label_embed is not None:
            if y is None:
                y = torch.full_like(t, cfg.num_classes)  # the null class: unconditional
            check_labels(y, x.shape[0], cfg.num_classes)
            emb = emb + self.label_embed(y)
        elif y is not None:
            raise ValueError("this model is unconditional (num_classes=0) but a label y was given")

        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, AdaGNResBlock) else layer(h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, AdaGNResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.head(h)
