r"""The residual block of minivid's diffusion U-Nets, conditioned on the timestep by AdaGN (ADM's block).

GroupNorm, SiLU, 3x3 convolution; GroupNorm whose output is scaled and shifted by a linear map of the
embedding, :math:`h \mapsto (1 + \text{scale}(e))\,\mathrm{GN}(h) + \text{shift}(e)` (AdaGN, the convolutional
form of L5's AdaLN); SiLU, dropout, a second 3x3 convolution that starts at zero (so the block starts as the
identity, through the skip); a 1x1 convolution on the skip when the width changes.

``video=False``: images or planes (B, C, H, W) with 2D convolutions (PVDM's plane U-Net, P7).
``video=True``: clips (B, C, T, H, W); the 3x3 convolutions act on each frame (kernel (1, 3, 3)) and a
temporal convolution over 3 frames (kernel (3, 1, 1)) follows the AdaGN: the factorised (2+1)D block of the
video U-Net (``minivid.unets.VideoUNet``), about as costly as a 2D block on the frames while mixing
information across time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .modulation import modulate


class AdaGNResBlock(nn.Module):
    """x (B, c_in, [T,] H, W), emb (B, emb_dim) -> (B, c_out, [T,] H, W); see the module docstring."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float = 0.0, video: bool = False):
        super().__init__()
        conv = nn.Conv3d if video else nn.Conv2d
        kernel, padding = ((1, 3, 3), (0, 1, 1)) if video else (3, 1)
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = conv(c_in, c_out, kernel, padding=padding)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.temporal = nn.Conv3d(c_out, c_out, (3, 1, 1), padding=(1, 0, 0)) if video else None
        self.conv2 = conv(c_out, c_out, kernel, padding=padding)
        nn.init.zeros_(self.conv2.weight)  # the block starts as the identity (through the skip)
        nn.init.zeros_(self.conv2.bias)
        self.skip = conv(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, [T,] H, W)
        scale, shift = self.emb(F.silu(emb)).chunk(2, dim=1)  # (B, c_out) each
        h = self.dropout(F.silu(modulate(self.norm2(h), shift, scale, channels_first=True)))  # AdaGN
        if self.temporal is not None:
            h = F.silu(self.temporal(h))  # (2+1)D: mix each pixel's 3 neighbouring frames
        return self.skip(x) + self.conv2(h)
