"""Training the full system (:mod:`minivid.pipeline.system`) as a run in a folder, with presets, exact resume and
data parallelism.

A run folder holds ``run.json`` (the :class:`SystemRunConfig`), ``checkpoints/step-XXXXXXXX/`` (the model and its EMA
in ``minivid.save_model``'s format and ``train_state.pt``: optimiser, step, history, every random generator and the
data order; written through a staging folder, so a crash or a full disk while saving keeps the previous checkpoint,
and read with ``torch.load(weights_only=True)``), and ``log.csv`` (step, loss, learning rate, seconds). A resumed run
continues bit for bit: the learning rate is a function of the step, the timesteps and noise come from the trainer's
generator, the condition coins from their own, and the clips from :class:`~minivid.utils.distributed.GlobalBatches`,
all restored from the checkpoint.

Under ``torchrun`` every rank trains on its slice of the global batch (the coins and the diffusion draws are made for
the global batch and sliced, see :mod:`minivid.utils.distributed`); rank 0 alone writes the log and checkpoints. A
checkpoint resumes on another number of ranks as long as the global batch is the same.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..diffusion import DiffusionTrainer
from ..utils.checkpoint import save_json
from ..utils.config import Config
from ..utils.distributed import DistInfo, GlobalBatches, current
from ..utils.validation import check_choice, check_device, check_int, check_number
from .system import (ConditionDropout, System, SystemConfig, condition_batch, motion_on_latent_grid, sample_system,
                     system_schedule, training_kwargs)

RUN_FILE = "run.json"
LOG_FILE = "log.csv"


@dataclass
class SystemRunConfig(Config):
    """One training run of the full system. ``latent`` / ``motion_latent``: zoo autoencoders (names in
    ``minivid.pretrained.available()``) giving the video latents and the trajectories' motion latents; clips of
    ``size`` px and ``frames`` frames, ``num_clips`` of them (one sprite each, captioned, with its path)."""

    model: SystemConfig = field(default_factory=SystemConfig)
    dropout: ConditionDropout = field(default_factory=ConditionDropout)
    latent: str = "vae2d"
    motion_latent: str = "motion-vae"
    size: int = 32
    frames: int = 8
    num_clips: int = 4096
    steps: int = 3000
    global_batch: int = 32
    lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    keep: int = 2
    autocast: str = "none"  # "bf16": torch.autocast on CUDA (GPU presets)
    compile: bool = False  # torch.compile the transformer in place (nn.Module.compile: the weights keep their names)
    gradient_checkpointing: bool = False  # recompute the transformer's blocks in the backward pass
    # the text encoder's starting weights: a zoo entry or run folder of the full system (its T5 must have the same
    # shape), as CogVideoX starts from a pretrained T5 (with model.text.trainable=false, frozen as there); None: random
    text_from: str | None = None

    def __post_init__(self):
        if isinstance(self.dropout, dict):
            self.dropout = ConditionDropout(**self.dropout)
        if not isinstance(self.model, SystemConfig):
            raise ValueError(f"model={self.model!r} must be a SystemConfig")
        for k in ("size", "frames", "num_clips", "steps", "global_batch", "checkpoint_every", "log_every", "keep"):
            check_int(k, getattr(self, k), 1)
        check_int("warmup", self.warmup, 0)
        check_int("seed", self.seed, 0)
        check_number("lr", self.lr, 0.0, strict_minimum=True)
        check_number("ema_decay", self.ema_decay, 0.0, 1.0)
        check_number("grad_clip", self.grad_clip, 0.0, strict_minimum=True)
        check_choice("autocast", self.autocast, ("none", "bf16"))
        for k in ("compile", "gradient_checkpointing"):
            if not isinstance(getattr(self, k), bool):
                raise ValueError(f"{k}={getattr(self, k)!r} must be true or false")
        if self.text_from is not None and (not isinstance(self.text_from, str) or not self.text_from):
            raise ValueError(f"text_from={self.text_from!r} must be a zoo name or a run folder (or null)")


# Options that only say how long a run goes on, how often it reports, or how it computes the same numbers: a resumed
# run may change them.
BUDGET_KEYS = {"steps", "checkpoint_every", "log_every", "keep", "compile", "gradient_checkpointing"}


class SystemTrainer(DiffusionTrainer):
    """:class:`~minivid.diffusion.DiffusionTrainer` for the full system, whose saved state also holds the condition
    coins' generator and the data order (``extra_state``), so a checkpoint restores every random stream."""

    supports_data_parallel = True

    def __init__(self, model: System, cfg: SystemRunConfig, info: DistInfo | None = None):
        super().__init__(model, system_schedule(), prediction="v", lr=cfg.lr, warmup_steps=cfg.warmup,
                         grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay, seed=cfg.seed, total_steps=cfg.steps)
        self.cfg = cfg
        self.coins = torch.Generator().manual_seed(cfg.seed + 1)
        self.order = GlobalBatches(cfg.num_clips, cfg.global_batch, seed=cfg.seed + 2, info=info or current())

    def extra_state(self) -> dict:
        return {"coins": self.coins.get_state(), "order": self.order.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.coins.set_state(state["coins"])
        self.order.load_state_dict(state["order"])


@dataclass
class SystemData:
    """The training clips as the model sees them: ``latents`` (n, C, T', h, w) (the video VAE's, scaled), their
    ``captions``, the ``motion`` latents (n, C_m f_t, T', h, w) of each sprite's path (the motion VAE's, scaled, on the
    video latent's grid: :func:`~minivid.pipeline.system.motion_on_latent_grid`), the ``null_motion`` latent
    (1, C_m f_t, T', h, w) of no trajectory (both None for a model without trajectory guidance), the sprites' centre
    ``paths`` (n, 1, T, 2) in the clips' pixels, palette ``colors`` (n,) and the frame each clip is given as an image,
    ``images`` (n, 3, H, W) in [-1, 1]: its first frame, or on the Reducio VAE its content frame V_{(T-1)//2} (R2),
    which the decoder also takes (:func:`decode_latents`)."""

    latents: torch.Tensor
    captions: list
    motion: torch.Tensor
    null_motion: torch.Tensor
    paths: list
    colors: torch.Tensor | None = None
    images: torch.Tensor | None = None


def system_data(space, motion_space, n: int, size: int = 32, frames: int = 8, split: str = "train",
                seed: int = 0) -> SystemData:
    """``n`` one-sprite MiniSprites clips encoded for the system (:func:`~minivid.pipeline.tora.tora_data` for the
    latents and paths, the same clips' captions). The flow videos are drawn at the size that puts the motion latents
    on the video latent's spatial grid and regrouped to its time grid (:func:`system_geometry`); ``motion_space=None``
    (a model without trajectory guidance): no motion latents. On the Reducio VAE the clips' ``images`` are their
    content frames (:func:`content_frame`), else their first frames. The VAEs encode on their own device (a GPU's
    when ``run_spaces(cfg, "cuda")`` made them: 128 of the `gpu` preset's clips took 6 s on 2 CPU cores, its 16384
    would take about 13 minutes); the data comes back on the CPU, from where each training batch moves."""
    from ..data import MiniSprites
    from .tora import tora_data

    f_t, msize = _motion_grid(space, motion_space, size) if motion_space is not None else (1, None)
    c = content_frame(space, frames)
    d = tora_data(space, motion_space, n, split=split, seed=seed, num_sprites=1, size=size, frames=frames,
                  dense=False, motion_size=msize, image_frame=0 if c is None else c)
    clips = MiniSprites(num_videos=n, size=size, num_frames=frames, split=split, seed=seed, num_sprites=1)
    captions = [clips.scene(i).caption for i in range(n)]  # the scene alone: no second rendering
    first = None if d.first is None else d.first.cpu()
    if motion_space is None:  # a model without trajectory guidance: no motion latents
        return SystemData(d.video.cpu(), captions, None, None, d.paths, d.colors[:, 0], first)
    return SystemData(d.video.cpu(), captions, motion_on_latent_grid(d.sparse, f_t).cpu(),
                      motion_on_latent_grid(d.null, f_t).cpu(), d.paths, d.colors[:, 0], first)


def _motion_grid(space, motion_space, size: int) -> tuple[int, int]:
    """(the video VAE's f_t, the side of the flow videos whose motion latents have the video latent's h x w)."""
    f_s, m_s = space.autoencoder.downsample[1], motion_space.autoencoder.downsample[1]
    return space.autoencoder.downsample[0], size * m_s // f_s


def content_frame(space, frames: int) -> int | None:
    """The index of the frame the video VAE of ``space`` decodes with, for clips of ``frames`` frames: Reducio's
    content frame V_{(T-1)//2} (R2, a VAE built with ``use_content``), or None for a VAE that decodes from its latent
    alone."""
    return space.autoencoder.content_index(frames) if _decodes_with_content(space) else None


def _decodes_with_content(space) -> bool:
    """Whether the video VAE of ``space`` takes a content frame besides its latent (Reducio with ``use_content``)."""
    ae = space.autoencoder
    return bool(getattr(getattr(ae, "config", None), "use_content", False)) and hasattr(ae, "content_index")


def decode_latents(space, z: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
    """Videos (N, 3, T, H, W) in [-1, 1] of scaled latents ``z`` (N, C, T', h, w); on the Reducio VAE decoded with
    ``images`` (N, 3, H, W), the clips' content frames (R2: required there, refused elsewhere)."""
    if not _decodes_with_content(space):
        if images is not None:
            raise ValueError("this video VAE decodes from its latents alone: pass no images")
        return space.decode(z)
    if images is None:
        raise ValueError("the Reducio VAE decodes with each clip's content frame (R2): pass images (N, 3, H, W)")
    return space.decode(z, content=images.float())


@dataclass(frozen=True)
class SystemGeometry:
    """How a run's clips meet its autoencoders: the video ``latent_shape`` (C, T', h, w) of one clip, the video VAE's
    ``temporal_factor`` f_t (1: per-frame latents; 4: the causal VAEs, C1), the side ``motion_size`` of the flow videos
    drawn for the motion VAE (size * f_s(motion) / f_s(video), so both latents have one h x w) and the
    ``motion_channels`` the trajectory extractor takes (C_m f_t after
    :func:`~minivid.pipeline.system.motion_on_latent_grid`); the last two None without a trajectory condition."""

    latent_shape: tuple[int, int, int, int]
    temporal_factor: int
    motion_size: int | None = None
    motion_channels: int | None = None


def system_geometry(cfg: SystemRunConfig, space, motion_space=None) -> SystemGeometry:
    """The :class:`SystemGeometry` of run ``cfg`` on latent spaces ``space`` (video) and ``motion_space`` (the
    trajectories'; None or a model without ``motion``: no trajectory condition). A ValueError naming the key, before
    any work, when ``size`` is no multiple of the VAE's f_s, ``frames`` is not reachable by its frame rule (the causal
    VAEs take 1 + 4k frames, the released CogVideoX VAE 8N + 1) or leaves fewer than 2 latent frames, the transformer's
    channels are not the latent's, or the motion VAE compresses time or gives the extractor other channels."""
    ae = space.autoencoder
    f_t, f_s = ae.downsample[0], ae.downsample[1]
    if cfg.size % f_s:
        raise ValueError(f"size={cfg.size} must be a multiple of the spatial factor f_s={f_s} of latent={cfg.latent!r}")
    try:
        _, c, t, h, w = ae.latent_shape((1, 3, cfg.frames, cfg.size, cfg.size))
    except ValueError as e:
        raise ValueError(f"frames={cfg.frames} is not reachable by the frame rule of latent={cfg.latent!r}: {e}") \
            from None
    if t < 2:
        raise ValueError(f"frames={cfg.frames} gives {t} latent frame with latent={cfg.latent!r}; the system needs at "
                         "least 2 (one given, one generated)")
    tr = cfg.model.transformer
    if tr.out_channels != c:
        raise ValueError(f"model.transformer.out_channels={tr.out_channels} must be the {c} latent channels of "
                         f"latent={cfg.latent!r} (and in_channels={c + 1}, with the given-frames channel)")
    if cfg.model.image_grid_channels and cfg.model.image_grid_patch != f_s:
        raise ValueError(f"model.image_grid_patch={cfg.model.image_grid_patch} must be the spatial factor f_s={f_s} "
                         f"of latent={cfg.latent!r}: one image square per latent cell")
    if h % tr.patch_size or w % tr.patch_size:
        raise ValueError(f"model.transformer.patch_size={tr.patch_size} must divide the latent's {h} x {w} grid "
                         f"(latent={cfg.latent!r} at size={cfg.size})")
    if content_frame(space, cfg.frames) is not None:
        _check_content_run(cfg, (h, w))
    if cfg.model.motion is None or motion_space is None:
        return SystemGeometry((c, t, h, w), f_t)
    m = motion_space.autoencoder
    if m.downsample[0] != 1:
        raise ValueError(f"motion_latent={cfg.motion_latent!r} compresses time by {m.downsample[0]}; the system takes a "
                         "per-frame motion VAE (f_t = 1) and regroups its latents to the video latent's frames")
    _, msize = _motion_grid(space, motion_space, cfg.size)
    c_m = m.latent_channels * f_t
    if cfg.model.motion.motion_channels != c_m:
        raise ValueError(f"model.motion.motion_channels={cfg.model.motion.motion_channels} must be {c_m}: the "
                         f"{m.latent_channels} latent channels of motion_latent={cfg.motion_latent!r} x the f_t={f_t} "
                         f"frames of each latent frame of latent={cfg.latent!r}")
    return SystemGeometry((c, t, h, w), f_t, msize, c_m)


def _check_content_run(cfg: SystemRunConfig, grid: tuple[int, int]) -> None:
    """A run on a VAE that decodes with the clip's content frame (Reducio, R2): that frame is the image the model is
    conditioned on (R4), so the model must read an image (``model.image`` or ``model.image_grid_channels``), the
    image is a coin of its own (``dropout.image_dropout``) and no latent frame is given (a Reducio latent frame holds
    f_t frames around no single one); trajectories do not fit its latent grid."""
    name = f"latent={cfg.latent!r}"
    if not cfg.model.takes_image:
        raise ValueError(f"model.image=None and model.image_grid_channels=0: with {name} the model must read an "
                         "image (semantic tokens, model.image, or the image on the latent grid, "
                         "model.image_grid_channels), since its decoder takes each clip's content frame (R2), the "
                         "image the model is conditioned on (R4)")
    if cfg.model.motion is not None:
        raise ValueError(f"model.motion must be null with {name}: its latent grid is {grid[0]} x {grid[1]}, too "
                         "coarse for trajectory guidance (a flow video drawn at a few pixels); trajectories are not a "
                         "condition on this VAE")
    if cfg.dropout.image_dropout is None:
        raise ValueError(f"dropout.image_dropout=None: with {name} the image (the content frame) is a condition of "
                         "its own; set the probability of dropping it (e.g. 0.1) for image guidance")
    if tuple(cfg.dropout.given_modes) != (1.0, 0.0, 0.0):
        raise ValueError(f"dropout.given_modes={list(cfg.dropout.given_modes)} must be [1, 0, 0] with {name}: its "
                         "latent frames each hold several frames around no single one, so none is given; the clip "
                         "is conditioned on its content frame instead")


def _check_data(data: SystemData, cfg: SystemRunConfig, model: System) -> None:
    n = len(data.latents)
    n_motion = n if data.motion is None else len(data.motion)
    if n != cfg.num_clips or len(data.captions) != n or n_motion != n:
        raise ValueError(f"data holds {n} latents, {len(data.captions)} captions and {n_motion} motion latents;"
                         f" the run needs num_clips={cfg.num_clips} of each")
    if model.motion is not None and data.motion is None:
        raise ValueError("the model has trajectory guidance (model.motion): the data needs motion latents "
                         "(system_data with the run's motion space makes them)")
    c, frames = model.config.latent_channels, data.latents.shape[2]
    if data.latents.shape[1] != c:
        raise ValueError(f"the latents have {data.latents.shape[1]} channels; model.transformer.out_channels={c}")
    if model.motion is not None and (data.motion.shape[1] != model.config.motion.motion_channels
                                     or data.motion.shape[2:] != data.latents.shape[2:]):
        raise ValueError(f"the motion latents are {tuple(data.motion.shape[1:])}; the model takes "
                         f"model.motion.motion_channels={model.config.motion.motion_channels} channels on the video "
                         f"latents' grid {tuple(data.latents.shape[2:])}")
    if model.takes_image and (data.images is None or len(data.images) != n):
        raise ValueError("the model reads images (model.image or model.image_grid_channels): the data needs the "
                         "clips' images (system_data makes them)")
    if frames <= cfg.dropout.previous_frames:
        raise ValueError(f"clips of {frames} latent frames leave nothing to generate after "
                         f"dropout.previous_frames={cfg.dropout.previous_frames} given frames")


def previous_run(out: Path, cfg: SystemRunConfig, resume: bool) -> Path | None:
    """The checkpoint to continue from (``resume``), or None for a new run. A ValueError, before any work, when a new
    run would overwrite a folder holding a checkpoint, when there is nothing to resume, when the folder's run was
    made with another config (budget options excepted: :data:`BUDGET_KEYS`), or when ``text_from`` names nothing."""
    from .. import pretrained
    from ..diffusion.training import resume_point

    src = cfg.text_from
    if src is not None and src not in pretrained.available() and not (Path(src) / RUN_FILE).is_file():
        raise ValueError(f"text_from={src!r} is neither a zoo entry ({', '.join(pretrained.available())}) nor a run "
                         f"folder (no {RUN_FILE} in it)")
    return resume_point(out, cfg.to_dict(), resume, BUDGET_KEYS, RUN_FILE,
                        normalize=lambda d: SystemRunConfig.from_dict(d).to_dict())  # fields added later: defaults


def train_system(cfg: SystemRunConfig, out: str | Path, data: SystemData, resume: bool = False,
                 stop_after: int | None = None, progress: bool = True,
                 log: Callable[[str], None] = print, device: str | torch.device = "cpu") -> SystemTrainer:
    """Train (or, with ``resume``, continue) the run in folder ``out`` on ``data`` (:func:`system_data`, made with the
    run's latents) up to ``cfg.steps`` steps, or until ``stop_after`` more steps (an interrupted run, for tests).
    Checkpoints every ``checkpoint_every`` steps and at the end. Returns the trainer (its ``ema`` samples)."""
    from tqdm import tqdm

    info = current()
    out = Path(out)
    ckpt = previous_run(out, cfg, resume)  # before any work
    torch.manual_seed(cfg.seed)
    model = System(cfg.model).to(device)
    _check_data(data, cfg, model)
    model.transformer.gradient_checkpointing = cfg.gradient_checkpointing
    if cfg.text_from is not None and ckpt is None:  # a resumed run's checkpoint holds the text encoder already
        load_text_encoder(model, cfg.text_from)
    if cfg.compile:
        model.transformer.compile()
    part = info.shard(cfg.global_batch)
    trainer = SystemTrainer(model, cfg, info)
    log_path = out / LOG_FILE
    if ckpt is not None:
        trainer.load_checkpoint(ckpt)
        log(f"resumed from {ckpt} (step {trainer.num_updates})")
        if info.is_main:
            _truncate_log(log_path, trainer.num_updates)  # rows logged after the checkpoint are made again
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_json(cfg.to_dict(), out / RUN_FILE)
    null_ids, null_mask = model.tokenize([""] * (part.stop - part.start))
    ids_all, mask_all = model.tokenize(list(data.captions))
    frames = data.latents.shape[2]
    end = cfg.steps if stop_after is None else min(cfg.steps, trainer.num_updates + check_int("stop_after", stop_after, 1))
    bar = tqdm(total=end, initial=trainer.num_updates, desc="system", disable=not (progress and info.is_main),
               dynamic_ncols=True, mininterval=5.0)
    t0 = time.perf_counter()
    while trainer.num_updates < end:
        idx = trainer.order.next()
        coins = condition_batch(cfg.dropout, cfg.global_batch, frames, trainer.coins, part)
        images = data.images[idx].float() if model.takes_image else None
        kw = training_kwargs(model, coins, ids_all[idx], mask_all[idx], null_ids, null_mask, *_motion(data, idx),
                             images=images)
        kw = {k: v.to(device) for k, v in kw.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.autocast == "bf16" and torch.device(
                device).type == "cuda"):
            logs = trainer.step(data.latents[idx].float().to(device), **kw)
        bar.update(1)
        step = trainer.num_updates
        if info.is_main and (step % cfg.log_every == 0 or step == end):
            _append_log(log_path, {"step": step, "loss": logs["loss"], "lr": logs["lr"],
                                   "seconds": round(time.perf_counter() - t0, 3)})
        if step % cfg.checkpoint_every == 0 or step == end:
            trainer.save_checkpoint(out / "checkpoints", keep=cfg.keep)
    bar.close()
    return trainer


def _motion(data: SystemData, idx) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(the motion latents of clips ``idx``, the null motion latent) in float32, or (None, None) without them."""
    if data.motion is None:
        return None, None
    return data.motion[idx].float(), data.null_motion.float()


def training_memory(cfg: SystemRunConfig, data: SystemData, per_process_batch: int) -> dict:
    """What one process needs to train ``cfg``, in bytes: ``weights``: the parameters and their EMA, and the
    gradients and AdamW's two moments of the trained ones (a frozen T5 has none): float32; ``activations_per_clip``: the tensors autograd saves in one training step of
    one clip of ``data`` (:func:`~minivid.utils.memory.saved_tensor_bytes`), measured in float32 on the CPU with the
    run's gradient checkpointing (under bf16 autocast on CUDA the matrix products save bf16 inputs: less); ``activations``: that
    times ``per_process_batch``; ``total`` the sum. The step's largest temporary comes on top."""
    from ..diffusion import explicit_uniform_timesteps, training_losses
    from ..utils.memory import saved_tensor_bytes

    per_process_batch = check_int("per_process_batch", per_process_batch, 1)
    state = torch.random.get_rng_state()
    torch.manual_seed(cfg.seed)
    model = System(cfg.model).train()
    model.transformer.gradient_checkpointing = cfg.gradient_checkpointing
    every = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    weights = 4 * (2 * every + 3 * trained)  # weights and EMA of all; gradient and two moments of the trained ones
    frames = data.latents.shape[2]
    g = torch.Generator().manual_seed(cfg.seed)
    coins = condition_batch(cfg.dropout, 1, frames, g)
    null_ids, null_mask = model.tokenize([""])
    ids, mask = model.tokenize(list(data.captions[:1]))
    images = data.images[:1].float() if model.takes_image else None
    kw = training_kwargs(model, coins, ids, mask, null_ids, null_mask, *_motion(data, slice(0, 1)), images=images)
    x0 = data.latents[:1].float()
    t = explicit_uniform_timesteps(1, system_schedule().num_steps, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    per_clip, _ = saved_tensor_bytes(lambda: training_losses(model, system_schedule(), x0, t, noise, prediction="v",
                                                             **kw)["loss"].mean(), exclude=model.parameters())
    torch.random.set_rng_state(state)
    activations = per_clip * per_process_batch
    return {"weights": weights, "activations_per_clip": per_clip, "activations": activations,
            "total": weights + activations}


def load_text_encoder(model, source: str | Path) -> None:
    """Copy the text encoder's weights of ``source`` (the zoo's ``t5``, or a zoo entry or run folder of the full
    system, :func:`load_run`) into ``model`` (a :class:`System` or anything with a ``.text`` encoder, such as
    :class:`~minivid.pipeline.text2video.TextToVideo`); a ValueError when its T5 has another shape or tokenizer
    length (:func:`~minivid.conditioning.text.copy_text_encoder`)."""
    from .. import pretrained
    from ..conditioning.text import copy_text_encoder

    if (isinstance(source, str) and source in pretrained.available() and not Path(source).exists()
            and pretrained.card(source).get("model_class") == "TextEncoder"):
        text = pretrained.load(source)
    else:
        text = load_run(source)[0].text
    copy_text_encoder(model.text, text, f"text_from={str(source)!r}")


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log's rows up to ``step`` (atomically)."""
    from ..utils.files import atomic_path

    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for r in rows if int(r["step"]) <= step)


def read_log(path: str | Path) -> list[dict]:
    """The rows of a run's ``log.csv`` with numbers parsed."""
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]


def _append_log(path: Path, row: dict) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


__all__ = ["SystemRunConfig", "SystemTrainer", "SystemData", "system_data", "SystemGeometry", "system_geometry",
           "train_system", "previous_run", "read_log"]


# ---------------------------------------------------------------------------------------------- presets
def _frozen_t5(model: SystemConfig) -> SystemConfig:
    """``model`` with a frozen T5 (CogVideoX keeps its pretrained T5 frozen; here the zoo's ``t5``, which the preset's
    ``text_from`` loads) and RoPE theta 10 (at head_dim 16, theta 1e4 turns time's two rotation pairs by 1 and 0.01
    rad per frame, so frames 6 apart look alike; bench/results/measurements.md)."""
    import dataclasses

    return dataclasses.replace(model, text=dataclasses.replace(model.text, trainable=False),
                               transformer=dataclasses.replace(model.transformer, rope_theta=10.0))


def _cpu_model() -> SystemConfig:
    """The cpu preset's model: the default one with the zoo's T5 frozen and RoPE theta 10 (:func:`_frozen_t5`)."""
    return _frozen_t5(SystemConfig())


def _gpu_model() -> SystemConfig:
    """The gpu preset's model: every condition, the first frame's OpenCLIP tokens included (R4's e_s: a small random
    ViT, 4 layers of width 256, 16 tokens at 64 px; a local open_clip checkpoint through ``model.image``), and the
    zoo's ``t5`` frozen, as in the cpu presets (a T5 learnt alongside showed the caption's colour in 48% of the cpu
    preset's samples, the frozen one 94%; bench/results/measurements.md). RoPE keeps CogVideoX's theta 1e4: at
    head_dim 48 time has six rotation pairs, and frames 6 apart differ by 1.3 rad in the second. Attention runs
    minivid's Triton kernel on CUDA and SDPA elsewhere (``attention_backend="auto"``; ``--set
    model.transformer.attention_backend=sdpa`` opts out)."""
    import dataclasses

    from ..conditioning.image import SemanticImageEncoderConfig
    from ..conditioning.motion import MotionGuidanceConfig
    from ..transformers import ExpertTransformerConfig

    t5 = dataclasses.replace(SystemConfig().text, trainable=False)  # the zoo's t5: the text encoder's defaults
    return SystemConfig(
        image=SemanticImageEncoderConfig(image_size=64, patch_size=16, width=256, layers=4, heads=8, embed_dim=256),
        text=t5,
        transformer=ExpertTransformerConfig(in_channels=5, out_channels=4, patch_size=2, patch_size_t=1, heads=8,
                                            head_dim=48, depth=12, time_embed_dim=384, text_dim=t5.d_model,
                                            max_text_len=72, positional="rope", rope_grid="slice",
                                            base_size=(16, 16), attention_backend="auto"),
        motion=MotionGuidanceConfig(motion_channels=4, dim=384, depth=12, patch_size=2, motion_dim=128,
                                    fuser="adanorm"))


def _causal_model() -> SystemConfig:
    """The cpu-causal preset's model: the cpu preset's on the causal VAE's latents (16, 3, 8, 8) of 64 px x 9 frames
    (17 input channels with the given-frames channel; patch 2, CogVideoX's, gives 48 video tokens) and motion latents
    of 4 channels x 4 frames per latent frame."""
    from ..conditioning.motion import MotionGuidanceConfig
    from ..transformers import ExpertTransformerConfig

    return SystemConfig(
        transformer=ExpertTransformerConfig(in_channels=17, out_channels=16, patch_size=2, patch_size_t=1, heads=6,
                                            head_dim=16, depth=4, time_embed_dim=128, text_dim=64, max_text_len=72,
                                            positional="rope", rope_grid="slice", base_size=(8, 8)),
        motion=MotionGuidanceConfig(motion_channels=16, dim=96, depth=4, patch_size=2, motion_dim=32,
                                    fuser="adanorm"))


def _reducio_model() -> SystemConfig:
    """The cpu-reducio preset's model: the cpu preset's widths on the Reducio VAE's latents (16, 2, 2, 2) of 64 px x 8
    frames (patch 1: 8 video tokens), the content frame both as OpenCLIP tokens after the caption's (R4's e_s: a
    random ViT of width 64, 16 tokens at 64 px) and on the latent grid (R4's e_c: 16 channels per 32 px square; 33
    input channels with the latent's 16 and the given-frames channel, always 0 here), no trajectory guidance (a 2 x 2
    grid). Without the grid channels the model ignored the image: its samples scored the same with the clips' content
    frames shuffled (bench/results/measurements.md)."""
    from ..conditioning.image import SemanticImageEncoderConfig
    from ..transformers import ExpertTransformerConfig

    return SystemConfig(
        image=SemanticImageEncoderConfig(image_size=64, patch_size=16, width=64, layers=2, heads=4, embed_dim=64),
        image_grid_channels=16, image_grid_patch=32,
        transformer=ExpertTransformerConfig(in_channels=33, out_channels=16, patch_size=1, patch_size_t=1, heads=6,
                                            head_dim=16, depth=4, time_embed_dim=128, text_dim=64, max_text_len=72,
                                            positional="rope", rope_grid="slice", base_size=(2, 2)),
        motion=None)


def presets() -> dict[str, SystemRunConfig]:
    """The named starting points of ``python -m minivid train``: ``cpu`` (the default model on the zoo's 32 px
    per-frame latents with the zoo's ``t5`` frozen, RoPE theta 10, peak learning rate 2e-3 and 30% of clips without
    their path: trains on 2 CPU cores), ``cpu-causal`` (the same model on the zoo's causal 3D VAE, C1: 64 px x
    9 frames -> 3 latent frames; clips are given no frame or their first, and a long video continues from each clip's
    last frame), ``cpu-reducio`` (the same widths on the zoo's Reducio VAE, R1-R2: 64 px x 8 frames -> 2 x 2 x 2
    latents decoded with the clip's content frame, frame 3, which is also the model's image; no trajectories; a long
    video continues through each clip's last frame), ``gpu`` (a 12-block model on 64 px clips for one H100/H200,
    bf16 autocast, the zoo's ``t5`` frozen and 30% of clips without their path, as in ``cpu``) and ``gpu-multi``
    (the ``gpu`` preset per GPU under torchrun: the global batch grows with the number of GPUs, set it with
    ``global_batch=``)."""
    cpu = SystemRunConfig(model=_cpu_model(), lr=2e-3, text_from="t5",
                          dropout=ConditionDropout(trajectory_dropout=0.3))
    causal = SystemRunConfig(model=_frozen_t5(_causal_model()), latent="causal-vae", size=64, frames=9, lr=2e-3,
                             text_from="t5", dropout=ConditionDropout(given_modes=(0.5, 0.5, 0.0), previous_frames=1,
                                                                      trajectory_dropout=0.3))
    reducio = SystemRunConfig(model=_reducio_model(), latent="reducio-vae", size=64, frames=8,
                              dropout=ConditionDropout(given_modes=(1.0, 0.0, 0.0), previous_frames=1,
                                                       image_dropout=0.1))
    gpu = SystemRunConfig(model=_gpu_model(), size=64, frames=8, num_clips=16384, steps=20000, global_batch=64,
                          lr=5e-4, warmup=1000, checkpoint_every=2000, log_every=100, autocast="bf16", text_from="t5",
                          dropout=ConditionDropout(trajectory_dropout=0.3))
    multi = SystemRunConfig.from_dict({**gpu.to_dict(), "global_batch": 256})
    return {"cpu": cpu, "cpu-causal": causal, "cpu-reducio": reducio, "gpu": gpu, "gpu-multi": multi}


def _closest(name: str, options) -> str:
    """"; did you mean 'x'?" for the option that `name` starts (a prefix: 'ema' -> 'ema_decay') or the closest
    spelling at a difflib ratio of 0.6 or more ('transformr' -> 'transformer'); "" when none is near. A lower cutoff
    offered 'autocast' for 'data' (ratio 0.5)."""
    import difflib

    options = list(options)
    prefixed = [o for o in options if len(name) >= 2 and o.startswith(name)]
    near = prefixed[:1] or difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f"; did you mean {near[0]!r}?" if near else ""


def preset_config(name: str, overrides: dict | None = None) -> SystemRunConfig:
    """Preset ``name`` with ``overrides`` ({dotted key: value}, e.g. ``{"model.transformer.depth": 8, "lr": 5e-4}``)
    applied. A ValueError names an unknown preset or key with the closest valid one, before any work."""
    table = presets()
    if name not in table:
        raise ValueError(f"unknown preset {name!r}; allowed: {', '.join(table)}{_closest(name, table)}")
    d = table[name].to_dict()
    for key, value in (overrides or {}).items():
        node, parts = d, key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:depth]) or "the run config"
                options = list(node) if isinstance(node, dict) else []
                raise ValueError(f"unknown key {key!r}: {where} has no field {part!r}{_closest(part, options)}"
                                 + (f" (fields: {', '.join(sorted(options))})" if options else ""))
            if depth == len(parts) - 1:
                node[part] = value
            else:
                node = node[part]
    return SystemRunConfig.from_dict(d)


