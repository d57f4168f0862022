"""Metrics: PSNR and SSIM for reconstructions (``image``), trajectory error (``trajectory``, T9), how well the clips
of a long video join (``video``, P9). FVD with real I3D weights is the evaluation issue's."""

from .image import psnr, ssim
from .trajectory import trajectory_error
from .video import clip_join_distances

__all__ = ["psnr", "ssim", "trajectory_error", "clip_join_distances"]
