"""Autoencoders. Shared here: the interface every autoencoder implements (``base``: ``VideoAutoencoder``,
``DiagonalGaussian``, ``DiracLatent``), the losses (``losses``) and the trainer (``training``). The PVDM
triplane autoencoder and the 3D VAEs live in their own modules of this package."""

from .base import DiagonalGaussian, DiracLatent, VideoAutoencoder
from .losses import (
    PatchDiscriminator2D,
    PatchDiscriminator3D,
    PerceptualLoss,
    adaptive_gan_weight,
    hinge_d_loss,
    hinge_g_loss,
)
from .pvdm import PVDMAutoencoder, PVDMAutoencoderConfig
from .training import AutoencoderTrainer

__all__ = [
    "VideoAutoencoder",
    "DiagonalGaussian",
    "DiracLatent",
    "AutoencoderTrainer",
    "PVDMAutoencoder",
    "PVDMAutoencoderConfig",
    "PerceptualLoss",
    "PatchDiscriminator2D",
    "PatchDiscriminator3D",
    "hinge_d_loss",
    "hinge_g_loss",
    "adaptive_gan_weight",
]
