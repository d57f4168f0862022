r"""Sinusoidal embeddings, written once for every model in minivid: timesteps, and fixed position tables
in 1D, 2D and 3D (and any set of axes).

One function, :func:`sinusoid`, computes :math:`\omega_k = P^{-k/(D/2)}` (P = 10000) for
:math:`k < D/2` and the angles :math:`m\,\omega_k` of each position m. Two conventions order the halves,
and minivid keeps each where its papers use it:

- **cos first**, :math:`[\cos(m\omega_k)]_k \| [\sin(m\omega_k)]_k`: the *timestep* embedding of DDPM, ADM,
  DiT and Latte (:func:`timestep_embedding`, computed in float32 on the timesteps' device);
- **sin first**, :math:`[\sin(m\omega_k)]_k \| [\cos(m\omega_k)]_k`: the fixed *position* tables of MAE,
  DiT, Latte and CogVideoX (:func:`sincos_1d`, :func:`sincos_2d`, :func:`sincos_3d`, :func:`sincos_axes`),
  computed in float64 and returned as float32.

Position tables over several axes concatenate one 1D table per axis (:func:`sincos_axes`): in 2D the first
half of the channels encodes the column (w) and the second the row (h), as MAE / DiT / Latte write it (L1);
in 3D (CogVideoX, C3's fixed alternative) the first D/4 channels encode the frame and the rest is the 2D
table. Positions may be fractional (Reducio's content fusion measures pixel centres on a common grid).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def _positions(positions) -> torch.Tensor:
    """An int N (positions 0..N-1) or a sequence / tensor of positions -> a flat float64 CPU tensor."""
    if isinstance(positions, int):
        return torch.arange(positions, dtype=torch.float64)
    return torch.as_tensor(positions, dtype=torch.float64).reshape(-1)


def sinusoid(positions: torch.Tensor, dim: int, base: float = 10000.0, cos_first: bool = False,
             dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""(N,) positions -> (N, dim) float32: the D/2 angles :math:`m\,\omega_k`, :math:`\omega_k =
    \text{base}^{-k/(D/2)}`, as [sin | cos] (or [cos | sin] with ``cos_first``), computed in ``dtype`` on the
    positions' device. An odd ``dim`` gets one zero channel appended."""
    if dim < 2:
        raise ValueError(f"dim={dim} is invalid: expected an integer >= 2")
    half = dim // 2
    freqs = torch.exp(-math.log(base) * torch.arange(half, device=positions.device, dtype=dtype) / half)
    angles = positions.to(dtype)[:, None] * freqs[None]  # (N, dim/2)
    parts = [angles.cos(), angles.sin()] if cos_first else [angles.sin(), angles.cos()]
    if dim % 2:
        parts.append(torch.zeros_like(angles[:, :1]))
    return torch.cat(parts, dim=1).float()


class TimestepEmbedding(nn.Module):
    """Sinusoid (``freq_dim`` channels, :func:`timestep_embedding`) followed by a two-layer SiLU MLP to ``dim``
    channels (DiT's ``TimestepEmbedder``)."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: (B,) -> (B, dim), cos half first (DDPM / ADM /
    DiT), in float32 on t's device. An odd ``dim`` gets one zero channel appended."""
    if t.ndim != 1:
        raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
    return sinusoid(t, dim, max_period, cos_first=True, dtype=torch.float32)


def sincos_1d(positions, dim: int, base: float = 10000.0) -> torch.Tensor:
    r"""1D sin-cos table (N, dim) for ``positions`` (an int N for 0..N-1, or a sequence):
    :math:`[\sin(m\omega_k)]_k \| [\cos(m\omega_k)]_k` (MAE; Latte's temporal embedding, L6)."""
    if dim < 2 or dim % 2:
        raise ValueError(f"dim={dim} is invalid: expected a positive even number")
    return sinusoid(_positions(positions), dim, base)


def sincos_axes(coords: Sequence, dims: Sequence[int], base: float = 10000.0) -> torch.Tensor:
    """Sin-cos table of N tokens over several axes: ``coords`` holds one sequence of N coordinates per axis,
    ``dims`` the (even) channels of each axis; the per-axis :func:`sincos_1d` tables are concatenated in that
    order -> (N, sum(dims))."""
    if len(coords) != len(dims):
        raise ValueError(f"coords has {len(coords)} axes but dims={tuple(dims)} has {len(dims)}")
    coords = [_positions(c) for c in coords]
    if len({len(c) for c in coords}) > 1:
        raise ValueError(f"coords must hold one coordinate per token on every axis; got lengths "
                         f"{[len(c) for c in coords]}")
    return torch.cat([sincos_1d(c, d, base) for c, d in zip(coords, dims)], dim=1)


def sincos_2d(rows, cols, dim: int, base: float = 10000.0) -> torch.Tensor:
    """2D sin-cos table (n_h·n_w, dim), tokens in row-major (h, w) order; channels [0, dim/2) encode the column
    and [dim/2, dim) the row (MAE / DiT / Latte, L1's spatial p). ``rows`` and ``cols`` are counts (0..n-1) or
    sequences of (possibly fractional) coordinates."""
    if dim % 4:
        raise ValueError(f"dim={dim} is invalid: a 2D sin-cos embedding needs a multiple of 4")
    r, c = _positions(rows), _positions(cols)
    h, w = torch.meshgrid(r, c, indexing="ij")
    return sincos_axes((w.flatten(), h.flatten()), (dim // 2, dim // 2), base)


def sincos_3d(n_f: int, n_h: int, n_w: int, dim: int, temporal_dim: int | None = None,
              base: float = 10000.0) -> torch.Tensor:
    """3D sin-cos table (n_f, n_h·n_w, dim): the first ``temporal_dim`` (default dim/4) channels are
    :func:`sincos_1d` of the frame index, the rest :func:`sincos_2d` of (h, w) (CogVideoX's layout)."""
    temporal_dim = dim // 4 if temporal_dim is None else temporal_dim
    if not 0 < temporal_dim < dim:
        raise ValueError(f"temporal_dim={temporal_dim} is invalid: expected a value in (0, dim={dim})")
    pt = sincos_1d(n_f, temporal_dim, base)[:, None].expand(n_f, n_h * n_w, temporal_dim)
    ps = sincos_2d(n_h, n_w, dim - temporal_dim, base)[None].expand(n_f, n_h * n_w, dim - temporal_dim)
    return torch.cat([pt, ps], dim=-1)


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
