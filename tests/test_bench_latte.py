"""bench/latte.py counts one clip's training-step FLOPs and multiplies by the batch (a full GPU batch counted on a
CPU took minutes): exact, since every product FlopCounterMode counts is linear in the batch."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("variant", [1, 3])
def test_step_flops_of_one_clip_times_the_batch_equal_the_full_count(variant):
    from minivid.diffusion import DiffusionTrainer, NoiseSchedule
    from minivid.transformers import set_attention_backend

    spec = importlib.util.spec_from_file_location("bench_latte", ROOT / "bench" / "latte.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    s = {**bench.SETTINGS["cpu"], "batch": 3, "depth": 2, "frames": 4, "size": 16}
    model = set_attention_backend(bench.build(variant, s, "cpu"), "math")
    trainer = DiffusionTrainer(model, NoiseSchedule.linear(), learned_variance=True)
    x0, y = bench.make_batch(s, "cpu")
    with FlopCounterMode(display=False) as counter:
        trainer.step(x0, y=y)
    assert bench.step_flops(variant, s) == counter.get_total_flops() > 0
