"""Convolutional diffusion denoisers, each built from the shared layers of :mod:`minivid.nn` (the AdaGN residual
block, attention with its backend switch, timestep embeddings):

- :mod:`~minivid.unets.video_unet`: the factorised (2+1)D video U-Net (notebook 01; the zoo's ``latent-unet``), the
  baseline the papers improve on;
- :mod:`~minivid.unets.plane_unet`: PVDM's plane U-Net on the triplane latent, with cross-plane attention and
  the previous clip as a condition (P7, P8).
"""

from .plane_unet import PLANE_AXES, CrossPlaneAttention, PlaneUNet, PlaneUNetConfig, axis_position_embedding
from .video_unet import SpaceTimeAttention, VideoUNet, VideoUNetConfig

__all__ = ["VideoUNet", "VideoUNetConfig", "SpaceTimeAttention", "PlaneUNet", "PlaneUNetConfig",
           "CrossPlaneAttention", "axis_position_embedding", "PLANE_AXES"]
