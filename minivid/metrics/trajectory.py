"""Trajectory error (Tora, T9): how far the objects of a generated video are from where they were asked to go.
The centres of a MiniSprites video come from :func:`minivid.data.track_sprites`."""

from __future__ import annotations

import torch

from ..data import track_sprites


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


def generated_paths(videos: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """The tracked centre path (N, T, 2) of each clip's sprite of palette colour ``colors`` (N,) (NaN where lost)."""
    return torch.stack([track_sprites(v, [int(c)])[0][0] for v, c in zip(videos, colors)])


def path_errors(videos: torch.Tensor, paths: torch.Tensor, colors: torch.Tensor, from_frame: int = 1) -> dict:
    """T9 on clips (N, 3, T, H, W): the mean distance in pixels between each clip's tracked sprite (colour ``colors``)
    and the requested path ``paths`` (N, T, 2), over frames ``from_frame``.. (default 1: Tora is given frame 0);
    ``lost``: the share of those (clip, frame) pairs where the tracker does not find the sprite (counted, not
    averaged in)."""
    if not 0 <= from_frame < paths.shape[1]:
        raise ValueError(f"from_frame={from_frame} is invalid: expected 0..{paths.shape[1] - 1}")
    got = generated_paths(videos, colors)[:, from_frame:]
    want = paths[:, from_frame:]
    return {"trajectory_error_px": trajectory_error(got, want), "lost": float(torch.isnan(got[..., 0]).float().mean())}
