"""Autoencoders. Shared here: the interface every autoencoder implements (``base``: ``VideoAutoencoder``,
``DiagonalGaussian``, ``DiracLatent``), the losses (``losses``), the trainer (``training``) and the
convolutional building blocks of the VAEs (``blocks``: C1's causal convolution, residual blocks,
resampling, encoder/decoder, compression bookkeeping). The PVDM triplane autoencoder (P1-P6), the per-frame
2D VAE (R2), CogVideoX's causal 3D VAE (C1), the released CogVideoX VAE's layout with ``from_diffusers``
(C1, ``cogvideox_vae``) and Reducio's VAE (R1-R3) live in their own modules;
``latents.LatentSpace`` turns a trained one into a diffusion model's latent space (scaled to unit variance).
Every autoencoder follows the model contract of :mod:`minivid.nn.model` (``minivid.save_model``)."""

from .base import DiagonalGaussian, DiracLatent, VideoAutoencoder
from .blocks import (
    CausalConv3d,
    Conv3dSame,
    Decoder,
    Downsample,
    Encoder,
    FrameConv2d,
    GroupNorm3d,
    ResBlock3D,
    Upsample,
    compression_stats,
)
from .causal_vae import CausalVAE, CausalVAEConfig
from .cogvideox_vae import CogVideoXVAE, CogVideoXVAEConfig
from .cogvideox_vae import from_diffusers as cogvideox_vae_from_diffusers
from .latents import LatentSpace
from .losses import (
    PatchDiscriminator2D,
    PatchDiscriminator3D,
    PerceptualLoss,
    adaptive_gan_weight,
    hinge_d_loss,
    hinge_g_loss,
)
from .pvdm import PVDMAutoencoder, PVDMAutoencoderConfig
from .reducio import ContentFusion, ReducioConfig, ReducioVAE
from .training import AutoencoderTrainer
from .vae2d import VAE2D, VAE2DConfig

__all__ = [
    "VideoAutoencoder",
    "DiagonalGaussian",
    "DiracLatent",
    "AutoencoderTrainer",
    "LatentSpace",
    "PVDMAutoencoder",
    "PVDMAutoencoderConfig",
    "PerceptualLoss",
    "PatchDiscriminator2D",
    "PatchDiscriminator3D",
    "hinge_d_loss",
    "hinge_g_loss",
    "adaptive_gan_weight",
    # C1 / R1-R3: the convolutional VAEs and their blocks
    "CausalConv3d",
    "Conv3dSame",
    "FrameConv2d",
    "GroupNorm3d",
    "ResBlock3D",
    "Downsample",
    "Upsample",
    "Encoder",
    "Decoder",
    "compression_stats",
    "VAE2D",
    "VAE2DConfig",
    "CausalVAE",
    "CausalVAEConfig",
    "CogVideoXVAE",
    "CogVideoXVAEConfig",
    "cogvideox_vae_from_diffusers",
    "ReducioVAE",
    "ReducioConfig",
    "ContentFusion",
]
