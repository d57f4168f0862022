"""``python -m minivid demo``: latent video diffusion on MiniSprites, trained from scratch on 2 CPU cores in minutes.

The main job of the foundation, at the smallest scale that visibly works: MiniSprites clips (D-data) -> the zoo's
per-frame VAE (``vae2d``, :mod:`minivid.pretrained`) -> scaled latents (4 x 8 x 8 x 8 for a 32 x 32 x 8 clip)
-> a latent video U-Net (:class:`~minivid.unets.VideoUNet`: a 3-frame temporal convolution in every residual
block, space-time attention at the lowest resolution), class-conditional on the sprite's colour x motion (32
classes; one sprite per clip), trained with v-prediction (D10) and explicit uniform timesteps (D9) for a fixed number
of steps -> EMA weights -> DPM-Solver++ (D8) with classifier-free guidance -> decoded clips, an mp4, a PNG frame grid
at 4x size, and ``metrics.json`` with the share of samples that pass the sprite check
(:func:`minivid.metrics.sprite_check`; real one-sprite clips: 100%) and that show the asked colour in every frame.

Why this model: at this budget a Latte (variant 1) with the same data and labels passed 0-2% of the sprite check
where this U-Net passed 34% (1500 steps each; the zoo recipe ``latent-unet``, 6000 steps, passes 83%), and
conditioning on the colour is what keeps a sprite's colour fixed across frames (with shape x motion labels the same
U-Net passed 6%). ``--pretrained`` skips training and samples the zoo's ``latent-unet`` in seconds.

The run folder holds ``run.json`` (the :class:`DemoConfig`), ``checkpoints/step-XXXXXXXX/`` (the training core's
checkpoints, written atomically every ``checkpoint_every`` steps; ``--resume`` continues from the last one, with
the same batches an uninterrupted run would draw, since batch ``k`` is drawn from a generator seeded by
``(seed, k)``), ``model/`` (the EMA weights in ``minivid.save_model``'s format), the samples and ``metrics.json``.
Without ``--resume`` a folder that already holds a checkpoint is refused rather than overwritten.
(The full system of notebook 08 replaces this model.)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

from .. import pretrained
from ..autoencoders import LatentSpace
from ..diffusion import DiffusionTrainer, check_prediction, latest_checkpoint
from ..diffusion.training import resume_point
from ..nn import load_model, save_model
from ..unets import VideoUNet, VideoUNetConfig
from ..utils.checkpoint import save_json
from ..utils.config import Config
from ..utils.machine import device_name
from ..utils.validation import is_int, is_number
from ..utils.video import save_frame_grid, write_video
from .zoo import (COLOR_MOTION_CLASSES, LATTE_FRAMES, LATTE_SIZE, color_accuracy, color_motion_pool,
                  latent_unet_config, latte_schedule, sample_latent_unet, sprite_scores)

RUN_FILE = "run.json"


@dataclass
class DemoConfig(Config):
    """Everything a demo run depends on (saved as ``run.json``). ``model`` is the U-Net's config; None takes the
    zoo's (:func:`minivid.pipeline.zoo.latent_unet_config`)."""

    size: int = LATTE_SIZE
    num_frames: int = LATTE_FRAMES
    num_videos: int = 4096  # training clips, encoded once
    batch_size: int = 32
    steps: int = 1500
    lr: float = 1e-3
    warmup_steps: int = 150
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    prediction: str = "v"
    num_train_timesteps: int = 1000
    sample_steps: int = 25
    num_samples: int = 16
    guidance: float = 4.0
    label_dropout: float = 0.1  # labels replaced by the null class (classifier-free guidance)
    checkpoint_every: int = 250
    fps: int = 8
    seed: int = 0
    autoencoder: str = "vae2d"  # a zoo name (minivid.pretrained)
    model: VideoUNetConfig | None = None

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = VideoUNetConfig.from_dict(self.model)

    @classmethod
    def for_device(cls, device: torch.device | str, **overrides) -> "DemoConfig":
        """CPU: 1500 steps of batch 32 (about 8 minutes on 2 cores). CUDA: 8000 steps of batch 64 with a wider U-Net
        (not yet measured on a GPU)."""
        if torch.device(device).type == "cuda":
            base = cls(steps=8000, batch_size=64, lr=5e-4, ema_decay=0.999, num_samples=32, warmup_steps=400)
            if "model" not in overrides:
                overrides["model"] = None
                base.model = "gpu"
        else:
            base = cls()
        for k, v in overrides.items():
            if k not in {f.name for f in fields(cls)}:
                raise ValueError(f"unknown demo option {k!r}; allowed: {[f.name for f in fields(cls)]}")
            setattr(base, k, v)
        wide = base.model == "gpu"
        base._validate_clip()  # before a model config is derived from the clip size
        if base.model is None or wide:
            base.model = latent_unet_config(4, channels=64 if wide else 32)
        base.validate()
        return base

    def _validate_clip(self) -> None:
        if not is_int(self.num_frames) or self.num_frames < 1:
            raise ValueError(f"num_frames={self.num_frames!r} must be a positive integer")
        if not is_int(self.size) or not 16 <= self.size <= 512 or self.size % 8:
            raise ValueError(f"size={self.size!r} is invalid: expected an int in [16, 512] divisible by 8 "
                             "(MiniSprites' frame sizes)")

    def validate(self) -> None:
        """Check every option before any work (a ValueError naming the option, its value and what is allowed)."""
        self._validate_clip()
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
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be an integer >= 0")
        if not is_int(self.num_train_timesteps) or self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps={self.num_train_timesteps!r} must be an integer >= 2")
        if self.sample_steps > self.num_train_timesteps:
            raise ValueError(f"sample_steps={self.sample_steps} must be at most num_train_timesteps="
                             f"{self.num_train_timesteps} (a sampler visits distinct training timesteps)")
        if not is_number(self.fps) or not self.fps > 0:
            raise ValueError(f"fps={self.fps!r} must be a positive number")
        if not is_number(self.guidance) or self.guidance < 0:
            raise ValueError(f"guidance={self.guidance!r} must be a number >= 0 (1: no guidance)")
        check_prediction(self.prediction)
        if not is_number(self.label_dropout) or not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout={self.label_dropout!r} must be a number in [0, 1)")
        if not isinstance(self.model, VideoUNetConfig):
            raise ValueError(f"model={self.model!r} must be a VideoUNetConfig")
        if (self.model.in_channels, self.model.num_classes) != (4, COLOR_MOTION_CLASSES):
            raise ValueError(f"model.in_channels={self.model.in_channels} and model.num_classes="
                             f"{self.model.num_classes} must be (4, {COLOR_MOTION_CLASSES}): the zoo VAE's |z| and the "
                             "colour x motion classes; leave model unset to derive it")
        latent, levels = self.size // 4, 2 ** (len(self.model.channel_mult) - 1)  # the zoo VAE's f_s; the U-Net's
        if latent % levels:
            raise ValueError(f"size={self.size} gives {latent} x {latent} latents, which the U-Net's "
                             f"{len(self.model.channel_mult)} levels cannot halve {len(self.model.channel_mult) - 1} "
                             f"times: use a size divisible by {4 * levels}")


