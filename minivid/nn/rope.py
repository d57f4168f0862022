r"""Rotary position embeddings (RoPE) in 1D (L6) and over several axes, 3D for video (C3).

A rotary embedding rotates each consecutive channel pair (2i, 2i+1) of queries and keys by the angle
:math:`m\,\theta^{-2i/D_a}` (RoFormer; interleaved pairs, as CogVideoX does). Because rotations compose,
:math:`\langle R_m q, R_n k\rangle = \langle q, R_{n-m} k\rangle`: scores depend only on relative positions.
The 3D version rotates disjoint channel slices by the t, h and w coordinates; CogVideoX's split (C3) is D/4
channels for t and 3D/8 each for h and w, θ = 10000. :class:`RotaryEmbedding` objects are callables on
(B, H, N, D) tensors, for ``Attention(rope=...)``.
"""

from __future__ import annotations

import copy

from typing import Sequence

import torch
from einops import rearrange

from .embeddings import _positions


def rope_axes_dims(head_dim: int, fractions: Sequence[float] = (0.25, 0.375, 0.375)) -> tuple[int, ...]:
    """Channels per axis for a multi-axis RoPE. The default is C3's split for (t, h, w): d/4 and 3d/8, 3d/8
    (64 -> (16, 24, 24)). Each slice must be even (channels rotate in pairs) and they must sum to head_dim."""
    if abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions={tuple(fractions)} must sum to 1")
    dims = [round(head_dim * f) for f in fractions]
    if sum(dims) != head_dim or any(d % 2 or d <= 0 for d in dims):
        raise ValueError(f"head_dim={head_dim} cannot be split as {tuple(fractions)} into positive even slices "
                         f"(got {tuple(dims)}); choose head_dim a multiple of 16 or pass axes_dims explicitly")
    return tuple(dims)


def rope_frequencies(positions: torch.Tensor, axes_dims: Sequence[int], theta: float = 10000.0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""cos and sin tables (N, sum(axes_dims)) for ``positions`` (N, A), one column per axis.

    Axis a owns a slice of :math:`D_a` channels; its pair i (channels 2i, 2i+1 of the slice) turns by
    :math:`m_a\,\theta^{-2i/D_a}`; both channels of a pair share the angle (``repeat_interleave``)."""
    positions = torch.as_tensor(positions, dtype=torch.float64)
    if positions.ndim == 1:
        positions = positions[:, None]
    if positions.ndim != 2 or positions.shape[1] != len(axes_dims):
        raise ValueError(f"positions must be (N, {len(axes_dims)}) for axes_dims={tuple(axes_dims)}, "
                         f"got {tuple(positions.shape)}")
    angles = []
    for a, d_a in enumerate(axes_dims):
        if d_a <= 0 or d_a % 2:
            raise ValueError(f"axes_dims={tuple(axes_dims)}: every slice must be positive and even")
        inv_freq = theta ** (-torch.arange(0, d_a, 2, dtype=torch.float64) / d_a)  # (D_a/2,)
        angles.append(positions[:, a, None] * inv_freq[None])  # (N, D_a/2)
    ang = torch.cat(angles, dim=1).repeat_interleave(2, dim=1)  # (N, D): pair members share an angle
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    r"""Rotate interleaved channel pairs of x (..., N, D): :math:`(x_{2i}, x_{2i+1}) \mapsto
    (x_{2i}\cos - x_{2i+1}\sin,\ x_{2i}\sin + x_{2i+1}\cos)`, with cos / sin (N, D)."""
    if x.shape[-2:] != cos.shape:
        raise ValueError(f"x has (N, D) = {tuple(x.shape[-2:])} but the RoPE tables are {tuple(cos.shape)}")
    pairs = rearrange(x, "... n (k two) -> ... n k two", two=2)
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (-x_{2i+1}, x_{2i})
    return x * cos.to(x) + rotated * sin.to(x)


class RotaryEmbedding:
    """A RoPE as a callable on queries / keys (B, H, N, D), for ``Attention(rope=...)``.

    ``positions`` (N, A) holds the coordinates of the N tokens along A axes; ``axes_dims`` the channels of
    each axis (summing to D). Build the common cases with :func:`rope_1d` and :func:`rope_3d`.
    """

    def __init__(self, positions: torch.Tensor, axes_dims: Sequence[int], theta: float = 10000.0):
        self.axes_dims, self.theta = tuple(int(d) for d in axes_dims), float(theta)
        self.head_dim = sum(self.axes_dims)
        self.cos, self.sin = rope_frequencies(positions, self.axes_dims, self.theta)  # (N, D) float64
        self.num_tokens = self.cos.shape[0]
        self._cast: dict = {}  # (device, dtype) -> the tables as the queries and keys there take them

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.head_dim or x.shape[-2] != self.num_tokens:
            raise ValueError(f"RoPE built for N={self.num_tokens} tokens of head_dim={self.head_dim}, "
                             f"got (N, D) = {tuple(x.shape[-2:])}")
        return apply_rope(x, *self.tables(x))

    def tables(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin on ``like``'s device and dtype, converted once per (device, dtype) and kept: the attention
        calls of every block (and every step) reuse them instead of copying the float64 tables again (from the
        CPU, a blocking copy on a GPU)."""
        key = (like.device, like.dtype)
        if key not in self._cast:
            self._cast[key] = (self.cos.to(like), self.sin.to(like))
        return self._cast[key]

    def to(self, device: torch.device | str) -> "RotaryEmbedding":
        """The same RoPE with its (float64) tables on ``device``."""
        out = copy.copy(self)
        out.cos, out.sin, out._cast = self.cos.to(device), self.sin.to(device), {}
        return out

    def __repr__(self) -> str:
        return f"RotaryEmbedding(N={self.num_tokens}, axes_dims={self.axes_dims}, theta={self.theta:g})"


def rope_1d(positions, head_dim: int, theta: float = 10000.0) -> RotaryEmbedding:
    """1D RoPE (L6) over ``positions`` (an int N for 0..N-1, or a sequence of positions)."""
    return RotaryEmbedding(_positions(positions)[:, None], (head_dim,), theta)


def rope_3d(n_f: int, n_h: int, n_w: int, head_dim: int, axes_dims: Sequence[int] | None = None,
            theta: float = 10000.0, offset: Sequence[float] = (0, 0, 0)) -> RotaryEmbedding:
    """3D RoPE (C3) for n_f·n_h·n_w tokens in (f, h, w) row-major order (``b (n_f n_h n_w) d``). Channels:
    ``axes_dims`` for (t, h, w), default C3's (D/4, 3D/8, 3D/8); ``offset`` shifts the coordinates."""
    axes_dims = rope_axes_dims(head_dim) if axes_dims is None else tuple(axes_dims)
    if sum(axes_dims) != head_dim or len(axes_dims) != 3:
        raise ValueError(f"axes_dims={tuple(axes_dims)} must be three slices summing to head_dim={head_dim}")
    f, h, w = torch.meshgrid(torch.arange(n_f), torch.arange(n_h), torch.arange(n_w), indexing="ij")
    pos = torch.stack([f.flatten(), h.flatten(), w.flatten()], dim=1).double()
    return RotaryEmbedding(pos + torch.as_tensor(offset, dtype=torch.float64), axes_dims, theta)

