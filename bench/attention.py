"""Benchmark: minivid's Triton FlashAttention-2 kernel against PyTorch SDPA and the math path.

    python bench/attention.py                 # full run on a CUDA GPU (several minutes)
    python bench/attention.py --quick         # fewer shapes
    python bench/attention.py --causal        # also causal attention
    python bench/attention.py                 # on a CPU-only machine: a small smoke run (below)

Prints a table and writes ``bench/results/attention-<device>.json`` (atomically, after every row, with
``"complete": false`` until the run ends, so a run stopped by a time limit keeps what it measured) with the
device name, versions, date, settings and one row per (provider, shape, dtype, mode): the median time in ms and the
throughput in TFLOP/s counted with K4 (``minivid.kernels.attention_flops``: forward 4·B·H·N²·D,
halved if causal; backward 2.5× the forward; forward+backward 3.5×).

On a GPU
    providers ``triton`` (this kernel, ``flash_attention``), ``sdpa-flash``, ``sdpa-cudnn`` and
    ``sdpa-efficient`` (``torch.nn.functional.scaled_dot_product_attention`` pinned to one backend
    each; a backend that cannot run a shape is recorded with its error) and ``math``
    (``attention_reference``, the attention module's ``backend="math"``; skipped where its N×N
    matrices would not fit). Shapes as in the FlashAttention-2 paper: 16k tokens per batch
    (B = 16384 / N) and model width 2048 (H = 2048 / D), D = 64 and 128, N = 1k ... 16k; plus the
    temporal-attention shape N = 16 over a huge batch (B·H = 65536 rows). fp16 and bf16; modes
    ``fwd``, ``bwd`` and ``fwd+bwd``, each timed with ``triton.testing.do_bench`` (median of the runs
    after warm-up, L2 cache flushed between runs). The Triton kernel's first call per shape also
    picks its tile configuration (``KernelConfig``); the chosen one is recorded, and its output and gradients
    are compared with SDPA's on the same inputs (``rel_err_vs_sdpa``, ``matches_sdpa`` per shape, from
    ``minivid.kernels.check_against_sdpa`` and its ``SDPA_TOLERANCE``).

On a CPU (smoke run)
    Triton kernels run on a CPU only in the interpreter, which is a correctness tool, not a
    benchmark, so only ``sdpa`` (PyTorch's CPU kernel) and ``math`` are timed, in float32, on a few
    small shapes, with a wall-clock median. The JSON says ``"smoke": true``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minivid.kernels import SDPA_TOLERANCE, attention_flops, attention_reference, check_against_sdpa  # noqa: E402
from minivid.utils.files import atomic_path  # noqa: E402
from minivid.utils.machine import device_name, slug, versions  # noqa: E402

RESULTS = ROOT / "bench" / "results"

# Reference points quoted by the issue (H100 SXM, bf16, non-causal, N = 16k), TFLOP/s.
ANCHORS_H100 = {
    "fwd": {"FlashAttention-2": {64: 324, 128: 370}, "Triton tutorial": {64: 400, 128: 395},
            "FlashAttention-3": {64: 500, 128: 650}},
    "bwd": {"FlashAttention-2": {64: 290, 128: 320}},
}


# --------------------------------------------------------------------------------------------------
# Device and environment
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Providers
# --------------------------------------------------------------------------------------------------


def _sdpa(backend):
    def run(q, k, v, causal):
        if backend is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return run


def providers_for(device: str) -> dict:
    def math_path(q, k, v, causal):
        return attention_reference(q, k, v, causal=causal)

    if device == "cpu":
        return {"sdpa": _sdpa(None), "math": math_path}
    from torch.nn.attention import SDPBackend

    from minivid.kernels import flash_attention

    provs = {"triton": lambda q, k, v, causal: flash_attention(q, k, v, causal=causal),
             "sdpa-flash": _sdpa(SDPBackend.FLASH_ATTENTION)}
    if hasattr(SDPBackend, "CUDNN_ATTENTION"):
        provs["sdpa-cudnn"] = _sdpa(SDPBackend.CUDNN_ATTENTION)
    provs["sdpa-efficient"] = _sdpa(SDPBackend.EFFICIENT_ATTENTION)
    provs["math"] = math_path
    return provs


# --------------------------------------------------------------------------------------------------
# Shapes and timing
# --------------------------------------------------------------------------------------------------


def gpu_shapes(quick: bool) -> list[dict]:
    """The issue's shapes, those with a stated goal first (N = 16k, where the anchors were measured, then the
    temporal shape), so that a run stopped by a time limit has measured them."""
    ns = (16384, 4096, 1024) if quick else (16384, 8192, 4096, 2048, 1024)
    shapes = [dict(kind="long", B=16384 // n, H=2048 // d, N=n, D=d)  # FlashAttention-2 paper: B·N = 16k, H·D = 2048
              for n in ns[:1] for d in (64, 128)]
    shapes += [dict(kind="temporal", B=65536 // (1024 // d), H=1024 // d, N=16, D=d) for d in (64, 128)]
    shapes += [dict(kind="long", B=16384 // n, H=2048 // d, N=n, D=d) for n in ns[1:] for d in (64, 128)]
    return shapes


def cpu_shapes() -> list[dict]:
    return [dict(kind="long", B=1, H=4, N=n, D=64) for n in (256, 512, 1024)] + \
           [dict(kind="temporal", B=256, H=4, N=16, D=64)]


def _median_cpu_ms(fn, warmup=3, reps=11) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_one(prov, shape, dtype, causal, mode, device) -> float:
    """Median milliseconds of one (provider, shape, dtype, mode)."""
    B, H, N, D = shape["B"], shape["H"], shape["N"], shape["D"]
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(B, H, N, D, device=device, dtype=dtype, generator=gen).requires_grad_()
               for _ in range(3))
    if mode == "fwd":
        fn = lambda: prov(q, k, v, causal)  # noqa: E731
    elif mode == "bwd":
        o = prov(q, k, v, causal)
        do = torch.randn_like(o)
        fn = lambda: o.backward(do, retain_graph=True)  # noqa: E731
    else:  # fwd+bwd
        do = torch.randn(B, H, N, D, device=device, dtype=dtype, generator=gen)
        fn = lambda: prov(q, k, v, causal).backward(do)  # noqa: E731
    if device == "cpu":
        def step():
            fn()
            q.grad = k.grad = v.grad = None
        return _median_cpu_ms(step)
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=[q, k, v], return_mode="median")


def math_fits(shape, dtype, device) -> bool:
    """The math path holds S and P (float32) and their gradients: skip shapes that would not fit."""
    n_scores = shape["B"] * shape["H"] * shape["N"] ** 2
    if device == "cpu":
        return n_scores * 4 * 4 < 2 * 2**30
    free, _ = torch.cuda.mem_get_info()
    return n_scores * 4 * 5 < 0.8 * free


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer sequence lengths (GPU)")
    ap.add_argument("--causal", action="store_true", help="also benchmark causal attention")
    ap.add_argument("--providers", default=None, help="comma-separated subset, e.g. triton,sdpa-flash")
    ap.add_argument("--dtypes", default="bf16,fp16", help="GPU dtypes (bf16,fp16,fp32), in this order; bf16 first: the anchors")
    ap.add_argument("--modes", default="fwd,bwd,fwd+bwd")
    ap.add_argument("--out", default=None, help="output JSON path (default bench/results/attention-<device>.json)")
    args = ap.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = device_name()
    smoke = device == "cpu"
    if smoke:
        # One thread: on small shared CPU machines the thread pool's wake-ups dominate and quantise
        # the timings (multiples of the scheduler tick); one thread gives steadier, comparable numbers.
        torch.set_num_threads(1)
    provs = providers_for(device)
    if args.providers:
        provs = {p: f for p, f in provs.items() if p in args.providers.split(",")}
    dt_map = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    dtypes = [torch.float32] if smoke else [dt_map[d] for d in args.dtypes.split(",")]
    shapes = cpu_shapes() if smoke else gpu_shapes(args.quick)
    modes = args.modes.split(",")
    causals = (False, True) if args.causal else (False,)

    out = Path(args.out) if args.out else RESULTS / f"attention-{slug(name)}.json"
    started, vers, rows = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), versions(), []

    def save(complete: bool) -> dict:
        """Write everything measured so far (atomically), after every row: a run stopped by a time limit keeps
        its finished rows, and ``complete`` says whether it got to the end."""
        result = {
            "benchmark": "attention",
            "device": name,
            "device_kind": device,
            "smoke": smoke,
            "note": ("CPU smoke run: only PyTorch SDPA and the math path, float32, small shapes, one thread, "
                     "wall-clock median of 11 runs after 3 warm-up runs. The Triton kernel runs on a CPU only in Triton's "
                     "interpreter, which is not a benchmark; GPU numbers come from a CUDA machine."
                     if smoke else
                     "triton.testing.do_bench: median time after warm-up, L2 flushed between runs; inputs "
                     "require grad; TFLOP/s from K4 (fwd 4·B·H·N²·D, halved if causal; bwd 2.5×)."),
            "date": started,
            "versions": vers,
            "settings": {"modes": modes, "causal": list(causals), "dtypes": [str(d).replace("torch.", "") for d in dtypes],
                         "providers": list(provs), "autotune": os.environ.get("MINIVID_FLASH_AUTOTUNE", "1"),
                         "torch_threads": torch.get_num_threads()},
            "shapes": shapes,
            "anchors_h100_bf16_tflops": ANCHORS_H100,
            "complete": complete,
            "results": rows,
        }
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
        return result

    def record(row: dict) -> None:
        rows.append(row)
        save(complete=False)

    print(f"device: {name}{'  (CPU smoke run: SDPA and math only)' if smoke else ''}")
    header = f"{'provider':<15}{'dtype':<9}{'causal':<7}{'mode':<8}{'kind':<9}{'B':>6}{'H':>4}{'N':>7}{'D':>5}" \
             f"{'ms':>11}{'TFLOP/s':>9}"
    print(header)
    print("-" * len(header))
    for dtype in dtypes:
        for causal in causals:
            for shape in shapes:
                for mode in modes:
                    for pname, prov in provs.items():
                        row = dict(provider=pname, dtype=str(dtype).replace("torch.", ""), causal=causal, mode=mode,
                                   **shape)
                        if pname == "math" and not math_fits(shape, dtype, device):
                            row["skipped"] = "N×N scores would not fit in memory"
                            record(row)
                            continue
                        try:
                            ms = bench_one(prov, shape, dtype, causal, mode, device)
                        except Exception as err:  # noqa: BLE001 - a backend that cannot run this shape
                            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                            record(row)
                            print(f"{pname:<15}{row['dtype']:<9}{causal!s:<7}{mode:<8}{shape['kind']:<9}"
                                  f"{shape['B']:>6}{shape['H']:>4}{shape['N']:>7}{shape['D']:>5}   {row['error'][:60]}")
                            continue
                        finally:
                            if device == "cuda":
                                torch.cuda.empty_cache()
                        flops = attention_flops(shape["B"], shape["H"], shape["N"], head_dim=shape["D"],
                                                causal=causal, mode=mode)  # K4
                        row.update(ms=ms, tflops=flops / (ms * 1e-3) / 1e12)
                        flag = ""
                        if pname == "triton":
                            from minivid.kernels import last_configs

                            row["config"] = {k: dataclasses.asdict(c) for k, c in last_configs().items()}
                            if mode == modes[0]:  # once per shape: is the kernel that was just timed right?
                                errs = check_against_sdpa(prov, shape, dtype, causal, device)
                                row["rel_err_vs_sdpa"] = errs
                                row["matches_sdpa"] = max(errs.values()) <= SDPA_TOLERANCE[dtype]
                                flag = "" if row["matches_sdpa"] else f"  WRONG: {errs}"
                        record(row)
                        print(f"{pname:<15}{row['dtype']:<9}{causal!s:<7}{mode:<8}{shape['kind']:<9}{shape['B']:>6}"
                              f"{shape['H']:>4}{shape['N']:>7}{shape['D']:>5}{ms:>11.4f}{row['tflops']:>9.2f}{flag}")

    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return save(complete=True)


if __name__ == "__main__":
    main()
