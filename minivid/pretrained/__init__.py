"""The model zoo: small trained checkpoints shipped in the repository, under ``data/pretrained/<name>/``.

Each entry is a folder in :func:`minivid.save_model`'s format (``config.json`` + ``model.safetensors``) plus
``card.json``: the exact command that made it, the steps, wall time, machine, commit, data, and held-out
``metrics`` next to their trivial baselines. Every entry is reproducible by that one command
(``python -m minivid train <name>``, the recipes of :mod:`minivid.pipeline.zoo`) on 2 CPU cores.

    >>> import minivid.pretrained as zoo
    >>> zoo.available()                    # ['causal-vae', 'latte', ...]
    >>> vae = zoo.load("vae2d")            # the model, in eval mode
    >>> zoo.card("vae2d")["metrics"]       # {'psnr': ..., 'baselines_psnr': {...}, ...}

Nothing is downloaded: the files are in the repository (``data/pretrained/``, about 42 MB in all). ``root``
arguments (or the ``MINIVID_PRETRAINED`` environment variable) point at another zoo folder, e.g. one a
developer regenerated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..nn.model import CONFIG_FILE, WEIGHTS_FILE, Model, load_model

CARD_FILE = "card.json"
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "data" / "pretrained"


def zoo_root(root: str | os.PathLike | None = None) -> Path:
    """The zoo folder: ``root``, else ``$MINIVID_PRETRAINED``, else the repository's ``data/pretrained``."""
    return Path(root or os.environ.get("MINIVID_PRETRAINED") or DEFAULT_ROOT)


def available(root: str | os.PathLike | None = None) -> list[str]:
    """The names of the complete zoo entries (a folder with ``config.json``, weights and ``card.json``), sorted."""
    r = zoo_root(root)
    if not r.is_dir():
        return []
    return sorted(p.name for p in r.iterdir()
                  if p.is_dir() and all((p / f).is_file() for f in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)))


def _entry(name: str, root: str | os.PathLike | None) -> Path:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name={name!r} must be a zoo name (a non-empty str); available: {available(root)}")
    names = available(root)
    if name not in names:
        raise ValueError(f"name={name!r} is not in the model zoo at {zoo_root(root)}; available: {names} "
                         f"(a missing entry is made by `python -m minivid train {name}`)")
    return zoo_root(root) / name


def path(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of zoo entry ``name`` (a ValueError listing the available names when there is none)."""
    return _entry(name, root)


def card(name: str, root: str | os.PathLike | None = None) -> dict:
    """The card of zoo entry ``name`` as a dict: ``name``, ``model_class``, ``command``, ``steps``,
    ``train_seconds``, ``machine``, ``commit``, ``data``, ``metrics`` (held-out, with their ``baselines``), ..."""
    return json.loads((_entry(name, root) / CARD_FILE).read_text())


def load(name: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
         root: str | os.PathLike | None = None) -> Model:
    """The trained model of zoo entry ``name`` (``minivid.load_model`` on its folder), in eval mode, float32
    unless ``dtype`` says otherwise (weights stored in half precision are widened)."""
    model = load_model(_entry(name, root), device=device)
    return model.to(dtype=dtype or torch.float32)


__all__ = ["available", "card", "load", "path", "zoo_root", "CARD_FILE", "DEFAULT_ROOT"]
