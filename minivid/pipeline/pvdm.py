r"""Diffusion on PVDM's triplanes: the joint conditional/unconditional loss (P8), DDIM sampling of planes
(D7 on the packed latent) and long-video generation (P9).

The latent of :class:`~minivid.autoencoders.pvdm.PVDMAutoencoder` is a tuple of three planes of different
shapes. Nothing in the diffusion math cares about the shape, so the planes are packed into one tensor
(B, C, H'W' + SW' + SH') (:func:`~minivid.nn.triplane.pack_planes`) and minivid.diffusion's own
``training_losses``, ``DiffusionTrainer`` and ``ddim_sample`` run on it unchanged; the plane U-Net
(:class:`~minivid.unets.PlaneUNet`) unpacks it with ``shape=(S, H', W')``. Nothing here re-implements D3, D4
or D7. How well the clips of a long video join is measured by :func:`minivid.metrics.clip_join_distances`.

**P8** (joint training). With consecutive clips :math:`x^1, x^2`, :math:`z^i_0 = f_\phi(x^i_0)` and
:math:`z^2_t = \sqrt{\bar\alpha_t} z^2_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`,

.. math:: \mathcal L = \mathbb E\big[\lambda\,\|\epsilon - \epsilon_\theta(z^2_t, z^1_0, t)\|^2
          + (1-\lambda)\,\|\epsilon - \epsilon_\theta(z^2_t, 0, t)\|^2\big].

:func:`joint_loss` computes it either exactly (both terms, two network calls) or, as in training, with one
call per sample whose condition is kept with probability λ and replaced by zeros otherwise
(:func:`minivid.diffusion.drop_condition`): an unbiased estimate of the same expectation. **[code]** The release keeps the
condition with probability 0.3 (UCF-101) / 0.2 (SkyTimelapse), one coin per batch; here one coin per sample.

**P9** (long videos): :math:`x^1 \sim p_\theta(x)` (null condition), then :math:`x^{l+1} \sim
p_\theta(x^{l+1} \mid x^l)` conditioned on the planes just sampled, and the decoded clips concatenated
(:func:`generate_long_video`). PVDM reports "N/M-s": N DDIM steps for the first clip, M for the others.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch

from ..diffusion import (DiffusionTrainer, NoiseSchedule, classifier_free_guidance, ddim_sample, drop_condition,
                         make_timesteps, randn_like, training_losses)
from ..nn.triplane import check_planes, pack_planes, plane_shapes, unpack_planes
from ..utils.validation import check_choice, check_int, check_number

ESTIMATORS = ("exact", "sample")


def _check_lambda(lam: float) -> float:
    return check_number("lam", lam, 0.0, 1.0)  # P8's lambda, a probability


def _as_packed(z, name: str) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Planes -> (packed tensor, (S, H', W'))."""
    return pack_planes(z), check_planes(z, name=name)


def joint_loss(model, schedule: NoiseSchedule, z2, z1, t: torch.Tensor, noise: torch.Tensor | None = None,
               lam: float = 0.3, estimator: str = "exact", generator: torch.Generator | None = None) -> torch.Tensor:
    r"""P8 per sample, (B,): :math:`\lambda\|\epsilon-\epsilon_\theta(z^2_t, z^1_0, t)\|^2 +
    (1-\lambda)\|\epsilon-\epsilon_\theta(z^2_t, 0, t)\|^2` (means over elements, as L_simple).

    ``z2`` the planes of the clip to denoise, ``z1`` those of the clip before it (tuples of planes);
    ``noise`` packed like z2 (drawn when None). ``estimator="exact"`` evaluates both terms; ``"sample"``
    keeps each sample's condition with probability λ (one network call; unbiased for the same value).
    With λ = 1 or 0 both give exactly the conditional or the unconditional L_simple (D4)."""
    lam = _check_lambda(lam)
    check_choice("estimator", estimator, ESTIMATORS)
    x0, shape = _as_packed(z2, "z2")
    c, shape1 = _as_packed(z1, "z1")
    if c.shape != x0.shape or shape1 != shape:
        raise ValueError(f"z1 planes {[tuple(p.shape) for p in z1]} must have the shapes of z2 "
                         f"{[tuple(p.shape) for p in z2]}")
    noise = torch.randn_like(x0) if noise is None else noise
    if estimator == "sample":
        return training_losses(model, schedule, x0, t, noise, cond=drop_condition(c, lam, generator),
                               shape=shape)["loss"]
    terms = []
    for weight, cond in ((lam, c), (1.0 - lam, torch.zeros_like(c))):
        if weight > 0:  # a zero weight skips the network call; its term is exactly 0
            terms.append(weight * training_losses(model, schedule, x0, t, noise, cond=cond, shape=shape)["loss"])
    return sum(terms)


