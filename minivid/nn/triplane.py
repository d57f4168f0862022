r"""PVDM's triplane latent (P1), as a tensor layout shared by the models that make it (the triplane autoencoder),
the models that take it (the plane U-Net) and the pipelines between them: shape checks and packing.

A clip's latent is three planes :math:`z^s \in \mathbb R^{C\times H'\times W'}`, :math:`z^h \in \mathbb
R^{C\times S\times W'}`, :math:`z^w \in \mathbb R^{C\times S\times H'}`. Nothing in the diffusion math cares
about the shape, so the planes are packed into one tensor (B, C, H'W' + SW' + SH') (the release's ``extract``
layout) for the samplers and trainers, and unpacked with the latent size ``(S, H', W')``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from einops import rearrange

Planes = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def check_planes(planes, channels: int | None = None, name: str = "planes") -> tuple[int, int, int]:
    """P1: check that ``planes = (z_s, z_h, z_w)`` are (B, C, H', W'), (B, C, S, W'), (B, C, S, H') with one
    B, one C (= ``channels`` when given) and consistent S, H', W'. Returns (S, H', W')."""
    if (not isinstance(planes, (tuple, list)) or len(planes) != 3
            or not all(isinstance(p, torch.Tensor) for p in planes)):
        raise ValueError(f"{name} must be a tuple of three tensors (z_s, z_h, z_w), got {type(planes).__name__}"
                         + (f" of length {len(planes)}" if isinstance(planes, (tuple, list)) else ""))
    z_s, z_h, z_w = planes
    shapes = ", ".join(f"{n} {tuple(p.shape)}" for n, p in zip(("z_s", "z_h", "z_w"), planes))
    if any(p.ndim != 4 for p in planes):
        raise ValueError(f"{name}: every plane must be 4-D (B, C, ., .); got {shapes}")
    if len({p.shape[0] for p in planes}) != 1 or len({p.shape[1] for p in planes}) != 1:
        raise ValueError(f"{name}: the planes must share batch size and channels; got {shapes}")
    if channels is not None and z_s.shape[1] != channels:
        raise ValueError(f"{name}: planes have {z_s.shape[1]} channels; expected latent_channels={channels}")
    hp, wp = z_s.shape[2:]
    s = z_h.shape[2]
    if z_h.shape[3] != wp or z_w.shape[2] != s or z_w.shape[3] != hp:
        raise ValueError(f"{name}: inconsistent plane shapes {shapes}; expected z_s (B, C, H', W'), "
                         f"z_h (B, C, S, W'), z_w (B, C, S, H') with S = z_h.shape[2]")
    return s, hp, wp


def plane_shapes(batch: int, channels: int, shape: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """The three plane shapes for latent size ``shape = (S, H', W')``."""
    s, hp, wp = shape
    return (batch, channels, hp, wp), (batch, channels, s, wp), (batch, channels, s, hp)


def pack_planes(planes) -> torch.Tensor:
    """(z_s, z_h, z_w) -> one tensor (B, C, H'W' + SW' + SH'), the planes flattened and concatenated in that
    order (the release's ``extract`` layout). The samplers of minivid.diffusion work on this tensor."""
    check_planes(planes)
    return torch.cat([rearrange(p, "b c i j -> b c (i j)") for p in planes], dim=2)


def unpack_planes(x: torch.Tensor, shape: Sequence[int]) -> Planes:
    """Inverse of :func:`pack_planes` for latent size ``shape = (S, H', W')``."""
    if len(shape) != 3 or any((not isinstance(v, int)) or v < 1 for v in shape):
        raise ValueError(f"shape={tuple(shape)!r} must be (S, H', W'), three positive ints")
    s, hp, wp = shape
    n = hp * wp + s * wp + s * hp
    if x.ndim != 3 or x.shape[2] != n:
        raise ValueError(f"a packed triplane latent for shape (S, H', W') = {tuple(shape)} must be (B, C, {n}); "
                         f"got {tuple(x.shape)}")
    z_s, z_h, z_w = x.split([hp * wp, s * wp, s * hp], dim=2)
    return (rearrange(z_s, "b c (h w) -> b c h w", h=hp), rearrange(z_h, "b c (s w) -> b c s w", s=s),
            rearrange(z_w, "b c (s h) -> b c s h", s=s))
