"""Tile sizes of the attention kernels: which :class:`KernelConfig` each launch gets.

Long sequences use tiles of 64-128 queries × 32-128 keys (16-64 in float32); short sequences (temporal attention,
N_q, N_k <= ``SHORT_SEQUENCE`` = 64 tokens over a huge batch) use 16-64 wide tiles that just cover N and let one
program handle ``rows`` (batch, head) pairs in turn. For each kernel and shape class the tables below list
candidate configurations, the heuristic default first. On CUDA the first call for each shape class times the
candidates with ``triton.testing.do_bench`` and keeps the fastest (``MINIVID_FLASH_AUTOTUNE=0`` takes the first,
heuristic, candidate instead); in Triton's CPU interpreter every launch takes one 32×32 tile.
:func:`kernel_config` forces a configuration inside a ``with`` block (tests, benchmarks); :func:`last_configs`
reports what the most recent launches used.

How the candidates are chosen, without a GPU: each tiling is compiled for sm_90 (H100/H200) and ``ptxas -v``
reports its registers, spills and shared memory (:mod:`minivid.kernels.compile`, swept by
``bench/kernel_resources.py`` into ``bench/results/kernel_resources-sm90-triton-*.json``). A candidate must fit
in the 255 registers a thread can have without spilling and in shared memory, with its key (query) loop
software-pipelined, for every Triton version swept, plain and in the heaviest case (causal + padding mask +
partial tile). ``tests/kernels/test_tiles.py`` checks the tables against the stored sweeps, so a table edited
without a new sweep fails. What the sweeps measured: ``bench/results/measurements.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import torch
import triton

from .triton_kernels import interpreter_active

__all__ = ["KernelConfig", "SHORT_SEQUENCE", "kernel_config", "last_configs"]


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Launch parameters of one kernel.

    ``block_m`` queries × ``block_n`` keys per tile; ``rows``: (batch, head) pairs handled one after
    the other by each program (for short sequences); ``num_warps``, ``num_stages``: Triton's.
    """

    block_m: int
    block_n: int
    rows: int = 1
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self):
        for name in ("block_m", "block_n"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 16 or v & (v - 1):
                raise ValueError(f"{name}={v!r} must be a power of two >= 16 (tl.dot needs 16-wide tiles)")
        for name in ("rows", "num_warps", "num_stages"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive integer")
        if self.num_warps & (self.num_warps - 1):
            raise ValueError(f"num_warps={self.num_warps} must be a power of two")


SHORT_SEQUENCE = 64  # N_q, N_k <= this: the "temporal attention" shape class
_INTERPRETER_CONFIG = KernelConfig(32, 32, 1, 1, 1)  # the interpreter costs per op: few, larger tiles
_OVERRIDE: dict[str, KernelConfig] = {}  # set by kernel_config()
_TUNED: dict[tuple, KernelConfig] = {}  # the autotuner's choice per shape class
_LAST: dict[str, KernelConfig] = {}  # what the most recent launches used (written by the launcher)


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(n)))


def _block_d(head_dim: int) -> int:
    """The head dim of the kernels' tiles: D rounded up to a power of two (16, 32, 64 or 128); the lanes past D
    are masked on every load (read as 0, so they add nothing to Q Kᵀ, P V, ...) and never stored."""
    return triton.next_power_of_2(head_dim)


def _bucket(n: int) -> int:
    """Sizes within one power of two share an autotuned configuration."""
    return triton.next_power_of_2(n)


