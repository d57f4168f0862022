"""``python -m minivid demo``: train a small pixel-space video diffusion model on MiniSprites and sample it.

The main job of the foundation: everything a later pipeline needs, at the smallest useful scale.
MiniSprites clips (D-data) -> v-prediction training with explicit uniform timesteps (D9, D10) on a
factorised video U-Net -> EMA weights -> DPM-Solver++ sampling (D8) -> an mp4 and a PNG frame grid.
On a CPU it trains for at most ``max_minutes`` (default 3) so the whole run takes under 5 minutes on two
cores; with CUDA it picks a larger scale. The run folder holds ``run.json`` (the :class:`DemoConfig`),
``checkpoints/step-XXXXXXXX/`` (the training core's checkpoints, written atomically every ``checkpoint_every``
steps; ``--resume`` continues from the last one, so a killed run loses at most that much work), ``model/`` (the
EMA weights in ``minivid.save_model``'s format: ``minivid.load_model(out / "model")``), the samples and
``metrics.json``. Without ``--resume`` a folder that already holds a checkpoint is refused rather than overwritten.
(The full system of notebook 08 replaces this model.)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from tqdm import tqdm

from ..data import MiniSprites
from ..diffusion import (DiffusionTrainer, NoiseSchedule, check_prediction, dpm_solver_pp_sample, latest_checkpoint,
                         make_timesteps)
from ..nn import load_model, save_model
from ..unets import VideoUNet, VideoUNetConfig
from ..utils.checkpoint import save_json
from ..utils.config import Config
from ..utils.validation import is_int, is_number
from ..utils.video import save_frame_grid, write_video

RUN_FILE = "run.json"


@dataclass
class DemoConfig(Config):
    size: int = 32
    num_frames: int = 8
    num_videos: int = 4096
    batch_size: int = 8
    steps: int = 3000  # an upper bound; max_minutes usually stops the CPU run first
    max_minutes: float = 3.0
    lr: float = 1e-3
    warmup_steps: int = 50
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    prediction: str = "v"
    schedule: str = "cosine"
    num_train_timesteps: int = 1000
    sample_steps: int = 25
    num_samples: int = 4
    checkpoint_every: int = 100
    fps: int = 8
    seed: int = 0
    model: VideoUNetConfig = field(default_factory=lambda: VideoUNetConfig(channels=32, channel_mult=(1, 2, 2)))

    @classmethod
    def for_device(cls, device: torch.device | str, **overrides) -> "DemoConfig":
        """CPU: 32x32x8 clips, a 1.3M-parameter U-Net, 3 minutes. CUDA: 64x64x16, 11M parameters, 10 minutes."""
        if torch.device(device).type == "cuda":
            base = cls(size=64, num_frames=16, batch_size=32, steps=20000, max_minutes=10.0, lr=5e-4,
                       ema_decay=0.999, num_samples=8, num_videos=100_000,
                       model=VideoUNetConfig(channels=64, channel_mult=(1, 2, 2, 2)))
        else:
            base = cls()
        for k, v in overrides.items():
            if k not in {f.name for f in fields(cls)}:
                raise ValueError(f"unknown demo option {k!r}; allowed: {[f.name for f in fields(cls)]}")
            setattr(base, k, v)
        base.validate()
        return base

    def validate(self) -> None:
        """Check every option before any work (a ValueError naming the option, its value and what is allowed)."""
        for name in ("num_frames", "num_videos", "batch_size", "steps", "sample_steps", "num_samples", "checkpoint_every"):
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive integer")
        if self.num_videos < self.batch_size:
            raise ValueError(f"batch_size={self.batch_size} is larger than the dataset (num_videos={self.num_videos} "
                             f"clips): use a batch size of at most {self.num_videos}")
        if not is_int(self.size) or not 16 <= self.size <= 512 or self.size % 8:
            raise ValueError(f"size={self.size!r} is invalid: expected an int in [16, 512] divisible by 8 "
                             "(MiniSprites' frame sizes)")
        f = 2 ** (len(self.model.channel_mult) - 1)
        if self.size % f:
            raise ValueError(f"size={self.size} must be divisible by {f} = 2**(len(channel_mult)-1) for "
                             f"model.channel_mult={tuple(self.model.channel_mult)}")
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be an integer >= 0")
        if not is_int(self.num_train_timesteps) or self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps={self.num_train_timesteps!r} must be an integer >= 2")
        if self.sample_steps > self.num_train_timesteps:
            raise ValueError(f"sample_steps={self.sample_steps} must be at most num_train_timesteps="
                             f"{self.num_train_timesteps} (a sampler visits distinct training timesteps)")
        if not is_number(self.max_minutes) or not self.max_minutes > 0:
            raise ValueError(f"max_minutes={self.max_minutes!r} must be a positive number")
        if not is_number(self.fps) or not self.fps > 0:
            raise ValueError(f"fps={self.fps!r} must be a positive number")
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule={self.schedule!r}; allowed: 'linear', 'cosine'")
        check_prediction(self.prediction)


class OutDirError(ValueError):
    """``out_dir`` cannot be used as asked: it would overwrite a finished run, or there is nothing to resume.
    Raised by :func:`run_demo` before any work (the CLI reports it as a usage error)."""


# Options that only set how long a run goes on or what it writes at the end: a resumed run may change them.
_BUDGET_KEYS = {"steps", "max_minutes", "checkpoint_every", "num_samples", "sample_steps", "fps"}


def _config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every differing key (nested dicts such as ``model`` key by key)."""
    lines = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<missing>"), new.get(k, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += _config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            lines.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return lines


