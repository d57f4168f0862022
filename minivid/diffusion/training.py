"""The training core every trainer in minivid shares, and the diffusion trainer built on it.

:class:`Trainer` owns what does not depend on the loss: AdamW (Adam when ``weight_decay=0``), a linear learning-rate
warm-up and an optional cosine decay, gradient clipping, an optional EMA copy of the weights, a CPU random
generator (so CPU and GPU runs draw the same numbers), the history of logged values, and checkpoint/resume.
A subclass implements :meth:`Trainer.loss`, the part that differs:

- :class:`DiffusionTrainer` (here): draws timesteps (uniform or explicit uniform, D9), noises the batch (D3) and
  evaluates L_simple (D4, eps / v / x0 targets, D10) or the hybrid loss (D6);
- ``minivid.autoencoders.AutoencoderTrainer``: reconstruction, KL, perceptual and GAN terms (P6, R2);
- ``minivid.pipeline.pvdm.JointTrainer``: PVDM's conditional/unconditional diffusion loss (P8).

**Checkpoints** (:meth:`Trainer.save_checkpoint`) are folders ``<root>/step-00000100/`` holding the model and its
EMA in ``minivid.save_model``'s format (``model/``, ``ema/``: each loads with ``minivid.load_model``) and
``train_state.pt`` (optimiser, step, history, random generators), all written into a hidden staging folder that is
renamed into place only when complete: a crash or a full disk while saving leaves the previous checkpoint as the
latest one. ``train_state.pt`` holds only tensors and plain containers and is read with
``torch.load(weights_only=True)``, so a crafted file cannot run code. :meth:`Trainer.load_checkpoint` resumes
from the latest one: model, EMA, optimiser, step, history and random state, so the continued run matches an
uninterrupted one exactly.

**Data parallelism.** Under ``torchrun`` (a process group joined with
:func:`minivid.utils.distributed.init_distributed` before the trainer is built) the trainer wraps the model in
DistributedDataParallel (rank 0's initial weights are broadcast, gradients averaged), logs the loss averaged over
ranks, and only rank 0 writes checkpoints. ``step`` then takes this rank's slice of the global batch; the random
numbers of the whole global batch are drawn on every rank from the same generator and sliced
(:class:`DiffusionTrainer`), so N processes take the same steps as one process fed the global batch, and a
checkpoint resumes on any number of processes. Trainers whose loss is not written this way
(``supports_data_parallel = False``) refuse to run under a process group.
"""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from ..nn.model import Model, save_model
from ..utils.checkpoint import load_weights, save_state
from ..utils.distributed import all_mean, barrier, current
from ..utils.files import fsync_dir
from ..utils.validation import check_choice, check_int, check_number
from .losses import training_losses
from .schedule import NoiseSchedule, check_prediction
from .timesteps import explicit_uniform_timesteps, uniform_timesteps

STEP_DIR = re.compile(r"^step-(\d{8})$")