# Candidate tilings (block_m, block_n, rows, num_warps, num_stages), the heuristic default first, chosen by the
# rule of the module docstring from the bf16 sweeps of `bench/kernel_resources.py` (sm_90, compiled as a launch on
# contiguous inputs is; bench/results/kernel_resources-sm90-triton-<version>.json). Every default has at least 64
# rows in its matrix products (queries for fwd/dq, keys for dkdv), the smallest tile Hopper's wgmma instructions
# take (16- and 32-row tiles fall back to Ampere's mma.sync). Which one is fastest is for the autotuner to time on
# the GPU.
_LONG = {
    ("fwd", 64): [(128, 64, 1, 8, 3), (128, 128, 1, 8, 3), (64, 128, 1, 8, 3), (64, 64, 1, 4, 3), (128, 64, 1, 4, 3)],
    ("fwd", 128): [(128, 64, 1, 8, 3), (128, 128, 1, 8, 2), (64, 64, 1, 8, 3), (64, 128, 1, 8, 2), (128, 32, 1, 8, 3)],
    ("dq", 64): [(128, 64, 1, 8, 3), (64, 64, 1, 4, 3), (128, 128, 1, 8, 2), (64, 128, 1, 8, 3), (64, 64, 1, 8, 3)],
    ("dq", 128): [(64, 64, 1, 8, 3), (128, 64, 1, 8, 2), (64, 128, 1, 8, 2), (64, 32, 1, 8, 3), (64, 64, 1, 4, 2)],
    ("dkdv", 64): [(64, 128, 1, 8, 3), (64, 64, 1, 8, 3), (32, 128, 1, 8, 3), (32, 64, 1, 4, 3), (64, 64, 1, 4, 2)],
    ("dkdv", 128): [(32, 64, 1, 8, 3), (64, 64, 1, 8, 2), (32, 128, 1, 8, 2), (32, 64, 1, 8, 2), (32, 32, 1, 8, 3)],
}
# float32 (IEEE products on FMA units, no tensor cores; every operand at full width): small tiles, per kernel and
# head dim, by the same rule from a sweep of 16-64 x 16-64 tiles in 4 and 8 warps (the candidates' JSON:
# bench/results/kernel_resources-sm90-triton-*-fp32.json). The rule holds for the tiles as listed and also after
# the short class's split backward halves them (`_candidates`), and with every Triton version swept: versions
# allocate float32 tiles differently, so a list chosen with one version alone may spill with another.
_LONG_FP32 = {
    ("fwd", 64): [(64, 32, 1, 8, 2), (32, 64, 1, 4, 2), (32, 64, 1, 8, 2), (32, 32, 1, 4, 2)],
    ("fwd", 128): [(32, 64, 1, 8, 2), (64, 16, 1, 8, 2), (32, 32, 1, 8, 2), (32, 32, 1, 4, 2)],
    ("dq", 64): [(64, 32, 1, 8, 2), (32, 64, 1, 8, 2), (32, 32, 1, 4, 2), (64, 16, 1, 8, 2)],
    ("dq", 128): [(32, 32, 1, 8, 2), (64, 16, 1, 8, 2), (16, 64, 1, 8, 2), (32, 16, 1, 8, 2)],
    ("dkdv", 64): [(32, 32, 1, 8, 2), (64, 16, 1, 8, 2), (16, 64, 1, 8, 2), (32, 16, 1, 8, 2)],
    ("dkdv", 128): [(32, 16, 1, 4, 2), (16, 32, 1, 4, 2), (16, 16, 1, 8, 2), (16, 16, 1, 4, 2)],
}
# float32 in the short class, (kind, tile side, D > 64) -> (rows, num_warps, num_stages): one row per program, the
# warp counts that are spill-free in both cases on sm_90 with every Triton version swept (the one-kernel backward
# only where `_short_backward_fits` allows it). An empty list: no configuration of that class fits (the 64-wide
# forward at D = 128), so that forward takes the long-sequence tiles.
_SHORT_FP32 = {
    ("fwd", 16, False): [(1, 4, 1), (1, 8, 1)], ("fwd", 16, True): [(1, 4, 1), (1, 8, 1)],
    ("fwd", 32, False): [(1, 4, 1), (1, 2, 1)], ("fwd", 32, True): [(1, 8, 1), (1, 4, 1)],
    ("fwd", 64, False): [(1, 8, 1)], ("fwd", 64, True): [],
    ("bwd", 16, False): [(1, 4, 1), (1, 8, 1)], ("bwd", 16, True): [(1, 4, 1), (1, 8, 1)],
    ("bwd", 32, False): [(1, 8, 1), (1, 4, 1)],
}

# Short sequences (rows, num_warps, num_stages) by the side of the tile that covers N (16, 32 or 64) and by head
# dim (up to 64, or 128): one tile covers N; memory-bound, so the choice is between more (b, h) rows per program
# (independent loads in flight) and more programs. "bwd" is the one-kernel backward `_bwd_short_kernel`. Drawn
# from a sweep of rows 1-8 x 1-8 warps (bigger tiles and wider heads need more warps per row, or they spill);
# every entry is spill-free in the kernel_resources JSON (every Triton version swept, both cases).
_SHORT = {
    ("fwd", 16, False): [(4, 2, 1), (1, 2, 1), (2, 2, 1), (8, 4, 1), (4, 4, 1), (8, 2, 1)],
    ("fwd", 16, True): [(1, 2, 1), (2, 4, 1), (1, 4, 1), (4, 4, 1)],
    ("fwd", 32, False): [(1, 2, 1), (1, 4, 1), (2, 8, 1), (4, 8, 1)],
    ("fwd", 32, True): [(1, 4, 1), (1, 8, 1), (2, 8, 1)],
    ("fwd", 64, False): [(1, 4, 1), (1, 8, 1), (2, 8, 1)],
    ("fwd", 64, True): [(1, 8, 1), (2, 8, 1)],
    ("bwd", 16, False): [(1, 2, 1), (2, 4, 1), (4, 4, 1), (2, 2, 1), (4, 2, 1), (1, 1, 1)],
    ("bwd", 16, True): [(1, 2, 1), (2, 4, 1), (4, 4, 1), (1, 4, 1)],
    ("bwd", 32, False): [(1, 2, 1), (2, 4, 1), (1, 4, 1), (2, 8, 1), (4, 8, 1)],
    ("bwd", 32, True): [(1, 4, 1), (2, 8, 1), (1, 8, 1)],
    ("bwd", 64, False): [(1, 4, 1), (1, 8, 1)],
    ("bwd", 64, True): [(1, 8, 1)],
}


