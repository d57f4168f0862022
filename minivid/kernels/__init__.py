"""Attention kernels (K1-K4 of ``docs/equations.md``).

* :func:`attention_reference` (``reference.py``): the math path in plain PyTorch, plus the same
  algorithm block by block (:func:`attention_blockwise`, K2; :func:`attention_backward_reference`,
  K3) and the cost model (:func:`attention_flops`, K4; :func:`attention_bytes`). No Triton needed.
* :func:`flash_attention` (``flash_attention.py``): FlashAttention-2 forward and backward in Triton.
  Imported lazily, on first use of the name, because importing it imports Triton and fixes whether
  the kernels are compiled for CUDA or run in Triton's CPU interpreter (``TRITON_INTERPRET=1``,
  which must be set before that first use). Importing ``minivid.kernels`` itself never imports
  Triton.
"""

import importlib
import sys
import types

from .reference import (
    LAYOUTS,
    attention_backward_reference,
    attention_blockwise,
    attention_bytes,
    attention_flops,
    attention_reference,
    attention_scores,
)

_LAZY = {
    "flash_attention",
    "flash_attention_forward",
    "FlashAttentionFunction",
    "compile_for_gpu",
    "KernelConfig",
    "SUPPORTED_HEAD_DIMS",
    "SUPPORTED_DTYPES",
    "interpreter_active",
    "kernel_config",
    "last_configs",
    "poisoned_outputs",
}

__all__ = [
    "LAYOUTS",
    "attention_reference",
    "attention_scores",
    "attention_blockwise",
    "attention_backward_reference",
    "attention_flops",
    "attention_bytes",
    *sorted(_LAZY),
]


def _flash_module():
    return importlib.import_module(".flash_attention", __name__)  # imports triton on first use


def __getattr__(name):
    if name in _LAZY:
        return getattr(_flash_module(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY)


class _KernelsPackage(types.ModuleType):
    """The submodule ``flash_attention.py`` and the function ``flash_attention`` share a name. Importing
    a submodule makes Python set it as an attribute of its package, which would hide the function;
    this property keeps ``minivid.kernels.flash_attention`` the function. The module stays reachable
    as ``from minivid.kernels.flash_attention import ...`` (or ``sys.modules``)."""

    @property
    def flash_attention(self):
        return _flash_module().flash_attention

    @flash_attention.setter
    def flash_attention(self, value):
        pass  # the import system recording the submodule: keep the function visible instead


sys.modules[__name__].__class__ = _KernelsPackage
