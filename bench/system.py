"""Benchmark: the full system's training throughput and sampling latency (issue: full system).

    python bench/system.py                      # the cpu preset on this machine's CPU
    python bench/system.py --device cuda        # the gpu preset on a GPU, with SDPA and with the Triton kernel
    python bench/system.py --quick              # fewer repetitions
    python bench/system.py --preset cpu-causal  # the system on the causal VAE's latents
    python bench/system.py --preset cpu-reducio # the system on the Reducio VAE's latents
    python bench/system.py --scaling 2          # data-parallel scaling: 2 gloo processes of 1 thread vs 1 process

Training: updates of the preset's global batch (random latents, captions and motion latents of the preset's shape;
the speed does not depend on the data), timed after two warm-up updates: clips per second, and the model FLOPs of an
update counted by ``torch.utils.flop_counter`` (forward + backward of the text encoder, transformer and motion guidance)
divided by its time: achieved TFLOP/s and, on a GPU with a known peak, the model FLOP utilisation (MFU).

Sampling: one 16-frame video of the preset's size at 20 DPM-Solver++ steps with a caption and a trajectory (text and
trajectory guidance: three branches a step) through :func:`minivid.pipeline.run.generate` (8-frame clips continued
with 2 given frames: three clips; ``--preset cpu-causal``: 9-frame clips of the causal VAE continued from their last
frame: two; ``--preset cpu-reducio``: an image and a caption, no trajectory, 8-frame clips of the Reducio VAE continued
through their last frame: three), decoder included, randomly initialised VAEs of the zoo's shapes when the zoo is absent (vae2d presets).
Each preset's rows replace that preset's rows in the results file. Goals (issue): under 5 s on 2 CPU cores for 32 x 32; under 1 s on one H100/H200 at 64 x 64.

Scaling (``--scaling N``, CPU): the cpu preset's update of 32 clips in one process with one thread, in one process
with N threads, and in N processes of one thread under torchrun (gloo, DistributedDataParallel, each process a slice
of the same global batch). Efficiency = clips/s of the N processes / (N x clips/s of one single-thread process): 1 is
perfect data parallelism; what is lost is the gradient all-reduce and the per-process overheads.

Writes ``bench/results/system-<device>.json`` (``--scaling``: its ``scaling`` entry).
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

from minivid.nn import Attention, set_attention_backend  # noqa: E402
from minivid.pipeline.run import (SystemRunConfig, content_frame, generate, preset_config, run_spaces,  # noqa: E402
                                  system_geometry, training_kwargs)
from minivid.pipeline.system import System, condition_batch  # noqa: E402
from minivid.utils.machine import device_name, slug, versions  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def train_throughput(cfg: SystemRunConfig, device: str, updates: int, count_flops: bool = True) -> dict:
    """Seconds per update of the global batch; under torchrun each process trains on its slice (DDP)."""
    from torch.utils.flop_counter import FlopCounterMode

    from minivid.pipeline.run import SystemTrainer
    from minivid.utils.distributed import barrier, current

    space, motion_space, _ = spaces(cfg, device)
    geo = system_geometry(cfg, space, motion_space)
    torch.manual_seed(0)
    model = System(cfg.model).to(device)
    trainer = SystemTrainer(model, cfg)
    info = current()
    part = info.shard(cfg.global_batch)
    b, shape, cm = part.stop - part.start, geo.latent_shape, geo.motion_channels
    x0 = torch.randn(b, *shape, device=device)
    ids, mask = model.tokenize(["a red square moves right along a wavy path"] * b)
    null_ids, null_mask = model.tokenize([""] * b)
    motion = torch.randn(b, cm, *shape[1:]) if cm is not None else None  # None: no trajectory guidance
    null = torch.zeros(1, cm, *shape[1:]) if cm is not None else None
    images = torch.rand(b, 3, cfg.size, cfg.size) * 2 - 1 if model.takes_image else None
    autocast = dict(device_type="cuda", dtype=torch.bfloat16, enabled=cfg.autocast == "bf16" and device != "cpu")

    def update():
        coins = condition_batch(cfg.dropout, cfg.global_batch, shape[1], trainer.coins, part)
        kw = training_kwargs(model, coins, ids.cpu(), mask.cpu(), null_ids.cpu(), null_mask.cpu(), motion, null,
                             images=images)
        kw = {k: v.to(device) for k, v in kw.items()}
        with torch.autocast(**autocast):
            trainer.step(x0, **kw)

    for _ in range(2):
        update()
    flops = None
    if count_flops:  # the model's FLOPs, the same for every backend: counted on the math path, whose matrix
        # products FlopCounterMode sees (it has no formula for the CPU's SDPA op or for minivid's Triton kernel)
        backends = {m: m.backend for m in model.modules() if isinstance(m, Attention)}
        set_attention_backend(model, "math")
        with FlopCounterMode(display=False) as fc:
            update()
        for m, b in backends.items():
            m.set_backend(b)
        flops = fc.get_total_flops() * info.world_size
    _sync(device)
    barrier()
    t0 = time.perf_counter()
    for _ in range(updates):
        update()
    _sync(device)
    barrier()
    dt = (time.perf_counter() - t0) / updates
    out = {"global_batch": cfg.global_batch, "processes": info.world_size, "threads": torch.get_num_threads(),
           "seconds_per_update": round(dt, 4), "clips_per_second": round(cfg.global_batch / dt, 2),
           "parameters": model.num_parameters()}
    if flops is not None:
        out.update(model_gflops_per_update=round(flops / 1e9, 2), achieved_tflops=round(flops / dt / 1e12, 4))
    if device != "cpu" and flops is not None:
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        if peak:
            out["mfu"] = round(flops / dt / 1e12 / peak, 4)
            out["peak_tflops_bf16"] = peak
    return out


def spaces(cfg: SystemRunConfig, device: str):
    """(video space, motion space, from the zoo?) of ``cfg``: the zoo's, or randomly initialised VAEs of the zoo's
    vae2d and motion VAE shapes when the zoo is absent (they time the same)."""
    try:
        space, motion_space = run_spaces(cfg, device)
        return space, motion_space, True
    except (FileNotFoundError, ValueError):
        if cfg.latent != "vae2d":
            raise
        from minivid.autoencoders import CausalVAE, LatentSpace, VAE2D, VAE2DConfig
        from minivid.pipeline.tora import motion_vae_config

        space = LatentSpace(VAE2D(VAE2DConfig(spatial_factor=4, latent_channels=4, channels=16, channel_mult=(1, 2, 2),
                                              num_res_blocks=1, norm_groups=8, num_mid_blocks=0)).to(device))
        return space, LatentSpace(CausalVAE(motion_vae_config()).to(device)), False


def sampling_latency(cfg: SystemRunConfig, device: str, repeats: int, frames: int = 16) -> dict:
    torch.manual_seed(0)
    model = System(cfg.model).to(device).eval()
    space, motion_space, zoo = spaces(cfg, device)
    s = cfg.size
    traj = [[2.0, s / 2], [s - 3.0, s / 3]]
    kw = dict(prompt="a red square moves right", frames=frames, steps=20)
    guided = ["text 4"]
    if model.motion is not None:
        kw["trajectory"] = [traj]
        guided.append("trajectory 2")
    if content_frame(space, cfg.frames) is not None:  # Reducio: every clip is decoded with an image, its content frame
        kw["image"] = torch.rand(3, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1
    generate(model, cfg, space, motion_space, **kw)  # warm-up (caches, kernels)
    times = []
    for r in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        generate(model, cfg, space, motion_space, seed=r, **kw)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"frames": frames, "size": s, "steps": 20,
            "guidance": f"{', '.join(guided)} ({len(guided) + 1} branches a step)",
            "seconds": sorted(times), "median_seconds": round(sorted(times)[len(times) // 2], 3),
            "zoo_vaes": zoo}


def _ddp_worker(updates: int) -> int:
    """One torchrun process of ``--scaling``: one thread, gloo; rank 0 prints the row as JSON."""
    from minivid.utils.distributed import cleanup, init_distributed

    torch.set_num_threads(1)
    info = init_distributed(device="cpu")
    row = train_throughput(preset_config("cpu"), "cpu", updates, count_flops=False)
    if info.is_main:
        print("ROW " + json.dumps(row), flush=True)
    cleanup()
    return 0


def scaling(n: int, updates: int) -> dict:
    """--scaling N: one process with 1 thread, one with N threads, N processes of 1 thread (torchrun, gloo)."""
    import os
    import subprocess

    cfg = preset_config("cpu")
    rows = []
    for threads in (1, n):
        torch.set_num_threads(threads)
        rows.append(train_throughput(cfg, "cpu", updates, count_flops=False))
        print(json.dumps(rows[-1]), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", __file__,
           "--ddp-worker", "--updates", str(updates)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    rows.append(json.loads(next(line for line in done.stdout.splitlines() if line.startswith("ROW "))[4:]))
    print(json.dumps(rows[-1]), flush=True)
    one, many = rows[0]["clips_per_second"], rows[2]["clips_per_second"]
    return {"rows": rows, "processes": n, "efficiency_vs_single_thread": round(many / (n * one), 3),
            "speedup_vs_one_process_with_n_threads": round(many / rows[1]["clips_per_second"], 3),
            "command": f"torchrun --standalone --nproc_per_node {n} bench/system.py --ddp-worker "
                       f"(OMP_NUM_THREADS=1), {updates} timed updates after 2 warm-up"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default=None, help="default: cpu on a CPU, gpu on CUDA")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--scaling", type=int, default=None, metavar="N",
                    help="CPU data-parallel scaling with N gloo processes (writes the results file's 'scaling' entry)")
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--updates", type=int, default=10, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.ddp_worker:
        return _ddp_worker(args.updates)
    device = args.device
    if args.scaling is not None:
        if args.scaling < 2 or device != "cpu":
            ap.error(f"--scaling {args.scaling}: needs N >= 2 processes and --device cpu")
        out = args.out or RESULTS / f"system-{slug(device_name('cpu'))}.json"
        doc = json.loads(out.read_text()) if out.is_file() else {"device": device_name("cpu")}
        doc["scaling"] = {**scaling(args.scaling, 4 if args.quick else 10), "versions": versions(),
                          "date": _dt.datetime.now().isoformat()}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {out}")
        return 0
    preset = args.preset or ("gpu" if device.startswith("cuda") else "cpu")
    backends = ["sdpa", "triton"] if device.startswith("cuda") else ["sdpa"]
    rows = []
    for backend in backends:
        cfg = preset_config(preset, {"model.transformer.attention_backend": backend})
        row = {"preset": preset, "attention_backend": backend,
               "train": train_throughput(cfg, device, 3 if args.quick else 10),
               "sample": sampling_latency(cfg, device, 1 if args.quick else 3)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    name = device_name(device)
    out = args.out or RESULTS / f"system-{slug(name)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(out.read_text()) if out.is_file() else {}
    # rows of other presets (and the scaling entry) stay; this preset's rows are replaced
    kept = [r for r in doc.get("rows", []) if r.get("preset") != preset]
    doc.update({"device": name, "threads": torch.get_num_threads(), "versions": versions(),
                "date": _dt.datetime.now().isoformat(), "rows": kept + rows})
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
