"""Trajectory error (Tora, T9): how far the objects of a generated video are from where they were asked to go.
The centres of a MiniSprites video come from :func:`minivid.data.track_sprites`."""

from __future__ import annotations

import torch


def trajectory_error(pred_centers, true_centers) -> float:
    """Mean Euclidean distance in pixels between predicted and true centres (T9).

    Both are arrays of the same shape (..., T, 2), e.g. (K, T, 2) or (B, K, T, 2). The mean runs over
    every (sprite, frame) where both positions are finite; entries that are NaN in either one (an
    absent or padded sprite, a frame where the tracker lost it) are left out. Returns NaN when no
    entry is valid. Units are pixels of the video the centres were measured on.
    """
    p = torch.as_tensor(pred_centers, dtype=torch.float64)
    q = torch.as_tensor(true_centers, dtype=torch.float64)
    if p.shape != q.shape or p.ndim < 2 or p.shape[-1] != 2:
        raise ValueError(f"need two (..., T, 2) arrays of one shape, got {tuple(p.shape)} "
                         f"and {tuple(q.shape)}")
    dist = (p - q).norm(dim=-1)  # (..., T)
    valid = torch.isfinite(dist)
    return float(dist[valid].mean()) if valid.any() else float("nan")
