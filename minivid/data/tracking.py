"""Recover sprite centres from a video, to measure trajectory error on generated samples (Tora, T9; the error
itself is :func:`minivid.metrics.trajectory_error`).

A trajectory-conditioned model is asked to move, say, the red circle along a path; to score it we
need the path it actually drew. MiniSprites makes this easy by construction:

* every sprite has one flat, saturated palette colour, distinct within a video;
* every background channel is at most ``BACKGROUND_MAX`` = 0.55 while every palette colour has a
  channel equal to 1, so a background pixel is at least 0.45 away (Euclidean distance in RGB,
  [0, 1] units) from every palette colour, while palette colours are at least 0.5 apart.

So a pixel belongs to colour c when its distance to PALETTE[c] is below ``tau`` (0.25): these "core"
pixels tell where (and whether) the colour is. The centre of colour c in frame t is then a centroid
``sum(w * (x, y)) / sum(w)`` with x the column and y the row index, where the weight w is the
estimated coverage of each pixel rather than 0/1 (``subpixel=True``). An anti-aliased edge pixel mixes
the sprite colour s with the background b, p = a s + (1 - a) b; b is smooth, so its mean over a ring
2-3 px outside the sprite estimates it, and a = <p - b, s - b> / |s - b|^2 (clipped to [0, 1]). With
0/1 weights the centroid jumps as edge pixels cross the threshold; with coverage weights it moves smoothly
(the sizes of both errors: ``tests/data/test_tracking.py`` and bench/results/measurements.md).

Because every MiniSprites shape's centre is its area centroid, this recovers the generator's centres
to a small fraction of a pixel wherever the sprite is fully visible. Two honest limits: where sprites
overlap, the hidden part is missing and the centroid of the visible part is biased (any
appearance-based tracker has this); and where red and yellow sprites touch, half-covered edge pixels
are exactly orange, which ``_palette_cores`` removes as thin lines detached from any orange body.
``tests/data/test_tracking.py`` measures all of these.
"""

from __future__ import annotations

import numpy as np
import torch

from .minisprites import COLOR_NAMES, PALETTE


def _color_index(c) -> int:
    if isinstance(c, str):
        if c not in COLOR_NAMES:
            raise ValueError(f"color {c!r} is not in the palette {COLOR_NAMES}")
        return COLOR_NAMES.index(c)
    c = int(c)
    if c >= len(COLOR_NAMES):
        raise ValueError(f"color index {c} is invalid: expected < {len(COLOR_NAMES)} (or < 0 for padding)")
    return c


def _dilate(mask: torch.Tensor, r: int) -> torch.Tensor:
    """Binary dilation of a (..., H, W) bool mask by a (2r+1) x (2r+1) square (shifted ORs, separable)."""
    out = mask.clone()
    for s in range(1, r + 1):  # rows
        out[..., s:, :] |= mask[..., :-s, :]
        out[..., :-s, :] |= mask[..., s:, :]
    rows = out.clone()
    for s in range(1, r + 1):  # columns
        out[..., :, s:] |= rows[..., :, :-s]
        out[..., :, :-s] |= rows[..., :, s:]
    return out


def _open2x2(mask: torch.Tensor) -> torch.Tensor:
    """Morphological opening by a 2 x 2 square: the union of all 2 x 2 blocks inside the mask."""
    e = mask[..., :-1, :-1] & mask[..., 1:, :-1] & mask[..., :-1, 1:] & mask[..., 1:, 1:]
    out = torch.zeros_like(mask)
    for dy in (0, 1):
        for dx in (0, 1):
            out[..., dy:dy + e.shape[-2], dx:dx + e.shape[-1]] |= e
    return out


def _palette_cores(rgb: torch.Tensor, palette: torch.Tensor, tau: float) -> torch.Tensor:
    """(P, T, H, W) masks of the pixels within ``tau`` of each palette colour, minus mixing artefacts.

    A pixel can be close to a colour without showing it: where red and yellow sprites meet, an edge
    pixel half red and half yellow is (1, 0.5, 0), exactly orange. Such pixels form lines one pixel
    thin that touch other sprites, so we drop the pixels of colour c that touch another colour's
    pixels and lie more than 1 px from any 2 x 2 block of c (a morphological opening).
    """
    core = torch.stack([(rgb - p[:, None, None, None]).square().sum(0) < tau * tau for p in palette])
    others = _dilate(core.any(0, keepdim=True) & ~core, 1)  # (P, T, H, W) next to another colour
    return core & (~others | _dilate(_open2x2(core), 1))


