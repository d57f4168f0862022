"""Video metrics that need no network: how well consecutive clips of a long video join (PVDM's P9)."""

from __future__ import annotations

import torch
from einops import rearrange


def clip_join_distances(video: torch.Tensor, clip_length: int, generator: torch.Generator | None = None) -> dict:
    """How well consecutive clips of a long video join (P9), as per-frame RMS distances in pixel space.

    For each boundary between clip l and l+1 of every video in the batch: ``join`` = d(last frame of clip l,
    first frame of clip l+1); ``within`` = d between consecutive frames inside the clips (the typical step);
    ``random_same`` = d(first frame of clip l+1, a random frame of the same video outside the two frames at
    the boundary); ``random_other`` = d(first frame of clip l+1, a random frame of another video of the
    batch, when B > 1). Returns the means (floats) and the per-boundary tensors."""
    if video.ndim != 5 or video.shape[2] % clip_length:
        raise ValueError(f"video {tuple(video.shape)} must be (B, C, L*clip_length, H, W) "
                         f"with clip_length={clip_length}")
    b, _, total, _, _ = video.shape
    n = total // clip_length
    if n < 2:
        raise ValueError(f"need at least two clips of {clip_length} frames; got {total} frames")
    frames = rearrange(video.float(), "b c t h w -> b t (c h w)")

    def d(a, c):
        return (a - c).pow(2).mean(-1).sqrt()

    g = generator or torch.Generator().manual_seed(0)
    ends = torch.arange(1, n) * clip_length  # first frame index of clips 2..L
    join = d(frames[:, ends - 1], frames[:, ends])  # (B, L-1)
    inner = torch.ones(total - 1, dtype=torch.bool)
    inner[ends - 1] = False
    within = d(frames[:, :-1], frames[:, 1:])[:, inner]  # (B, L*(S-1))
    rand_same = torch.empty(b, n - 1)
    rand_other = torch.empty(b, n - 1)
    for i in range(b):
        for k, e in enumerate(ends.tolist()):
            choices = [j for j in range(total) if j not in (e - 1, e)]
            j = choices[int(torch.randint(len(choices), (1,), generator=g))]
            rand_same[i, k] = d(frames[i, j], frames[i, e])
            if b > 1:
                other = (i + 1 + int(torch.randint(b - 1, (1,), generator=g))) % b
                rand_other[i, k] = d(frames[other, int(torch.randint(total, (1,), generator=g))], frames[i, e])
    out = {"join": join, "within": within, "random_same": rand_same}
    if b > 1:
        out["random_other"] = rand_other
    out.update({f"{k}_mean": float(v.mean()) for k, v in list(out.items())})
    return out
