"""``python -m minivid eval``: every applicable metric for a set of generated clips, written as JSON.

Two kinds of source:

- a **folder** of videos (``.mp4 .avi .webm .mov .mkv .gif``, decoded with PyAV) and/or NumPy files (``.npy``:
  one clip (3, T, H, W) or a stack (N, 3, T, H, W), float in [-1, 1] or uint8), read in sorted file order; the
  reference is another folder (``--reference DIR``) or MiniSprites' test split at the clips' size and frame count
  (``--reference minisprites``, the default);
- a **checkpoint** (``--checkpoint``): a zoo entry's samples (denoisers) or reconstructions of test clips
  (autoencoders), against MiniSprites' test split, made by :func:`minivid.pipeline.zoo.zoo_eval_set`; or a full
  system's samples from held-out captions and paths (a ``train`` run folder, one of its checkpoints, or a zoo
  ``system`` entry), made by :func:`minivid.pipeline.run.system_eval_set`.

Metrics (:func:`evaluate_videos`): the sprite check of the clips and of the reference (its ceiling); FVD with its
clip counts and protocol, and beside it ``frame_fd``, the same Fréchet distance on still clips (each clip's middle
frame repeated), which sees appearance only: FVD favours per-frame quality over motion (Ge et al. 2024), so the
gap between the two is the part of FVD that motion explains; PSNR/SSIM when clips and reference are pairs
(reconstructions); caption attribute accuracy when captions are given; trajectory error (T9) when requested paths
are given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .captions import caption_accuracy
from .fvd import frechet_distance, fvd as _fvd, i3d_logits
from .image import psnr, ssim
from .sprites import sprite_scores
from .trajectory import path_errors

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mov", ".mkv", ".gif")
ARRAY_SUFFIXES = (".npy",)


def _as_clip_stack(a, where: str) -> torch.Tensor:
    t = torch.as_tensor(a)
    if t.ndim == 4:
        t = t[None]
    if t.ndim != 5 or t.shape[1] != 3:
        raise ValueError(f"{where}: expected a clip (3, T, H, W) or clips (N, 3, T, H, W), got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.float() / 127.5 - 1.0
    t = t.float()
    if t.min() < -1.001 or t.max() > 1.001:
        raise ValueError(f"{where}: values in [{float(t.min()):.3f}, {float(t.max()):.3f}]; float clips must be in "
                         "[-1, 1] (or store uint8)")
    return t.clamp(-1, 1)


def load_clips(folder, max_clips: int | None = None, frames: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """Clips (N, 3, T, H, W) in [-1, 1] and their names from a folder of video and ``.npy`` files (sorted by name).
    ``frames`` keeps the first ``frames`` of each clip; all clips must then share one shape."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"clip folder {str(root)!r} does not exist")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES + ARRAY_SUFFIXES)
    if not files:
        raise ValueError(f"{root} holds no videos ({', '.join(VIDEO_SUFFIXES)}) or clip arrays (.npy)")
    from ..utils.video import read_video

    clips, names = [], []
    for p in files:
        if max_clips is not None and len(clips) >= max_clips:
            break
        if p.suffix.lower() in ARRAY_SUFFIXES:
            stack = _as_clip_stack(np.load(p, allow_pickle=False), str(p))
            names += [p.stem] if len(stack) == 1 else [f"{p.stem}[{i}]" for i in range(len(stack))]
            clips += list(stack)
        else:
            clips.append(read_video(p, max_frames=frames))
            names.append(p.stem)
    clips, names = clips[:max_clips], names[:max_clips]
    if frames is not None:
        short = [n for n, c in zip(names, clips) if c.shape[1] < frames]
        if short:
            raise ValueError(f"frames={frames}: clip(s) {short[:3]} have fewer frames")
        clips = [c[:, :frames] for c in clips]
    shapes = {tuple(c.shape) for c in clips}
    if len(shapes) > 1:
        first = tuple(clips[0].shape)
        odd = next(n for n, c in zip(names, clips) if tuple(c.shape) != first)
        raise ValueError(f"clips in {root} differ in shape: {names[0]} is {first}, {odd} is not (pass --frames to "
                         "cut them to one length; sizes must match)")
    return torch.stack(clips), names


