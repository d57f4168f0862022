r"""The interface every autoencoder in minivid shares, so the latent-diffusion models and the full system
can swap them (PVDM's triplane autoencoder, the 2D per-frame VAE, CogVideoX's causal 3D VAE, Reducio's
VAE, later Tora's motion VAE).

- ``encode(video) -> LatentDistribution``: a :class:`DiagonalGaussian` (VAEs) or a :class:`DiracLatent`
  (deterministic encoders such as PVDM's); ``.sample(generator)``, ``.mode()``, ``.kl()``.
- ``decode(z, **conditions) -> video``: conditions are whatever the decoder needs besides the latent
  (Reducio: the content frame); ``conditions(video)`` extracts them from the input video for training.
- ``downsample``: ``(f_t, f_s, f_s)``; ``latent_shape(input_shape)`` gives the latent's shape for an
  input shape (B, C, T, H, W) without running the model.
- ``forward(video)`` = encode, sample, decode with the video's own conditions: ``(reconstruction, posterior)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..nn import Model


class DiagonalGaussian:
    r"""q(z | x) = N(mean, diag(exp(logvar))) over a latent tensor (B, C, ...).

    ``kl()`` is KL(q || N(0, I)) summed over every latent element, one value per batch item (the
    convention of latent-diffusion VAEs, whose KL weights such as 1e-6 assume a sum).
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        if mean.shape != logvar.shape:
            raise ValueError(f"mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} must have the same shape")
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> "DiagonalGaussian":
        """Split an encoder output with 2C channels (dim 1) into mean and log-variance."""
        if moments.shape[1] % 2:
            raise ValueError(f"moments must have an even number of channels, got {moments.shape[1]}")
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None:
            noise = torch.randn_like(self.mean)
        else:
            noise = torch.randn(self.mean.shape, generator=generator, device=generator.device,
                                dtype=self.mean.dtype).to(self.mean.device)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        kl = 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)
        return kl.flatten(1).sum(1)

    def nll(self, z: torch.Tensor) -> torch.Tensor:
        """−log q(z | x) summed over latent elements, per batch item."""
        return 0.5 * ((z - self.mean).pow(2) / self.logvar.exp() + self.logvar + math.log(2 * math.pi)).flatten(1).sum(1)


class DiracLatent:
    """A deterministic latent (PVDM's triplanes): ``sample() == mode() == value``, ``kl() == 0``. ``value``
    may be a tensor or a tuple of tensors (one per plane); its first tensor sets batch size and device."""

    def __init__(self, value: Any):
        self.value = value

    def _first(self) -> torch.Tensor:
        return self.value[0] if isinstance(self.value, (tuple, list)) else self.value

    def sample(self, generator: torch.Generator | None = None) -> Any:
        return self.value

    def mode(self) -> Any:
        return self.value

    def kl(self) -> torch.Tensor:
        t = self._first()
        return torch.zeros(t.shape[0], device=t.device, dtype=t.dtype)


class VideoAutoencoder(Model):
    """Base class of minivid's autoencoders; subclasses set ``config_class`` (the model contract of
    :class:`minivid.nn.Model`: built from a config, saved with ``minivid.save_model``), implement ``encode``,
    ``decode`` and ``latent_shape`` and set ``downsample = (f_t, f_s, f_s)`` and ``latent_channels``."""

    downsample: tuple[int, int, int] = (1, 1, 1)
    latent_channels: int = 0

    def encode(self, video: torch.Tensor) -> DiagonalGaussian | DiracLatent:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, z: Any, **conditions) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def latent_shape(self, input_shape: tuple[int, ...]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def init_posterior(self, init_logvar: float | None) -> None:
        """Set the initial bias of the encoder's log-variance channels (``encoder.conv_out``'s second half).

        With the default init a VAE's posterior starts at std ~1, as large as the latent signal, so the decoder
        first learns to ignore z and PSNR stalls at the average frame; ``init_logvar=-6`` (std 0.05) lets it use z
        from the first step (bench/results/measurements.md). None keeps the default init (the papers')."""
        if init_logvar is None:
            return
        conv = self.encoder.conv_out
        conv = getattr(conv, "conv", conv)  # a CausalConv3d wraps its Conv3d
        with torch.no_grad():
            conv.bias[self.latent_channels:] = float(init_logvar)

    def conditions(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """What ``decode`` needs from the input video besides the latent (none by default)."""
        return {}

    @property
    def last_layer(self) -> torch.Tensor | None:
        """The decoder's final weight, for the adaptive GAN weight (None: use a fixed weight)."""
        return None

    def forward(self, video: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None):
        posterior = self.encode(video)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z, **self.conditions(video)), posterior

    @torch.no_grad()
    def reconstruct(self, video: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction (the posterior mode), as used for PSNR/SSIM."""
        return self.forward(video, sample=False)[0]
