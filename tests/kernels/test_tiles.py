"""Tests of minivid.kernels.tiles: the candidate tiles the autotuner may try on CUDA, their choice of backward
path, and their agreement with the register sweeps stored in bench/results/ (read as data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from minivid.kernels import SUPPORTED_HEAD_DIMS
from minivid.kernels.tiles import SHORT_SEQUENCE, _block_d, _candidates, _pow2, _short_backward_fits


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16, torch.float32), ids=("bf16", "fp16", "fp32"))
def test_cuda_candidates_choose_the_backward_consistently(dtype):
    """On CUDA the backward's candidate tiles decide the path: for N <= 64 either every candidate covers N (one
    kernel) or none does (split kernels: float32 beyond 16-wide tiles, whose one-kernel backward does not fit in
    registers); never a mix, so the autotuner compares like with like; and no tile is narrower than 16."""
    for D in SUPPORTED_HEAD_DIMS:  # every D in 16..128
        for n_q in (1, 5, 16, 17, 31, 33, 40, 64, 65, 300):
            for n_k in (1, 16, 17, 40, 64, 65, 300):
                cands = _candidates("dkdv", n_q, n_k, D, dtype)
                covers = {max(n_q, n_k) <= SHORT_SEQUENCE and n_q <= c.block_m and n_k <= c.block_n for c in cands}
                tile = max(_pow2(n_q, 16, 64), _pow2(n_k, 16, 64))
                want = max(n_q, n_k) <= SHORT_SEQUENCE and _short_backward_fits(dtype, tile, _block_d(D))
                assert covers == {want}, (D, n_q, n_k, cands)
                assert all(c.block_m >= 16 and c.block_n >= 16 for c in cands)
    assert _short_backward_fits(dtype, 64, 128) == (dtype != torch.float32)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=("bf16", "fp32"))
def test_every_cuda_candidate_is_spill_free_in_the_stored_sweeps(dtype):
    """The candidate tables agree with the register sweeps stored in bench/results/ (bench/kernel_resources.py,
    sm_90, Triton 3.6 and 3.8): every tiling the autotuner may try, for any length, compiles without spilling in
    both the plain and the causal + padding mask + partial tile case (bf16 also at the padded D = 72, 40, 24).
    Editing a table without sweeping it again fails here."""
    suffix = "-fp32" if dtype == torch.float32 else ""
    results = Path(__file__).resolve().parents[2] / "bench" / "results"
    for version in ("3.6.0", "3.8.0"):
        files = [f"kernel_resources-sm90-triton-{version}{suffix}.json"]
        if dtype == torch.bfloat16:
            files.append(f"kernel_resources-sm90-triton-{version}-d72-d40-d24.json")
        rows = [r for f in files for r in json.loads((results / f).read_text())["rows"]]
        spills = {}
        for r in rows:
            key = (r["kind"], r["head_dim"], r["block_m"], r["block_n"], r["rows"], r["num_warps"], r["num_stages"])
            spills.setdefault(key, []).append(r.get("spill_stores", "error"))
        for D in (64, 128) if dtype == torch.float32 else (64, 128, 72, 40, 24):
            for kind in ("fwd", "dq", "dkdv"):
                for n in (1, 5, 16, 17, 31, 33, 40, 64, 65, 300, 4096):
                    for c in _candidates(kind, n, n, D, dtype):
                        fused = kind != "fwd" and n <= SHORT_SEQUENCE and n <= c.block_m and n <= c.block_n
                        if fused and kind == "dq":
                            continue  # the one-kernel backward has no dQ kernel
                        key = ("bwd_short" if fused else kind, D, c.block_m, c.block_n, c.rows, c.num_warps,
                               c.num_stages)
                        assert spills.get(key) == [0, 0], (version, key, spills.get(key))
