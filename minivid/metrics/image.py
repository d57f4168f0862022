r"""Reconstruction metrics: PSNR and SSIM for images and videos.

Videos (B, C, T, H, W) are scored frame by frame and averaged over frames (the convention of video
autoencoder papers, Reducio's table included); images are (B, C, H, W). Inputs are in [-1, 1] by default
(``data_range=2``). Both return one value per batch item, shape (B,).

- PSNR :math:`= 10\log_{10}(R^2/\mathrm{MSE})`, R the data range.
- SSIM (Wang et al. 2004): local means, variances and covariance under an 11x11 Gaussian window
  (sigma 1.5), :math:`\frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}{(\mu_x^2+\mu_y^2+C_1)(\sigma_x^2+\sigma_y^2+C_2)}`,
  :math:`C_1 = (0.01R)^2`, :math:`C_2 = (0.03R)^2`, averaged over the valid (unpadded) positions and
  channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def _as_frames(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    if x.shape != y.shape:
        raise ValueError(f"prediction {tuple(x.shape)} and target {tuple(y.shape)} must have the same shape")
    if x.ndim == 4:
        return x, y, 1
    if x.ndim == 5:
        t = x.shape[2]
        return rearrange(x, "b c t h w -> (b t) c h w"), rearrange(y, "b c t h w -> (b t) c h w"), t
    raise ValueError(f"expected images (B, C, H, W) or videos (B, C, T, H, W), got shape {tuple(x.shape)}")


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per batch item (videos: mean over frames of per-frame PSNR)."""
    x, y, t = _as_frames(pred.double(), target.double())
    mse = (x - y).pow(2).flatten(1).mean(1)
    per_frame = 10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))
    return per_frame.reshape(-1, t).mean(1).float()


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    r = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 2.0, kernel_size: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per batch item (videos: mean over frames). Frames must be at least
    ``kernel_size`` pixels on each side."""
    x, y, t = _as_frames(pred.double(), target.double())
    if min(x.shape[-2:]) < kernel_size:
        raise ValueError(f"frames of size {tuple(x.shape[-2:])} are smaller than kernel_size={kernel_size}")
    c = x.shape[1]
    g = _gaussian_window(kernel_size, sigma, x.device, x.dtype)
    win_h = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    win_w = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def blur(z):  # separable Gaussian filter per channel, "valid" positions only
        return F.conv2d(F.conv2d(z, win_h, groups=c), win_w, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).reshape(-1, t).mean(1).float()
