r"""CogVideoX's 3D causal VAE (C1): 8x spatial and 4x temporal compression, |z| = 16 latent channels,
4k+1 frames -> k+1 latent frames, temporally causal everywhere.

**C1.** :math:`V \in \mathbb R^{3\times(4k+1)\times H\times W} \to z \in \mathbb R^{16\times(k+1)\times H/8\times W/8}`.
Every temporal convolution is a :class:`~minivid.autoencoders.blocks.CausalConv3d` (padding on the past
side only, repeating the first frame **[code]**), the temporal downsamplers keep the first frame on its
own, and every GroupNorm is per frame. Hence

- latent frame :math:`i` depends on input frames :math:`\le 4i` only (frame 0 alone makes latent 0, so an
  image is a 1-frame video with a 1-frame latent), and decoded frame :math:`t` on latent frames
  :math:`\le \lceil t/4\rceil`;
- a long clip can be encoded or decoded in chunks of frames, each chunk seeing the cached tail of the
  previous one, with exactly the result of the whole-clip pass (:meth:`CausalVAE.encode` with
  ``chunk_frames``); the official VAE does this for long clips (diffusers' ``_encode``/``_decode`` loop
  with ``conv_cache``).

As in CogVideoX **[code]**, the encoder halves time at its two finest transitions (cheap: the expensive
high-resolution levels then run on fewer frames) and the decoder doubles it at its two coarsest. The
official VAE takes 8N+1 frames (its chunk loop works on 8 frames); this one takes any 4k+1.

Small-scale options, not in CogVideoX (off by default): ``shortcuts=True`` adds DC-AE's parameter-free residual
paths (block means around every downsampler, repetition around every upsampler, channel-group means into the
latent and repeats out of it), so that training starts from a block-means code and learns the residual; and an
image (1 frame) costs a 2D convolution per layer (:class:`~minivid.autoencoders.blocks.CausalConv3d`), which makes
images-first training cheap (the zoo's ``causal-vae`` recipe; bench/results/measurements.md has the figures).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..nn import ModelConfig
from .base import DiagonalGaussian, VideoAutoencoder
from .blocks import Decoder, Encoder, check_video_shape, log2_exact, make_transitions


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    """[0, 1 + size), [1 + size, 1 + 2 size), ... covering range(n): the first chunk also holds frame 0."""
    bounds = [0] + list(range(1 + size, n, size)) + [n]
    return list(zip(bounds[:-1], bounds[1:]))


@dataclass
class CausalVAEConfig(ModelConfig):
    """C1 defaults: f_s = 8, f_t = 4, |z| = 16. ``channel_mult`` has log2(max(f_s, f_t)) + 1 entries
    (None: (1, 2, 2, 4, 4, ...) cut to length). CogVideoX uses 128 channels, (1, 2, 2, 4), 3 blocks."""

    in_channels: int = 3
    latent_channels: int = 16
    spatial_factor: int = 8
    temporal_factor: int = 4
    channels: int = 64
    channel_mult: tuple[int, ...] | None = None
    num_res_blocks: int = 2
    norm_groups: int = 32
    init_logvar: float | None = None  # posterior's initial log-variance (VideoAutoencoder.init_posterior)
    shortcuts: bool = False  # DC-AE's parameter-free residual paths around every resampler and the latent (not C1)

    def __post_init__(self):
        s = log2_exact(self.spatial_factor, "spatial_factor")
        t = log2_exact(self.temporal_factor, "temporal_factor")
        if self.channel_mult is None:
            self.channel_mult = ((1, 2, 2) + (4,) * 16)[: max(s, t) + 1]
        self.channel_mult = tuple(self.channel_mult)
        if self.latent_channels < 1 or self.num_res_blocks < 1:
            raise ValueError(f"latent_channels={self.latent_channels} and num_res_blocks={self.num_res_blocks} "
                             "must be >= 1")


class CausalVAE(VideoAutoencoder):
    """CogVideoX's causal 3D VAE (C1). ``encode(video, chunk_frames=None)`` -> :class:`DiagonalGaussian`
    over (B, |z|, k+1, H/f_s, W/f_s); ``decode(z, chunk_frames=None)`` -> (B, 3, 4k+1, H, W)."""

    config_class = CausalVAEConfig

    def __init__(self, config: CausalVAEConfig | None = None, **fields):
        super().__init__(config, **fields)
        c = self.config
        self.downsample = (c.temporal_factor, c.spatial_factor, c.spatial_factor)
        self.latent_channels = c.latent_channels
        common = dict(channels=c.channels, channel_mult=c.channel_mult, num_res_blocks=c.num_res_blocks,
                      causal=True, temporal_kernel=3, norm_groups=c.norm_groups, per_frame_norm=True,
                      shortcuts=c.shortcuts)
        self.encoder = Encoder(c.in_channels, 2 * c.latent_channels,
                               transitions=make_transitions(c.spatial_factor, c.temporal_factor, True), **common)
        self.decoder = Decoder(c.in_channels, c.latent_channels,
                               transitions=make_transitions(c.spatial_factor, c.temporal_factor, False), **common)
        self.init_posterior(c.init_logvar)

    # ------------------------------------------------------------------ shapes (C1)
    def valid_frames(self, n: int = 5) -> list[int]:
        """C1: the first ``n`` frame counts this VAE takes: 1, 1 + f_t, 1 + 2 f_t, ..."""
        return [1 + self.downsample[0] * k for k in range(n)]

    def check_input(self, shape: tuple[int, ...]) -> None:
        """C1: raise a ValueError (before any work) for a shape the VAE cannot take: a frame count other than
        f_t k + 1 (the message lists the valid counts and the two nearest), or H, W not divisible by f_s."""
        f_t, f_s, _ = self.downsample

        def frames_error(t: int) -> str | None:
            if t < 1 or (t - 1) % f_t:
                below = max(1, 1 + f_t * ((t - 1) // f_t))  # the nearest valid counts (never below 1 frame)
                return (f"the causal VAE takes f_t*k + 1 frames ({', '.join(map(str, self.valid_frames()))}, ...), "
                        f"got {t}; use {below} or {below + f_t}")
            return None

        check_video_shape(shape, self.config.in_channels, f_s, frames_error)

    def latent_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """C1: (B, 3, f_t k + 1, H, W) -> (B, |z|, k + 1, H/f_s, W/f_s)."""
        self.check_input(tuple(input_shape))
        b, _, t, h, w = input_shape
        f_t, f_s, _ = self.downsample
        return (b, self.latent_channels, (t - 1) // f_t + 1, h // f_s, w // f_s)

    def num_frames(self, latent_frames: int) -> int:
        """C1: the number of frames that ``latent_frames`` latent frames decode to, f_t (n - 1) + 1."""
        return self.downsample[0] * (latent_frames - 1) + 1

    # ------------------------------------------------------------------ encode / decode
    def encode(self, video: torch.Tensor, chunk_frames: int | None = None) -> DiagonalGaussian:
        """C1: (B, 3, f_t k + 1, H, W) -> q(z | V) over (B, |z|, k + 1, H/f_s, W/f_s).

        ``chunk_frames`` (a multiple of f_t): encode the first 1 + chunk_frames frames, then
        ``chunk_frames`` at a time, carrying every causal convolution's past in a cache; the result equals
        the whole-clip pass up to float rounding.
        """
        self.check_input(tuple(video.shape))
        if chunk_frames is None:
            return DiagonalGaussian.from_moments(self.encoder(video))
        f_t = self.downsample[0]
        if chunk_frames < f_t or chunk_frames % f_t:
            raise ValueError(f"chunk_frames={chunk_frames} must be a positive multiple of f_t={f_t}")
        cache: dict = {}
        moments = []
        for lo, hi in _chunks(video.shape[2], chunk_frames):  # [0, 1 + c), [1 + c, 1 + 2c), ...
            moments.append(self.encoder(video[:, :, lo:hi], cache))  # (B, 2|z|, k_chunk, h, w)
        return DiagonalGaussian.from_moments(torch.cat(moments, dim=2))

    def decode(self, z: torch.Tensor, chunk_frames: int | None = None, **conditions) -> torch.Tensor:
        """C1: (B, |z|, n, h, w) -> (B, 3, f_t (n - 1) + 1, h f_s, w f_s). ``chunk_frames``: decode latent
        frames 1 + chunk_frames first, then chunk_frames at a time, with the cache (same result)."""
        if conditions:
            raise ValueError(f"the causal VAE takes no decoding conditions, got {sorted(conditions)}")
        if z.ndim != 5 or z.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents (B, {self.latent_channels}, n, h, w), got {tuple(z.shape)}")
        if chunk_frames is None:
            return self.decoder(z)
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames={chunk_frames} must be >= 1")
        cache: dict = {}
        out = []
        for lo, hi in _chunks(z.shape[2], chunk_frames):
            out.append(self.decoder(z[:, :, lo:hi], cache))  # (B, 3, frames of the chunk, H, W)
        return torch.cat(out, dim=2)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.last_layer
