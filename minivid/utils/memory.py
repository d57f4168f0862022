"""What a training step holds in memory: the tensors autograd saves for the backward pass, measured.

:func:`saved_tensor_bytes` runs a function under :func:`torch.autograd.graph.saved_tensors_hooks` and adds up the
storages of every tensor saved for the backward pass (each storage once, however many views of it are saved),
leaving out the ones given in ``exclude`` (a model's parameters, which are counted with the weights). This is the
activation memory of a training step: what stays alive between the forward and the backward pass. The peak adds the
largest temporary of any single operation, which this does not see.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch


def saved_tensor_bytes(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> tuple[int, object]:
    """(bytes of the distinct storages autograd saves while ``fn()`` runs, excluding those of ``exclude``, fn's
    result)."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


__all__ = ["saved_tensor_bytes"]