def _previous_run(out: Path, cfg: DemoConfig, resume: bool) -> Path | None:
    """The checkpoint to continue from (``resume``), or None for a new run; an OutDirError when the run would
    overwrite finished work, has nothing to resume, or was written with another config."""
    if out.exists() and not out.is_dir():
        raise OutDirError(f"out_dir {str(out)!r} exists and is not a folder; choose another --out")
    ckpt = latest_checkpoint(out / "checkpoints")
    if ckpt is None:
        if resume:
            raise OutDirError(f"cannot resume: {str(out)!r} holds no checkpoint (no {out / 'checkpoints'}/step-*); "
                              "run without --resume to start a new run, or pass the --out of the run to continue")
        return None
    step = int(ckpt.name.split("-")[1])
    if not resume:
        raise OutDirError(f"{ckpt} exists (step {step}); pass --resume to continue or choose another --out")
    run_file = out / RUN_FILE
    if not run_file.is_file():
        raise OutDirError(f"cannot resume from {ckpt}: {run_file} (the run's config) is missing")
    old = {k: v for k, v in json.loads(run_file.read_text()).items() if k not in _BUDGET_KEYS}
    new = {k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items() if k not in _BUDGET_KEYS}
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        raise OutDirError(f"cannot resume from {ckpt}: it was written with a different config ({changed}): "
                          + "; ".join(_config_diff({k: old.get(k) for k in changed}, {k: new.get(k) for k in changed}))
                          + ". Use the original options, or choose another --out for a new run")
    return ckpt


def _schedule(cfg: DemoConfig) -> NoiseSchedule:
    return getattr(NoiseSchedule, cfg.schedule)(cfg.num_train_timesteps)


def sample(model: VideoUNet, cfg: DemoConfig, device: torch.device, seed: int = 0) -> torch.Tensor:
    """Draw cfg.num_samples clips (B, 3, T, H, W) in [-1, 1] with DPM-Solver++ (D8)."""
    s = _schedule(cfg)
    g = torch.Generator().manual_seed(seed)
    shape = (cfg.num_samples, cfg.model.in_channels, cfg.num_frames, cfg.size, cfg.size)
    x_T = torch.randn(shape, generator=g).to(device)
    model.eval()
    ts = make_timesteps(s, cfg.sample_steps, "logsnr")
    return dpm_solver_pp_sample(model, x_T, s, ts, prediction=cfg.prediction, clip_x0=1.0).clamp(-1, 1)


