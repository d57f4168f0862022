"""bench/system.py's measurements run on every preset's model (shrunk to one small block so they take seconds on a
CPU): the training update gets every input the preset's model takes (semantic image tokens for the gpu and
cpu-reducio presets, no motion latents without trajectory guidance), and sampling gets the inputs its latent space
needs (an image on the Reducio VAE, no trajectory there)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from minivid.pipeline.run import preset_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_system", ROOT / "bench" / "system.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SMALL = {"model.transformer.depth": 1, "model.transformer.heads": 2, "global_batch": 2}


@pytest.mark.parametrize("preset", ["cpu", "cpu-causal", "cpu-reducio", "gpu"])
def test_training_throughput_runs_each_presets_model(bench, preset):
    cfg = preset_config(preset, {**SMALL, "autocast": "none"})
    row = bench.train_throughput(cfg, "cpu", updates=1, count_flops=preset == "cpu-reducio")
    assert row["global_batch"] == 2 and row["seconds_per_update"] > 0
    assert row["clips_per_second"] == pytest.approx(2 / row["seconds_per_update"], rel=0.01)
    if preset == "cpu-reducio":
        assert row["model_gflops_per_update"] > 0


def test_model_flops_count_attention_whatever_the_backend(bench):
    """MFU compares rows of different attention backends, so the model's FLOPs must not depend on the backend:
    FlopCounterMode sees no FLOPs in the CPU's SDPA op (nor in minivid's Triton kernel), so they are counted on the
    math path (before, the SDPA row counted 0.17 GFLOP here against the math row's 0.20)."""
    rows = {b: bench.train_throughput(preset_config("cpu", {**SMALL, "model.transformer.attention_backend": b}),
                                      "cpu", updates=1)["model_gflops_per_update"] for b in ("sdpa", "math")}
    assert rows["sdpa"] == rows["math"] > 0


@pytest.mark.parametrize("preset", ["cpu", "cpu-reducio", "gpu"])
def test_sampling_latency_gives_each_preset_the_inputs_it_takes(bench, monkeypatch, preset):
    """A trajectory where the model has trajectory guidance; on the Reducio VAE an image (its content frame) and no
    trajectory. Sampled at 1 step here (the benchmark's 20 cost the same per step)."""
    from minivid.pipeline import run as run_mod

    calls, real = [], run_mod.generate

    def spy(*a, **kw):
        calls.append(kw)
        return real(*a, **{**kw, "steps": 1})
    monkeypatch.setattr(bench, "generate", spy)
    out = bench.sampling_latency(preset_config(preset, SMALL), "cpu", repeats=1)
    assert len(calls) == 2 and out["frames"] == 16 and len(out["seconds"]) == 1
    if preset == "cpu-reducio":
        assert out["guidance"] == "text 4 (2 branches a step)" and out["zoo_vaes"] is True
        assert all("trajectory" not in kw and kw["image"].shape == (3, 64, 64) for kw in calls)
        assert torch.equal(calls[0]["image"], calls[1]["image"])
    else:
        assert out["guidance"] == "text 4, trajectory 2 (3 branches a step)"
        assert all("image" not in kw and len(kw["trajectory"][0]) == 2 for kw in calls)
