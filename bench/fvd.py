"""Benchmark: how much each FVD protocol choice moves the number, and FVD of the zoo's models (E1).

    python bench/fvd.py --part protocol     # clip counts, resize, value range, features, frames (about 35 min, 2 cores)
    python bench/fvd.py --part zoo          # FVD and per-frame FD of every zoo model vs MiniSprites' test split
    python bench/fvd.py --part speed        # I3D clips per second on this machine

Everything on MiniSprites at 32 px. ``protocol``: two disjoint real splits (seeds 0 and 1) give the floor at
N = 16..128 clips (FVD's bias shrinks with N); a fixed corruption (real vs the same clips blurred, sigma 1 px)
is then measured under each variant of the protocol, so the spread says how far two implementations can disagree
on the same clips. Results merge into ``bench/results/fvd-<machine>.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from minivid.metrics import frechet_distance, i3d_logits, load_i3d  # noqa: E402
from minivid.metrics.evaluate import evaluate_videos, round_metrics  # noqa: E402
from minivid.pipeline.zoo import RECIPES, clip_pool, zoo_eval_set  # noqa: E402
from minivid.utils.machine import device_name, slug, versions  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def _blur(v, sigma=1.0):
    k = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-k**2 / (2 * sigma**2))
    k = k / k.sum()
    b, c, t, h, w = v.shape
    x = v.permute(0, 2, 1, 3, 4).reshape(b * t * c, 1, h, w)
    x = F.conv2d(F.pad(x, (3, 3, 3, 3), mode="replicate"), k.view(1, 1, 1, 7))
    x = F.conv2d(x, k.view(1, 1, 7, 1))
    return x.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)


@torch.no_grad()
def _logits_custom(v01, resize_fn, scale=True, features=False, batch=8):
    """I3D on clips (N, 3, 16, H, W) in [0, 1] with a custom resize (for protocol variants the library does not offer)."""
    model = load_i3d()
    out = []
    for i in range(0, len(v01), batch):
        x = v01[i:i + batch]
        n, c, t, h, w = x.shape
        f = resize_fn(x.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w))
        f = f.reshape(n, t, c, 224, 224).permute(0, 2, 1, 3, 4)
        f = f * 2 - 1 if scale else f
        y = model(f.contiguous(memory_format=torch.channels_last_3d), features=features)
        out.append(y[1] if features else y)
    return torch.cat(out)


def _tf1_legacy_bilinear(frames):
    """TF1's tf.image.resize_bilinear default (align_corners=False, half_pixel_centers=False): src = dst * in/out."""
    n, c, h, w = frames.shape
    ys = torch.arange(224, dtype=torch.float32) * h / 224
    xs = torch.arange(224, dtype=torch.float32) * w / 224
    gy = ys / (h - 1) * 2 - 1  # grid_sample with align_corners=True maps -1..1 to pixel centres 0..h-1
    gx = xs / (w - 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1).expand(n, 224, 224, 2)
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=True)


def protocol(n_max: int = 128, n: int = 64) -> dict:
    t0 = time.monotonic()
    a = (clip_pool(n_max, 32, 16, split="test", seed=0) + 1) / 2
    b = (clip_pool(n_max, 32, 16, split="test", seed=1) + 1) / 2
    la, lb = i3d_logits(a), i3d_logits(b)
    floor = {str(k): frechet_distance(la[:k], lb[:k]) for k in (16, 32, 64, 128) if k <= n_max}
    real, blurred = a[:n], _blur(a[:n])
    base = frechet_distance(la[:n], i3d_logits(blurred))
    bil = lambda f: F.interpolate(f, size=(224, 224), mode="bilinear", align_corners=False)  # noqa: E731
    variants = {
        "default: bilinear half-pixel to 224, [-1, 1], logits, 16 frames": base,
        "TF1 legacy bilinear (half_pixel_centers=False)": frechet_distance(
            _logits_custom(real, _tf1_legacy_bilinear), _logits_custom(blurred, _tf1_legacy_bilinear)),
        "bicubic resize": frechet_distance(
            _logits_custom(real, lambda f: F.interpolate(f, size=(224, 224), mode="bicubic", align_corners=False).clamp(0, 1)),
            _logits_custom(blurred, lambda f: F.interpolate(f, size=(224, 224), mode="bicubic", align_corners=False).clamp(0, 1))),
        "values left in [0, 1] (a scaling bug)": frechet_distance(
            _logits_custom(real, bil, scale=False), _logits_custom(blurred, bil, scale=False)),
        "1024-d pool features instead of logits": frechet_distance(
            _logits_custom(real, bil, features=True), _logits_custom(blurred, bil, features=True)),
        "8 frames shown twice each (8-frame models)": frechet_distance(
            i3d_logits(real[:, :, :8]), i3d_logits(blurred[:, :, :8])),
    }
    return {"clips": n, "size": 32, "frames": 16, "real_vs_real_floor_by_clips": floor,
            "corruption": "Gaussian blur sigma 1 px, 7 taps, per frame",
            "fvd_real_vs_blurred_by_protocol": variants,
            "note": "centre_crop equals bilinear exactly on square clips (MiniSprites); it differs only for non-square "
                    "videos", "seconds": round(time.monotonic() - t0, 1)}