class Trainer:
    """The loss-independent part of a training loop; see the module docstring.

    Args:
        model: the module to train (a :class:`minivid.nn.Model` to write checkpoints).
        lr: peak learning rate; ``warmup_steps`` (0: none) of linear warm-up, then constant, or a cosine decay to 0
            at ``total_steps`` when given.
        betas, weight_decay: AdamW's (with ``weight_decay=0`` it is Adam).
        grad_clip: maximum global gradient norm (None: no clipping).
        ema_decay: keep an exponential moving average of the weights in ``self.ema`` (None: no EMA). The decay
            warms up as min(ema_decay, (1 + n) / (10 + n)) after n updates, so early EMA weights are not the init.
        seed: seeds ``self.generator`` (CPU), the source of every random number the loss draws.
    """

    supports_data_parallel = False  # True where loss() calls self.net and draws for the global batch

    def __init__(self, model: torch.nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.0, warmup_steps: int = 0, total_steps: int | None = None,
                 grad_clip: float | None = 1.0, ema_decay: float | None = None, seed: int = 0):
        check_number("lr", lr, 0.0, strict_minimum=True)
        check_int("warmup_steps", warmup_steps, 0, what="an integer >= 0 (0: no warm-up)")
        if total_steps is not None:
            check_int("total_steps", total_steps, 1, what="an integer >= 1 (or None for no decay)")
        if grad_clip is not None and not (isinstance(grad_clip, (int, float)) and grad_clip > 0):
            # clip_grad_norm_(max_norm=0) would zero every gradient
            raise ValueError(f"grad_clip={grad_clip!r} must be > 0, or None for no clipping")
        if ema_decay is not None and not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay={ema_decay!r} must lie in [0, 1), or be None for no EMA")
        check_number("weight_decay", weight_decay, 0.0)
        check_int("seed", seed, 0)
        self.model, self.lr, self.warmup_steps, self.total_steps = model, lr, warmup_steps, total_steps
        self.grad_clip, self.ema_decay = grad_clip, ema_decay
        self.dist = current()
        self.net = model  # what the loss calls: the model, or its DistributedDataParallel wrapper
        if self.dist.distributed:
            if not self.supports_data_parallel:
                raise ValueError(f"{type(self).__name__} does not support data-parallel training (world size "
                                 f"{self.dist.world_size}); run it in one process")
            from torch.nn.parallel import DistributedDataParallel

            on_cuda = next(model.parameters()).is_cuda
            self.net = DistributedDataParallel(model, device_ids=[self.dist.local_rank] if on_cuda else None)
        # after the wrapper: DistributedDataParallel broadcasts rank 0's weights, which the EMA starts from
        self.ema = copy.deepcopy(model).requires_grad_(False).eval() if ema_decay is not None else None
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
        self.generator = torch.Generator().manual_seed(seed)
        self.num_updates = 0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ the loop
    def loss(self, batch, **kwargs) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss to minimise for one batch and the values to log besides it (subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss(batch, **kwargs)")

    def lr_at(self, step: int) -> float:
        """The learning rate of update ``step`` (0-based): linear warm-up over ``warmup_steps``, then constant or
        a cosine decay to 0 at ``total_steps``."""
        lr = self.lr * min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else self.lr
        if self.total_steps is not None:
            lr *= 0.5 * (1.0 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))
        return lr

    def step(self, batch, **kwargs) -> dict[str, float]:
        """One update on ``batch``; returns the logged values (``loss``, the subclass's terms, ``lr``), which are
        also appended to ``history``."""
        self.model.train()
        lr = self.lr_at(self.num_updates)
        loss, logs = self.loss(batch, **kwargs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self._update_ema()
        self.num_updates += 1
        logs = {**logs, "loss": all_mean(loss.item()), "lr": lr}  # the global batch's loss on every rank
        self.history.append(logs)
        return logs

    @property
    def losses(self) -> list[float]:
        """The loss of every update so far (``history``'s ``loss`` column)."""
        return [h["loss"] for h in self.history]

    @torch.no_grad()
    def _update_ema(self) -> None:
        n = self.num_updates
        d = min(self.ema_decay, (1 + n) / (10 + n))  # short warm-up: early EMA weights are not the init
        for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
            pe.lerp_(pm, 1 - d)
        for be, bm in zip(self.ema.buffers(), self.model.buffers()):
            be.copy_(bm)

    # ------------------------------------------------------------------ state
    def extra_state(self) -> dict:
        """What a subclass adds to the saved state (tensors and plain containers only)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore :meth:`extra_state` (called after the core state is loaded)."""
        if state:
            raise ValueError(f"{type(self).__name__} saves no extra state but the checkpoint holds {sorted(state)}")

    def state_dict(self, weights: bool = True) -> dict:
        """Everything a resumed run needs: the model's and EMA's weights (unless ``weights=False``: checkpoints
        store them as safetensors), the optimiser, the step, the history and the random state."""
        state = {"optimizer": self.optimizer.state_dict(), "num_updates": self.num_updates,
                 "history": [dict(h) for h in self.history], "generator": self.generator.get_state(),
                 "extra": self.extra_state()}
        if weights:
            state["model"] = self.model.state_dict()
            state["ema"] = self.ema.state_dict() if self.ema is not None else None
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (the weights too when it holds them)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_updates, self.history = int(state["num_updates"]), [dict(h) for h in state["history"]]
        self.generator.set_state(state["generator"])
        self.load_extra_state(state["extra"])
        if "model" in state:
            self.model.load_state_dict(state["model"])
        if state.get("ema") is not None:
            if self.ema is None:
                raise ValueError("the state holds EMA weights but this trainer has no EMA (ema_decay=None)")
            self.ema.load_state_dict(state["ema"])

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, root: str | os.PathLike, keep: int = 1, metadata: dict | None = None) -> Path:
        """Write ``root/step-XXXXXXXX/`` (``model/``, ``ema/``, ``train_state.pt``) through a staging folder renamed
        into place when complete, then delete all but the newest ``keep`` checkpoints. Saving again at a step that
        is already saved returns the existing folder (the weights change only in :meth:`step`)."""
        if not isinstance(self.model, Model):
            raise TypeError(f"checkpoints store the model with minivid.save_model: the trained model must be a "
                            f"minivid.nn.Model, got a {type(self.model).__name__}")
        check_int("keep", keep, 1)
        root = Path(root)
        final = root / f"step-{self.num_updates:08d}"
        if not self.dist.is_main:  # rank 0 writes; the others wait until the checkpoint is complete
            barrier()
            return final
        root.mkdir(parents=True, exist_ok=True)
        if not final.is_dir():
            staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
            try:
                meta = {"step": self.num_updates, **(metadata or {})}
                save_model(self.model, staging / "model", meta)
                if self.ema is not None:
                    save_model(self.ema, staging / "ema", meta)
                save_state(self.state_dict(weights=False), staging / "train_state.pt")
                os.replace(staging, final)  # atomic: the checkpoint appears complete or not at all
                fsync_dir(root)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        for old in checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        if self.dist.distributed:
            barrier()
        return final

    def load_checkpoint(self, path: str | os.PathLike) -> Path:
        """Resume from ``path``: a checkpoint folder, or a root of them (the latest is taken). Loads the model, the
        EMA, the optimiser, the step, the history and the random state; returns the folder read."""
        path = Path(path)
        folder = path if (path / "train_state.pt").is_file() else latest_checkpoint(path)
        if folder is None:
            raise FileNotFoundError(f"no checkpoint in {str(path)!r} (expected step-XXXXXXXX folders written by "
                                    "Trainer.save_checkpoint)")
        state = torch.load(folder / "train_state.pt", map_location="cpu", weights_only=True)
        if (self.ema is None) != (not (folder / "ema").is_dir()):
            raise ValueError(f"{folder} {'has' if self.ema is None else 'has no'} EMA weights but this trainer "
                             f"{'has no' if self.ema is None else 'has an'} EMA (ema_decay={self.ema_decay})")
        self.load_state_dict(state)  # first: a subclass checks the state fits before anything is loaded
        load_weights(self.model, folder / "model" / "model.safetensors")
        if self.ema is not None:
            load_weights(self.ema, folder / "ema" / "model.safetensors")
        return folder