class OutDirError(ValueError):
    """``out_dir`` cannot be used as asked: it would overwrite a finished run, or there is nothing to resume.
    Raised by :func:`run_demo` before any work (the CLI reports it as a usage error)."""


# Options that only set how long a run goes on or what it writes at the end: a resumed run may change them.
_BUDGET_KEYS = {"steps", "checkpoint_every", "num_samples", "sample_steps", "fps", "guidance"}


def _previous_run(out: Path, cfg: DemoConfig, resume: bool) -> Path | None:
    """The checkpoint to continue from (``resume``), or None for a new run; an OutDirError when the run would
    overwrite finished work, has nothing to resume, or was written with another config."""
    return resume_point(out, cfg.to_dict(), resume, _BUDGET_KEYS, RUN_FILE, OutDirError)


def latent_space(cfg: DemoConfig, device: torch.device | str = "cpu") -> LatentSpace:
    """The zoo autoencoder ``cfg.autoencoder`` with the latent scale its card records."""
    vae = pretrained.load(cfg.autoencoder, device=device)
    return LatentSpace(vae, pretrained.card(cfg.autoencoder)["latent_scale"])


def sample_labels(cfg: DemoConfig) -> torch.Tensor:
    """The classes sampled: every colour in turn, each with the next motion (label 4i + i mod 4 for sample i < 8)."""
    i = torch.arange(cfg.num_samples)
    return ((i % 8) * 4 + (i % 8 + i // 8) % 4) % COLOR_MOTION_CLASSES


def sample(model: VideoUNet, space: LatentSpace, cfg: DemoConfig, device: torch.device | str = "cpu",
           seed: int = 0) -> torch.Tensor:
    """``cfg.num_samples`` clips (N, 3, T, H, W) in [-1, 1] for :func:`sample_labels`, with DPM-Solver++ (D8) and
    classifier-free guidance ``cfg.guidance``; the same seed gives the same clips."""
    return sample_latent_unet(model, space, sample_labels(cfg), guidance=cfg.guidance, steps=cfg.sample_steps,
                              seed=seed, frames=cfg.num_frames, latent_size=cfg.size // 4, device=device,
                              num_train_timesteps=cfg.num_train_timesteps)


def _batch(latents: torch.Tensor, labels: torch.Tensor, cfg: DemoConfig, step: int):
    """Batch number ``step``: drawn from a generator seeded by (seed, step), so a resumed run draws the batches
    an uninterrupted one would."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    idx = torch.randint(len(latents), (cfg.batch_size,), generator=g)
    drop = torch.rand(cfg.batch_size, generator=g) < cfg.label_dropout
    return latents[idx], torch.where(drop, COLOR_MOTION_CLASSES, labels[idx])


def _write_samples(out: Path, videos: torch.Tensor, cfg: DemoConfig) -> None:
    row = torch.cat(list(videos[:8]), dim=-1)  # up to 8 samples side by side: (3, T, H, n*W)
    write_video(out / "samples.mp4", row, fps=cfg.fps)
    scale = max(1, 128 // videos.shape[-1])  # frames at least 128 px: readable
    save_frame_grid(out / "frames.png", videos, scale=scale)


def run_demo(cfg: DemoConfig, out_dir: str | Path = "outputs/demo", device: str | None = None, resume: bool = False,
             progress: bool = True, pretrained_model: bool = False) -> dict:
    """Train (or, with ``pretrained_model``, load the zoo's ``latent-unet``), sample, write ``run.json``, ``checkpoints/``,
    ``model/`` (EMA weights, ``minivid.save_model``), ``samples.mp4``, ``frames.png`` and ``metrics.json`` under
    ``out_dir``; return the metrics (``sprite_check``: the share of samples that pass)."""
    cfg.validate()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out_dir)
    if pretrained_model:
        if resume:
            raise OutDirError("--pretrained samples the zoo's model: there is nothing to resume")
        if out.exists() and not out.is_dir():
            raise OutDirError(f"out_dir {str(out)!r} exists and is not a folder; choose another --out")
        previous = None
    else:
        previous = _previous_run(out, cfg, resume)  # before any work: never overwrite a finished run
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    space = latent_space(cfg, device)
    t_start = time.monotonic()
    if pretrained_model:
        model = pretrained.load("latent-unet", device=device)
        card = pretrained.card("latent-unet")
        cfg.model = model.config
        info = {"model": "zoo: latent-unet", "steps": card["steps"], "train_seconds": card["train_seconds"],
                "command": card["command"]}
        space = LatentSpace(space.autoencoder, card["latent_scale"])
    else:
        data_t0 = time.monotonic()
        videos, labels = color_motion_pool(cfg.num_videos, cfg.size, cfg.num_frames, seed=cfg.seed)
        latents = space.encode(videos.to(device))
        del videos
        data_seconds = time.monotonic() - data_t0
        model = VideoUNet(cfg.model).to(device)
        trainer = DiffusionTrainer(model, latte_schedule(cfg.num_train_timesteps), prediction=cfg.prediction,
                                   lr=cfg.lr, warmup_steps=cfg.warmup_steps, grad_clip=cfg.grad_clip,
                                   ema_decay=cfg.ema_decay, total_steps=cfg.steps,
                                   timestep_sampling="explicit_uniform", seed=cfg.seed + 1)  # D9
        if previous is not None:
            trainer.load_checkpoint(previous)
        save_json(cfg.to_dict(), out / RUN_FILE)
        n_params = model.num_parameters()
        bar = tqdm(total=cfg.steps, initial=trainer.num_updates,
                   desc=f"demo ({device.type}, latent U-Net {n_params / 1e6:.1f}M params)", disable=not progress,
                   dynamic_ncols=True)
        train_t0 = time.monotonic()
        while trainer.num_updates < cfg.steps:
            x, y = _batch(latents, labels, cfg, trainer.num_updates)
            trainer.step(x, y=y.to(device))  # D3 + D10 + AdamW + EMA
            recent = trainer.losses[-20:]
            bar.update(1)
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
            if trainer.num_updates % cfg.checkpoint_every == 0:
                trainer.save_checkpoint(out / "checkpoints")
        bar.close()
        train_seconds = time.monotonic() - train_t0
        if latest_checkpoint(out / "checkpoints") is None or \
                int(latest_checkpoint(out / "checkpoints").name.split("-")[1]) != trainer.num_updates:
            trainer.save_checkpoint(out / "checkpoints")
        model = trainer.ema.eval()
        save_model(model, out / "model", metadata={"step": trainer.num_updates, "run": RUN_FILE})
        info = {"model": "trained here", "steps": trainer.num_updates, "train_seconds": round(train_seconds, 1),
                "data_seconds": round(data_seconds, 1),
                "loss_mean_first_50": sum(trainer.losses[:50]) / max(1, len(trainer.losses[:50])),
                "loss_mean_last_50": sum(trainer.losses[-50:]) / max(1, len(trainer.losses[-50:]))}
    t0 = time.monotonic()
    videos = sample(model, space, cfg, device, seed=cfg.seed).cpu()
    sample_seconds = time.monotonic() - t0
    _write_samples(out, videos, cfg)
    scores = sprite_scores(videos)
    metrics = {
        "device": device_name(device),
        **info,
        "sample_seconds": round(sample_seconds, 1),
        "total_seconds": round(time.monotonic() - t_start, 1),
        "parameters": model.num_parameters(),
        "autoencoder": cfg.autoencoder,
        "sprite_check": scores["sprite_check"],
        "sprite_check_failures": scores["failures"],
        "num_samples": len(videos),
        "sprite_check_real_clips": "1.00 (minivid.metrics.sprite_check on held-out one-sprite MiniSprites clips)",
        "color_accuracy": color_accuracy(videos, sample_labels(cfg)),
        "outputs": {k: str(out / k) for k in ("samples.mp4", "frames.png", "model", RUN_FILE, "checkpoints")
                    if (out / k).exists()},
    }
    save_json(metrics, out / "metrics.json")
    return metrics


def load_demo_model(out_dir: str | Path, device: str = "cpu") -> tuple[VideoUNet, DemoConfig]:
    """The demo's EMA model (``minivid.load_model(out_dir / "model")``) and its run config (``run.json``)."""
    out = Path(out_dir)
    model = load_model(out / "model", device=device)
    cfg = DemoConfig.from_dict(json.loads((out / RUN_FILE).read_text()))
    return model, cfg


__all__ = ["DemoConfig", "OutDirError", "run_demo", "sample", "sample_labels", "load_demo_model", "latent_space"]
