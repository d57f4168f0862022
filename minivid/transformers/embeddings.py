r"""Patch embeddings of minivid's video transformers (L1, L4) and the matching output decoders (L8).

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

The fixed sin-cos tables (L1, L6) and RoPE (L6, C3) are layers every model shares: they live in
:mod:`minivid.nn.embeddings` and :mod:`minivid.nn.rope`.
"""

from __future__ import annotations

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