@torch.no_grad()
def track_sprites(video, colors=None, *, tau: float = 0.25, min_pixels: float = 3.0,
                  min_presence: float = 0.25, subpixel: bool = True):
    """Per-frame centres of palette-coloured sprites in a video (3, T, H, W) in [-1, 1].

    Args:
        video: tensor or array (3, T, H, W) in [-1, 1] (a MiniSprites clip or a generated sample).
        colors: palette indices or colour names to track, in the order wanted. A negative index
            (the -1 padding of ``item["labels"]["color"]``) yields an all-NaN row, so
            ``track_sprites(item["video"], item["labels"]["color"])`` lines up with ``item["centers"]``.
            None: every palette colour found in at least ``min_presence`` of the frames.
        tau: RGB distance ([0, 1] units) below which a pixel belongs to a colour (its "core").
        min_pixels: a colour with fewer core pixels in a frame is absent there (NaN).
        subpixel: weight pixels by their estimated coverage (module docstring) instead of 0/1.

    Returns:
        centers: float32 tensor (K, T, 2) of (x, y) pixel centres, NaN where absent.
        colors: int64 tensor (K,) of the palette indices tracked.
    """
    v = torch.as_tensor(video).detach().to("cpu", torch.float32)
    if v.ndim != 4 or v.shape[0] != 3:
        raise ValueError(f"video must have shape (3, T, H, W), got {tuple(v.shape)}")
    if not 0 < tau < 0.45:
        raise ValueError(f"tau={tau!r} is invalid: expected a distance in (0, 0.45)")
    rgb = (v + 1.0) * 0.5  # (3, T, H, W) in [0, 1]
    _, T, H, W = rgb.shape
    xs = torch.arange(W, dtype=torch.float32)  # column index = x
    ys = torch.arange(H, dtype=torch.float32)  # row index = y
    palette = torch.from_numpy(PALETTE)  # (P, 3)
    core = _palette_cores(rgb, palette, tau)  # (P, T, H, W)
    any_core = _dilate(core.any(0), 2)  # (T, H, W) sprites plus their anti-aliased edges

    def centres_of(c: int) -> torch.Tensor:  # -> (T, 2)
        w = core[c].float()  # (T, H, W)
        if subpixel:
            # Edge pixels mix the sprite colour s with the local background b: p = a s + (1 - a) b.
            # Estimate b as the mean of a ring 3 px around the sprite (away from every sprite) and
            # recover the coverage a = <p - b, s - b> / |s - b|^2 on the sprite and a 1 px border.
            ring = (_dilate(core[c], 3) & ~any_core).float()  # (T, H, W)
            n_ring = ring.sum((1, 2))  # (T,)
            b = (rgb * ring).sum((2, 3)) / n_ring.clamp_min(1)  # (3, T)
            s_b = palette[c][:, None] - b  # (3, T)
            a = ((rgb - b[:, :, None, None]) * s_b[:, :, None, None]).sum(0)  # (T, H, W)
            a = (a / s_b.square().sum(0)[:, None, None]).clamp(0, 1)
            region = _dilate(core[c], 1) & ~(core.any(0) & ~core[c])  # not another sprite's pixels
            a = a * region
            w = torch.where((n_ring > 0)[:, None, None], a, w)  # no ring (surrounded): plain mask
        mass = w.sum((1, 2))  # (T,)
        cx = (w.sum(1) * xs).sum(1) / mass.clamp_min(1e-12)  # marginal over rows, then columns
        cy = (w.sum(2) * ys).sum(1) / mass.clamp_min(1e-12)
        out = torch.stack([cx, cy], dim=-1)  # (T, 2)
        out[core[c].sum((1, 2)) < min_pixels] = float("nan")
        return out

    if colors is None:
        need = max(1, int(np.ceil(min_presence * T)))
        present = (core.sum((2, 3)) >= min_pixels).sum(1) >= need  # (P,)
        colors = torch.nonzero(present)[:, 0].tolist()
    elif isinstance(colors, (str, int, np.integer)) or (torch.is_tensor(colors) and colors.ndim == 0):
        colors = [colors]
    colors = colors.tolist() if isinstance(colors, (torch.Tensor, np.ndarray)) else list(colors)
    idx = [_color_index(c) for c in colors]
    rows = [centres_of(c) if c >= 0 else torch.full((T, 2), float("nan")) for c in idx]
    centers = torch.stack(rows) if rows else torch.empty(0, T, 2)
    return centers, torch.tensor(idx, dtype=torch.int64)