def _num_classes(model) -> int:
    """The class count of a model given labels ``y`` (PlaneUNetConfig.num_classes); a clear error when it has none."""
    k = getattr(getattr(model, "config", None), "num_classes", 0)
    if not k:
        raise ValueError("y was given but the model has no class embedding (num_classes=0)")
    return k


class JointTrainer(DiffusionTrainer):
    """P8 training on minivid's diffusion trainer (timesteps D9, L_simple D4 with eps-prediction, AdamW, EMA):
    ``step(z2, z1)`` packs the planes, keeps each sample's condition z1 with probability ``lam`` (zeros otherwise)
    and takes one optimiser step. ``z1=None`` trains the unconditional term only. The EMA model is ``self.ema``.
    One process only: its condition coins are drawn per local batch (``supports_data_parallel = False``)."""

    supports_data_parallel = False

    def __init__(self, model, schedule: NoiseSchedule, lam: float = 0.3, seed: int = 0, label_dropout: float = 0.1,
                 **trainer_kwargs):
        lam = _check_lambda(lam)
        if not 0 <= label_dropout < 1:
            raise ValueError(f"label_dropout={label_dropout!r} must lie in [0, 1)")
        if trainer_kwargs.pop("prediction", "eps") != "eps":
            raise ValueError("PVDM's denoiser predicts eps (prediction='eps')")
        super().__init__(model, schedule, prediction="eps", seed=seed, **trainer_kwargs)
        self.lam, self.label_dropout = lam, label_dropout
        self.coins = torch.Generator().manual_seed(seed + 1)  # condition coins, separate from the trainer's
        self.label_coins = torch.Generator().manual_seed(seed + 2)

    def step(self, z2, z1=None, y: torch.Tensor | None = None) -> dict[str, float]:
        """One optimiser step on clips ``z2`` (planes) with their previous clips ``z1`` (or None); ``y``: class
        labels (B,) of a model with ``num_classes > 0``, each replaced by the null class with probability
        ``label_dropout`` (for classifier-free guidance)."""
        x0, shape = _as_packed(z2, "z2")
        kwargs = {}
        if y is not None:
            k = _num_classes(self.model)
            drop = torch.rand(len(y), generator=self.label_coins) < self.label_dropout
            kwargs["y"] = torch.where(drop, torch.full_like(y, k), y)
        if z1 is None:
            cond = torch.zeros_like(x0)
        else:
            c, shape1 = _as_packed(z1, "z1")
            if c.shape != x0.shape or shape1 != shape:
                raise ValueError(f"z1 planes {[tuple(p.shape) for p in z1]} must have the shapes of z2 "
                                 f"{[tuple(p.shape) for p in z2]}")
            cond = drop_condition(c, self.lam, self.coins)
        return super().step(x0, cond=cond, shape=shape, **kwargs)

    def extra_state(self) -> dict:
        return {"coins": self.coins.get_state(), "lam": self.lam, "label_coins": self.label_coins.get_state(),
                "label_dropout": self.label_dropout}

    def load_extra_state(self, state: dict) -> None:
        self.coins.set_state(state["coins"])
        self.lam = state["lam"]
        if "label_coins" in state:  # states saved before class labels existed have none
            self.label_coins.set_state(state["label_coins"])
            self.label_dropout = state["label_dropout"]