def checkpoints(root: str | os.PathLike) -> list[Path]:
    """The complete checkpoint folders under ``root``, oldest first (staging folders are hidden, never listed)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name))


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder under ``root``, or None."""
    found = checkpoints(root)
    return found[-1] if found else None


def resume_point(out: str | os.PathLike, config: dict, resume: bool, budget_keys=(), run_file: str = "run.json",
                 error: type[Exception] = ValueError, normalize=None) -> Path | None:
    """The checkpoint a run in folder ``out`` continues from (``resume``), or None for a new run; ``error`` (a
    ValueError by default), before any work, when the run would overwrite a folder holding a checkpoint, has nothing
    to resume, or was written with another config than ``config`` (the run's ``to_dict()``; keys in ``budget_keys``,
    which only say how long a run goes on or what it reports, may change). Reads ``out/checkpoints/`` and
    ``out/<run_file>``; ``normalize`` (a dict -> dict, e.g. a config class's ``from_dict`` then ``to_dict``) fills
    the saved config's fields added since it was written with their defaults before the comparison."""
    import json

    from ..utils.config import config_diff

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise error(f"out_dir {str(out)!r} exists and is not a folder; choose another --out")
    ckpt = latest_checkpoint(out / "checkpoints")
    if ckpt is None:
        if resume:
            raise error(f"cannot resume: {str(out)!r} holds no checkpoint (no {out / 'checkpoints'}/step-*); "
                        "run without --resume to start a new run, or pass the --out of the run to continue")
        return None
    step = int(ckpt.name.split("-")[1])
    if not resume:
        raise error(f"{ckpt} exists (step {step}); pass --resume to continue or choose another --out")
    path = out / run_file
    if not path.is_file():
        raise error(f"cannot resume from {ckpt}: {path} (the run's config) is missing")
    saved = json.loads(path.read_text())
    if normalize is not None:
        saved = json.loads(json.dumps(normalize(saved)))
    old = {k: v for k, v in saved.items() if k not in budget_keys}
    new = {k: v for k, v in json.loads(json.dumps(config)).items() if k not in budget_keys}
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        raise error(f"cannot resume from {ckpt}: it was written with a different config ({changed}): "
                    + "; ".join(config_diff({k: old.get(k) for k in changed}, {k: new.get(k) for k in changed}))
                    + ". Use the original options, or choose another --out for a new run")
    return ckpt


