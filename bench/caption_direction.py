"""Benchmark: does the full system move a caption-only sprite the way its caption asks (C4-C5)? One table and one JSON.

    python bench/caption_direction.py                                  # the zoo's system, 64 held-out clips
    python bench/caption_direction.py --clips 128 --guidance 4,8,10    # a text-guidance sweep
    python bench/caption_direction.py --checkpoint outputs/runs/NAME   # a run of `python -m minivid train cpu ...`

For a full system (a zoo entry trained from a preset, or a run folder) and each text guidance scale: the system's
held-out uses as its card scores them (:func:`minivid.pipeline.run.system_metrics`: the caption alone, caption + the
clip's path, first frame + caption + path), each with its sprite check, caption colour and direction accuracy
(within 45 degrees of the asked one of 8 directions, or the asked turn, :mod:`minivid.metrics.captions`), and how far
the tracked sprite of the caption's colour moves from the first frame to the last (pixels, mean over the samples
where it is found), next to the real clips' own displacement. Models with trajectory guidance also get "first frame +
caption", the given first frame with the null trajectory (the motion can only come from the caption). The text
encoder's :func:`minivid.pipeline.zoo.t5_metrics` (how far a caption's embedding moves when its colour, shape or
motion phrase is replaced) comes with it. A sprite moved in a random direction passes the direction check about a
quarter of the time. Entries of ``bench/results/caption_direction-<machine>.json`` are keyed by checkpoint; a run
replaces its own.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minivid.utils.machine import device_name, slug, versions  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def parse_scales(text: str) -> list[float]:
    """``"4,8,10"`` -> [4.0, 8.0, 10.0]; a ValueError naming ``--guidance`` for anything else."""
    try:
        scales = [float(x) for x in text.split(",")]
    except ValueError:
        scales = []
    if not scales or any(not s >= 1.0 for s in scales):
        raise ValueError(f"--guidance={text!r} must be comma-separated text guidance scales >= 1 (1: no guidance), "
                         "e.g. 4,8,10")
    return scales


@torch.no_grad()
def displacement_px(videos: torch.Tensor, colors) -> tuple[float, int]:
    """Mean first-to-last-frame distance (px) of the tracked sprite of each clip's colour, over the clips where the
    tracker finds it in every frame, and how many those are."""
    from minivid.data import track_sprites

    moves = []
    for v, color in zip(videos, colors):
        c = track_sprites(v, [color])[0][0]  # (T, 2)
        if torch.isfinite(c).all():
            moves.append(float((c[-1] - c[0]).norm()))
    return (round(sum(moves) / len(moves), 3) if moves else float("nan")), len(moves)


def _row(scores: dict, videos: torch.Tensor, colors) -> dict:
    moved, found = displacement_px(videos, colors)
    a = scores["caption_accuracy"]
    return {"sprite_check": scores["sprite_check"], "color": a["color"], "direction": a["direction"],
            "direction_clips": a["direction_clips"], "trajectory_error_px": scores.get("trajectory_error_px"),
            "displacement_px": moved, "tracked_clips": found}


@torch.no_grad()
def caption_direction(checkpoint: str, clips: int = 64, scales=(4.0,), seed: int = 0) -> dict:
    """The report described in the module docstring, for one full-system checkpoint."""
    from minivid.metrics.captions import parse_caption
    from minivid.pipeline.run import content_frame, load_run, run_spaces, system_data, system_metrics
    from minivid.pipeline.zoo import t5_metrics

    if not isinstance(clips, int) or clips < 1:
        raise ValueError(f"clips={clips!r} must be an integer >= 1")
    model, cfg, _ = load_run(checkpoint)
    model = model.float().eval()
    space, motion_space = run_spaces(cfg)
    test = system_data(space, motion_space, clips, cfg.size, cfg.frames, split="test", seed=seed)
    colors = [parse_caption(c)["color"] for c in test.captions]
    real = torch.stack([p[0] for p in test.paths])  # (n, T, 2): each clip's one sprite
    out = {"checkpoint": checkpoint, "clips": clips, "seed": seed, "frames": cfg.frames, "size": cfg.size,
           "real_displacement_px": round(float((real[:, -1] - real[:, 0]).norm(dim=-1).mean()), 3),
           "t5": t5_metrics(model.text)["moves"], "uses": {}}
    for g in scales:
        scores, videos = system_metrics(model, cfg, space, motion_space, guidance={"text": g}, seed=seed, data=test,
                                        return_videos=True)
        out["uses"][f"text guidance {g:g}"] = {use: _row(scores[use], videos[use], colors) for use in videos}
    if model.motion is not None and content_frame(space, cfg.frames) is None:
        scores, videos = system_metrics(model, cfg, space, motion_space, seed=seed, data=test, modes=["image+text"],
                                        return_videos=True)
        out["first frame + caption (null trajectory, default guidance)"] = _row(scores["image+text"],
                                                                              videos["image+text"], colors)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="system", help="a full-system zoo entry or run folder (default: system)")
    ap.add_argument("--clips", type=int, default=64, help="held-out one-sprite clips (default 64)")
    ap.add_argument("--guidance", default="4", help="comma-separated text guidance scales (default 4, the sampler's)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON path (default bench/results/caption_direction-<machine>.json)")
    args = ap.parse_args(argv)
    scales = parse_scales(args.guidance)  # before any work
    if args.clips < 1:
        raise ValueError(f"--clips={args.clips} must be >= 1")
    r = caption_direction(args.checkpoint, args.clips, scales)
    print(f"{args.checkpoint}: {args.clips} held-out clips; the T5's moves (colour / shape / motion) "
          f"{r['t5']['colour']:.2f} / {r['t5']['shape']:.2f} / {r['t5']['motion']:.2f}; "
          f"real clips move {r['real_displacement_px']:.1f} px")
    print(f"{'':58s} {'sprite':>7s} {'colour':>7s} {'dir.':>6s} {'moved px':>9s} {'error px':>9s}")
    rows = [(f"{k}, {use}", row) for k, uses in r["uses"].items() for use, row in uses.items()]
    rows += [(k, v) for k, v in r.items() if k.startswith("first frame + caption")]
    for name, row in rows:
        err = row["trajectory_error_px"]
        print(f"{name:58s} {row['sprite_check']:7.0%} {row['color']:7.0%} {row['direction']:6.0%} "
              f"{row['displacement_px']:9.2f} {'' if err is None else f'{err:9.2f}'}")
    name = device_name("cpu")
    out = args.out or RESULTS / f"caption_direction-{slug(name)}.json"
    old = json.loads(out.read_text()) if out.is_file() else {}
    entries = {**old.get("entries", {}), args.checkpoint: {**r, "date": _dt.datetime.now().isoformat()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": name, "versions": versions(), "entries": entries}, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