def _short_backward_fits(dtype: torch.dtype, tile: int, head_dim: int) -> bool:
    """Whether the one-kernel short backward fits in registers on the GPU. In float32 its eleven tiles of
    full-width values do not fit beyond 16-wide tiles (32 with D <= 64): those spill in the sweeps, even in 8 warps,
    and take the split kernels."""
    return dtype != torch.float32 or tile == 16 or (tile == 32 and head_dim <= 64)


def _candidates(kind: str, n_q: int, n_k: int, head_dim: int, dtype: torch.dtype) -> list[KernelConfig]:
    """Candidate configurations for CUDA, the heuristic default first.

    kind: "fwd" (query tiles, loop over keys), "dq" (the same shape of work), "dkdv" (key tiles,
    loop over queries; for N_q, N_k <= 64 the tiles of the one-kernel backward, which then replaces
    dK/dV and dQ).
    """
    head_dim = _block_d(head_dim)  # the tiles' width: a padded D costs what the next power of two does
    bm, bn = _pow2(n_q, 16, 64), _pow2(n_k, 16, 64)
    tile = max(bm, bn)
    short_class = max(n_q, n_k) <= SHORT_SEQUENCE
    short = []
    if short_class and (kind == "fwd" or _short_backward_fits(dtype, tile, head_dim)):
        table = _SHORT_FP32 if dtype == torch.float32 else _SHORT
        short = table[("fwd" if kind == "fwd" else "bwd", tile, head_dim > 64)]
    if short:  # temporal attention: one tile covers N; pack (b, h) rows per program
        return [KernelConfig(bm, bn, *c) for c in short]
    if dtype == torch.float32:
        cands = [KernelConfig(*c) for c in _LONG_FP32[(kind, 128 if head_dim > 64 else 64)]]
        if short_class and kind != "fwd":  # the split backward: tiles must not cover N, or the fused kernel would run
            cands = [dataclasses.replace(c, block_m=max(16, min(c.block_m, bm // 2)),
                                         block_n=max(16, min(c.block_n, bn // 2))) for c in cands]
    else:
        cands = [KernelConfig(*c) for c in _LONG[(kind, 128 if head_dim > 64 else 64)]]
    # Do not tile far beyond the sequence.
    cands = [dataclasses.replace(c, block_m=min(c.block_m, _pow2(n_q, 16, 128)),
                                 block_n=min(c.block_n, _pow2(n_k, 16, 128))) for c in cands]
    return list(dict.fromkeys(cands))  # dedupe, keep order


def _autotune_enabled() -> bool:
    return os.environ.get("MINIVID_FLASH_AUTOTUNE", "1") not in ("0", "false", "False", "")


def _choose(kind: str, launch, n_q: int, n_k: int, head_dim: int, dtype: torch.dtype, key: tuple):
    """Pick (and on CUDA possibly time) the configuration for one kernel launch."""
    if kind in _OVERRIDE:
        return _OVERRIDE[kind]
    if interpreter_active():
        return _INTERPRETER_CONFIG
    cands = _candidates(kind, n_q, n_k, head_dim, dtype)
    if not _autotune_enabled() or len(cands) == 1:
        return cands[0]
    key = (kind,) + key
    if key not in _TUNED:
        best, best_ms, last_err = None, float("inf"), None
        for cfg in cands:
            try:  # a configuration may not fit in shared memory or registers on this GPU
                ms = triton.testing.do_bench(lambda: launch(cfg), warmup=5, rep=20, return_mode="median")
            except Exception as err:  # noqa: BLE001 - any compile/launch failure rules the config out
                last_err = err
                continue
            if ms < best_ms:
                best, best_ms = cfg, ms
        if best is None:
            raise RuntimeError(f"no {kind} kernel configuration could run for this shape") from last_err
        _TUNED[key] = best
    return _TUNED[key]


@contextlib.contextmanager
def kernel_config(fwd: KernelConfig | None = None, dq: KernelConfig | None = None,
                  dkdv: KernelConfig | None = None):
    """Force the launch configuration of the forward / dQ / dK-dV kernels inside a ``with`` block.

    ``dkdv`` also configures the one-kernel backward of short sequences (N_q, N_k <= 64), which runs
    instead of dK-dV + dQ whenever its tile covers both sequences.

    Used by the tests (to exercise several tilings in the interpreter) and the benchmark.
    """
    saved = dict(_OVERRIDE)
    for name, cfg in (("fwd", fwd), ("dq", dq), ("dkdv", dkdv)):
        if cfg is not None:
            _OVERRIDE[name] = cfg
    try:
        yield
    finally:
        _OVERRIDE.clear()
        _OVERRIDE.update(saved)


def last_configs() -> dict[str, KernelConfig]:
    """The configurations used by the most recent forward / backward launches (for reports)."""
    return dict(_LAST)
