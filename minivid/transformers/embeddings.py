r"""Token embeddings shared by minivid's video transformers: patch embeddings (L1, L4), the matching
output decoders (L8), fixed sin-cos position embeddings (L1, L6) and rotary position embeddings in 1D
(L6) and 3D (C3).

**Patches (L1, L4).** A clip :math:`V \in \mathbb R^{C\times F\times H\times W}` (minivid's
``b c f h w`` layout; C = 3 for pixels, the latent channels for a VAE latent) becomes a grid of tokens
:math:`\hat z \in \mathbb R^{n_f\times n_h\times n_w\times d}`:

- *uniform frame patch embedding*: ViT's patch embedding applied to every frame,
  :math:`n_f = F,\ n_h = H/p,\ n_w = W/p`;
- *compression (tubelet) patch embedding*: tubes of s frames, :math:`n_f = F/s`.

Both are one linear map of each flattened (s, p, p, C) patch (``tubelet=1`` is the uniform case); that is a
Conv3d whose kernel equals its stride, which the tests check.

**Output (L8, L4).** A linear decoder maps every token back to its p·p·C' values and a reshape
(:func:`unpatchify`) restores (C', F, H, W); C' = 2C for a learned-variance head (D6). For the tubelet
embedding the decoder is a 3D *transposed* convolution with kernel = stride = (s, p, p), which upsamples
time by s as the paper's L4 asks (for s = 1 it is the same map as linear + reshape).

**Sin-cos tables (L1, L6)**, as MAE, DiT and Latte write them: for positions :math:`m` and
:math:`\omega_k = 10000^{-k/(D/2)}`, :math:`\mathrm{PE}(m) = [\sin(m\omega_k)]_{k<D/2} \,\|\,
[\cos(m\omega_k)]_{k<D/2}`. In 2D the first half of the channels encodes the column (w) and the second the
row (h); in 3D (CogVideoX) the first D/4 channels encode the frame and the other 3D/4 are the 2D table.

**RoPE (L6, C3).** A rotary embedding rotates each consecutive channel pair (2i, 2i+1) of queries and keys
by the angle :math:`m\,\theta^{-2i/D_a}` (RoFormer; interleaved pairs, as CogVideoX does). Because rotations
compose, :math:`\langle R_m q, R_n k\rangle = \langle q, R_{n-m} k\rangle`: scores depend only on
relative positions. The 3D version rotates disjoint channel slices by the t, h and w coordinates;
CogVideoX's split (C3) is D/4 channels for t and 3D/8 each for h and w, θ = 10000.
:class:`RotaryEmbedding` objects are callables on (B, H, N, D) tensors, for ``Attention(rope=...)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from einops import rearrange
from torch import nn

# ---------------------------------------------------------------------------------------------------
# Patch grids (L4)
# ---------------------------------------------------------------------------------------------------


def _check_divisible(name: str, value: int, divisor: int, divisor_name: str) -> int:
    if value < 1 or value % divisor:
        raise ValueError(f"{name}={value} must be a positive multiple of {divisor_name}={divisor}; "
                         f"allowed: {divisor}, {2 * divisor}, {3 * divisor}, ...")
    return value // divisor


def patch_grid(frames: int, height: int, width: int, patch_size: int, tubelet: int = 1) -> tuple[int, int, int]:
    """L4 token counts ``(n_f, n_h, n_w) = (F / s, H / p, W / p)``; a clear ValueError when a side is not
    divisible by its patch size (s = 1: uniform frame patch embedding, n_f = F)."""
    if patch_size < 1 or tubelet < 1:
        raise ValueError(f"patch_size={patch_size} and tubelet={tubelet} must be >= 1")
    n_f = _check_divisible("frames", frames, tubelet, "tubelet")  # L4: n_f = F / s
    n_h = _check_divisible("height", height, patch_size, "patch_size")  # L4: n_h = H / h
    n_w = _check_divisible("width", width, patch_size, "patch_size")  # L4: n_w = W / w
    return n_f, n_h, n_w


def patchify(x: torch.Tensor, patch_size: int, tubelet: int = 1) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, n_f, n_h, n_w, s·p·p·C): every token's raw patch, flattened (s, p, p, C)."""
    if x.ndim != 5:
        raise ValueError(f"x must be a video batch (B, C, F, H, W), got shape {tuple(x.shape)}")
    patch_grid(x.shape[2], x.shape[3], x.shape[4], patch_size, tubelet)
    return rearrange(x, "b c (n_f s) (n_h p) (n_w q) -> b n_f n_h n_w (s p q c)", s=tubelet, p=patch_size,
                     q=patch_size)


def unpatchify(tokens: torch.Tensor, patch_size: int, tubelet: int = 1) -> torch.Tensor:
    """Inverse of :func:`patchify` (the reshape of L8): (B, n_f, n_h, n_w, s·p·p·C) -> (B, C, F, H, W)."""
    if tokens.ndim != 5 or tokens.shape[-1] % (tubelet * patch_size * patch_size):
        raise ValueError(f"tokens must be (B, n_f, n_h, n_w, s·p·p·C) with s·p·p = "
                         f"{tubelet * patch_size * patch_size}; got shape {tuple(tokens.shape)}")
    return rearrange(tokens, "b n_f n_h n_w (s p q c) -> b c (n_f s) (n_h p) (n_w q)", s=tubelet, p=patch_size,
                     q=patch_size)