@torch.no_grad()
def sample_planes(model, schedule: NoiseSchedule, shape: Sequence[int], batch_size: int, channels: int,
                  cond=None, steps: int = 100, eta: float = 1.0, generator: torch.Generator | None = None,
                  clip: float | None = 1.0, device=None, dtype=torch.float32, y: torch.Tensor | None = None,
                  guidance: float = 1.0):
    """D7 (DDIM, ``steps`` evenly spaced timesteps) on the packed planes of latent size ``shape = (S, H', W')``.
    The defaults, η = 1 and 100 steps, are the release's evaluation setting **[code]** (η = 0 gives the
    deterministic DDIM);
    ``cond`` = the previous clip's planes (P8) or None (null condition). ``clip=1`` clamps the predicted
    z_0 to [-1, 1], where the autoencoder's tanh puts every plane value. ``y``: class labels (batch_size,) for a
    model with ``num_classes > 0``, guided against the null class with scale ``guidance`` (classifier-free
    guidance; 1.0: the conditional model alone). Returns (z_s, z_h, z_w)."""
    shape = tuple(int(v) for v in shape)
    if y is not None:
        k = _num_classes(model)
        if tuple(y.shape) != (batch_size,):
            raise ValueError(f"y must have shape ({batch_size},) (batch_size), got {tuple(y.shape)}")
    if not isinstance(guidance, (int, float)) or guidance < 0:
        raise ValueError(f"guidance={guidance!r} must be a number >= 0")
    n = sum(torch.Size(p[2:]).numel() for p in plane_shapes(batch_size, channels, shape))
    x_T = randn_like(torch.empty(batch_size, channels, n, device=device, dtype=dtype), generator)
    c = None
    if cond is not None:
        c = pack_planes(cond).to(device=x_T.device, dtype=dtype)
        if c.shape != x_T.shape:
            raise ValueError(f"cond planes {[tuple(p.shape) for p in cond]} do not match latent shape {shape} "
                             f"with batch {batch_size} and {channels} channels")
    if y is None:
        fn = functools.partial(model, cond=c, shape=shape)
    else:
        y = y.to(x_T.device)
        c = torch.zeros_like(x_T) if c is None else c  # the null condition, as the model takes cond=None
        fn = classifier_free_guidance(functools.partial(model, shape=shape), {"cond": c, "y": y},
                                      {"cond": c, "y": torch.full_like(y, k)}, guidance)
    ts = make_timesteps(schedule, steps)
    x0 = ddim_sample(fn, x_T, schedule, ts, eta=eta, prediction="eps", generator=generator, clip_x0=clip)
    return unpack_planes(x0, shape)


@torch.no_grad()
def generate_long_video(model, autoencoder, schedule: NoiseSchedule, num_clips: int, shape: Sequence[int],
                        batch_size: int = 1, steps_first: int = 100, steps_next: int = 100, eta: float = 1.0,
                        generator: torch.Generator | None = None, device=None, latent_scale: float = 1.0,
                        y: torch.Tensor | None = None, guidance: float = 1.0) -> dict:
    """P9: a first clip from the null condition, then ``num_clips - 1`` clips each conditioned on the planes of
    the one before, decoded and concatenated along time. ``shape = (S, H', W')`` is the latent size of one
    clip; DDIM with η = 1 and 100 steps per clip by default, as the release evaluates ("100/100-s" in the
    paper's "N/M-s" notation). Returns ``video`` (B, 3, num_clips * S, H, W) and the list of each clip's
    ``planes``.

    ``latent_scale`` (minivid's option; the release diffuses the tanh-bounded planes as they are, 1.0): the
    model was trained on planes multiplied by it (LDM's scale factor, unit variance at small scale), so the
    planes are sampled in those units, clamped to [-latent_scale, latent_scale] (the tanh bound) and divided
    by it before decoding; the returned ``planes`` are in the scaled units the model conditions on.

    ``y``, ``guidance``: class labels for every clip of each video, with classifier-free guidance
    (:func:`sample_planes`; models with ``num_classes > 0``)."""
    check_int("num_clips", num_clips, 1)
    latent_scale = check_number("latent_scale", latent_scale, 0.0, strict_minimum=True)
    channels = autoencoder.latent_channels
    planes, clips, prev = [], [], None
    for l in range(num_clips):
        z = sample_planes(model, schedule, shape, batch_size, channels, cond=prev,
                          steps=steps_first if l == 0 else steps_next, eta=eta, generator=generator, device=device,
                          clip=latent_scale, y=y, guidance=guidance)
        planes.append(z)
        clips.append(autoencoder.decode(tuple(p / latent_scale for p in z)))  # (B, 3, S, H, W)
        prev = z  # x^{l+1} ~ p(x^{l+1} | x^l): condition on the clip just sampled
    return {"video": torch.cat(clips, dim=2), "planes": planes}
