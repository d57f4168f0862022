"""``python -m minivid eval --checkpoint RUN``: a full-system run folder (or one of its checkpoints) is scored on the
samples ``system_eval_set`` makes, which are the caption+path use of ``system_metrics`` (same clips, same noise), and
the numbers the CLI writes are the ones ``system_metrics`` computes through its own calls to the metrics."""

from __future__ import annotations

import json

import pytest
import torch

from minivid.__main__ import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real `cpu`-preset run (the zoo's VAEs and T5), shrunk to train in seconds: two checkpoints."""
    out = tmp_path_factory.mktemp("eval") / "tiny"
    assert main(["train", "cpu", "--steps", "2", "--no-progress", "--threads", "1", "--out", str(out), "--set",
                 "num_clips=16", "global_batch=8", "model.transformer.depth=1", "checkpoint_every=1", "keep=2",
                 "warmup=1"]) == 0
    return out


def test_eval_of_a_run_folder_equals_system_metrics(run, tmp_path, capsys, monkeypatch):
    from minivid.pipeline.run import load_run, run_spaces, system_metrics

    out = tmp_path / "m.json"
    assert main(["eval", "--checkpoint", str(run), "--clips", "4", "--no-fvd", "--no-progress", "--device", "cpu",
                 "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["source"]["folder"].endswith("step-00000002") and "captions and sprite paths" in got["source"]["what"]
    model, cfg, _ = load_run(run)
    space, motion_space = run_spaces(cfg)
    want = system_metrics(model, cfg, space, motion_space, n=4, modes=["text+trajectory"])["text+trajectory"]
    assert got["sprite_check"]["sprite_check"] == pytest.approx(want["sprite_check"])
    assert got["sprite_check"]["failures"] == want["failures"]
    assert got["caption_accuracy"]["color"] == pytest.approx(want["caption_accuracy"]["color"])
    assert got["trajectory"]["trajectory_error_px"] == pytest.approx(want["trajectory_error_px"], abs=1e-3)
    # one of its checkpoints, named by its folder; the default JSON name says run and step
    step1 = run / "checkpoints" / "step-00000001"
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--checkpoint", str(step1), "--clips", "2", "--no-fvd", "--no-progress", "--device",
                 "cpu"]) == 0
    assert json.loads((tmp_path / "outputs" / "eval" / "tiny-step-00000001.json").read_text())["source"]["folder"] \
        == str(step1)


def test_system_eval_set_samples_in_batches_with_a_seed_each(run):
    from minivid.pipeline.run import load_run, run_spaces, system_eval_set

    model, cfg, _ = load_run(run)
    spaces = run_spaces(cfg)
    whole = system_eval_set(model, cfg, *spaces, n=4)
    halves = system_eval_set(model, cfg, *spaces, n=4, batch=2)
    two = system_eval_set(model, cfg, *spaces, n=2)
    assert torch.equal(whole["reference"], halves["reference"]) and whole["captions"] == halves["captions"]
    assert torch.equal(halves["videos"][:2], two["videos"])  # chunk 0 is drawn with the seed itself
    # the first clips' noise does not depend on n (a batch of 4 may round differently from a batch of 2)
    assert torch.allclose(whole["videos"][:2], two["videos"], atol=1e-3)
    assert not torch.equal(halves["videos"][2:], whole["videos"][2:])  # chunk 1: seed + 1
    with pytest.raises(ValueError, match="batch"):
        system_eval_set(model, cfg, *spaces, n=4, batch=0)


@pytest.mark.parametrize("argv, message", [
    (["eval", "--checkpoint", "/nonexistent-run", "--no-fvd"], "nor a run folder"),
    (["eval", "--checkpoint", "t5", "--no-fvd", "--clips", "2"], "t5 is a text encoder"),
])
def test_eval_refuses_what_is_no_checkpoint(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_eval_refuses_a_folder_without_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--checkpoint", str(tmp_path), "--no-fvd", "--clips", "2"])
    assert "not a run folder" in capsys.readouterr().err


def test_sample_cli_runs_on_the_device_asked_and_repeats_itself(run, tmp_path, monkeypatch, capsys):
    """``python -m minivid sample --device D`` loads the model and the VAEs onto D (it once checked --device and then
    sampled on the CPU regardless), writes the mp4 and its PNG grid, and the same seed gives the same frames."""
    import minivid.pipeline.run as run_module

    seen = []
    for name in ("load_run", "run_spaces"):
        real = getattr(run_module, name)
        monkeypatch.setattr(run_module, name, lambda *a, _real=real, _name=name, **k: seen.append(
            (_name, str(k.get("device", a[1] if len(a) > 1 else None)))) or _real(*a, **k))
    pngs = []
    for i in range(2):
        out = tmp_path / f"v{i}.mp4"
        assert main(["sample", "--checkpoint", str(run), "--device", "cpu", "--steps", "2", "--seed", "5",
                     "--prompt", "a red square moves right", "--trajectory", "[[4, 4], [28, 28]]",
                     "--out", str(out)]) == 0
        assert out.stat().st_size > 0
        pngs.append(out.with_suffix(".png").read_bytes())
    assert ("load_run", "cpu") in seen and ("run_spaces", "cpu") in seen
    assert pngs[0] == pngs[1]


def test_eval_default_clip_count_follows_where_the_clips_are_made():
    """On CUDA eval defaults to 2048 clips (fvd2048_16f), but the zoo's entries other than the full system sample on
    the CPU, where 2048 would take hours: those default to 64 on any device."""
    from minivid.__main__ import _zoo_samples_on_cpu

    assert _zoo_samples_on_cpu("latte") and _zoo_samples_on_cpu("tora")
    assert not _zoo_samples_on_cpu("system") and not _zoo_samples_on_cpu("system-reducio")
    assert not _zoo_samples_on_cpu("outputs/runs/cpu") and not _zoo_samples_on_cpu(None)