class PatchEmbed(nn.Module):
    r"""L1 / L4: a clip (B, C, F, H, W) -> tokens :math:`\hat z` (B, n_f, n_h, n_w, d).

    ``tubelet=1``: uniform frame patch embedding (n_f = F); ``tubelet=s``: compression embedding of tubes
    of s frames (n_f = F / s). A linear map of each flattened patch, initialised like DiT's (Xavier on the
    flattened kernel, zero bias).
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int, tubelet: int = 1):
        super().__init__()
        if min(in_channels, dim, patch_size, tubelet) < 1:
            raise ValueError(f"in_channels={in_channels}, dim={dim}, patch_size={patch_size} and "
                             f"tubelet={tubelet} must all be >= 1")
        self.in_channels, self.dim, self.patch_size, self.tubelet = in_channels, dim, patch_size, tubelet
        self.proj = nn.Linear(tubelet * patch_size * patch_size * in_channels, dim)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(n_f, n_h, n_w) for a clip of this size (L4)."""
        return patch_grid(frames, height, width, self.patch_size, self.tubelet)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, F, H, W), got {tuple(x.shape)}")
        return self.proj(patchify(x, self.patch_size, self.tubelet))  # (B, n_f, n_h, n_w, d)


class PatchDecoder(nn.Module):
    r"""L8 (and L4's output upsampling): tokens (B, n_f, n_h, n_w, d) -> (B, C_out, F, H, W).

    ``tubelet=1``: DiT's / Latte's standard linear decoder d -> p·p·C_out followed by :func:`unpatchify`.
    ``tubelet=s > 1``: a 3D transposed convolution with kernel = stride = (s, p, p): the linear decoding of
    each token and the temporal upsampling back to F = s·n_f frames in one layer (L4). Zero-initialised,
    as DiT's final layer, so a fresh model predicts zeros.
    """

    def __init__(self, dim: int, out_channels: int, patch_size: int, tubelet: int = 1):
        super().__init__()
        self.out_channels, self.patch_size, self.tubelet = out_channels, patch_size, tubelet
        if tubelet == 1:
            self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)  # L8: linear decoder
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        else:
            self.upsample = nn.ConvTranspose3d(dim, out_channels, kernel_size=(tubelet, patch_size, patch_size),
                                               stride=(tubelet, patch_size, patch_size))  # L4: 3D transposed conv
            nn.init.zeros_(self.upsample.weight)
            nn.init.zeros_(self.upsample.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.tubelet == 1:
            return unpatchify(self.linear(tokens), self.patch_size)  # L8: linear + reshape
        z = rearrange(tokens, "b n_f n_h n_w d -> b d n_f n_h n_w")
        return self.upsample(z)  # (B, C_out, n_f·s, n_h·p, n_w·p)


# ---------------------------------------------------------------------------------------------------
# Fixed sin-cos position embeddings (L1, L6)
# ---------------------------------------------------------------------------------------------------


def _positions(positions) -> torch.Tensor:
    if isinstance(positions, int):
        return torch.arange(positions, dtype=torch.float64)
    return torch.as_tensor(positions, dtype=torch.float64).reshape(-1)


def sincos_1d(positions, dim: int, base: float = 10000.0) -> torch.Tensor:
    r"""1D sin-cos table (N, dim) for ``positions`` (an int N for 0..N-1, or a sequence):
    :math:`[\sin(m\omega_k)]_k \| [\cos(m\omega_k)]_k`, :math:`\omega_k = \text{base}^{-k/(dim/2)}` (Latte's
    temporal embedding, L6). Computed in float64, returned as float32."""
    if dim < 2 or dim % 2:
        raise ValueError(f"dim={dim} must be a positive even number")
    pos = _positions(positions)
    omega = base ** (-torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))  # (dim/2,)
    angles = pos[:, None] * omega[None]  # (N, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(n_h: int, n_w: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """2D sin-cos table (n_h·n_w, dim), tokens in row-major (h, w) order; channels [0, dim/2) encode the
    column w and [dim/2, dim) the row h, as MAE / DiT / Latte do (L1's spatial p)."""
    if dim % 4:
        raise ValueError(f"dim={dim} must be divisible by 4 for a 2D sin-cos embedding")
    h, w = torch.meshgrid(torch.arange(n_h), torch.arange(n_w), indexing="ij")
    return torch.cat([sincos_1d(w.flatten(), dim // 2, base), sincos_1d(h.flatten(), dim // 2, base)], dim=1)


def sincos_3d(n_f: int, n_h: int, n_w: int, dim: int, temporal_dim: int | None = None,
              base: float = 10000.0) -> torch.Tensor:
    """3D sin-cos table (n_f, n_h·n_w, dim): the first ``temporal_dim`` (default dim/4) channels are
    :func:`sincos_1d` of the frame index, the rest :func:`sincos_2d` of (h, w) (CogVideoX's layout)."""
    temporal_dim = dim // 4 if temporal_dim is None else temporal_dim
    if not 0 < temporal_dim < dim:
        raise ValueError(f"temporal_dim={temporal_dim} must lie in (0, dim={dim})")
    pt = sincos_1d(n_f, temporal_dim, base)[:, None].expand(n_f, n_h * n_w, temporal_dim)
    ps = sincos_2d(n_h, n_w, dim - temporal_dim, base)[None].expand(n_f, n_h * n_w, dim - temporal_dim)
    return torch.cat([pt, ps], dim=-1)


# ---------------------------------------------------------------------------------------------------
# Rotary position embeddings (L6, C3)
# ---------------------------------------------------------------------------------------------------


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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.head_dim or x.shape[-2] != self.num_tokens:
            raise ValueError(f"RoPE built for N={self.num_tokens} tokens of head_dim={self.head_dim}, "
                             f"got (N, D) = {tuple(x.shape[-2:])}")
        return apply_rope(x, self.cos, self.sin)

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

