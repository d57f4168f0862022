"""The contract every model in minivid follows: built from one config dataclass, saved and loaded one way.

- A model class subclasses :class:`Model` and names its config dataclass (a :class:`ModelConfig`) in
  ``config_class``; ``Model(config)`` or ``Model(**fields)`` builds it and keeps the config in ``model.config``.
- :func:`save_model(model, folder) <save_model>` writes ``folder/config.json`` (the class, its module and
  the config's fields) and ``folder/model.safetensors`` (the weights), each atomically.
- :func:`load_model(folder) <load_model>` rebuilds the same model, whatever its class, with the same outputs.

Loading never runs code from the folder: the weights are safetensors (no pickle), the config is JSON, and the
class is looked up among the registered model classes. A minivid class is found by its name (its module,
recorded in config.json, is imported on demand; only modules inside ``minivid`` are imported that way);
a model class defined elsewhere (a user's, a test's) must be imported before :func:`load_model` is called.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..utils.checkpoint import load_weights, save_json, save_weights
from ..utils.config import Config
from ..utils.validation import check_device

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
FORMAT = "minivid-model"
FORMAT_VERSION = 1

_MINIVID_MODELS: dict[str, type] = {}  # class name -> class, for the library's own models (names are unique)
_OTHER_MODELS: dict[str, type] = {}  # "module.qualname" -> class, for models defined outside minivid


@dataclasses.dataclass
class ModelConfig(Config):
    """Base of every model config (a :class:`minivid.utils.config.Config`: ``to_dict`` / ``from_dict`` through
    JSON). ``load_model`` rebuilds a model from the ``from_dict`` of its saved config."""


class Model(nn.Module):
    """Base class of minivid's models (denoisers, autoencoders). Subclasses set ``config_class``; the constructor
    takes a config of that class, or its fields as keywords (not both)."""

    config_class: ClassVar[type[ModelConfig] | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.config_class is None or cls.__name__.startswith("_"):
            return  # an abstract base (VideoAutoencoder) or a private shared base (Latte's backbone)
        if cls.__module__.split(".")[0] == "minivid":
            other = _MINIVID_MODELS.get(cls.__name__)
            if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
                raise TypeError(f"two minivid model classes are named {cls.__name__!r} ({other.__module__} and "
                                f"{cls.__module__}); load_model finds minivid's models by name")
            _MINIVID_MODELS[cls.__name__] = cls
        else:
            _OTHER_MODELS[f"{cls.__module__}.{cls.__qualname__}"] = cls

    def __init__(self, config: ModelConfig | None = None, **fields):
        super().__init__()
        cls = type(self).config_class
        if cls is None:
            raise TypeError(f"{type(self).__name__} has no config_class; set it to the model's config dataclass")
        if config is not None and fields:
            raise ValueError(f"{type(self).__name__}: pass a {cls.__name__} or its fields as keywords, not both "
                             f"(got config and {sorted(fields)})")
        if config is None:
            config = cls(**fields)
        elif not isinstance(config, cls):
            raise TypeError(f"{type(self).__name__} takes a {cls.__name__}, got a {type(config).__name__}")
        self.config = config

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def model_classes() -> dict[str, type]:
    """The registered model classes: minivid's by name, others by ``module.qualname``."""
    return {**_MINIVID_MODELS, **_OTHER_MODELS}


def save_model(model: Model, folder: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``folder/model.safetensors`` (the weights) and ``folder/config.json`` (format, class, module, config,
    and ``metadata``: any JSON-serialisable dict, e.g. the training step), each atomically. Returns the folder."""
    if not isinstance(model, Model):
        raise TypeError(f"save_model takes a minivid model (a subclass of minivid.nn.Model with a config dataclass); "
                        f"got a {type(model).__name__}")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict (JSON-serialisable) or None, got {type(metadata).__name__}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"folder={str(folder)!r} exists and is not a folder")
    cls = type(model)
    save_weights(model, folder / WEIGHTS_FILE)
    save_json({"format": FORMAT, "format_version": FORMAT_VERSION, "class": cls.__name__, "module": cls.__module__,
               "qualname": cls.__qualname__, "config": model.config.to_dict(), "metadata": metadata or {}},
              folder / CONFIG_FILE)
    return folder


def read_model_config(folder: str | os.PathLike) -> tuple[type, ModelConfig, dict]:
    """The class, config and metadata recorded in ``folder/config.json`` (no weights are read); a clear error
    naming the folder when it is missing, not minivid's format, or names a class that is not a registered model."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise FileNotFoundError(f"no model folder at {str(folder)!r} (load_model takes a folder written by "
                                f"save_model, holding {CONFIG_FILE} and {WEIGHTS_FILE})")
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no {CONFIG_FILE}: it is not a model folder written by "
                                "minivid.save_model")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); was it written by minivid.save_model?") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or "class" not in data or "config" not in data:
        raise ValueError(f"{path} is not a minivid model config (expected \"format\": \"{FORMAT}\" with \"class\" and "
                         f"\"config\"); the folder {str(folder)!r} was not written by minivid.save_model")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {data['format_version']}, newer than this minivid's "
                         f"{FORMAT_VERSION}: update minivid")
    cls = _find_class(str(data["class"]), str(data.get("module", "")), str(data.get("qualname", data["class"])), path)
    return cls, cls.config_class.from_dict(data["config"]), dict(data.get("metadata") or {})


def _find_class(name: str, module: str, qualname: str, path: Path) -> type:
    if module.split(".")[0] == "minivid":
        if name not in _MINIVID_MODELS:
            with contextlib.suppress(ImportError):  # the class may have moved: the error below names it
                importlib.import_module(module)  # a module of minivid's own: defines and registers the class
        if name in _MINIVID_MODELS:
            return _MINIVID_MODELS[name]
    elif f"{module}.{qualname}" in _OTHER_MODELS:
        return _OTHER_MODELS[f"{module}.{qualname}"]
    raise ValueError(f"{path} names the model class {name!r} (module {module!r}), which is not a registered minivid "
                     f"model; minivid's models are {sorted(_MINIVID_MODELS)} (a model class defined outside minivid "
                     "must be imported before load_model)")


def load_model(folder: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
               ) -> Model:
    """The model saved in ``folder`` by :func:`save_model`: same class, config and weights (so the same outputs),
    on ``device`` (and ``dtype`` when given), in eval mode."""
    device = check_device("device", device)
    cls, config, _ = read_model_config(folder)
    model = cls(config)
    try:
        load_weights(model, Path(folder) / WEIGHTS_FILE)
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(folder)!r} has {CONFIG_FILE} but no {WEIGHTS_FILE}") from None
    except RuntimeError as e:  # missing / unexpected / mis-shaped tensors
        raise ValueError(f"the weights in {str(folder)!r} do not fit a {cls.__name__} built from its "
                         f"{CONFIG_FILE}: {e}") from None
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    return model.eval()


__all__ = ["Model", "ModelConfig", "save_model", "load_model", "read_model_config", "model_classes",
           "CONFIG_FILE", "WEIGHTS_FILE"]

