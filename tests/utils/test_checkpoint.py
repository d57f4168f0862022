"""Atomic checkpoint writes: round trips, and a failure mid-write leaves the previous file intact."""

import os

import pytest
import torch

from minivid.utils import atomic_path, load_weights, save_json, save_state, save_weights


def test_weights_round_trip(tmp_path):
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    save_weights(a, tmp_path / "w.safetensors", metadata={"step": "7"})
    load_weights(b, tmp_path / "w.safetensors")
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_weights(b, tmp_path / "missing.safetensors")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "state.pt"
    save_state({"step": 1}, path)
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half a checkp")
            raise RuntimeError("killed mid-write")
    assert torch.load(path)["step"] == 1
    assert os.listdir(tmp_path) == ["state.pt"]
    save_json({"a": 1}, tmp_path / "sub" / "m.json")
    assert (tmp_path / "sub" / "m.json").read_text().strip() == '{\n  "a": 1\n}'
