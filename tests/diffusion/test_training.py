"""The training core (minivid.diffusion.Trainer) and the diffusion trainer: learning a case with a closed-form
optimum, the options that would silently stop learning, and checkpoints: a run stopped and resumed equals an
uninterrupted one bit for bit, a failed save keeps the previous checkpoint, and a checkpoint cannot run code."""

import os
import pickle

import pytest
import torch

from minivid import load_model
from minivid.diffusion import DiffusionTrainer, GaussianOracle, NoiseSchedule, Trainer, checkpoints, l_simple
from minivid.diffusion import latest_checkpoint
from minivid.diffusion import training as training_module
from minivid.unets import VideoUNet, VideoUNetConfig

TINY = VideoUNetConfig(channels=8, channel_mult=(1, 2), heads=2, norm_groups=4, num_classes=3)


def batch(step: int):
    g = torch.Generator().manual_seed(1000 + step)  # the data of update `step`, whatever the process
    return torch.randn(2, 3, 2, 8, 8, generator=g).clamp(-1, 1), torch.randint(0, 4, (2,), generator=g)


def make_trainer(seed=0):
    torch.manual_seed(seed)
    return DiffusionTrainer(VideoUNet(TINY), NoiseSchedule.cosine(50), prediction="v", lr=3e-3, warmup_steps=2,
                            ema_decay=0.9, seed=seed)


def run(trainer, start, stop):
    for i in range(start, stop):
        x, y = batch(i)
        trainer.step(x, y=y)


def test_stopped_and_resumed_equals_uninterrupted_bit_for_bit(tmp_path):
    straight = make_trainer()
    run(straight, 0, 6)
    first = make_trainer()
    run(first, 0, 3)
    saved = first.save_checkpoint(tmp_path / "ckpt")
    assert saved.name == "step-00000003" and latest_checkpoint(tmp_path / "ckpt") == saved
    resumed = make_trainer(seed=7)  # other init and RNG seed: everything must come from the checkpoint
    assert resumed.load_checkpoint(tmp_path / "ckpt") == saved and resumed.num_updates == 3
    run(resumed, 3, 6)
    for a, b in ((straight.model, resumed.model), (straight.ema, resumed.ema)):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), name
    assert straight.history == resumed.history
    assert torch.equal(straight.generator.get_state(), resumed.generator.get_state())
    # the checkpoint's model and EMA are minivid.save_model folders: load_model rebuilds them
    ema = load_model(saved / "ema")
    assert type(ema) is VideoUNet and ema.config == TINY


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """A full disk (simulated: the state write fails) while saving step 4 leaves step 2 as the latest checkpoint,
    complete, and no partial folder behind."""
    trainer = make_trainer()
    run(trainer, 0, 2)
    good = trainer.save_checkpoint(tmp_path)
    run(trainer, 2, 4)

    def disk_full(obj, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(training_module, "save_state", disk_full)
    with pytest.raises(OSError, match="No space left"):
        trainer.save_checkpoint(tmp_path)
    assert checkpoints(tmp_path) == [good] and sorted(os.listdir(tmp_path)) == [good.name]
    resumed = make_trainer()
    resumed.load_checkpoint(tmp_path)
    assert resumed.num_updates == 2


def test_keep_and_saving_a_step_twice(tmp_path):
    trainer = make_trainer()
    for stop in (1, 2, 3):
        run(trainer, trainer.num_updates, stop)
        trainer.save_checkpoint(tmp_path, keep=2)
    assert [p.name for p in checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    assert trainer.save_checkpoint(tmp_path, keep=2) == tmp_path / "step-00000003"  # nothing new to write


def test_a_checkpoint_cannot_run_code(tmp_path):
    """train_state.pt is read with weights_only=True: a pickle that would call a function is refused before the
    call happens."""
    trainer = make_trainer()
    run(trainer, 0, 1)
    folder = trainer.save_checkpoint(tmp_path)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"optimizer": Payload()}, folder / "train_state.pt")
    with pytest.raises(pickle.UnpicklingError):
        make_trainer().load_checkpoint(tmp_path)
    assert not marker.exists()


def test_checkpoint_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .*nothing"):
        make_trainer().load_checkpoint(tmp_path / "nothing")
    no_ema = DiffusionTrainer(VideoUNet(TINY), NoiseSchedule.cosine(50), ema_decay=None)
    run(no_ema, 0, 1)
    no_ema.save_checkpoint(tmp_path / "a")
    with pytest.raises(ValueError, match="has no EMA weights but this trainer has an EMA"):
        make_trainer().load_checkpoint(tmp_path / "a")
    plain = DiffusionTrainer(torch.nn.Linear(2, 2), NoiseSchedule.cosine(50))
    with pytest.raises(TypeError, match="must be a minivid.nn.Model"):
        plain.save_checkpoint(tmp_path / "b")


def test_the_core_needs_a_loss():
    with pytest.raises(NotImplementedError, match="must implement loss"):
        Trainer(torch.nn.Linear(2, 2)).step(torch.zeros(1, 2))


def test_trainer_learns_a_gaussian_and_its_ema_follows():
    """DiffusionTrainer on data x0 ~ N(0.5, 0.3^2): a per-timestep linear eps-model can represent the optimal
    predictor exactly, so training must approach the closed-form minimum of L_simple."""
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
    s, model = NoiseSchedule.linear(10), torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"grad_clip=0 must be > 0, or None"):  # clip to norm 0: no update at all
        DiffusionTrainer(model, s, grad_clip=0)
    with pytest.raises(ValueError, match=r"warmup_steps=-5 is invalid: expected an integer >= 0"):
        DiffusionTrainer(model, s, warmup_steps=-5)
    DiffusionTrainer(model, s, grad_clip=None, warmup_steps=0)  # no clipping, no warm-up: both allowed
