r"""A small pixel-space video denoiser: a factorised (2+1)-D U-Net.

This is the model of ``python -m minivid demo`` and of notebook 01's training cell: the simplest video
diffusion model that learns MiniSprites on a CPU in minutes. It is not from one of the five papers; it is
the baseline they improve on (PVDM, Reducio and CogVideoX move diffusion into a compressed latent space;
Latte and CogVideoX replace the U-Net by a transformer). The full system (notebook 08) replaces it.

Structure, for a video x of shape (B, C, T, H, W):

- every residual block applies a *spatial* 3x3 convolution to each frame (kernel (1, 3, 3)) and then a
  *temporal* convolution over 3 frames at each pixel (kernel (3, 1, 1)), so it costs about as much as a
  2-D U-Net on the frames while still mixing information across time;
- the timestep (and, optionally, a class label) enters every residual block as a scale and shift of its
  normalised activations (AdaGN);
- down-sampling halves H and W only; T is kept, so any frame count works;
- at the lowest resolution, self-attention over the pixels of each frame and then over the frames at each
  pixel (the divided space-time attention of TimeSformer / Latte's variant 3, see issue 5).

Output: the prediction (eps, v or x0, as trained), or twice the channels with ``learn_sigma`` (D6).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..nn import TimestepEmbedding, check_labels


@dataclass
class VideoUNetConfig:
    in_channels: int = 3
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_heads: int = 4
    num_classes: int | None = None  # class-conditional when set; label == num_classes is the null class (CFG)
    learn_sigma: bool = False
    dropout: float = 0.0
    groups: int = 8

    def __post_init__(self):
        self.channel_mults = tuple(self.channel_mults)
        for name in ("in_channels", "base_channels", "num_res_blocks", "attention_heads", "groups"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive integer")
        if not self.channel_mults or any((not isinstance(m, int)) or m < 1 for m in self.channel_mults):
            raise ValueError(f"channel_mults={self.channel_mults!r} must be a non-empty tuple of positive integers")
        for m in self.channel_mults:
            if (self.base_channels * m) % self.groups:
                raise ValueError(
                    f"base_channels * mult = {self.base_channels * m} must be divisible by groups={self.groups}"
                )
        if (self.base_channels * self.channel_mults[-1]) % self.attention_heads:
            raise ValueError(f"attention_heads={self.attention_heads} must divide the lowest-level width")

    def to_dict(self) -> dict:
        return asdict(self)


class ResBlock(nn.Module):
    """GN -> SiLU -> spatial conv -> AdaGN(t) -> SiLU -> temporal conv + spatial conv, plus a skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv3d(c_in, c_out, (1, 3, 3), padding=(0, 1, 1))
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.temporal = nn.Conv3d(c_out, c_out, (3, 1, 1), padding=(1, 0, 0))
        self.conv2 = nn.Conv3d(c_out, c_out, (1, 3, 3), padding=(0, 1, 1))
        nn.init.zeros_(self.conv2.weight)  # the block starts as the identity (through the skip)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, T, H, W)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.temporal(self.dropout(F.silu(h)))
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class SpaceTimeAttention(nn.Module):
    """Self-attention over the pixels of each frame, then over the frames at each pixel (residual each)."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm_s, self.norm_t = nn.GroupNorm(groups, channels), nn.GroupNorm(groups, channels)
        self.qkv_s, self.qkv_t = nn.Linear(channels, 3 * channels), nn.Linear(channels, 3 * channels)
        self.out_s, self.out_t = nn.Linear(channels, channels), nn.Linear(channels, channels)
        for out in (self.out_s, self.out_t):
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)

    def _attend(self, tokens: torch.Tensor, qkv: nn.Linear, out: nn.Linear) -> torch.Tensor:
        q, k, v = rearrange(qkv(tokens), "n l (three h d) -> three n h l d", three=3, h=self.heads)
        o = F.scaled_dot_product_attention(q, k, v)
        return out(rearrange(o, "n h l d -> n l (h d)"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        s = rearrange(self.norm_s(x), "b c t h w -> (b t) (h w) c")  # spatial tokens per frame
        x = x + rearrange(self._attend(s, self.qkv_s, self.out_s), "(b t) (h w) c -> b c t h w", b=b, h=h)
        tt = rearrange(self.norm_t(x), "b c t h w -> (b h w) t c")  # temporal tokens per pixel
        return x + rearrange(self._attend(tt, self.qkv_t, self.out_t), "(b h w) t c -> b c t h w", b=b, h=h, w=w)


class VideoUNet(nn.Module):
    """``model(x, t, y=None) -> prediction``; x (B, C, T, H, W), t (B,) timestep indices, y (B,) labels.

    H and W must be divisible by 2 ** (len(channel_mults) - 1); any T works."""

    def __init__(self, config: VideoUNetConfig | None = None, **kwargs):
        super().__init__()
        self.config = cfg = config if config is not None else VideoUNetConfig(**kwargs)
        c0 = cfg.base_channels
        emb_dim = 4 * c0
        self.time_embed = TimestepEmbedding(emb_dim, freq_dim=c0)
        self.label_embed = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes else None
        self.stem = nn.Conv3d(cfg.in_channels, c0, (1, 3, 3), padding=(0, 1, 1))

        self.down = nn.ModuleList()
        skips, c = [c0], c0
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                self.down.append(ResBlock(c, c0 * mult, emb_dim, cfg.groups, cfg.dropout))
                c = c0 * mult
                skips.append(c)
            if level < len(cfg.channel_mults) - 1:
                self.down.append(nn.Conv3d(c, c, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
                skips.append(c)
        self.mid1 = ResBlock(c, c, emb_dim, cfg.groups, cfg.dropout)
        self.mid_attn = SpaceTimeAttention(c, cfg.attention_heads, cfg.groups)
        self.mid2 = ResBlock(c, c, emb_dim, cfg.groups, cfg.dropout)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), c0 * mult, emb_dim, cfg.groups, cfg.dropout))
                c = c0 * mult
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=(1, 2, 2), mode="nearest"))
                self.up.append(nn.Conv3d(c, c, (1, 3, 3), padding=(0, 1, 1)))
        out_channels = cfg.in_channels * (2 if cfg.learn_sigma else 1)
        self.head = nn.Sequential(nn.GroupNorm(cfg.groups, c), nn.SiLU(), nn.Conv3d(c, out_channels, (1, 3, 3), padding=(0, 1, 1)))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.config.channel_mults) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must have shape (B, {cfg.in_channels}, T, H, W), got {tuple(x.shape)}")
        f = self.spatial_factor
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
            raise ValueError("this model is unconditional (num_classes=None) but a label y was given")

        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.head(h)
