"""``python -m minivid demo``: the full system (notebook 08) trained from scratch on 2 CPU cores in under 10 minutes.

The demo is the ``cpu`` preset of :mod:`minivid.pipeline.run` on a shorter budget (:func:`demo_config`): one-sprite
MiniSprites clips (32 x 32, 8 frames, captioned, with each sprite's path) -> the zoo's per-frame VAE and motion VAE ->
the expert transformer and Tora's motion guidance, trained from scratch, with the zoo's T5 frozen (as CogVideoX
freezes its pretrained T5) and given frames (:class:`~minivid.pipeline.system.System`),
v-prediction on the zero-terminal-SNR schedule (D10) with explicit uniform timesteps (D9) -> EMA weights ->
DPM-Solver++ (D8) with nested classifier-free guidance (text 4, trajectory 2). It ends with what the system is for:

* ``showcase.mp4`` and ``showcase.png``: four captions with drawn paths (a line, a diagonal, a bounce, a circle),
  16 frames each (one clip, then continued from its last latent frames), the path drawn on every frame of the PNG;
* ``samples.png``: held-out clips generated from their captions and paths alone (the clips themselves are never
  shown to the model), the path drawn on every frame;
* ``metrics.json``: on those held-out clips, the sprite check (:func:`minivid.metrics.sprite_check`; the VAE's
  reconstructions of real clips pass 100%), whether the caption's colour and direction are seen (``caption_accuracy``),
  the trajectory error in pixels (T9) and, as its baseline, the error of the same captions sampled without a path;
  the showcase's errors; the times.

The output folder is a run folder of :func:`~minivid.pipeline.run.train_system` (``run.json``,
``checkpoints/step-XXXXXXXX/`` written atomically, ``log.csv``), so ``--resume`` continues a stopped demo bit for bit,
``python -m minivid sample --checkpoint outputs/demo`` samples it and a folder holding a run is never overwritten.
``--pretrained`` skips training and samples the zoo's ``system`` (the same preset, 6000 steps) in seconds.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from ..utils.checkpoint import save_json
from ..utils.machine import device_name
from ..utils.validation import check_device, check_int, check_number
from .run import SystemRunConfig, load_run, preset_config, previous_run, run_spaces, system_data, train_system

DEMO_STEPS = {"cpu": 700, "cuda": 6000}  # cuda: the budget of the zoo's system recipe (twice the cpu preset's 3000)
DEMO_SAMPLES = 16  # held-out clips scored after training
PRETRAINED_SAMPLES = 32  # --pretrained: sampling is all it does (the zoo's card scores 64)
SHOWCASE_FRAMES = 16
# (caption, path in the 32 x 32 clip's pixels): drawn by hand, not taken from the data
SHOWCASE = [
    ("a red circle moves right", [[3, 16], [29, 16]]),
    ("a yellow square moves down and to the right", [[5, 5], [27, 27]]),
    ("a magenta diamond bounces", [[4, 25], [16, 6], [28, 25]]),
    ("a cyan triangle circles clockwise",
     [[round(16 + 9 * math.cos(math.pi * (1 + k / 8)), 2), round(16 + 9 * math.sin(math.pi * (1 + k / 8)), 2)]
      for k in range(17)]),  # from the left, over the top (y points down): clockwise on screen
]


class OutDirError(ValueError):
    """``out_dir`` cannot be used as asked: it would overwrite a finished run, or there is nothing to resume.
    Raised by :func:`run_demo` before any work (the CLI reports it as a usage error)."""


# What makes the demo learn in 700 steps where the preset is trained for 3000 (measured on 16 held-out clips, caption
# + path, 700 steps, seed 0; bench/results/measurements.md): 70% of the clips without given frames (the preset: 40%),
# where the colour must come from the caption. The preset's frozen T5 (the zoo's t5; a T5 learnt from scratch gave the
# caption's colour in 19-31% of the samples) and learning rate 2e-3 were the demo's before they were the preset's.
DEMO_OVERRIDES = {"dropout.given_modes": [0.7, 0.1, 0.2]}


def demo_config(device: str | torch.device = "cpu", steps: int | None = None, seed: int = 0,
                overrides: dict | None = None) -> SystemRunConfig:
    """The ``cpu`` preset with the demo's budget and :data:`DEMO_OVERRIDES`: ``steps`` (default :data:`DEMO_STEPS`
    of the device type), a warm-up of a tenth of them (at most 200, the preset's), checkpoints every 100 steps, and
    ``overrides`` (dotted keys, as ``python -m minivid train --set``) last."""
    kind = torch.device(device).type
    steps = DEMO_STEPS.get(kind, DEMO_STEPS["cpu"]) if steps is None else check_int("steps", steps, 1)
    base = {"steps": steps, "warmup": min(200, steps // 10), "checkpoint_every": 100, "log_every": 10,
            "seed": check_int("seed", seed, 0), **DEMO_OVERRIDES}
    return preset_config("cpu", {**base, **(overrides or {})})


def _showcase_trajectories():
    from ..conditioning.trajectory import Trajectories

    return [Trajectories([path]) for _, path in SHOWCASE]


def _caption_color(caption: str) -> int:
    from ..data import COLOR_NAMES

    return COLOR_NAMES.index(caption.split()[1])


def _save_paths_png(path: Path, videos: torch.Tensor, paths: torch.Tensor, titles) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils.checkpoint import atomic_path
    from .tora import show_paths

    fig = show_paths(videos, paths, titles=titles, max_frames=videos.shape[2])
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _short(caption: str) -> str:
    """"a red circle moves right" -> "red circle" (a row title that fits beside a 32-pixel frame)."""
    return " ".join(caption.split()[1:3])


def _side_by_side(videos: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """Clips (N, 3, T, H, W) -> one clip (3, T, H*scale, N*W*scale), nearest-neighbour upscaled (an mp4 you can see)."""
    up = videos.repeat_interleave(scale, dim=-1).repeat_interleave(scale, dim=-2)
    return torch.cat(list(up), dim=-1)


def run_demo(out_dir: str | Path = "outputs/demo", device: str | None = None, steps: int | None = None,
             seed: int = 0, resume: bool = False, pretrained_model: bool = False, num_samples: int | None = None,
             guidance: float = 4.0, trajectory_guidance: float = 2.0, sample_steps: int = 20,
             overrides: dict | None = None, progress: bool = True, log=print, video: bool = True) -> dict:
    """Train the demo's system from scratch in ``out_dir`` (or, with ``resume``, continue it; with
    ``pretrained_model``, load the zoo's ``system``), then write the showcase, the held-out samples and
    ``metrics.json`` (see the module docstring); return the metrics. Every check runs before any work.
    ``video=False`` writes no ``showcase.mp4`` (the PNGs and metrics are the same): for a machine without mediapy
    and ffmpeg, such as the lent GPU machines (bench/gpu_session.sh)."""
    device = check_device("device", device or ("cuda" if torch.cuda.is_available() else "cpu"))
    default = PRETRAINED_SAMPLES if pretrained_model else DEMO_SAMPLES
    n = default if num_samples is None else check_int("num_samples", num_samples, 1)
    check_number("guidance", guidance, 0.0)
    check_number("trajectory_guidance", trajectory_guidance, 0.0)
    check_int("sample_steps", sample_steps, 1)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutDirError(f"out_dir {str(out)!r} exists and is not a folder; choose another --out")
    if pretrained_model:
        if resume:
            raise OutDirError("--pretrained samples the zoo's model: there is nothing to resume")
        if steps is not None or overrides:
            raise OutDirError("--pretrained samples the zoo's model as trained: --steps and --set do not apply")
        cfg = None
    else:
        cfg = demo_config(device, steps, seed, overrides)
        try:
            ckpt = previous_run(out, cfg, resume)  # never overwrite a finished run; nothing to resume; another config
        except ValueError as e:
            raise OutDirError(str(e)) from None
        finished = ckpt is not None and int(ckpt.name.split("-")[1]) >= cfg.steps  # --resume of a finished run
    torch.manual_seed(seed)
    t_start = time.monotonic()
    if pretrained_model:
        from .. import pretrained

        model, cfg, _ = load_run("system", device=device)
        card = pretrained.card("system")
        space, motion_space = run_spaces(cfg, device)
        info = {"model": "zoo: system", "steps": card["steps"], "train_seconds": card["train_seconds"],
                "command": card["command"]}
    elif finished:  # nothing to train: sample it again
        model, cfg, _ = load_run(out, device=device)
        space, motion_space = run_spaces(cfg, device)
        info = {"model": f"trained here (resumed at {ckpt.name}: nothing left to train)",
                "steps": int(ckpt.name.split("-")[1])}
    else:
        space, motion_space = run_spaces(cfg, device)
        t0 = time.monotonic()
        log(f"demo: encoding {cfg.num_clips} clips and their paths with the zoo's VAEs (about a minute on 2 cores), "
            f"then {cfg.steps} training steps")
        # the clips are encoded by the VAEs on the device and kept on the CPU, as `python -m minivid train` does;
        # each batch moves
        data = system_data(space, motion_space, cfg.num_clips, cfg.size, cfg.frames, seed=cfg.seed)
        data_seconds = time.monotonic() - t0
        t0 = time.monotonic()
        trainer = train_system(cfg, out, data, resume=resume, progress=progress, log=log, device=device)
        del data
        model = trainer.ema.eval()
        losses = trainer.losses
        info = {"model": "trained here", "steps": trainer.num_updates, "data_seconds": round(data_seconds, 1),
                "train_seconds": round(time.monotonic() - t0, 1),
                "loss_mean_first_50": sum(losses[:50]) / max(1, len(losses[:50])),
                "loss_mean_last_50": sum(losses[-50:]) / max(1, len(losses[-50:]))}
    out.mkdir(parents=True, exist_ok=True)
    scales = {"frames": 1.0, "text": guidance, "trajectory": trajectory_guidance}
    t0 = time.monotonic()
    log(f"demo: sampling {n} held-out clips from their captions and paths, and {len(SHOWCASE)} drawn paths")
    held_out = _held_out(model, cfg, space, motion_space, n, scales, sample_steps, seed, out)
    showcase = _showcase(model, cfg, space, motion_space, scales, sample_steps, seed, out, video)
    metrics = {
        "device": device_name(device),
        **info,
        "parameters": model.num_parameters(),
        "sample_seconds": round(time.monotonic() - t0, 1),
        "total_seconds": round(time.monotonic() - t_start, 1),
        "guidance": scales,
        "sampler": f"DPM-Solver++(2M), {sample_steps} steps",
        "num_samples": n,
        # issue 14's keys: the share of held-out caption + path samples that pass the sprite check
        "sprite_check": held_out["text+trajectory"]["sprite_check"],
        "sprite_check_real_clips": held_out["real clips (autoencoder)"]["sprite_check"],
        "held_out": held_out,
        "showcase": showcase,
        "outputs": {k: str(out / k) for k in ("showcase.mp4", "showcase.png", "samples.png", "run.json",
                                               "checkpoints") if (out / k).exists()},
    }
    save_json(metrics, out / "metrics.json")
    return metrics


def _held_out(model, cfg, space, motion_space, n, scales, steps, seed, out) -> dict:
    """Held-out clips sampled from their captions and paths (and from the captions alone: the baseline of the
    trajectory error), scored by :func:`~minivid.pipeline.run.system_metrics`; ``samples.png`` shows the first 8
    with their paths."""
    from .run import system_metrics

    test = system_data(space, motion_space, n, cfg.size, cfg.frames, split="test", seed=seed)
    result, videos = system_metrics(model, cfg, space, motion_space, n, steps=steps, guidance=scales, seed=seed,
                                    data=test, modes=["text+trajectory", "text"], return_videos=True)
    paths = torch.stack([p[0] for p in test.paths])
    _save_paths_png(out / "samples.png", videos["text+trajectory"][:8], paths[:8],
                    [_short(c) for c in test.captions[:8]])
    result.pop("sampler")  # the demo's metrics name the sampler once
    result["captions"] = test.captions[:8]
    return result


def _showcase(model, cfg, space, motion_space, scales, steps, seed, out, video: bool = True) -> list:
    """The hand-drawn captions and paths of :data:`SHOWCASE`, :data:`SHOWCASE_FRAMES` frames each (``showcase.mp4``
    when ``video``, ``showcase.png`` always)."""
    from ..metrics.sprites import sprite_scores
    from ..metrics.trajectory import path_errors
    from ..utils.video import write_video
    from .run import generate

    videos, wanted, rows = [], [], []
    for (caption, _), traj in zip(SHOWCASE, _showcase_trajectories()):
        v = generate(model, cfg, space, motion_space, prompt=caption, trajectory=traj, frames=SHOWCASE_FRAMES,
                     seed=seed, guidance=scales, steps=steps).cpu()
        p = traj.per_frame(SHOWCASE_FRAMES, cfg.size, cfg.size)[0]
        err = path_errors(v[None], p[None], torch.tensor([_caption_color(caption)]), from_frame=0)
        rows.append({"prompt": caption, "trajectory": SHOWCASE[len(rows)][1], "frames": SHOWCASE_FRAMES,
                     "sprite_check": sprite_scores(v[None])["sprite_check"],
                     **{k: round(x, 3) for k, x in err.items()}})
        videos.append(v)
        wanted.append(p)
    videos = torch.stack(videos)
    if video:
        write_video(out / "showcase.mp4", _side_by_side(videos), fps=8)
    _save_paths_png(out / "showcase.png", videos, torch.stack(wanted), [_short(c) for c, _ in SHOWCASE])
    return rows


__all__ = ["DEMO_OVERRIDES", "DEMO_SAMPLES", "DEMO_STEPS", "PRETRAINED_SAMPLES", "SHOWCASE", "OutDirError", "demo_config", "run_demo"]
