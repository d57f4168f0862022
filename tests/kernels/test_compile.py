"""Tests of minivid.kernels.compile: the kernels compiled ahead of time for sm_90 (H100/H200) on a machine
without a GPU, checked with ptxas. Runs in a subprocess without TRITON_INTERPRET (this process has the
interpreter's kernels)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_kernels_compile_for_hopper():
    """Without a GPU, still check that every kernel compiles for an H100/H200 (sm_90, bf16) with its default
    tiles (long sequences; the temporal class for the one-kernel short backward), for D = 64 and 128 and the padded
    72 and 40, both plain and causal + padding mask + partial last tile: within shared memory,
    with Hopper's wgmma instructions, loads pipelined (asynchronous copies, as a launch on contiguous inputs
    compiles them), and (ptxas -v) within 255 registers per thread without spilling. A
    tile that cannot fit (128x128 scores and a 128x128 output accumulator in 4 warps: 256 float32 values
    per thread before anything else) must be reported as spilling, so the check can fail."""
    code = (
        "import torch; from minivid.kernels import compile_for_gpu, ptxas_resources, KernelConfig\n"
        "k = compile_for_gpu('preprocess', torch.bfloat16, 128, causal=True, has_kpm=True, even_k=False)\n"
        "assert k.metadata.shared <= 227 * 1024\n"
        "for kind in ('fwd', 'dkdv', 'dq', 'bwd_short'):\n"
        "    for d in (64, 128, 72, 40):  # 72, 40: padded to 128, 64 (rows 16-byte aligned, not 16-element)\n"
        "        for causal, kpm, even in ((False, False, True), (True, True, False)):\n"
        "            k = compile_for_gpu(kind, torch.bfloat16, d, causal=causal, has_kpm=kpm, even_k=even, arch=90)\n"
        "            r = ptxas_resources(k)\n"
        "            assert r['shared'] <= 227 * 1024, (kind, d, causal, r)  # H100/H200: 227 KiB per block\n"
        "            # Hopper's tensor-core instructions; not for the memory-bound short-sequence kernel (2 warps)\n"
        "            assert kind == 'bwd_short' or 'wgmma' in k.asm['ptx'], (kind, d, causal)\n"
        "            assert r['registers'] <= 255 and r['spill_stores'] == 0, (kind, d, causal, r)\n"
        "            if kind != 'bwd_short':  # the key / query loop is software-pipelined: asynchronous copies\n"
        "                assert 'async_copy_global_to_local' in k.asm['ttgir'], (kind, d, causal)\n"
        "big = compile_for_gpu('fwd', torch.bfloat16, 128, config=KernelConfig(128, 128, 1, 4, 2), causal=False,\n"
        "                      has_kpm=False, even_k=True)\n"
        "r = ptxas_resources(big)\n"
        "assert r['registers'] == 255 and r['spill_stores'] > 0 and r['spill_loads'] > 0, r\n"
    )
    env = {key: val for key, val in os.environ.items() if key != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600, env=env)
