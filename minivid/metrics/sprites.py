"""The sprite check: does a generated clip look like MiniSprites? (issue "models that visibly work"; read by the
zoo, the notebooks and ``python -m minivid eval``). Built on MiniSprites' tracker,
:func:`minivid.data.track_sprites`, which recovers each palette colour's centre in every frame."""

from __future__ import annotations

import torch

from ..data.minisprites import COLOR_NAMES, PALETTE
from ..data.tracking import _palette_cores, track_sprites


@torch.no_grad()
def sprite_check(video, *, max_sprites: int = 3, max_step: float = 0.15, max_accel: float = 0.15,
                 tau: float = 0.25, min_pixels: float = 2.0) -> dict:
    """Does a clip (3, T, H, W) in [-1, 1] look like MiniSprites? The check the model zoo's denoisers are scored by.

    A clip passes when

    1. every frame shows the same set of palette colours (a colour is shown in a frame when at least
       ``min_pixels`` pixels lie within ``tau`` of it, :func:`track_sprites`' cores), with 1 to ``max_sprites``
       colours: no sprite appears, vanishes or changes colour;
    2. each sprite's centre moves smoothly: between consecutive frames it moves at most ``max_step`` and its
       velocity changes by at most ``max_accel`` (both in units of min(H, W); MiniSprites' fastest sprites move
       0.053 and a bounce off a wall changes the velocity by at most 0.105).

    Real MiniSprites clips fail only when one sprite hides another (then a colour vanishes for some frames, or
    its centroid jumps): 90% of 32 x 32 x 8 test clips and 92% of 64 x 64 x 16 pass, the ceiling a model is
    compared with; uniform noise passes 0%, real clips with shuffled frames 5% at 32 x 32 x 8 and 0% at
    64 x 64 x 16 (256 clips each; bench/results/measurements.md, "the sprite check's ceiling"). Returns
    ``{"passed", "colors", "reason"}`` (reason ``""`` when it passes, else the first rule broken)."""
    v = torch.as_tensor(video).detach().to("cpu", torch.float32)
    if v.ndim != 4 or v.shape[0] != 3:
        raise ValueError(f"video must have shape (3, T, H, W), got {tuple(v.shape)}")
    if not isinstance(max_sprites, int) or max_sprites < 1:
        raise ValueError(f"max_sprites={max_sprites!r} is invalid: expected an int >= 1")
    _, T, H, W = v.shape
    rgb = (v + 1.0) * 0.5
    core = _palette_cores(rgb, torch.from_numpy(PALETTE), tau)  # (P, T, H, W)
    shown = core.sum((2, 3)) >= min_pixels  # (P, T)
    always, ever = shown.all(1), shown.any(1)
    colors = torch.nonzero(always)[:, 0].tolist()
    if (ever & ~always).any():
        names = [COLOR_NAMES[c] for c in torch.nonzero(ever & ~always)[:, 0].tolist()]
        return {"passed": False, "colors": colors, "reason": f"colour(s) {names} shown in some frames only"}
    if not 1 <= len(colors) <= max_sprites:
        return {"passed": False, "colors": colors, "reason": f"{len(colors)} sprite colours (allowed 1-{max_sprites})"}
    if T > 1:
        centers, _ = track_sprites(v, colors, tau=tau, min_pixels=min_pixels)  # (K, T, 2)
        scale = min(H, W)
        vel = centers.diff(dim=1) / scale  # (K, T-1, 2)
        step = vel.norm(dim=-1)
        if not torch.isfinite(step).all() or step.max() > max_step:
            return {"passed": False, "colors": colors, "reason": f"a centre jumps {step.max():.3f} of the frame"}
        if T > 2:
            accel = vel.diff(dim=1).norm(dim=-1)
            if accel.max() > max_accel:
                return {"passed": False, "colors": colors,
                        "reason": f"a centre's velocity changes by {accel.max():.3f} of the frame"}
    return {"passed": True, "colors": colors, "reason": ""}


def sprite_check_rate(videos) -> float:
    """The share of clips (N, 3, T, H, W) in [-1, 1] that pass :func:`sprite_check`."""
    v = torch.as_tensor(videos)
    if v.ndim != 5 or v.shape[1] != 3 or len(v) == 0:
        raise ValueError(f"videos must have shape (N, 3, T, H, W) with N >= 1, got {tuple(v.shape)}")
    return sum(sprite_check(x)["passed"] for x in v) / len(v)


def centre_jitter(videos: torch.Tensor) -> float:
    """Mean |second difference| (pixels per frame^2) of the tracked centres of the sprites shown in every frame:
    how far a sprite's path is from locally straight (MiniSprites' own clips: about 0.3 px at 32 px, mostly
    circles and bounces). NaN when no clip shows a sprite in every frame."""
    vals = []
    for v in videos:
        centers, _ = track_sprites(v)
        ok = torch.isfinite(centers).all(-1).all(-1)
        if ok.any() and centers.shape[1] > 2:
            vals.append(centers[ok].diff(dim=1).diff(dim=1).norm(dim=-1).mean())
    return float(torch.stack(vals).mean()) if vals else float("nan")


def sprite_scores(videos: torch.Tensor) -> dict:
    """Sprite-check pass rate, the reasons clips failed (counted by rule) and the centre jitter of ``videos``."""
    results = [sprite_check(v) for v in videos]
    reasons: dict[str, int] = {}
    for r in results:
        if not r["passed"]:
            key = ("colours change" if "some frames" in r["reason"] else "sprite count" if "colours (allowed" in
                   r["reason"] else "not smooth")
            reasons[key] = reasons.get(key, 0) + 1
    return {"sprite_check": sum(r["passed"] for r in results) / len(results), "failures": reasons,
            "centre_jitter_px": round(centre_jitter(videos), 3), "clips": len(results)}
