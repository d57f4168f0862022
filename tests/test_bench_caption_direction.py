"""bench/caption_direction.py: what it adds to the system's card metrics (the tracked sprite's displacement, the
first frame + caption use) is measured right, its rates are the card's, and bad arguments fail before any work."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from minivid import pretrained
from minivid.data import MiniSprites

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_caption_direction", ROOT / "bench" / "caption_direction.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_displacement_is_the_rendered_sprites_own():
    """On rendered one-sprite clips the tracked first-to-last displacement matches the renderer's exact centres;
    a clip whose colour is absent is left out of the mean and of the count."""
    bench = _bench()
    data = MiniSprites(num_videos=6, size=32, num_frames=8, split="test", seed=3, num_sprites=1)
    items = [data[i] for i in range(6)]
    videos = torch.stack([it["video"] for it in items])
    colors = [it["caption"].split()[1] for it in items]
    truth = torch.stack([(it["centers"][0, -1] - it["centers"][0, 0]).norm() for it in items]).mean()
    moved, found = bench.displacement_px(videos, colors)
    assert found == 6 and moved == pytest.approx(float(truth), abs=0.3)
    absent = "red" if colors[0] != "red" else "blue"
    moved2, found2 = bench.displacement_px(videos[:2], [absent, colors[1]])
    assert found2 == 1
    assert moved2 == pytest.approx(float((items[1]["centers"][0, -1] - items[1]["centers"][0, 0]).norm()), abs=0.3)


def test_the_report_keeps_the_cards_rates_and_adds_the_first_frame_use(tmp_path):
    from minivid.pipeline.run import load_run, run_spaces, system_metrics
    bench = _bench()
    out = tmp_path / "cd.json"
    assert bench.main(["--clips", "3", "--guidance", "4", "--out", str(out)]) == 0
    entry = json.loads(out.read_text())["entries"]["system"]
    model, cfg, _ = load_run("system")
    space, motion_space = run_spaces(cfg)
    card = system_metrics(model.float().eval(), cfg, space, motion_space, n=3)
    for use in ("text", "text+trajectory", "image+text+trajectory"):
        row = entry["uses"]["text guidance 4"][use]
        assert row["sprite_check"] == card[use]["sprite_check"]
        assert row["color"] == card[use]["caption_accuracy"]["color"]
        assert row["tracked_clips"] <= 3
    ff = entry["first frame + caption (null trajectory, default guidance)"]
    opt_in = system_metrics(model.float().eval(), cfg, space, motion_space, n=3, modes=["image+text"])["image+text"]
    assert ff["sprite_check"] == opt_in["sprite_check"] and ff["direction"] == opt_in["caption_accuracy"]["direction"]
    assert json.dumps(ff["trajectory_error_px"]) == json.dumps(opt_in["trajectory_error_px"])  # own path, frames 1..
    assert entry["t5"] == pytest.approx(pretrained.card("t5")["metrics"]["moves"], abs=2e-3)  # the system's is t5
    assert entry["real_displacement_px"] > 1


@pytest.mark.parametrize("args, match", [(["--guidance", "abc"], "--guidance='abc'"),
                                         (["--guidance", "4,0.5"], "--guidance='4,0.5'"),
                                         (["--clips", "0"], "--clips=0")])
def test_bad_arguments_fail_before_any_work(args, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        _bench().main(args + ["--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()
