"""Atomic checkpoint writes: a run that is killed mid-save never leaves a truncated file behind.

Every writer goes to a temporary file in the destination folder and then ``os.replace``s it, which is
atomic on POSIX and Windows. Model weights use safetensors (portable, no pickle); the training state
(optimizer, step, RNG) uses ``torch.save``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .files import atomic_path


def save_weights(module_or_state: torch.nn.Module | dict, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Save a model's state dict as safetensors, atomically. ``metadata`` (str -> str) is stored in the header.
    Tied weights (one storage under two names, e.g. T5's shared embedding) are stored once per name, as copies."""
    state = module_or_state.state_dict() if isinstance(module_or_state, torch.nn.Module) else module_or_state
    seen: set = set()
    out = {}
    for k, v in state.items():
        v = v.detach().contiguous().cpu()
        key = v.untyped_storage().data_ptr() if v.numel() else None  # views of one storage share it
        out[k] = v.clone() if key in seen else v
        seen.add(key)
    state = out
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def load_weights(module: torch.nn.Module, path: str | os.PathLike, strict: bool = True) -> torch.nn.Module:
    """Load safetensors weights into ``module`` (on the module's device)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    device = next(module.parameters()).device
    module.load_state_dict(load_file(str(path), device=str(device)), strict=strict)
    return module


def diffusers_state(source, class_name: str) -> tuple[dict, dict]:
    """(config dict, state dict) of a diffusers model: an instance of ``class_name``, or a folder written by its
    ``save_pretrained`` (``config.json`` + one ``diffusion_pytorch_model.safetensors`` or shards with their index),
    read with safetensors, without importing diffusers. A clear ValueError for anything else."""
    a = "an" if class_name[0] in "AEIOU" else "a"
    if isinstance(source, torch.nn.Module):
        if not hasattr(source, "config") or type(source).__name__ != class_name:
            raise ValueError(f"expected a diffusers {class_name}, got a {type(source).__name__}")
        return dict(source.config), {k: v.detach() for k, v in source.state_dict().items()}
    folder = Path(source)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{str(folder)!r} is not a diffusers model folder (no config.json); pass {a} {class_name} or a "
                         "folder written by its save_pretrained")
    cfg = json.loads((folder / "config.json").read_text())
    if cfg.get("_class_name", class_name) != class_name:
        raise ValueError(f"{str(folder)!r} holds a diffusers {cfg['_class_name']}, not {a} {class_name}")
    single = folder / "diffusion_pytorch_model.safetensors"
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if single.is_file():
        return cfg, load_file(single)
    if index.is_file():
        state: dict = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(load_file(folder / shard))
        return cfg, state
    raise ValueError(f"{str(folder)!r} holds no diffusion_pytorch_model.safetensors (or its sharded index); save the "
                     "model with save_pretrained(..., safe_serialization=True)")


@torch.no_grad()
def copy_mapped_state(model: torch.nn.Module, new: dict, class_name: str, strict: bool = False) -> torch.nn.Module:
    """Copy ``new`` (minivid parameter name -> tensor, mapped from another layout such as diffusers') into
    ``model``'s state, in its dtype, and return it in eval mode. A ValueError names any weight ``model`` needs that
    ``new`` lacks, any shape that differs and, with ``strict``, any weight of ``new`` with no counterpart."""
    own = model.state_dict()
    extra, missing = sorted(set(new) - set(own)), sorted(set(own) - set(new))
    if strict and extra:
        raise ValueError(f"diffusers weight(s) {extra[:8]} have no counterpart in minivid's {class_name}")
    if missing:
        raise ValueError(f"the diffusers model lacks weight(s) minivid's {class_name} needs: {missing[:8]}")
    for k, v in new.items():
        if k in own and own[k].shape != v.shape:
            raise ValueError(f"weight {k}: minivid expects shape {tuple(own[k].shape)}, the diffusers model has "
                             f"{tuple(v.shape)}")
    for k, v in new.items():
        if k in own:
            own[k].copy_(v.to(own[k].dtype))
    return model.eval()


def save_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_state(obj: Any, path: str | os.PathLike) -> None:
    """torch.save, atomically (optimizer states, step counters, RNG states)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
