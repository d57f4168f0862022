"""The demo end to end at a tiny scale: outputs exist and are right, weights reload, resume continues."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from minivid.__main__ import main
from minivid.diffusion.video_unet import VideoUNetConfig
from minivid.pipeline.demo import DemoConfig, load_demo_model, run_demo, sample
from minivid.utils.video import read_video

TINY_MODEL = VideoUNetConfig(base_channels=8, channel_mults=(1, 2), attention_heads=2, groups=4)


def tiny(**kw):
    opts = dict(size=16, num_frames=4, num_videos=64, batch_size=4, steps=6, sample_steps=3, num_samples=2,
                checkpoint_every=3, model=TINY_MODEL)
    return DemoConfig.for_device("cpu", **{**opts, **kw})


def test_demo_writes_its_outputs_and_the_weights_reload(tmp_path):
    cfg = tiny()
    m = run_demo(cfg, tmp_path, device="cpu", progress=False)
    assert m["steps"] == 6 and not m["stopped_by_time_budget"]
    video = read_video(tmp_path / "samples.mp4")  # (3, T, H, 2W): the two samples side by side
    assert video.shape == (3, 4, 16, 32) and video.min() >= -1 and video.max() <= 1
    grid = np.asarray(Image.open(tmp_path / "frames.png"))
    assert grid.ndim == 3 and grid.shape[2] in (3, 4)
    model, cfg2 = load_demo_model(tmp_path)
    assert cfg2 == cfg
    a, b = sample(model, cfg2, torch.device("cpu"), seed=0), sample(model, cfg2, torch.device("cpu"), seed=0)
    assert torch.equal(a, b) and a.shape == (2, 3, 4, 16, 16)
    assert json.loads((tmp_path / "metrics.json").read_text())["parameters"] > 0


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    """A longer budget continues the saved run (model, EMA, optimizer, step, loss log); a different model
    or data config is refused."""
    run_demo(tiny(steps=3), tmp_path, device="cpu", progress=False)
    first = torch.load(tmp_path / "train_state.pt", weights_only=False)
    m = run_demo(tiny(steps=6), tmp_path, device="cpu", progress=False, resume=True)
    state = torch.load(tmp_path / "train_state.pt", weights_only=False)
    assert m["steps"] == 6 and state["trainer"]["num_updates"] == 6 and len(state["trainer"]["losses"]) == 6
    assert state["trainer"]["losses"][:3] == first["trainer"]["losses"]
    with pytest.raises(ValueError, match=r"different config \(\['lr'\]\)"):
        run_demo(tiny(steps=9, lr=3e-4), tmp_path, device="cpu", progress=False, resume=True)


def test_cli_rejects_bad_options(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--steps", "0"])
    assert "steps=0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--device", "tpu"])


def test_trainer_learns_a_gaussian_and_its_ema_follows():
    """DiffusionTrainer on data x0 ~ N(0.5, 0.3^2): a per-timestep linear eps-model can represent the optimal
    predictor exactly, so training must approach the closed-form minimum of L_simple."""
    from minivid.diffusion import GaussianOracle, NoiseSchedule, l_simple
    from minivid.pipeline.trainer import DiffusionTrainer

    s = NoiseSchedule.linear(100, 1e-3, 0.1)

    class PerStepLinear(torch.nn.Module):  # eps_hat = a_t * x + b_t: the family the optimum lives in
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Parameter(torch.zeros(100)), torch.nn.Parameter(torch.zeros(100))

        def forward(self, x, t):
            return self.a[t][:, None] * x + self.b[t][:, None]

    g = torch.Generator().manual_seed(0)
    trainer = DiffusionTrainer(PerStepLinear(), s, prediction="eps", lr=0.05, warmup_steps=1, ema_decay=0.9)
    for _ in range(400):
        trainer.step(0.5 + 0.3 * torch.randn(256, 8, generator=g))
    oracle = GaussianOracle(s, 0.5, 0.3)
    x0 = 0.5 + 0.3 * torch.randn(4096, 8, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 100, (4096,), generator=g)
    xt = s.q_sample(x0, t, noise)
    best = l_simple(s, oracle(xt, t), x0, noise, t).mean()
    ours = l_simple(s, trainer.ema(xt, t), x0, noise, t).mean()
    assert ours < best * 1.05, (float(ours), float(best))
    assert trainer.num_updates == 400 and trainer.losses[-1] < trainer.losses[0]


def test_trainer_rejects_options_that_would_silently_stop_learning():
    from minivid.diffusion import NoiseSchedule
    from minivid.pipeline.trainer import DiffusionTrainer

    s, model = NoiseSchedule.linear(10), torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"grad_clip=0 must be > 0, or None"):  # clip to norm 0: no update at all
        DiffusionTrainer(model, s, grad_clip=0)
    with pytest.raises(ValueError, match="warmup_steps=-5 must be >= 0"):
        DiffusionTrainer(model, s, warmup_steps=-5)
    DiffusionTrainer(model, s, grad_clip=None, warmup_steps=0)  # no clipping, no warm-up: both allowed
