"""Benchmark: Latte's four variants (L3) at equal token counts.

    python bench/latte.py            # CUDA if present, else the CPU
    python bench/latte.py --quick    # fewer timed steps
    python bench/latte.py --device cpu

For each variant, on the same clip (same number of tokens n_f·n_h·n_w) and the same width / depth / heads:

- ``params``: trainable parameters;
- ``flops_fwd``: forward matmul FLOPs from the cost model (``minivid.transformers.latte_flops``; attention
  counted with K4, 4·seqs·H·L²·D_h), of which ``attention_flops_fwd`` in the QKᵀ and PV products;
- ``flops_step``: FLOPs of one training step (forward + backward of the D6 hybrid loss) counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (attention on the math backend, so that its products are
  visible to the counter);
- ``step_ms``: median wall time of a full ``DiffusionTrainer.step`` (timesteps, noising, forward, hybrid
  loss, backward, clipping, AdamW, EMA) after warm-up, attention on the default ``sdpa`` backend;
- memory: on CUDA ``peak_mem_mib`` = ``torch.cuda.max_memory_allocated`` during the timed steps; on the CPU
  (no allocator statistics) ``saved_activations_mib``, the bytes autograd saves for the backward pass
  (``torch.autograd.graph.saved_tensors_hooks``, unique storages), plus ``state_mib`` = weights + EMA +
  gradients + two AdamW moments.

Prints a table and writes ``bench/results/latte-<device>.json`` (device, versions, date, shapes, rows).
CPU timings on a shared machine are pessimistic; the JSON records the load average at the start.
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
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minivid.diffusion import NoiseSchedule  # noqa: E402
from minivid.diffusion import DiffusionTrainer  # noqa: E402
from minivid.transformers import Latte, LatteConfig, set_attention_backend  # noqa: E402
from minivid.utils.machine import device_name, slug, versions  # noqa: E402

RESULTS = ROOT / "bench" / "results"

# Shapes: latent-like clips (4 channels), patch 2, as Latte on SD-VAE latents.
SETTINGS = {
    "cuda": dict(batch=8, in_channels=4, frames=16, size=32, patch_size=2, dim=384, heads=6, depth=12,
                 num_classes=16, dtype="bfloat16"),  # Latte-S/2 width on 16 x 256 x 256 videos' latents
    "cpu": dict(batch=1, in_channels=4, frames=16, size=32, patch_size=2, dim=128, heads=4, depth=4,
                num_classes=16, dtype="float32"),  # the same 4096 tokens per clip, a narrow model
}


def make_batch(s: dict, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(s["batch"], s["in_channels"], s["frames"], s["size"], s["size"], generator=g) * 2 - 1
    y = torch.randint(0, s["num_classes"], (s["batch"],), generator=g)
    return x0.to(device), y.to(device)


def build(variant: int, s: dict, device: str) -> Latte:
    torch.manual_seed(0)
    cfg = LatteConfig(variant=variant, in_channels=s["in_channels"], num_frames=s["frames"], size=s["size"],
                      patch_size=s["patch_size"], dim=s["dim"], heads=s["heads"], depth=s["depth"],
                      num_classes=s["num_classes"], learn_sigma=True)
    return Latte(cfg).to(device)


def step_flops(variant: int, s: dict) -> float:
    """FLOPs of one training step (forward + backward of the hybrid loss) counted by torch, on the CPU
    (counting does not depend on the device), attention on the math backend: one clip's step times the batch
    (every counted product is linear in the batch; at the GPU settings a full batch took minutes on a CPU)."""
    model = set_attention_backend(build(variant, s, "cpu"), "math")
    trainer = DiffusionTrainer(model, NoiseSchedule.linear(), learned_variance=True)
    x0, y = make_batch({**s, "batch": 1}, "cpu")
    with FlopCounterMode(display=False) as counter:
        trainer.step(x0, y=y)
    return float(counter.get_total_flops()) * s["batch"]


def saved_activation_bytes(model: Latte, x0, y) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one hybrid-loss evaluation."""
    from minivid.diffusion import training_losses

    storages: dict[int, int] = {}

    def pack(t):
        if isinstance(t, torch.Tensor):
            st = t.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
        return t

    s = NoiseSchedule.linear()
    t = torch.randint(0, 1000, (x0.shape[0],), generator=torch.Generator().manual_seed(0)).to(x0.device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = training_losses(model, s, x0, t, learned_variance=True, y=y)["loss"].mean()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


def run_variant(variant: int, s: dict, device: str, warmup: int, steps: int) -> dict:
    model = build(variant, s, device)
    params = sum(p.numel() for p in model.parameters())
    x0, y = make_batch(s, device)
    row = {"variant": variant, "blocks": model.config.block_kinds, "params": params}
    fl = model.flops(s["batch"])
    row.update(flops_fwd=fl["total"], attention_flops_fwd=fl["attention"])
    row["flops_step"] = step_flops(variant, s)
    if device == "cpu":
        row["saved_activations_mib"] = saved_activation_bytes(model, x0, y) / 2**20
        row["state_mib"] = params * 4 * 5 / 2**20  # weights, EMA, gradients, Adam m and v (float32)
    trainer = DiffusionTrainer(model, NoiseSchedule.linear(), learned_variance=True, lr=1e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if s["dtype"] == "bfloat16" else torch.autocast(
        device, enabled=False)
    times = []
    for i in range(warmup + steps):
        if i == warmup and device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast:
            trainer.step(x0, y=y)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    row["step_ms"] = statistics.median(times) * 1e3
    row["step_ms_all"] = [round(t * 1e3, 2) for t in times]
    row["achieved_tflops"] = row["flops_step"] / (row["step_ms"] / 1e3) / 1e12
    if device == "cuda":
        row["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="fewer timed steps")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/latte-<device>.json)")
    args = ap.parse_args(argv)
    device = args.device
    s = SETTINGS[device]
    warmup, steps = (2, 5) if args.quick else (3, 15)
    name = device_name(device)
    n_f, n_h = s["frames"], s["size"] // s["patch_size"]
    print(f"Latte variants on {name}: batch {s['batch']}, clip {s['in_channels']}x{s['frames']}x{s['size']}x"
          f"{s['size']}, patch {s['patch_size']} -> {n_f} x {n_h} x {n_h} = {n_f * n_h * n_h} tokens, "
          f"d={s['dim']}, heads={s['heads']}, depth={s['depth']}, {s['dtype']}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = []
    out = args.out or RESULTS / f"latte-{slug(name)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for v in (1, 2, 3, 4):  # saved after every variant: a run cut off by a time limit keeps what it measured
        rows.append(run_variant(v, s, device, warmup, steps))
        out.write_text(json.dumps({"benchmark": "latte", "device": name, "complete": False, "rows": rows},
                                  indent=1) + "\n")
    mem_key = "peak_mem_mib" if device == "cuda" else "saved_activations_mib"
    print(f"\n{'variant':>7} {'params':>10} {'GFLOP fwd':>10} {'attn %':>7} {'GFLOP step':>11} {'step ms':>9} "
          f"{'TFLOP/s':>8} {mem_key:>22}")
    for r in rows:
        print(f"{r['variant']:>7} {r['params']:>10,} {r['flops_fwd'] / 1e9:>10.2f} "
              f"{100 * r['attention_flops_fwd'] / r['flops_fwd']:>6.1f}% {r['flops_step'] / 1e9:>11.2f} "
              f"{r['step_ms']:>9.1f} {r['achieved_tflops']:>8.3f} {r[mem_key]:>22.1f}")
    result = {
        "benchmark": "latte",
        "device": name,
        "device_kind": device,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": load,
        "settings": {**s, "tokens": n_f * n_h * n_h, "grid": [n_f, n_h, n_h], "warmup_steps": warmup,
                     "timed_steps": steps, "step": "DiffusionTrainer.step, learned variance (D6 hybrid loss), AdamW"},
        "note": ("Equal token counts and equal width/heads/depth for all variants. flops_step is counted by torch's "
                 "FlopCounterMode (math attention); step_ms is the median of the timed steps with sdpa attention. "
                 + ("CPU: no allocator statistics, so memory is the bytes saved for backward plus the optimizer "
                    "state; timings on a CPU shared with other jobs are pessimistic." if device == "cpu" else
                    "peak_mem_mib is torch.cuda.max_memory_allocated over the timed steps (bf16 autocast).")),
        "rows": rows,
        "complete": True,
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return result


if __name__ == "__main__":
    main()
