r"""A trained autoencoder as the latent space of a diffusion model: encode clips once, scale them to unit variance,
decode samples back to pixels.

Latent diffusion (Stable Diffusion, Latte, CogVideoX) trains the denoiser on :math:`z = s\,\mathrm{mode}(q(z|x))`
with a scale s chosen so that z has unit variance (SD's 0.18215 is :math:`1/\mathrm{std}` measured on its VAE's
latents): the noise schedules assume data of roughly unit scale. :meth:`LatentSpace.fit` measures s on a set of
clips; :meth:`~LatentSpace.encode` and :meth:`~LatentSpace.decode` work in batches without gradients.
"""

from __future__ import annotations

import torch

from ..utils.validation import check_int, check_number
from .base import VideoAutoencoder


class LatentSpace:
    """``autoencoder`` with the latent scale ``scale``: ``encode(x) = scale * mode(q(z|x))``, ``decode(z) =
    decoder(z / scale)`` clamped to [-1, 1]. Both run ``batch_size`` clips at a time, without gradients."""

    def __init__(self, autoencoder: VideoAutoencoder, scale: float = 1.0, batch_size: int = 64):
        self.autoencoder = autoencoder
        self.scale = check_number("scale", scale, 0.0, strict_minimum=True)
        self.batch_size = check_int("batch_size", batch_size, 1)

    @classmethod
    @torch.no_grad()
    def fit(cls, autoencoder: VideoAutoencoder, videos: torch.Tensor, batch_size: int = 64) -> "LatentSpace":
        """The scale that gives the posterior means of ``videos`` unit standard deviation: 1 / std(z)."""
        space = cls(autoencoder, 1.0, batch_size)
        std = space.encode(videos).std().item()
        if not std > 0:
            raise ValueError(f"the latents of these videos have std {std}: a scale cannot be fitted")
        space.scale = 1.0 / std
        return space

    @torch.no_grad()
    def encode(self, videos: torch.Tensor) -> torch.Tensor:
        """(N, C, T, H, W) in [-1, 1] -> scaled latents (the posterior mode), ``batch_size`` clips at a time."""
        self.autoencoder.eval()
        n, dev = self.batch_size, _device(self.autoencoder)
        return torch.cat([self.autoencoder.encode(videos[i:i + n].to(dev)).mode() * self.scale
                          for i in range(0, len(videos), n)])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, **conditions: torch.Tensor) -> torch.Tensor:
        """Scaled latents (N, ...) -> videos clamped to [-1, 1]. ``conditions`` (e.g. Reducio's ``content``
        frames, (N, ...)) are sliced with the latents."""
        self.autoencoder.eval()
        n, dev = self.batch_size, _device(self.autoencoder)
        return torch.cat([self.autoencoder.decode(latents[i:i + n].to(dev) / self.scale,
                                                  **{k: v[i:i + n].to(dev) for k, v in conditions.items()}
                                                  ).clamp(-1, 1)
                          for i in range(0, len(latents), n)])


def _device(module: torch.nn.Module) -> torch.device:
    """Where a module's weights are (inputs are moved there: a space on CUDA takes clips made on the CPU)."""
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