def zoo(n: int = 32, only: list[str] | None = None) -> dict:
    out = {}
    for name in [m for m in (only or RECIPES) if m != "floor"]:
        if name in ("motion-vae", "t5"):  # flow videos; a text encoder: no MiniSprites clips to score
            continue
        t0 = time.monotonic()
        s = zoo_eval_set(name, n)
        m = evaluate_videos(s["videos"], s["reference"], paired=s["paired"], captions=s["captions"], paths=s["paths"],
                            colors=s["colors"], from_frame=s["from_frame"], progress=False)
        out[name] = {"what": s["what"], "fvd": m["fvd"]["fvd"], "frame_fd": m["frame_fd"]["value"],
                     "sprite_check": m["sprite_check"]["sprite_check"],
                     "reference_sprite_check": m["reference"]["sprite_check"]["sprite_check"],
                     **({"psnr": m["psnr"]} if "psnr" in m else {}),
                     **({"trajectory_error_px": m["trajectory"]["trajectory_error_px"]} if "trajectory" in m else {}),
                     **({"caption_color": m["caption_accuracy"]["color"]} if "caption_accuracy" in m else {}),
                     "seconds": round(time.monotonic() - t0, 1)}
        print(name, json.dumps(round_metrics(out[name])), flush=True)
    if only is None or "floor" in only:  # the floor at the same clip count: two disjoint real splits
        a, b = (clip_pool(n, 32, 8, split="test", seed=0) + 1) / 2, (clip_pool(n, 32, 8, split="test", seed=1) + 1) / 2
        out["real vs real (8 frames, 1-3 sprites)"] = {"fvd": frechet_distance(i3d_logits(a), i3d_logits(b))}
    return {"clips_per_side": n, "models": out}


def speed() -> dict:
    """I3D throughput on CUDA when present (fp32, batch 32), else on the CPU (channels-last, batch 8)."""
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_i3d(device=dev)
    batch = 32 if dev.type == "cuda" else 8
    x = torch.rand(batch, 3, 16, 224, 224, device=dev) * 2 - 1
    if dev.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        model(x[:2])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.monotonic()
        model(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.monotonic() - t0
    return {"clips_per_second": round(batch / dt, 3), "device": device_name(str(dev)), "batch": batch,
            "threads": torch.get_num_threads(), "clip": "16 x 224 x 224"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("protocol", "zoo", "speed"), required=True)
    ap.add_argument("--clips", type=int, default=None, help="clips per side (protocol: 64, zoo: 32)")
    ap.add_argument("--models", nargs="+", default=None, help="zoo part: only these entries (merged into the JSON); "
                    "'floor' adds real vs real, two disjoint sets of test clips")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    dev = device_name("cuda" if torch.cuda.is_available() else "cpu")
    path = args.out or RESULTS / f"fvd-{slug(dev)}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    if args.part == "protocol":
        data["protocol"] = protocol(n=args.clips or 64)
    elif args.part == "zoo" and args.models:
        part = zoo(args.clips or 32, args.models)
        data.setdefault("zoo", {"clips_per_side": part["clips_per_side"], "models": {}})["models"].update(part["models"])
    elif args.part == "zoo":
        data["zoo"] = zoo(args.clips or 32)
    else:
        data["speed"] = speed()
    data.update({"machine": dev, "versions": versions(), "date": _dt.date.today().isoformat()})
    path.write_text(json.dumps(round_metrics(data), indent=2) + "\n")
    print(json.dumps(round_metrics({args.part: data[args.part]}), indent=2))
    print("written to", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