def _yaml_load(text: str):
    """``yaml.safe_load`` that also reads ``5e-4`` as a number (YAML 1.1, which PyYAML follows, wants ``5.0e-4`` and
    would keep the string "5e-4")."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?(?:[0-9][0-9_]*)?\.?[0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789."))
    return yaml.load(text, Loader=Loader)


def parse_overrides(items) -> dict:
    """``["lr=5e-4", "model.transformer.depth=8"]`` -> {key: value}, values parsed as YAML scalars (numbers, true,
    null, [lists]); a ValueError for an item without ``=``."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must be KEY=VALUE, e.g. lr=5e-4 or model.transformer.depth=8")
        k, v = item.split("=", 1)
        out[k.strip()] = _yaml_load(v)
    return out


def load_overrides_file(path: str | Path) -> dict:
    """A YAML (or JSON) file of overrides: nested mappings or dotted keys, flattened to {dotted key: value}."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        doc = _yaml_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"config file {str(path)!r} does not parse: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of keys to values, got {type(doc).__name__}")

    def flat(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict) and v:
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v
    return dict(flat(doc))


__all__ += ["presets", "preset_config", "parse_overrides", "load_overrides_file", "run_spaces", "load_run",
            "prepare_image", "generate"]


# ---------------------------------------------------------------------------------------------- loading and sampling
def run_spaces(cfg: SystemRunConfig, device: str | torch.device = "cpu"):
    """(video latent space, motion latent space or None) of a run, checked against its clips and model
    (:func:`system_geometry`). ``latent``: a zoo autoencoder whose card holds a ``latent_scale`` (the per-frame
    ``vae2d``, the causal 3D ``causal-vae``, f_t = 4, or ``reducio-vae``, whose decoder also takes each clip's content
    frame, R2), or a folder of the released CogVideoX VAE as diffusers'
    ``save_pretrained`` writes it (``AutoencoderKLCogVideoX``: loaded with
    :func:`~minivid.autoencoders.cogvideox_vae.from_diffusers`, scaled by its config's ``scaling_factor``, as
    CogVideoX's pipelines do); ``motion_latent``: a per-frame zoo VAE of flow videos (``motion-vae``). A ValueError,
    before any work, for a name that is none of these or a run whose clips and model do not fit the spaces."""
    from .. import pretrained
    from ..autoencoders import LatentSpace

    names = pretrained.available()

    def usable(name, per_frame):  # a zoo VAE (per-frame, causal 3D or Reducio) whose card holds a latent scale
        card = pretrained.card(name)
        if "latent_scale" not in card or card.get("model_class") not in ("VAE2D", "CausalVAE", "ReducioVAE"):
            return False
        return not per_frame or pretrained.load(name).downsample[0] == 1

    def space(key, name, per_frame):
        if key == "latent" and _is_diffusers_vae(name):
            return _released_vae(name, device)
        if name not in names or not usable(name, per_frame):
            ok = [n for n in names if usable(n, per_frame)]
            why = "is not a zoo entry" if name not in names else "is not a latent space the full system can run on"
            what = ("a per-frame zoo VAE of flow videos whose card holds a latent_scale" if per_frame else
                    "a zoo VAE whose card holds a latent_scale, or a folder of the released CogVideoX VAE "
                    "(diffusers' AutoencoderKLCogVideoX save_pretrained)")
            raise ValueError(f"{key}={name!r} {why}: the system takes {what}; zoo entries it takes: "
                             f"{', '.join(ok)}")
        return LatentSpace(pretrained.load(name, device=device), pretrained.card(name)["latent_scale"])

    video = space("latent", cfg.latent, per_frame=False)
    motion = space("motion_latent", cfg.motion_latent, per_frame=True) if cfg.model.motion is not None else None
    system_geometry(cfg, video, motion)
    return video, motion


def _is_diffusers_vae(name: str) -> bool:
    p = Path(name) / "config.json"
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("_class_name") == "AutoencoderKLCogVideoX"
    except (json.JSONDecodeError, AttributeError):
        return False


def _released_vae(folder: str, device):
    """The latent space of a diffusers ``AutoencoderKLCogVideoX`` folder: minivid's
    :class:`~minivid.autoencoders.CogVideoXVAE` with its weights, scaled by ``scaling_factor`` (C1; CogVideoX's
    pipelines multiply the posterior by it; ``shift_factor`` must be None, as in every release)."""
    from ..autoencoders import LatentSpace
    from ..autoencoders.cogvideox_vae import from_diffusers

    try:
        vae = from_diffusers(folder)
    except ValueError as e:
        raise ValueError(f"latent={folder!r}: {e}") from None
    if vae.config.shift_factor is not None:
        raise ValueError(f"latent={folder!r}: shift_factor={vae.config.shift_factor}; the system scales latents only "
                         "(every CogVideoX release has shift_factor None)")
    return LatentSpace(vae.to(device).eval(), vae.config.scaling_factor)


def load_run(source: str | Path, device: str | torch.device = "cpu", ema: bool = True
             ) -> tuple[System, SystemRunConfig, Path]:
    """The model (EMA weights by default) of a run folder's latest checkpoint, of a checkpoint folder, or of a zoo
    entry trained from a preset (``"system"``, ``"system-causal"``, ``"system-reducio"``: its card holds the run's
    config), with the run's config and the folder read. A clear error when ``source`` is none of these."""
    from .. import pretrained
    from ..diffusion.training import latest_checkpoint
    from ..nn import load_model

    device = check_device("device", device)
    if isinstance(source, str) and source in pretrained.available() and not Path(source).exists():
        card = pretrained.card(source)
        if "run" not in card:
            systems = [n for n in pretrained.available() if "run" in pretrained.card(n)]
            raise ValueError(f"zoo entry {source!r} is not a full-system model (its card has no run config); "
                             f"the full system's entries: {', '.join(systems)}")
        model = pretrained.load(source, device=device).eval()
        return model, SystemRunConfig.from_dict(card["run"]), pretrained.zoo_root() / source
    p = Path(source)
    if (p / "train_state.pt").is_file():
        folder, run_dir = p, p.parent.parent
    else:
        folder, run_dir = latest_checkpoint(p / "checkpoints"), p
    if folder is None or not (run_dir / RUN_FILE).is_file():
        raise ValueError(f"checkpoint {str(source)!r} is not a run folder (run.json + checkpoints/step-*), one of "
                         "its checkpoints or a full-system zoo entry ('system', 'system-causal', 'system-reducio'); "
                         "train one with `python -m minivid train cpu --out DIR`")
    cfg = SystemRunConfig.from_dict(json.loads((run_dir / RUN_FILE).read_text()))
    model = load_model(folder / ("ema" if ema and (folder / "ema").is_dir() else "model"), device=device)
    if not isinstance(model, System) or model.config != cfg.model:
        raise ValueError(f"{folder} holds a {type(model).__name__} whose config is not its run's model config")
    return model.eval(), cfg, folder


def prepare_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """An image (3, H, W) in [-1, 1] resized to ``size`` x ``size`` (bilinear, antialiased) when it has another
    size (the system generates square clips of its run's size)."""
    import torch.nn.functional as F

    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be (3, H, W) in [-1, 1], got {got}")
    if tuple(image.shape[1:]) != (size, size):
        image = F.interpolate(image[None].float(), size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)[0]
    return image.clamp(-1, 1)


@torch.no_grad()
def generate(model: System, cfg: SystemRunConfig, space, motion_space=None, prompt: str = "",
             image: torch.Tensor | None = None, trajectory=None, frames: int | None = None, seed: int = 0,
             guidance: dict | None = None, steps: int = 20) -> torch.Tensor:
    """One video (3, F, H, W) in [-1, 1] from a prompt ("" for none), an optional first frame ``image`` (3, H, W)
    (resized to the run's size), optional ``trajectory`` (anything
    :func:`~minivid.conditioning.trajectory.load_trajectories` reads; interpolated over all F frames) and ``frames``
    F (default: one clip of the run's length; any F >= 1, the last clip cut). Longer videos are continued clip by
    clip (P8-P9's idea inside the system): on per-frame latents each next clip is given the last
    ``dropout.previous_frames`` latent frames of the one before and adds the rest; on a causal VAE's latents (f_t > 1,
    whose first latent frame encodes one frame and the others f_t frames each) each next clip is given the previous
    clip's last decoded frame as its first frame (image-to-video, as CogVideoX extends a video) and adds the other
    frames.

    On the Reducio VAE (R2) ``image`` is required and is the clip's content frame, frame c = (T-1)//2 of the video
    (3 of 8: the video runs through the image rather than from it); every clip is conditioned on its content frame
    (semantic tokens, R4) and decoded with it, and each next clip takes the previous clip's last decoded frame as its
    content frame and adds its frames after it (T - 1 - c new frames per clip). The same inputs and seed give the same
    video."""
    from ..conditioning.trajectory import load_trajectories, motion_video, rescale_points
    from .tora import TORA_BLUR

    clip = cfg.frames
    geo = system_geometry(cfg, space, motion_space if model.motion is not None else None)
    f_t, shape = geo.temporal_factor, geo.latent_shape
    frames = clip if frames is None else check_int("frames", frames, 1)
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    limit = model.config.text.max_length - 1  # ByT5: one token per byte and </s>
    if len(prompt.encode()) > limit:
        raise ValueError(f"prompt is {len(prompt.encode())} bytes; the text encoder reads at most {limit} "
                         f"(max_length={model.config.text.max_length} tokens with </s>)")
    size = cfg.size
    c_idx = content_frame(space, clip)
    if c_idx is not None and image is None:
        raise ValueError(f"image is required with latent={cfg.latent!r}: the Reducio VAE decodes every clip with its "
                         f"content frame (R2), frame {c_idx} of each {clip}-frame clip; pass the image the video "
                         "passes through")
    # frames two consecutive clips share: latent frames = frames for per-frame latents; one pixel frame for f_t > 1;
    # on Reducio the next clip's frames up to its content frame (= the previous clip's last frame)
    k = cfg.dropout.previous_frames if f_t == 1 else (1 if c_idx is None else c_idx + 1)
    latent_t = shape[1]
    total = max(frames, clip)
    windows = 1 + -(-(total - clip) // (clip - k))  # clips needed: the first, then clip - k new frames each
    padded = clip + (windows - 1) * (clip - k)
    points = None
    if trajectory is not None:
        if model.motion is None or motion_space is None:
            raise ValueError("this model has no trajectory condition (config.motion=None)")
        points = load_trajectories(trajectory).per_frame(total, size, size)  # (K, F, 2) in the clip's pixels
        if padded > total:  # the last clip runs past the video: its extra frames hold the last position
            points = torch.cat([points, points[:, -1:].expand(-1, padded - total, -1)], dim=1)
        if geo.motion_size != size:  # the flow video is drawn where the motion latents meet the video latents' grid
            points = rescale_points(points, geo.motion_size / size)
    null = None
    if model.motion is not None:
        m = geo.motion_size
        null = motion_on_latent_grid(motion_space.encode(torch.ones(1, 3, clip, m, m)), f_t)
    first = semantic = content = None
    if image is not None:
        pixels = prepare_image(image, size)
        semantic = pixels[None] if model.takes_image else None
        if c_idx is None:  # (1, C, h, w): one frame is one latent frame (C1)
            first = space.encode(pixels[None, :, None])[:, :, 0]
        else:
            content = pixels[None]
    out, videos = None, []
    for window in range(windows):
        start = window * (clip - k)
        given = torch.zeros(1, *shape)
        given_frames = torch.zeros(1, latent_t, dtype=torch.bool)
        if window > 0 and f_t == 1:
            given[:, :, :k] = out[:, :, -k:]
            given_frames[:, :k] = True
        elif window > 0 and c_idx is not None:  # the previous clip's last frame is this clip's content frame
            content = semantic = videos[-1][:, :, -1]
        elif window > 0:  # the previous clip's last frame, given as this clip's first frame (and image)
            last = videos[-1][:, :, -1]  # (1, 3, H, W)
            given[:, :, 0] = space.encode(last[:, :, None])[:, :, 0]
            given_frames[:, 0] = True
            semantic = last if model.takes_image else None
        elif first is not None:
            given[:, :, 0] = first
            given_frames[:, 0] = True
        motion = None
        if points is not None:
            m = geo.motion_size
            motion = motion_on_latent_grid(motion_space.encode(
                motion_video(points[:, start:start + clip], m, m, TORA_BLUR)[None]), f_t)
        z = sample_system(model, [prompt], shape, given=given if given_frames.any() else None,
                          given_frames=given_frames if given_frames.any() else None, motion=motion, null_motion=null,
                          image=semantic if window == 0 or f_t > 1 else None, guidance=guidance, steps=steps,
                          seed=seed + window)
        if f_t == 1:
            out = z if out is None else torch.cat([out, z[:, :, k:]], dim=2)
        else:  # decoded clip by clip: a causal latent starts afresh at every clip's first frame
            video = decode_latents(space, z, content)
            videos.append(video if window == 0 else video[:, :, k:])
    video = space.decode(out[:, :, :total]) if f_t == 1 else torch.cat(videos, dim=2)
    return video[0, :, :frames]


# ---------------------------------------------------------------------------------------------- held-out scores
@torch.no_grad()
def system_metrics(model: System, cfg: SystemRunConfig, space, motion_space, n: int = 64, steps: int = 20,
                   guidance: dict | None = None, seed: int = 0, data: SystemData | None = None,
                   modes: Sequence[str] | None = None, return_videos: bool = False):
    """The system's samples for ``n`` held-out one-sprite clips, in three uses: ``text`` (the caption alone),
    ``text+trajectory`` (caption and the clip's own sprite path) and ``image+text+trajectory`` (also its first frame).
    Each is scored by the sprite check, the caption accuracy (colour, direction) and T9's error of the tracked sprite
    against the clip's path (frames 1.. when the first frame is given, else all; for ``text`` it is the baseline of no
    trajectory), next to the autoencoder's reconstructions of the same clips. A model without motion guidance has
    ``text`` and ``image+text``. On the Reducio VAE (R2) there is one use, ``image+text``: the caption and the clip's
    content frame (semantic tokens and the decoder's content frame), scored next to the content frame repeated over
    the clip (a still video: what the image alone gives). ``modes`` keeps some of them (each is sampled with its own
    generator seeded by ``seed``, so a subset scores as in the full set); a model with motion guidance also takes
    ``image+text`` there (first frame and caption with the null trajectory: the motion can only come from the caption),
    which its default set leaves out. ``return_videos`` also returns the decoded samples, a dict mode ->
    (n, 3, T, H, W) on the CPU."""
    from ..metrics.captions import caption_accuracy
    from ..metrics.sprites import sprite_scores
    from ..metrics.trajectory import path_errors

    c_idx = content_frame(space, cfg.frames)
    names = ("text", "image+text") if model.motion is None else ("text", "text+trajectory", "image+text+trajectory")
    if c_idx is not None:
        names = ("image+text",)
    allowed = names + (("image+text",) if model.motion is not None and c_idx is None else ())
    if modes is not None and (isinstance(modes, str) or not modes or any(m not in allowed for m in modes)):
        raise ValueError(f"modes={modes!r}: expected a list of some of {list(allowed)} for this model")
    test = data or system_data(space, motion_space, n, cfg.size, cfg.frames, split="test", seed=seed)
    n = len(test.captions)
    c = model.config.latent_channels
    shape = (c, *test.latents.shape[2:])
    paths = torch.stack([p[0] for p in test.paths])  # (n, T, 2): the one sprite's path
    colors = test.colors
    first = torch.zeros(n, *shape)
    first[:, :, 0] = test.latents[:, :, 0]
    first_frames = torch.zeros(n, shape[1], dtype=torch.bool)
    first_frames[:, 0] = True
    null = test.null_motion if model.motion is not None else None
    image = {"image": test.images.float()} if model.takes_image else {}
    first_given = {"given": first, "given_frames": first_frames, **image}
    available = {"text": {}, "text+trajectory": {"motion": test.motion},
                 "image+text+trajectory": {"motion": test.motion, **first_given}, "image+text": first_given}
    if c_idx is not None:  # the content frame: the model's image and the decoder's (R2, R4)
        available = {"image+text": image}
    content = None if c_idx is None else test.images.float()
    available = {m: available[m] for m in (names if modes is None else modes)}
    out, samples = {}, {}
    for name, kw in available.items():
        z = sample_system(model, test.captions, shape, null_motion=null, guidance=guidance, steps=steps, seed=seed,
                          **kw)
        videos = samples[name] = decode_latents(space, z, content).cpu()
        scores = {**sprite_scores(videos), "caption_accuracy": caption_accuracy(videos, test.captions)}
        # without a trajectory the error against the clip's own path is the baseline a trajectory must beat
        scores.update(path_errors(videos, paths, colors, from_frame=1 if "given" in kw else 0))
        out[name] = scores
    real = decode_latents(space, test.latents, content).cpu()  # what a perfect denoiser would give
    out["real clips (autoencoder)"] = {**sprite_scores(real), "caption_accuracy": caption_accuracy(real, test.captions),
                                       **path_errors(real, paths, colors, from_frame=0)}
    if c_idx is not None:
        still = content[:, :, None].expand(-1, -1, cfg.frames, -1, -1)
        out["content frame repeated"] = {**sprite_scores(still), "caption_accuracy": caption_accuracy(
            still, test.captions), **path_errors(still, paths, colors, from_frame=0)}
    out["sampler"] = f"DPM-Solver++(2M), {steps} trailing timesteps from SNR 0, nested guidance {guidance or 'default'}"
    return (out, samples) if return_videos else out


__all__ += ["system_metrics"]


def system_eval_set(model: System, cfg: SystemRunConfig, space, motion_space, n: int = 64, seed: int = 0,
                    batch: int = 256) -> dict:
    """What ``python -m minivid eval --checkpoint SOURCE`` scores for a full system (a run folder, one of its
    checkpoints, or a zoo entry such as ``"system"``): ``n`` samples made from the captions and sprite paths of ``n``
    held-out one-sprite MiniSprites clips (on the Reducio VAE, R2 and R4: from their captions and content frames, which
    also decode them; no latent frame given), with the default guidance and 20 DPM-Solver++ steps, against those
    clips. Returns ``{"videos", "reference", "paired", "captions", "paths", "colors", "from_frame", "what"}`` for
    :func:`~minivid.metrics.evaluate.evaluate_videos`; the trajectory error (T9) is that of the caption+path use of
    :func:`system_metrics`. The clips are sampled ``batch`` at a time on the model's device (chunk ``i`` with noise
    seed ``seed + i``, so ``n <= batch`` is one call with ``seed``: the same samples as ``system_metrics``); the
    videos come back on the CPU."""
    from ..data import MiniSprites

    n, batch = check_int("n", n, 2), check_int("batch", batch, 1)
    test = system_data(space, motion_space, n, cfg.size, cfg.frames, split="test")
    content = content_frame(space, cfg.frames) is not None  # Reducio: the content frame is the image (R2, R4)
    image = test.images.float() if content else None
    shape = (model.config.latent_channels, *test.latents.shape[2:])
    videos = []
    for k, i in enumerate(range(0, n, batch)):
        part = slice(i, i + batch)
        z = sample_system(model, test.captions[part], shape,
                          motion=None if test.motion is None else test.motion[part], null_motion=test.null_motion,
                          image=None if image is None else image[part], seed=seed + k)
        videos.append(decode_latents(space, z, None if image is None else image[part]).cpu())
    real = MiniSprites(num_videos=n, size=cfg.size, num_frames=cfg.frames, split="test", seed=0, num_sprites=1)
    given = "captions and content frames" if content else "captions and sprite paths"
    return {"videos": torch.cat(videos), "reference": torch.stack([real[i]["video"] for i in range(n)]),
            "paired": False, "captions": test.captions, "paths": torch.stack([p[0] for p in test.paths]),
            "colors": test.colors, "from_frame": 0,
            "what": f"{n} samples from the {given} of {n} one-sprite test clips (no latent frame given) vs those clips"}


__all__ += ["system_eval_set"]
