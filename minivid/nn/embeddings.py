r"""Timestep embeddings shared by every denoiser (U-Nets here; the DiT blocks of later issues reuse them).

``timestep_embedding`` is the Transformer sinusoid used by DDPM, ADM, DiT and Latte:
:math:`[\cos(t\,\omega_i), \sin(t\,\omega_i)]_{i < d/2}` with :math:`\omega_i = P^{-i/(d/2)}`, P = 10000.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: (B,) -> (B, dim), cos half first.
    An odd ``dim`` gets one zero channel appended."""
    if t.ndim != 1:
        raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
    if dim < 2:
        raise ValueError(f"dim={dim} must be >= 2")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoid (``freq_dim`` channels) followed by a two-layer SiLU MLP to ``dim`` channels."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


def check_labels(y, batch: int, num_classes: int) -> None:
    """Class labels y: an integer tensor of shape (B,) with values in 0..num_classes, where label
    ``num_classes`` is the null class (the unconditional branch of classifier-free guidance). A ValueError
    naming y's shape, dtype and value range otherwise, before the embedding lookup (which would fail with an
    opaque index error, or a device-side assert on CUDA)."""
    ok = (isinstance(y, torch.Tensor) and not y.dtype.is_floating_point and not y.dtype.is_complex
          and y.dtype != torch.bool and tuple(y.shape) == (batch,))
    if ok and y.numel():
        lo, hi = int(y.min()), int(y.max())
        ok = 0 <= lo and hi <= num_classes
    if not ok:
        got = type(y).__name__
        if isinstance(y, torch.Tensor):
            got = f"shape {tuple(y.shape)}, dtype {y.dtype}"
            if y.numel() and not y.dtype.is_complex:
                got += f", values in {y.min().item()}..{y.max().item()}"
        raise ValueError(f"y must be integer class labels of shape (B,)=({batch},) with values in 0..{num_classes} "
                         f"({num_classes} is the null class); got {got}")
