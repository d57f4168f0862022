"""Caption attribute accuracy: does a generated one-sprite clip show the colour its caption asks for, moving the
asked way? Scored with MiniSprites' tracker (:func:`minivid.data.track_sprites`)."""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch

from ..data import track_sprites
from ..data.minisprites import COLOR_NAMES, DIRECTIONS


_ANGLES = {word: k * 45.0 for k, word in enumerate(DIRECTIONS)}  # screen angle, counter-clockwise from "right"


def parse_caption(caption: str) -> dict:
    """The colour and the motion a one-sprite MiniSprites caption asks for: ``{"color", "direction" (degrees,
    counter-clockwise from right, or None), "turn" (+1 counterclockwise, -1 clockwise, or None)}``."""
    words = caption.split()
    color = next((w for w in words if w in COLOR_NAMES), None)
    if color is None:
        raise ValueError(f"caption={caption!r} names no palette colour; allowed: {COLOR_NAMES}")
    direction = turn = None
    m = re.search(r"moves (.+?)(?: along a wavy path)?$", caption)
    if m and m.group(1) in _ANGLES:
        direction = _ANGLES[m.group(1)]
    if "circles counterclockwise" in caption:
        turn = 1
    elif "circles clockwise" in caption:
        turn = -1
    return {"color": color, "direction": direction, "turn": turn}


def caption_scores(video: torch.Tensor, caption: str) -> dict:
    """Is the caption's colour shown in every frame, and (where the caption says) does it move in the asked
    direction (within 45 degrees, from its first to its last frame) or turn the asked way?"""
    want = parse_caption(caption)
    centers, _ = track_sprites(video, [want["color"]])  # (1, T, 2)
    c = centers[0]
    color_ok = bool(torch.isfinite(c).all())
    out = {"color": color_ok, "direction": None}
    if not color_ok:
        out["direction"] = False if (want["direction"] is not None or want["turn"] is not None) else None
        return out
    if want["direction"] is not None:
        d = c[-1] - c[0]
        angle = math.degrees(math.atan2(-float(d[1]), float(d[0])))  # screen y points down
        diff = abs((angle - want["direction"] + 180.0) % 360.0 - 180.0)
        out["direction"] = bool(d.norm() > 0.5 and diff < 45.0)
    elif want["turn"] is not None:
        v = c.diff(dim=0)
        cross = v[:-1, 0] * -v[1:, 1] - (-v[:-1, 1]) * v[1:, 0]  # z of v_i x v_{i+1} with y up
        out["direction"] = bool(torch.sign(cross.sum()).item() == want["turn"])
    return out


def caption_accuracy(videos: torch.Tensor, captions: Sequence[str]) -> dict:
    """Colour accuracy over all clips and direction accuracy over the clips whose caption asks for a direction or
    a turn (bounces are not scored), for clips (N, 3, T, H, W) and their captions."""
    if len(videos) != len(captions) or len(captions) == 0:
        raise ValueError(f"videos ({len(videos)}) and captions ({len(captions)}) must be equally many, at least 1")
    scores = [caption_scores(v, c) for v, c in zip(videos, captions)]
    dirs = [s["direction"] for s in scores if s["direction"] is not None]
    return {"color": sum(s["color"] for s in scores) / len(scores),
            "direction": sum(dirs) / len(dirs) if dirs else float("nan"), "clips": len(scores),
            "direction_clips": len(dirs)}
