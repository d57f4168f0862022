"""Benchmark: the compression table of notebook 03 (R1, R2, C1) at a longer training budget.

    python bench/vae_compression.py                  # scale follows the hardware (cpu or gpu)
    python bench/vae_compression.py --scale cpu      # the CPU recipe (same models as notebook 03)
    python bench/vae_compression.py --steps 2000     # override the budget

Trains four VAEs on MiniSprites at the *same budget* (same number of updates, same batch, same clips,
same optimiser, L1 + MSE + 1e-6 KL; no LPIPS, whose pretrained VGG weights cannot be downloaded here):

    2D VAE 1x8x8 (|z|=4)          per-frame SD-VAE-style baseline       (minivid.autoencoders.vae2d)
    causal 3D VAE 4x8x8 (|z|=16)  CogVideoX, 4k+1 frames (C1)           (minivid.autoencoders.causal_vae)
    Reducio 4x16x16 (|z|=16)      3D VAE, video only (R2)               (minivid.autoencoders.reducio)
    Reducio 4x32x32 (|z|=16)      3D VAE + content frame (R2)           (minivid.autoencoders.reducio)

and reports, on held-out clips (``split="test"``): downsampling, |z|, latent elements, element ratio,
parameters, PSNR and SSIM (mean over clips of the per-frame mean), the content-frame check (Reducio with
another clip's content frame), training time, and encode/decode time per clip (median of repeated runs
after warm-up). Prints a table and writes ``bench/results/vae_compression-<device>.json``; with
``--save-weights DIR`` also the four models as safetensors.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minivid.autoencoders.blocks import compression_stats  # noqa: E402
from minivid.autoencoders.compare import (PAPER_PSNR, build_compression_models, evaluate,  # noqa: E402
                                          median_time, reference_psnr, train_steps)
from minivid.data import MiniSprites  # noqa: E402
from minivid.utils import save_json  # noqa: E402
from minivid.utils.machine import device_name, slug, versions  # noqa: E402

RESULTS = ROOT / "bench" / "results"

# scale -> widths, clip length (the causal VAE gets one frame more: 4k+1) and the optimisation budget. The CPU
# recipe is notebook 03's, trained 5x longer.
SCALES = {
    "cpu": dict(channels=8, num_res_blocks=1, frames=8, batch=4, steps=1000, lr=3e-3, warmup=20, pool=2048),
    "gpu": dict(channels=64, num_res_blocks=2, frames=16, batch=8, steps=6000, lr=1e-3, warmup=200, pool=2048),
}
# ----------------------------------------------------------------------------------------------------
# device and versions
# ----------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------
# train and evaluate one model
# ----------------------------------------------------------------------------------------------------


def clips(split: str, n: int, frames: int, size: int, seed: int, offset: int = 0) -> torch.Tensor:
    data = MiniSprites(num_videos=offset + n, size=size, num_frames=frames, split=split, seed=seed)
    return torch.stack([data[offset + i]["video"] for i in range(n)])


def run(scale: str, steps: int | None, size: int, test_clips: int, seed: int, save_weights: str | None,
        log_every: int) -> dict:
    device = torch.device("cuda" if scale == "gpu" and torch.cuda.is_available() else "cpu")
    cfg = dict(SCALES[scale])
    if steps is not None:
        cfg["steps"] = steps
    torch.manual_seed(seed)
    models = build_compression_models(cfg["channels"], cfg["num_res_blocks"], cfg["frames"])
    rows = []
    pools: dict[int, torch.Tensor] = {}
    for name, (model, frames) in models.items():
        if frames not in pools:  # a pool of training clips, drawn once; every model sees the same batches
            pools[frames] = clips("train", min(cfg["pool"], cfg["steps"] * cfg["batch"]), frames, size, seed)
        pool = pools[frames]
        order = torch.randint(len(pool), (cfg["steps"], cfg["batch"]), generator=torch.Generator().manual_seed(seed))
        print(f"{name}: training {cfg['steps']} steps of {cfg['batch']} clips {size}x{size}x{frames} "
              f"(pool of {len(pool)}) on {device}", flush=True)
        model.to(device)
        t0 = time.perf_counter()
        train_steps(model, lambda step: pool[order[step]], cfg["steps"], cfg["lr"], cfg["warmup"], seed, device,
                    log_every)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        test = clips("test", test_clips, frames, size, seed)
        metrics = evaluate(model, test, device)
        x1 = test[:1].to(device)
        model.eval()
        with torch.no_grad():
            z1 = model.encode(x1).mode()
            cond = model.conditions(x1)
            enc_s = median_time(lambda: model.encode(x1), device)
            dec_s = median_time(lambda: model.decode(z1, **cond), device)
        stats = compression_stats(model, tuple(x1.shape))
        row = {"model": name, "frames": frames, **stats, "latent_shape": list(stats["latent_shape"]),
               **metrics, "train_seconds": train_s, "encode_ms": 1e3 * enc_s, "decode_ms": 1e3 * dec_s,
               "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(model.config).items()}}
        rows.append(row)
        print(f"    PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.3f}"
              + (f"  (wrong content frame: {metrics['psnr_wrong_content']:.2f} dB)" if "psnr_wrong_content" in metrics else "")
              + f"  train {train_s:.0f} s", flush=True)
        if save_weights:
            Path(save_weights).mkdir(parents=True, exist_ok=True)
            model.cpu().save(Path(save_weights) / f"{slug(name)}.safetensors")
        model.cpu()
    dev = device_name()
    return {"benchmark": "vae_compression", "device": dev, "device_kind": device.type,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "versions": versions(),
            "threads": torch.get_num_threads(),
            "settings": {"scale": scale, "size": size, "test_clips": test_clips, "seed": seed,
                         "loss": "L1 + MSE + 1e-6 KL, Adam (0.9, 0.99), warm-up + cosine (no LPIPS: no pretrained VGG weights offline; no GAN)", **cfg},
            "references": reference_psnr(clips("test", test_clips, cfg["frames"], size, seed)),
            "paper": PAPER_PSNR, "rows": rows}


def print_table(result: dict) -> None:
    s = result["settings"]
    print(f"\n{result['device']}  ({s['steps']} steps x {s['batch']} clips, {s['size']}x{s['size']}x{s['frames']}, "
          f"{s['test_clips']} held-out clips)")
    head = f"{'model':28} {'f_t x f_s^2':>11} {'|z|':>4} {'latent':>7} {'ratio':>6} {'params':>9} " \
           f"{'PSNR':>6} {'SSIM':>6} {'enc ms':>8} {'dec ms':>8}"
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        print(f"{r['model']:28} {r['factor']:>11} {r['latent_channels']:>4} {r['latent_elements']:>7} "
              f"{r['element_ratio']:>6.0f} {r['parameters']:>9,} {r['psnr']:>6.2f} {r['ssim']:>6.3f} "
              f"{r['encode_ms']:>8.1f} {r['decode_ms']:>8.1f}")
    for r in result["rows"]:
        if "psnr_wrong_content" in r:
            print(f"{r['model']}: {r['psnr']:.2f} dB with its own content frame, "
                  f"{r['psnr_wrong_content']:.2f} dB with another clip's")
    print("latent-free references:", ", ".join(f"{k} {v:.2f} dB" for k, v in result["references"].items()))
    print("paper (256x256, 16 frames):", ", ".join(f"{k} {v} dB" for k, v in PAPER_PSNR.items()))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="gpu" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=None, help="training updates per model (default: the scale's)")
    ap.add_argument("--size", type=int, default=64, help="frame size (f_s=32 needs at least 64)")
    ap.add_argument("--test-clips", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    ap.add_argument("--save-weights", default=None, help="folder for the trained models (safetensors)")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/vae_compression-<device>.json)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.scale, args.steps, args.size, args.test_clips, args.seed, args.save_weights, args.log_every)
    print_table(result)
    out = Path(args.out) if args.out else RESULTS / f"vae_compression-{slug(result['device'])}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_json(result, out)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return result


if __name__ == "__main__":
    main()