class DiffusionTrainer(Trainer):
    """One optimisation step of a diffusion model: ``step(x0, **model_kwargs)`` draws timesteps (D9: uniform or
    explicit uniform), noises the batch (D3) and takes a step on L_simple (D4 with the ``prediction`` target, D10)
    or, with ``learned_variance``, the hybrid loss (D6). Keeps an EMA of the weights (``ema``) for sampling.

    Under data parallelism ``x0`` is this rank's slice of the global batch: the timesteps (D9: stratified over the
    global batch, so the union of the ranks' batches covers [0, T)) and the noise are drawn for the global batch
    and sliced, the same numbers a single process fed the global batch would draw."""

    supports_data_parallel = True

    def __init__(self, model: torch.nn.Module, schedule: NoiseSchedule, prediction: str = "eps", lr: float = 1e-3,
                 warmup_steps: int = 50, grad_clip: float | None = 1.0, ema_decay: float | None = 0.995,
                 timestep_sampling: str = "explicit_uniform", learned_variance: bool = False, seed: int = 0,
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), total_steps: int | None = None):
        check_prediction(prediction)
        check_choice("timestep_sampling", timestep_sampling, ("uniform", "explicit_uniform"))
        super().__init__(model, lr=lr, betas=betas, weight_decay=weight_decay, warmup_steps=warmup_steps,
                         total_steps=total_steps, grad_clip=grad_clip, ema_decay=ema_decay, seed=seed)
        self.schedule, self.prediction = schedule, prediction
        self.timestep_sampling, self.learned_variance = timestep_sampling, learned_variance

    def sample_timesteps(self, batch_size: int) -> torch.Tensor:
        draw = explicit_uniform_timesteps if self.timestep_sampling == "explicit_uniform" else uniform_timesteps
        return draw(batch_size, self.schedule.num_steps, generator=self.generator)

    def loss(self, x0: torch.Tensor, **model_kwargs) -> tuple[torch.Tensor, dict[str, float]]:
        """D3 + D4 / D6 / D10 on clean data x0 (B, C, ...); ``model_kwargs`` go to the model (labels, conditions)."""
        n = x0.shape[0] * self.dist.world_size
        part = self.dist.shard(n)  # this rank's slice of the global batch's draws
        t = self.sample_timesteps(n)[part].to(x0.device)
        noise = torch.randn((n, *x0.shape[1:]), generator=self.generator)[part].to(x0)
        losses = training_losses(self.net, self.schedule, x0, t, noise, prediction=self.prediction,
                                 learned_variance=self.learned_variance, **model_kwargs)
        return losses["loss"].mean(), {}