def _frame_logits(videos01: torch.Tensor, **kw) -> torch.Tensor:
    """I3D logits of still clips: each clip's middle frame shown for 16 frames (appearance without motion)."""
    mid = videos01[:, :, videos01.shape[2] // 2:videos01.shape[2] // 2 + 1]
    return i3d_logits(mid.expand(-1, -1, 16, -1, -1), **{**kw, "num_frames": 16})


def evaluate_videos(videos: torch.Tensor, reference: torch.Tensor | None = None, *, paired: bool = False,
                    captions: Sequence[str] | None = None, paths: torch.Tensor | None = None,
                    colors: torch.Tensor | None = None, from_frame: int = 0, fvd: bool = True,
                    frame_fd: bool = True, resize: str = "bilinear", num_frames: int | None = 16, batch_size: int = 8,
                    device=None, weights=None, progress: bool | None = None) -> dict:
    """Every applicable metric of clips ``videos`` (N, 3, T, H, W) in [-1, 1] (the library's convention; FVD's
    [0, 1] mapping happens inside). ``reference`` real clips give FVD / frame FD (and PSNR/SSIM when ``paired``:
    same shape, clip i reconstructs reference i); ``captions`` (N strings) give caption accuracy; ``paths`` (N, T, 2)
    with ``colors`` (N,) palette indices give the trajectory error over frames ``from_frame..``."""
    v = _as_clip_stack(videos, "videos")
    out: dict = {"clips": len(v), "clip_shape": list(v.shape[1:]), "sprite_check": sprite_scores(v)}
    if captions is not None:
        if len(captions) != len(v):
            raise ValueError(f"captions: {len(captions)} given for {len(v)} clips")
        out["caption_accuracy"] = caption_accuracy(v, list(captions))
    if paths is not None:
        p = torch.as_tensor(paths, dtype=torch.float32)
        if colors is None or p.shape != (len(v), v.shape[2], 2) or len(colors) != len(v):
            raise ValueError(f"paths must be (N, T, 2) = {(len(v), v.shape[2], 2)} with colors (N,), got "
                             f"{tuple(p.shape)} and {None if colors is None else len(colors)} colours")
        out["trajectory"] = path_errors(v, p, torch.as_tensor(colors), from_frame=from_frame)
    if reference is None:
        return out
    r = _as_clip_stack(reference, "reference")
    out["reference"] = {"clips": len(r), "clip_shape": list(r.shape[1:]), "sprite_check": sprite_scores(r)}
    if paired:
        if r.shape != v.shape:
            raise ValueError(f"paired: clips {tuple(v.shape)} and reference {tuple(r.shape)} must have one shape")
        out["psnr"] = float(psnr(v, r).mean())
        out["ssim"] = float(ssim(v, r).mean())
    if fvd or frame_fd:
        kw = dict(resize=resize, batch_size=batch_size, device=device, weights=weights, progress=progress)
        v01, r01 = (v + 1) / 2, (r + 1) / 2
        if fvd:
            res = _fvd(v01, r01, num_frames=num_frames, **kw)
            out["fvd"] = res.as_dict()
        if frame_fd:
            fd = frechet_distance(_frame_logits(v01, **kw), _frame_logits(r01, **kw))
            out["frame_fd"] = {"value": fd, "clips_a": len(v), "clips_b": len(r),
                               "features": "i3d-kinetics-400 logits of each clip's middle frame repeated 16 times"}
    return out


def load_captions(path, names: Sequence[str]) -> list[str]:
    """Captions for clips ``names`` from a JSON object {name: caption}; every clip needs one."""
    d = json.loads(Path(path).read_text())
    if not isinstance(d, dict):
        raise ValueError(f"captions file {path}: expected a JSON object {{clip name: caption}}")
    missing = [n for n in names if n not in d]
    if missing:
        raise ValueError(f"captions file {path} has no caption for {missing[:3]} ({len(missing)} clips)")
    return [str(d[n]) for n in names]


def round_metrics(d):
    if isinstance(d, dict):
        return {k: round_metrics(v) for k, v in d.items()}
    if isinstance(d, list):
        return [round_metrics(v) for v in d]
    if isinstance(d, float):
        return round(d, 4) if d == d else None
    return d


def write_json(metrics: dict, path) -> Path:
    """Write metrics (rounded to 4 decimals, NaN as null) atomically."""
    from ..utils.checkpoint import save_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_json(round_metrics(metrics), path)
    return path
