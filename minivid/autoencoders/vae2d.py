r"""The per-frame 2D VAE baseline (R2: SD-VAE, f_s = 8, f_t = 1), built from the same blocks as the 3D VAEs
so that the compression table compares like with like.

**R1 with f_t = 1.** :math:`V \in \mathbb R^{3\times T\times H\times W} \to z \in \mathbb R^{|z|\times T\times H/8\times W/8}`:
every frame is encoded and decoded on its own (temporal kernel 1 everywhere, per-frame GroupNorm), as
latent video models that reuse Stable Diffusion's image VAE do. |z| = 4 as in SD/SDXL-VAE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..nn import ModelConfig
from .base import DiagonalGaussian, VideoAutoencoder
from .blocks import Decoder, Encoder, check_video_shape, log2_exact, make_transitions


@dataclass
class VAE2DConfig(ModelConfig):
    """SD-VAE layout: f_s = 8 (three halvings), |z| = 4; SD uses 128 channels, (1, 2, 4, 4), 2 blocks and 2 middle
    blocks. Two options for training from scratch at small budgets, both off by default (SD-VAE's layout and init):

    - ``num_mid_blocks=0`` removes the middle blocks: a shallower net that learns faster at small budgets;
    - ``init_logvar`` sets the initial bias of the posterior's log-variance channels. With the default init the
      posterior starts at std ~1, as large as the latent signal, so the decoder first learns to ignore z; a small
      initial std (``init_logvar=-6``: 0.05) lets it use z from the start.

    Notebook 04's latent space uses both; what each is worth is measured in bench/results/measurements.md."""

    in_channels: int = 3
    latent_channels: int = 4
    spatial_factor: int = 8
    channels: int = 64
    channel_mult: tuple[int, ...] | None = None
    num_res_blocks: int = 2
    norm_groups: int = 32
    num_mid_blocks: int = 2
    init_logvar: float | None = None

    def __post_init__(self):
        s = log2_exact(self.spatial_factor, "spatial_factor")
        if self.channel_mult is None:
            self.channel_mult = ((1, 2, 4) + (4,) * 16)[: s + 1]
        self.channel_mult = tuple(self.channel_mult)
        if self.latent_channels < 1 or self.num_res_blocks < 1:
            raise ValueError(f"latent_channels={self.latent_channels} and num_res_blocks={self.num_res_blocks} "
                             "must be >= 1")
        if self.num_mid_blocks < 0:
            raise ValueError(f"num_mid_blocks={self.num_mid_blocks} must be >= 0")


class VAE2D(VideoAutoencoder):
    """Per-frame VAE: (B, 3, T, H, W) -> q(z) over (B, |z|, T, H/f_s, W/f_s) -> (B, 3, T, H, W).
    Images (B, 3, H, W) are accepted too (as 1-frame videos, returned as images)."""

    config_class = VAE2DConfig

    def __init__(self, config: VAE2DConfig | None = None, **fields):
        super().__init__(config, **fields)
        c = self.config
        self.downsample = (1, c.spatial_factor, c.spatial_factor)
        self.latent_channels = c.latent_channels
        transitions = make_transitions(c.spatial_factor, 1, True)  # spatial only
        common = dict(channels=c.channels, channel_mult=c.channel_mult, num_res_blocks=c.num_res_blocks,
                      transitions=transitions, causal=False, temporal_kernel=1, norm_groups=c.norm_groups,
                      per_frame_norm=True, mid_blocks=c.num_mid_blocks)
        self.encoder = Encoder(c.in_channels, 2 * c.latent_channels, **common)
        self.decoder = Decoder(c.in_channels, c.latent_channels, **common)
        self.init_posterior(c.init_logvar)  # conv_out's channels are (mean, log-variance), |z| each

    def check_input(self, shape: tuple[int, ...]) -> None:
        """R1 with f_t = 1: any T >= 1; raise a ValueError (before any work) if H, W are not divisible by f_s."""
        check_video_shape(shape, self.config.in_channels, self.downsample[1],
                          lambda t: f"need at least one frame, got {t}" if t < 1 else None)

    def latent_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """R1 with f_t = 1: (B, 3, T, H, W) -> (B, |z|, T, H/f_s, W/f_s)."""
        self.check_input(tuple(input_shape))
        b, _, t, h, w = input_shape
        f_s = self.downsample[1]
        return (b, self.latent_channels, t, h // f_s, w // f_s)

    def encode(self, video: torch.Tensor) -> DiagonalGaussian:
        """R1/R2 (f_t = 1): (B, 3, T, H, W) -> q(z | V) over (B, |z|, T, H/f_s, W/f_s), frame by frame."""
        image = video.ndim == 4
        if image:
            video = video[:, :, None]  # (B, 3, 1, H, W)
        self.check_input(tuple(video.shape))
        moments = self.encoder(video)  # (B, 2|z|, T, H/f_s, W/f_s)
        return DiagonalGaussian.from_moments(moments[:, :, 0] if image else moments)

    def decode(self, z: torch.Tensor, **conditions) -> torch.Tensor:
        """R1/R2 (f_t = 1): (B, |z|, T, h, w) -> (B, 3, T, h f_s, w f_s); no conditions."""
        if conditions:
            raise ValueError(f"the 2D VAE takes no decoding conditions, got {sorted(conditions)}")
        image = z.ndim == 4
        if image:
            z = z[:, :, None]
        if z.ndim != 5 or z.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents (B, {self.latent_channels}, T, h, w), got {tuple(z.shape)}")
        x = self.decoder(z)  # (B, 3, T, H, W)
        return x[:, :, 0] if image else x

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.last_layer
