"""Registers, spills and shared memory of the Triton attention kernels on an H100/H200, without a GPU.

    python bench/kernel_resources.py                  # every tiling of the sweep, sm_90, ~5 min on 2 cores
    python bench/kernel_resources.py --quick          # the candidate lists only
    python bench/kernel_resources.py --quick --dtype fp32     # float32's own candidate lists
    python bench/kernel_resources.py --quick --head-dims 72 40 --out ...   # padded head dims

Each kernel of ``minivid.kernels.triton_kernels`` (forward, dQ, dK/dV, and the one-kernel backward of
short sequences) is compiled ahead of time for
compute capability 9.0 with :func:`~minivid.kernels.compile.compile_for_gpu`, and the ``ptxas``
that Triton ships reports its registers per thread and the bytes it spills to local memory
(:func:`~minivid.kernels.compile.ptxas_resources`). A tile that does not fit in the 255
registers a thread can have spills: part of the running output or of the score tile goes through L1/L2
on every key block. This is what a CPU-only machine can say about the GPU kernels before they run; which
tiling is fastest is measured on a GPU by ``bench/attention.py`` (whose autotuner times the candidates).

The answer depends on the Triton version (its register allocation changes between releases), so the
JSON is named after it: ``bench/results/kernel_resources-sm90-triton-<version>.json`` (``-fp16`` / ``-fp32``
appended for those dtypes), written atomically. Two cases per tiling: the benchmark's (non-causal, no mask, N
a multiple of the tile)
and the heaviest (causal, key-padding mask, a partial last tile). Compiled as a launch on ordinary
inputs would be (``compile_for_gpu(specialize=True)``: contiguous head dim, other strides, sizes and
pointers divisible by 16); ``async_copies`` counts the loads issued as asynchronous copies, i.e.
whether the key/query loop is software-pipelined.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as _dt
import itertools
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels, not the interpreter

import torch  # noqa: E402
import triton  # noqa: E402

from minivid.kernels.compile import compile_for_gpu, ptxas_resources  # noqa: E402
from minivid.kernels.flash import SUPPORTED_HEAD_DIMS  # noqa: E402
from minivid.kernels.tiles import KernelConfig, _candidates  # noqa: E402
from minivid.utils.files import atomic_path  # noqa: E402
from minivid.utils.machine import device_name  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CASES = {"plain": dict(causal=False, has_kpm=False, even_k=True),
         "causal+mask+partial": dict(causal=True, has_kpm=True, even_k=False)}


def tilings(kind: str, head_dim: int, quick: bool, dtype: torch.dtype = torch.bfloat16
            ) -> list[tuple[KernelConfig, str]]:
    """(config, where it comes from): the candidate lists first, then the sweep grid."""
    short = []
    for n in (16, 32, 64):
        for c in _candidates("dkdv" if kind == "bwd_short" else kind, n, n, head_dim, dtype):
            covers = n <= c.block_m and n <= c.block_n
            if kind == "bwd_short" and not covers:  # float32 past 16-wide tiles: the split kernels run instead
                continue
            split = kind in ("dq", "dkdv") and not covers  # the split backward of a short sequence (float32)
            short.append((c, f"short {'split ' if split else ''}candidate N<={n}"))
    if kind == "bwd_short":  # one tile covers the sequence: configured by the dK/dV kernel's short candidates
        return short
    out = [(c, "long candidate") for c in _candidates(kind, 4096, 4096, head_dim, dtype)]
    # Short sequences: the forward's tiles; and the split backward's where the one-kernel one does not fit (fp32)
    out += [(c, origin) for c, origin in short if kind == "fwd" or "split" in origin]
    if not quick:
        for bm, bn, warps, stages in itertools.product((32, 64, 128), (32, 64, 128), (4, 8), (2, 3)):
            out.append((KernelConfig(bm, bn, 1, warps, stages), "grid"))
    unique = {}
    for cfg, origin in out:
        unique.setdefault(cfg, origin)  # first origin wins
    return list(unique.items())


def measure(job: tuple) -> dict:
    kind, head_dim, cfg, origin, case, dtype = job
    row = dict(kind=kind, head_dim=head_dim, dtype=dtype, case=case, origin=origin, **vars(cfg))
    t0 = time.perf_counter()
    try:
        compiled = compile_for_gpu(kind, DTYPES[dtype], head_dim, config=cfg, arch=90, **CASES[case])
        row.update(ptxas_resources(compiled, arch=90))
        row["wgmma"] = "wgmma" in compiled.asm["ptx"]
        # Loads issued as asynchronous copies into shared memory: the loop is software-pipelined (num_stages).
        row["async_copies"] = compiled.asm["ttgir"].count("async_copy_global_to_local")
    except Exception as err:  # noqa: BLE001 - a tiling that does not compile is a result too
        row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
    row["compile_s"] = round(time.perf_counter() - t0, 2)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the configurations the autotuner tries")
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    bad = [d for d in args.head_dims if d not in SUPPORTED_HEAD_DIMS]
    if bad:
        parser.error(f"--head-dims {bad}: allowed {SUPPORTED_HEAD_DIMS.start}..{SUPPORTED_HEAD_DIMS.stop - 1}")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    suffix = "" if args.dtype == "bf16" else f"-{args.dtype}"
    out = args.out or RESULTS / f"kernel_resources-sm90-triton-{triton.__version__}{suffix}.json"
    jobs = [(kind, d, cfg, origin, case, args.dtype) for kind in ("fwd", "dq", "dkdv", "bwd_short")
            for d in args.head_dims for cfg, origin in tilings(kind, d, args.quick, DTYPES[args.dtype])
            for case in CASES]
    meta = dict(benchmark="kernel_resources", target="sm_90 (H100/H200), compiled ahead of time",
                compiled_on=device_name("cpu"), triton=triton.__version__, torch=torch.__version__, dtype=args.dtype,
                date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), quick=args.quick,
                cases=CASES, rows=[])
    print(f"{len(jobs)} compilations with triton {triton.__version__} on {args.workers} workers", flush=True)
    with cf.ProcessPoolExecutor(args.workers) as pool:
        for row in pool.map(measure, jobs):
            meta["rows"].append(row)
            if "error" in row:
                print(f"{row['kind']:5} D{row['head_dim']} {row['case']:20} {row['block_m']:3}x{row['block_n']:<3} "
                      f"w{row['num_warps']} s{row['num_stages']} r{row['rows']}  ERROR {row['error'][:80]}", flush=True)
            else:
                print(f"{row['kind']:5} D{row['head_dim']} {row['case']:20} {row['block_m']:3}x{row['block_n']:<3} "
                      f"w{row['num_warps']} s{row['num_stages']} r{row['rows']}  {row['registers']:3} regs  "
                      f"spill {row['spill_stores']:4} B  smem {row['shared'] // 1024:3} KiB  "
                      f"async {row['async_copies']}  "
                      f"({row['origin']})",
                      flush=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
