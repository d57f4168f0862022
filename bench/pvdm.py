"""Benchmark: PVDM's triplane autoencoder (P1-P6) at the notebook's budget.

    python bench/pvdm.py                 # CPU: notebook 02's config (32x32, 8 frames), its training budget
    python bench/pvdm.py --seconds 300   # a longer budget (recorded in the JSON)
    python bench/pvdm.py                 # on a CUDA GPU: 64x64, 16 frames, the notebook's GPU config

Trains the autoencoder with :class:`minivid.autoencoders.AutoencoderTrainer` (stage 1, MSE as in the
notebook) for a fixed
wall-clock budget, once per grid variant (P4: the paper's concatenation and the release's broadcast-and-sum),
and records, per variant:

- reconstruction PSNR / SSIM on held-out MiniSprites clips (``split="test"``, ``--test-clips`` clips);
- latent elements per clip (P5: C(H'W' + SW' + SH')) beside those of a 3D latent (C S H' W');
- parameters (encoder f^{shw}, the three projectors, decoder g, total);
- the training step time (median of ``--time-steps`` steps after warm-up, batch ``--batch``) and the number
  of steps the budget allowed (several budgets, ``--seconds 70 600``, are evaluated along one run; the
  learning rate warms up over 20 steps and then stays constant, where the notebook decays it);
- the static-video measurement of notebook 02: for static test clips (every frame = the first frame), the
  PSNR of the reconstruction with z^h, z^w replaced by their mean over the training clips against the
  PSNR with z^s replaced instead.

Writes ``bench/results/pvdm-<device>.json`` (device name, versions, date, settings, results). CPU timings
on a shared machine are pessimistic (other processes compete for the cores); the JSON records the load.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minivid.autoencoders.pvdm import PVDMAutoencoder, PVDMAutoencoderConfig, latent_cost  # noqa: E402
from minivid.autoencoders.training import AutoencoderTrainer  # noqa: E402
from minivid.data import MiniSprites  # noqa: E402
from minivid.metrics import psnr, ssim  # noqa: E402
from minivid.utils.machine import device_name, slug, versions  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LOSS = dict(l1_weight=0.0, l2_weight=1.0)  # the notebook's pixel term: MSE (P6; see notebook 02 for why not L1)

# The notebook's settings (notebooks/02_pvdm_triplane_autoencoder.ipynb, parameters cell).
SCALES = {
    "cpu": dict(size=32, frames=8, batch=8, seconds=70, lr=2e-3,
                config=dict(patch_size=4, latent_channels=4, dim=64, encoder_depth=1, decoder_depth=1,
                            projector_depth=1, heads=4, projector_heads=4, mlp_ratio=2.0)),
    "gpu": dict(size=64, frames=16, batch=16, seconds=600, lr=1e-3,
                config=dict(patch_size=4, latent_channels=4, dim=192, encoder_depth=4, decoder_depth=4,
                            projector_depth=2, heads=6, projector_heads=6)),
}


def clips(split: str, n: int, size: int, frames: int) -> torch.Tensor:
    data = MiniSprites(n, size=size, num_frames=frames, split=split, seed=0)
    return torch.stack([data[i]["video"] for i in range(n)])


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def evaluate(model, test: torch.Tensor, train: torch.Tensor, device, batch: int = 16) -> dict:
    model.eval()
    recs = torch.cat([model.reconstruct(test[i:i + batch].to(device)).float().cpu() for i in range(0, len(test), batch)])
    out = {"psnr": psnr(recs, test).mean().item(), "ssim": ssim(recs, test).mean().item()}
    # static-video measurement (notebook 02): which plane carries a video that does not move?
    static = test[:, :, :1].expand_as(test).contiguous()
    sums = None
    for i in range(0, len(train), batch):
        z = model.encode(train[i:i + batch].to(device)).value
        s = [p.sum(0) for p in z]
        sums = s if sums is None else [a + b for a, b in zip(sums, s)]
    mean_planes = [a / len(train) for a in sums]
    keep_s, keep_hw, full = [], [], []
    for i in range(0, len(static), batch):
        x = static[i:i + batch].to(device)
        z_s, z_h, z_w = model.encode(x).value
        m_s, m_h, m_w = (m.expand_as(p) for m, p in zip(mean_planes, (z_s, z_h, z_w)))
        full.append(model.decode((z_s, z_h, z_w)).cpu())
        keep_s.append(model.decode((z_s, m_h, m_w)).cpu())  # z^h, z^w replaced by the training mean
        keep_hw.append(model.decode((m_s, z_h, z_w)).cpu())  # z^s replaced by the training mean
    for name, rec in (("full", full), ("keep_z_s_only", keep_s), ("keep_z_h_z_w_only", keep_hw)):
        out[f"static_psnr_{name}"] = psnr(torch.cat(rec).float(), static).mean().item()
    return out


def run(args) -> dict:
    scale = SCALES["gpu" if torch.cuda.is_available() and not args.cpu else "cpu"]
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    size, frames, batch = scale["size"], scale["frames"], args.batch or scale["batch"]
    seconds = args.seconds if args.seconds else [scale["seconds"]]
    train = clips("train", args.train_clips, size, frames)
    test = clips("test", args.test_clips, size, frames)
    rows = []
    for grid in args.grids:
        torch.manual_seed(0)
        cfg = PVDMAutoencoderConfig(**scale["config"], grid=grid)
        model = PVDMAutoencoder(cfg).to(device)
        trainer = AutoencoderTrainer(model, lr=scale["lr"], betas=(0.9, 0.99), **LOSS)
        g = torch.Generator().manual_seed(0)

        def batch_of():
            return train[torch.randint(len(train), (batch,), generator=g)].to(device)

        def sync():
            if device == "cuda":
                torch.cuda.synchronize()

        for _ in range(3):  # warm-up (not timed, counted as training)
            trainer.step(batch_of())
        times = []
        for _ in range(args.time_steps):
            x = batch_of()
            sync()
            t0 = time.perf_counter()
            trainer.step(x)
            sync()
            times.append(time.perf_counter() - t0)
        budgets = sorted(seconds)
        trained = sum(times)  # the timed steps count as training time
        cost = latent_cost(frames, size, size, cfg.patch_size, cfg.latent_channels)
        params = {"encoder": count(model.patch_embed) + count(model.encoder),
                  "projectors": sum(count(m) for m in (model.project_s, model.project_h, model.project_w,
                                                        model.to_latent))}
        params["total"] = count(model)
        params["decoder"] = params["total"] - params["encoder"] - params["projectors"]
        for budget in budgets:
            while trained < budget:
                for group in trainer.optimizer.param_groups:  # the notebook's warm-up (20 steps), constant after
                    group["lr"] = scale["lr"] * min(1.0, (trainer.num_updates + 1) / 20)
                t0 = time.perf_counter()
                trainer.step(batch_of())
                sync()
                trained += time.perf_counter() - t0
            result = evaluate(model, test, train[: args.mean_clips], device)
            rows.append({
                "grid": grid, "config": cfg.to_dict(), "train_seconds": round(trained, 1), "budget_seconds": budget,
                "steps": trainer.num_updates, "step_ms_median": 1e3 * statistics.median(times), "batch": batch,
                "final_l1": trainer.history[-1]["l1"], "params": params,
                "latent_elements": cost["triplane_elements"], "latent_elements_3d": cost["grid_elements"],
                "pixels": 3 * frames * size * size, **result,
            })
            r = rows[-1]
            print(f"{grid:6s} {budget:6.0f} s  steps {r['steps']:5d}  step {r['step_ms_median']:7.1f} ms  "
                  f"PSNR {r['psnr']:5.2f} dB  SSIM {r['ssim']:.3f}  static: all {r['static_psnr_full']:.2f} / "
                  f"z^s only {r['static_psnr_keep_z_s_only']:.2f} / z^h,z^w only "
                  f"{r['static_psnr_keep_z_h_z_w_only']:.2f} dB  params {r['params']['total']:,}  "
                  f"latent {r['latent_elements']} (3D: {r['latent_elements_3d']})", flush=True)
    name = device_name()
    out = {
        "benchmark": "pvdm", "device": name, "device_kind": device, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(), "threads": torch.get_num_threads(),
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "settings": {"size": size, "frames": frames, "batch": batch, "budgets_seconds": seconds, "lr": scale["lr"],
                     "notebook_budget_seconds": scale["seconds"], "train_clips": args.train_clips,
                     "test_clips": args.test_clips, "loss": "MSE (stage 1, AutoencoderTrainer l1_weight=0, l2_weight=1)",
                     "budget_note": "rows with budget_seconds == notebook_budget_seconds are at the notebook's "
                                    "budget; longer ones continue the same run (evaluation time not counted)"},
        "note": ("CPU run on a machine shared with other processes: step times are pessimistic. "
                 "64x64x16 (the GPU scale) was not run here: no GPU in this session." if device == "cpu" else
                 "GPU run at the notebook's GPU scale."),
        "results": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"pvdm-{slug(name)}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, nargs="+", default=None,
                   help="training budgets per variant, evaluated along one run (default: the notebook's)")
    p.add_argument("--grids", nargs="+", default=["sum", "concat"], choices=["sum", "concat"])
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--train-clips", type=int, default=1024)
    p.add_argument("--test-clips", type=int, default=64)
    p.add_argument("--mean-clips", type=int, default=256, help="training clips for the mean planes")
    p.add_argument("--time-steps", type=int, default=10)
    p.add_argument("--cpu", action="store_true", help="force the CPU scale")
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
