"""Attention kernels (K1-K4 of ``docs/equations.md``).

Plain PyTorch, no Triton needed:

* ``reference.py``: :func:`attention_reference`, the math path, plus the same algorithm block by block
  (:func:`attention_blockwise`, K2; :func:`attention_backward_reference`, K3) and the cost model
  (:func:`attention_flops`, K4; :func:`attention_bytes`).
* ``verify.py``: :func:`check_against_sdpa`, an implementation's output and gradients against PyTorch's SDPA.

FlashAttention-2 forward and backward in Triton, one concern per file:

* ``triton_kernels.py``: the ``@triton.jit`` kernels (K1-K3) and :func:`interpreter_active`;
* ``tiles.py``: :class:`KernelConfig`, the candidate tiles per shape class and the autotuner
  (:func:`kernel_config`, :func:`last_configs`);
* ``flash.py``: argument checks, launches and autograd: :func:`flash_attention`, :func:`flash_attention_forward`,
  :class:`FlashAttentionFunction`, :func:`poisoned_outputs`;
* ``compile.py``: the kernels compiled ahead of time for sm_90 without a GPU (:func:`compile_for_gpu`,
  :func:`ptxas_resources`).

Their names are imported lazily, on first use, because importing them imports Triton and fixes whether
the kernels are compiled for CUDA or run in Triton's CPU interpreter (``TRITON_INTERPRET=1``, which must
be set before that first use). Importing ``minivid.kernels`` itself never imports Triton.
"""

import importlib

from .reference import (
    LAYOUTS,
    attention_backward_reference,
    attention_blockwise,
    attention_bytes,
    attention_flops,
    attention_reference,
    attention_scores,
)
from .verify import SDPA_TOLERANCE, check_against_sdpa

# name -> the submodule that defines it (each of them imports triton)
_LAZY = {
    "flash_attention": "flash",
    "flash_attention_forward": "flash",
    "FlashAttentionFunction": "flash",
    "SUPPORTED_HEAD_DIMS": "flash",
    "SUPPORTED_DTYPES": "flash",
    "poisoned_outputs": "flash",
    "interpreter_active": "triton_kernels",
    "KernelConfig": "tiles",
    "kernel_config": "tiles",
    "last_configs": "tiles",
    "compile_for_gpu": "compile",
    "ptxas_resources": "compile",
}

__all__ = [
    "LAYOUTS",
    "attention_reference",
    "attention_scores",
    "attention_blockwise",
    "attention_backward_reference",
    "attention_flops",
    "attention_bytes",
    "SDPA_TOLERANCE",
    "check_against_sdpa",
    *sorted(_LAZY),
]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)  # imports triton on first use
        value = getattr(module, name)
        globals()[name] = value  # later look-ups find it directly
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
