"""Metrics: PSNR and SSIM for reconstructions (trajectory error lives in ``minivid.data.tracking``;
FVD with real I3D weights arrives with the full system)."""

from .image import psnr, ssim

__all__ = ["psnr", "ssim"]