def run_demo(cfg: DemoConfig, out_dir: str | Path = "outputs/demo", device: str | None = None, resume: bool = False,
             progress: bool = True) -> dict:
    """Train, sample, write ``run.json``, ``checkpoints/``, ``model/`` (EMA weights, ``minivid.save_model``),
    ``samples.mp4``, ``frames.png`` and ``metrics.json`` under ``out_dir``; return the metrics."""
    cfg.validate()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out_dir)
    previous = _previous_run(out, cfg, resume)  # before any work: never overwrite a finished run
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    data = MiniSprites(num_videos=cfg.num_videos, size=cfg.size, num_frames=cfg.num_frames, seed=cfg.seed)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    model = VideoUNet(cfg.model).to(device)
    trainer = DiffusionTrainer(model, _schedule(cfg), prediction=cfg.prediction, lr=cfg.lr,
                               warmup_steps=cfg.warmup_steps, grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay,
                               timestep_sampling="explicit_uniform", seed=cfg.seed + 1)  # D9
    if previous is not None:
        trainer.load_checkpoint(previous)
    save_json(cfg.to_dict(), out / RUN_FILE)

    t_start = time.monotonic()
    n_params = model.num_parameters()
    bar = tqdm(total=cfg.steps, initial=trainer.num_updates, desc=f"demo ({device.type}, {n_params / 1e6:.1f}M params)",
               disable=not progress, dynamic_ncols=True)
    stopped_by_time = False
    while trainer.num_updates < cfg.steps and not stopped_by_time:
        for batch in loader:
            if trainer.num_updates >= cfg.steps:
                break
            if time.monotonic() - t_start > 60 * cfg.max_minutes:
                stopped_by_time = True
                break
            trainer.step(batch["video"].to(device))  # D3 + D4 / D10 + AdamW + EMA
            recent = [h["loss"] for h in trainer.history[-20:]]
            bar.update(1)
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
            if trainer.num_updates % cfg.checkpoint_every == 0:
                trainer.save_checkpoint(out / "checkpoints")
    bar.close()
    train_seconds = time.monotonic() - t_start
    trainer.save_checkpoint(out / "checkpoints")
    save_model(trainer.ema, out / "model", metadata={"step": trainer.num_updates, "run": RUN_FILE})

    t0 = time.monotonic()
    videos = sample(trainer.ema, cfg, device, seed=cfg.seed).cpu()
    sample_seconds = time.monotonic() - t0
    row = torch.cat(list(videos), dim=-1)  # samples side by side: (3, T, H, n*W)
    write_video(out / "samples.mp4", row, fps=cfg.fps)
    save_frame_grid(out / "frames.png", videos)
    metrics = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "steps": trainer.num_updates,
        "stopped_by_time_budget": stopped_by_time,
        "train_seconds": round(train_seconds, 1),
        "sample_seconds": round(sample_seconds, 1),
        "parameters": n_params,
        "loss_mean_first_50": sum(trainer.losses[:50]) / max(1, len(trainer.losses[:50])),
        "loss_mean_last_50": sum(trainer.losses[-50:]) / max(1, len(trainer.losses[-50:])),
        "outputs": {k: str(out / k) for k in ("samples.mp4", "frames.png", "model", RUN_FILE, "checkpoints")},
    }
    save_json(metrics, out / "metrics.json")
    return metrics


def load_demo_model(out_dir: str | Path, device: str = "cpu") -> tuple[VideoUNet, DemoConfig]:
    """The demo's EMA model (``minivid.load_model(out_dir / "model")``) and its run config (``run.json``)."""
    out = Path(out_dir)
    model = load_model(out / "model", device=device)
    cfg = DemoConfig.from_dict(json.loads((out / RUN_FILE).read_text()))
    return model, cfg


__all__ = ["DemoConfig", "OutDirError", "run_demo", "sample", "load_demo_model"]
