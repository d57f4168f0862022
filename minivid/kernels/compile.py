"""The attention kernels compiled ahead of time for an NVIDIA GPU, on any machine (no GPU needed).

:func:`compile_for_gpu` compiles one kernel of :mod:`minivid.kernels.triton_kernels` for a compute capability
(sm_90 = H100/H200 by default) with the tiles of :mod:`minivid.kernels.tiles`, specialised as a launch on
contiguous inputs is; :func:`ptxas_resources` runs the ``ptxas`` that Triton ships on the result and reads the
registers per thread, the bytes spilled to local memory and the shared memory. That is what a CPU-only machine can
say about the GPU kernels before they run: ``tests/kernels/test_compile.py`` checks that every default tiling
compiles within 255 registers without spilling, within shared memory, on Hopper's ``wgmma`` instructions and with
its loop software-pipelined; ``bench/kernel_resources.py`` sweeps every tiling and stores the numbers
(``bench/results/kernel_resources-sm90-triton-*.json``, summarised in ``bench/results/measurements.md``).

Needs the compiled (not interpreted) kernels: a process without ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

import torch
import triton

from .flash import _dot_precision
from .tiles import SHORT_SEQUENCE, KernelConfig, _block_d, _candidates
from .triton_kernels import (
    _bwd_dkdv_kernel,
    _bwd_dq_kernel,
    _bwd_preprocess_kernel,
    _bwd_short_kernel,
    _fwd_kernel,
    interpreter_active,
)

__all__ = ["compile_for_gpu", "ptxas_resources"]


def compile_for_gpu(kind: str, dtype: torch.dtype = torch.bfloat16, head_dim: int = 64,
                    config: KernelConfig | None = None, causal: bool = True, has_kpm: bool = True,
                    even_k: bool = False, arch: int = 90, specialize: bool = True):
    """Compile one kernel ahead of time for an NVIDIA GPU of compute capability ``arch`` (90 = H100),
    on any machine, GPU or not (Triton ships ``ptxas``). Returns Triton's compiled kernel, whose
    ``metadata.shared`` and ``asm["ptx"]`` / ``asm["ttgir"]`` can be inspected.

    ``specialize=True`` compiles what a launch on ordinary inputs compiles: Triton specialises every
    integer argument equal to 1 into a constant and marks integers and pointers divisible by 16, and
    that decides whether loads are vectorised and pipelined. Here the head dim is contiguous (every
    ``s_*d`` stride and the mask's ``s_mn`` are 1, in both layouts) and the other strides, the sizes and
    the pointers are multiples of 16 (true for D a multiple of 16 and sequence lengths that are multiples
    of 16, as in the benchmark). For other head dims the strides are not marked, and where D · element size
    is a multiple of 16 bytes (72 or 40 in bf16) the ``ALIGN`` hint is set, as ``_stride_align`` sets it for
    contiguous inputs. ``specialize=False``: every integer generic, the slowest code.

    The tests use it to check on a CPU-only machine that the kernels compile for the GPU; it needs
    the compiled (not interpreted) kernels, i.e. a process without ``TRITON_INTERPRET=1``.
    ``kind``: "fwd", "dq", "dkdv", "preprocess" or "bwd_short" (the one-kernel backward of short sequences).
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if interpreter_active():
        raise RuntimeError("compile_for_gpu needs the compiled kernels: run without TRITON_INTERPRET=1")
    kernels = {"fwd": _fwd_kernel, "dq": _bwd_dq_kernel, "dkdv": _bwd_dkdv_kernel,
               "preprocess": _bwd_preprocess_kernel, "bwd_short": _bwd_short_kernel}
    if kind not in kernels:
        raise ValueError(f"kind must be one of {tuple(kernels)}, got {kind!r}")
    fn = kernels[kind]
    if config is None:  # the default tiles: long sequences, or (bwd_short) the temporal shape class
        n = SHORT_SEQUENCE if kind == "bwd_short" else 4096
        config = _candidates({"preprocess": "fwd", "bwd_short": "dkdv"}.get(kind, kind), n, n, head_dim, dtype)[0]
    cfg = config
    elem = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    # Contiguous inputs: every (b, h, n) stride is a multiple of D; Triton sees multiples of 16 elements itself, and
    # the ALIGN hint says 16 bytes where D is not one but D · element size is (e.g. 72 in bf16), as a launch would.
    nbytes = torch.tensor([], dtype=dtype).element_size()
    align = 16 if specialize and head_dim % 16 and head_dim * nbytes % 16 == 0 else 1
    consts = dict(HEAD_DIM=head_dim, BLOCK_D=_block_d(head_dim), BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                  ROWS=cfg.rows, CAUSAL=causal, HAS_KPM=has_kpm, EVEN_K=even_k, DOT_PRECISION=_dot_precision(dtype),
                  ALIGN=align)
    consts = {name: val for name, val in consts.items() if name in fn.arg_names}
    if specialize:  # unit strides of the contiguous head dim (and of the mask's key axis) become constants
        consts.update({name: 1 for name in fn.arg_names
                       if name.startswith("s_") and (name.endswith("d") or name == "s_mn")})
    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            signature[name] = "constexpr"
            continue
        if name in ("LSE", "DELTA"):
            signature[name] = "*fp32"
        elif name == "KPM":
            signature[name] = "*u8"
        elif name in ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV"):
            signature[name] = "*" + elem
        elif name in ("qk_scale", "sm_scale"):
            signature[name] = "fp32"
            continue  # Triton does not specialise floats
        else:
            signature[name] = "i32"  # strides, sizes
        if specialize and not (name.startswith("s_") and head_dim % 16):  # strides of D = 72: multiples of 8 only
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=signature, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})


def ptxas_resources(compiled, arch: int = 90) -> dict:
    """Registers, spills and shared memory of a kernel from :func:`compile_for_gpu`, read from
    ``ptxas -v`` (the ``ptxas`` Triton ships) on its PTX: no GPU needed.

    Returns ``{"registers", "spill_stores", "spill_loads", "stack_frame", "shared"}`` (registers per
    thread; the others in bytes, ``shared`` from Triton's metadata). A kernel that spills keeps part of
    its tiles in local memory (L1/L2) instead of registers: slower, still correct.
    """
    from triton.backends.nvidia.compiler import get_ptxas

    ptx = compiled.asm["ptx"]
    gpu = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"  # sm_90a: the wgmma instructions need the "a" target
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        out = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name={gpu}", path, "-o", os.devnull],
                             capture_output=True, text=True, check=True).stderr

    def number(pattern: str) -> int:
        found = re.search(pattern, out)
        if found is None:
            raise RuntimeError(f"could not read {pattern!r} from ptxas -v output:\n{out}")
        return int(found.group(1))

    return {"registers": number(r"Used (\d+) registers"), "spill_stores": number(r"(\d+) bytes spill stores"),
            "spill_loads": number(r"(\d+) bytes spill loads"), "stack_frame": number(r"(\d+) bytes stack frame"),
            "shared": int(compiled.metadata.shared)}
