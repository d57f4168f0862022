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


def test_the_file_is_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    import stat

    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else f"fsync {os.fstat(fd).st_size} bytes")
        real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_path(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"12345")
    assert (tmp_path / "a.bin").read_bytes() == b"12345"
    expected = ["fsync 5 bytes", "replace"] + (["fsync dir"] if os.name == "posix" else [])
    assert events == expected


def test_save_weights_stores_tied_weights(tmp_path):
    """Two names for one tensor (tied embeddings) save as two copies and load back tied."""
    from minivid.utils.checkpoint import load_weights, save_weights

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3, 3)
            self.b = torch.nn.Linear(3, 3)
            self.b.weight = self.a.weight

    m = Tied()
    save_weights(m, tmp_path / "w.safetensors")
    m2 = Tied()
    load_weights(m2, tmp_path / "w.safetensors")
    assert torch.equal(m2.a.weight, m.a.weight) and m2.b.weight is m2.a.weight
