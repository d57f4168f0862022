"""Data-parallel training (issue: full system): two gloo processes under torchrun hold identical weights, equal
to one process fed the same global batch (to numerics), and a checkpoint of the 2-process run resumes in one
process to the uninterrupted result. Also GlobalBatches' order and DistInfo's checks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minivid.utils.distributed import DistInfo, GlobalBatches, env_info

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(Path(__file__).parent / "ddp_worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def _single(steps_before_resume: int | None, ckpt: Path | None = None):
    """One process: 4 uninterrupted steps, or a resume from ``ckpt`` (+ its data order) for the remaining 2."""
    trainer = ddp_worker.build(seed=100)
    order = GlobalBatches(ddp_worker.POOL, ddp_worker.GLOBAL_BATCH, seed=1, info=DistInfo())
    data = ddp_worker.pool()
    if ckpt is None:
        ddp_worker.train(trainer, order, data, 4)
    else:
        folder = trainer.load_checkpoint(ckpt)
        order.load_state_dict(json.loads((folder / "data_order.json").read_text()))
        assert trainer.num_updates == steps_before_resume
        ddp_worker.train(trainer, order, data, 4 - steps_before_resume)
    return trainer


def test_ranks_hold_identical_weights(two_ranks):
    _, (r0, r1) = two_ranks
    assert r0["world_size"] == 2
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k  # rank 1 started from other weights
        assert torch.equal(r0["ema"][k], r1["ema"][k]), k
    assert r0["losses"] == r1["losses"]  # the loss averaged over ranks


def test_two_ranks_equal_one_process_with_the_global_batch(two_ranks):
    _, (r0, _) = two_ranks
    single = _single(None)
    ref = single.model.state_dict()
    worst = max((r0["model"][k] - ref[k]).abs().max().item() for k in ref)
    assert worst < 1e-5, worst
    assert all(abs(a - b) < 1e-5 for a, b in zip(r0["losses"], single.losses))
    # the check can fail: a run that skipped the broadcast, the gradient average or the global draws differs
    other = ddp_worker.build(seed=100)
    other.step(ddp_worker.pool()[:4])  # a half batch: not the same step
    moved = max((other.model.state_dict()[k] - r0["model"][k]).abs().max().item() for k in ref)
    assert moved > 1e-3


def test_resume_on_another_number_of_processes(two_ranks):
    out, (r0, _) = two_ranks
    resumed = _single(2, out / "ckpt")
    ref = _single(None).model.state_dict()
    for k, v in resumed.model.state_dict().items():
        torch.testing.assert_close(v, ref[k], atol=1e-5, rtol=0)
        torch.testing.assert_close(v, r0["model"][k], atol=1e-5, rtol=0)


def test_global_batches_cover_epochs_and_shard():
    one = GlobalBatches(10, 4, seed=3, info=DistInfo())
    seen = torch.cat([one.next_global() for _ in range(5)])  # 20 indices = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    ranks = [GlobalBatches(10, 4, seed=3, info=DistInfo(r, 2)) for r in range(2)]
    again = GlobalBatches(10, 4, seed=3, info=DistInfo())
    for _ in range(6):
        assert torch.equal(torch.cat([g.next() for g in ranks]), again.next_global())
    state = ranks[0].state_dict()
    fresh = GlobalBatches(10, 4, seed=3, info=DistInfo())
    fresh.load_state_dict(state)
    assert torch.equal(fresh.next_global(), again.next_global())  # resumes the same order on 1 process


def test_bad_input_named():
    with pytest.raises(ValueError, match="global batch 6 does not split evenly over world_size=4"):
        DistInfo(0, 4).shard(6)
    with pytest.raises(ValueError, match="global_batch=4"):
        GlobalBatches(10, 4, info=DistInfo()).load_state_dict(GlobalBatches(10, 8, info=DistInfo()).state_dict())


def test_env_info(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert env_info() == DistInfo()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="incomplete"):
        env_info()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "x")
    with pytest.raises(ValueError, match="LOCAL_RANK='x' must be an integer"):
        env_info()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_info() == DistInfo(1, 2, 1)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="0 <= RANK < WORLD_SIZE"):
        env_info()
