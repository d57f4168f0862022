"""Autoencoders: the losses shared by every autoencoder (``losses``); the PVDM triplane autoencoder and
the 3D VAEs live in their own modules of this package."""

from .losses import (
    PatchDiscriminator2D,
    PatchDiscriminator3D,
    PerceptualLoss,
    adaptive_gan_weight,
    hinge_d_loss,
    hinge_g_loss,
)

__all__ = [
    "PerceptualLoss",
    "PatchDiscriminator2D",
    "PatchDiscriminator3D",
    "hinge_d_loss",
    "hinge_g_loss",
    "adaptive_gan_weight",
]
