r"""Diffusion on PVDM's triplanes: the joint conditional/unconditional loss (P8), DDIM sampling of planes
(D7 on the packed latent) and long-video generation (P9).

The latent of :class:`~minivid.autoencoders.pvdm.PVDMAutoencoder` is a tuple of three planes of different
shapes. Nothing in the diffusion math cares about the shape, so the planes are packed into one tensor
(B, C, H'W' + SW' + SH') (:func:`~minivid.autoencoders.pvdm.pack_planes`) and minivid.diffusion's own
``training_losses``, ``DiffusionTrainer`` and ``ddim_sample`` run on it unchanged; :class:`PlaneUNet`
unpacks it with ``shape=(S, H', W')``. Nothing here re-implements D3, D4 or D7.

**P8** (joint training). With consecutive clips :math:`x^1, x^2`, :math:`z^i_0 = f_\phi(x^i_0)` and
:math:`z^2_t = \sqrt{\bar\alpha_t} z^2_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`,

.. math:: \mathcal L = \mathbb E\big[\lambda\,\|\epsilon - \epsilon_\theta(z^2_t, z^1_0, t)\|^2
          + (1-\lambda)\,\|\epsilon - \epsilon_\theta(z^2_t, 0, t)\|^2\big].

:func:`joint_loss` computes it either exactly (both terms, two network calls) or, as in training, with one
call per sample whose condition is kept with probability λ and replaced by zeros otherwise
(:func:`drop_condition`): an unbiased estimate of the same expectation. **[code]** The release keeps the
condition with probability 0.3 (UCF-101) / 0.2 (SkyTimelapse), one coin per batch; here one coin per sample.

**P9** (long videos): :math:`x^1 \sim p_\theta(x)` (null condition), then :math:`x^{l+1} \sim
p_\theta(x^{l+1} \mid x^l)` conditioned on the planes just sampled, and the decoded clips concatenated
(:func:`generate_long_video`). PVDM reports "N/M-s": N DDIM steps for the first clip, M for the others.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
from einops import rearrange

from ..autoencoders.pvdm import check_planes, pack_planes, plane_shapes, unpack_planes
from .losses import training_losses
from .samplers import ddim_sample, randn_like
from .schedule import NoiseSchedule
from .timesteps import make_timesteps

ESTIMATORS = ("exact", "sample")


def _check_lambda(lam: float) -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 <= lam <= 1:
        raise ValueError(f"lam={lam!r} is invalid: expected a probability in [0, 1] (P8's lambda)")
    return float(lam)


def _as_packed(z, name: str) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Planes -> (packed tensor, (S, H', W'))."""
    return pack_planes(z), check_planes(z, name=name)


def drop_condition(cond: torch.Tensor, lam: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """P8's null condition: keep each sample's condition with probability ``lam``, replace it by zeros
    otherwise. ``cond`` (B, ...) (planes packed, or any tensor); the coins come from ``generator`` (CPU)."""
    lam = _check_lambda(lam)
    u = torch.rand(cond.shape[0], generator=generator, device=generator.device if generator else "cpu")
    keep = (u < lam).to(device=cond.device, dtype=cond.dtype)
    return cond * keep.reshape(-1, *([1] * (cond.ndim - 1)))


def joint_loss(model, schedule: NoiseSchedule, z2, z1, t: torch.Tensor, noise: torch.Tensor | None = None,
               lam: float = 0.3, estimator: str = "exact", generator: torch.Generator | None = None) -> torch.Tensor:
    r"""P8 per sample, (B,): :math:`\lambda\|\epsilon-\epsilon_\theta(z^2_t, z^1_0, t)\|^2 +
    (1-\lambda)\|\epsilon-\epsilon_\theta(z^2_t, 0, t)\|^2` (means over elements, as L_simple).

    ``z2`` the planes of the clip to denoise, ``z1`` those of the clip before it (tuples of planes);
    ``noise`` packed like z2 (drawn when None). ``estimator="exact"`` evaluates both terms; ``"sample"``
    keeps each sample's condition with probability λ (one network call; unbiased for the same value).
    With λ = 1 or 0 both give exactly the conditional or the unconditional L_simple (D4)."""
    lam = _check_lambda(lam)
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r} is invalid: expected one of {ESTIMATORS}")
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


class JointTrainer:
    """P8 training with minivid's :class:`~minivid.pipeline.trainer.DiffusionTrainer` (timesteps D9, L_simple
    D4 with eps-prediction, AdamW, EMA): ``step(z2, z1)`` packs the planes, keeps each sample's condition
    z1 with probability ``lam`` (zeros otherwise) and takes one optimiser step. ``z1=None`` trains the
    unconditional term only. The EMA model is ``self.ema``."""

    def __init__(self, model, schedule: NoiseSchedule, lam: float = 0.3, seed: int = 0, **trainer_kwargs):
        self.lam = _check_lambda(lam)
        if trainer_kwargs.get("prediction", "eps") != "eps":
            raise ValueError("PVDM's denoiser predicts eps (prediction='eps')")
        # imported here, not at the top: minivid.pipeline imports minivid.diffusion
        from ..pipeline.trainer import DiffusionTrainer

        self.trainer = DiffusionTrainer(model, schedule, prediction="eps", seed=seed, **trainer_kwargs)
        self.generator = torch.Generator().manual_seed(seed + 1)  # condition coins, separate from the trainer's

    @property
    def ema(self):
        return self.trainer.ema

    @property
    def losses(self) -> list[float]:
        return self.trainer.losses

    def step(self, z2, z1=None) -> float:
        x0, shape = _as_packed(z2, "z2")
        if z1 is None:
            cond = torch.zeros_like(x0)
        else:
            c, shape1 = _as_packed(z1, "z1")
            if c.shape != x0.shape or shape1 != shape:
                raise ValueError(f"z1 planes {[tuple(p.shape) for p in z1]} must have the shapes of z2 "
                                 f"{[tuple(p.shape) for p in z2]}")
            cond = drop_condition(c, self.lam, self.generator)
        return self.trainer.step(x0, cond=cond, shape=shape)

    def state_dict(self) -> dict:
        return {"trainer": self.trainer.state_dict(), "generator": self.generator.get_state(), "lam": self.lam}

    def load_state_dict(self, state: dict) -> None:
        self.trainer.load_state_dict(state["trainer"])
        self.generator.set_state(state["generator"])
        self.lam = state["lam"]


@torch.no_grad()
def sample_planes(model, schedule: NoiseSchedule, shape: Sequence[int], batch_size: int, channels: int,
                  cond=None, steps: int = 50, eta: float = 0.0, generator: torch.Generator | None = None,
                  clip: float | None = 1.0, device=None, dtype=torch.float32):
    """D7 (DDIM, ``steps`` evenly spaced timesteps) on the packed planes of latent size ``shape = (S, H', W')``;
    ``cond`` = the previous clip's planes (P8) or None (null condition). ``clip=1`` clamps the predicted
    z_0 to [-1, 1], where the autoencoder's tanh puts every plane value. Returns (z_s, z_h, z_w)."""
    shape = tuple(int(v) for v in shape)
    n = sum(torch.Size(p[2:]).numel() for p in plane_shapes(batch_size, channels, shape))
    x_T = randn_like(torch.empty(batch_size, channels, n, device=device, dtype=dtype), generator)
    c = None
    if cond is not None:
        c = pack_planes(cond).to(device=x_T.device, dtype=dtype)
        if c.shape != x_T.shape:
            raise ValueError(f"cond planes {[tuple(p.shape) for p in cond]} do not match latent shape {shape} "
                             f"with batch {batch_size} and {channels} channels")
    fn = functools.partial(model, cond=c, shape=shape)
    ts = make_timesteps(schedule, steps)
    x0 = ddim_sample(fn, x_T, schedule, ts, eta=eta, prediction="eps", generator=generator, clip_x0=clip)
    return unpack_planes(x0, shape)


@torch.no_grad()
def generate_long_video(model, autoencoder, schedule: NoiseSchedule, num_clips: int, shape: Sequence[int],
                        batch_size: int = 1, steps_first: int = 50, steps_next: int = 50, eta: float = 0.0,
                        generator: torch.Generator | None = None, device=None) -> dict:
    """P9: a first clip from the null condition, then ``num_clips - 1`` clips each conditioned on the planes of
    the one before, decoded and concatenated along time. ``shape = (S, H', W')`` is the latent size of one
    clip. Returns ``video`` (B, 3, num_clips * S, H, W) and the list of each clip's ``planes``."""
    if isinstance(num_clips, bool) or not isinstance(num_clips, int) or num_clips < 1:
        raise ValueError(f"num_clips={num_clips!r} is invalid: expected an int >= 1")
    channels = autoencoder.latent_channels
    planes, clips, prev = [], [], None
    for l in range(num_clips):
        z = sample_planes(model, schedule, shape, batch_size, channels, cond=prev,
                          steps=steps_first if l == 0 else steps_next, eta=eta, generator=generator, device=device)
        planes.append(z)
        clips.append(autoencoder.decode(z))  # (B, 3, S, H, W)
        prev = z  # x^{l+1} ~ p(x^{l+1} | x^l): condition on the clip just sampled
    return {"video": torch.cat(clips, dim=2), "planes": planes}


def clip_join_distances(video: torch.Tensor, clip_length: int, generator: torch.Generator | None = None) -> dict:
    """How well consecutive clips of a long video join (P9), as per-frame RMS distances in pixel space.

    For each boundary between clip l and l+1 of every video in the batch: ``join`` = d(last frame of clip l,
    first frame of clip l+1); ``within`` = d between consecutive frames inside the clips (the typical step);
    ``random_same`` = d(first frame of clip l+1, a random frame of the same video outside the two frames at
    the boundary); ``random_other`` = d(first frame of clip l+1, a random frame of another video of the
    batch, when B > 1). Returns the means (floats) and the per-boundary tensors."""
    if video.ndim != 5 or video.shape[2] % clip_length:
        raise ValueError(f"video {tuple(video.shape)} must be (B, C, L*clip_length, H, W) "
                         f"with clip_length={clip_length}")
    b, _, total, _, _ = video.shape
    n = total // clip_length
    if n < 2:
        raise ValueError(f"need at least two clips of {clip_length} frames; got {total} frames")
    frames = rearrange(video.float(), "b c t h w -> b t (c h w)")

    def d(a, c):
        return (a - c).pow(2).mean(-1).sqrt()

    g = generator or torch.Generator().manual_seed(0)
    ends = torch.arange(1, n) * clip_length  # first frame index of clips 2..L
    join = d(frames[:, ends - 1], frames[:, ends])  # (B, L-1)
    inner = torch.ones(total - 1, dtype=torch.bool)
    inner[ends - 1] = False
    within = d(frames[:, :-1], frames[:, 1:])[:, inner]  # (B, L*(S-1))
    rand_same = torch.empty(b, n - 1)
    rand_other = torch.empty(b, n - 1)
    for i in range(b):
        for k, e in enumerate(ends.tolist()):
            choices = [j for j in range(total) if j not in (e - 1, e)]
            j = choices[int(torch.randint(len(choices), (1,), generator=g))]
            rand_same[i, k] = d(frames[i, j], frames[i, e])
            if b > 1:
                other = (i + 1 + int(torch.randint(b - 1, (1,), generator=g))) % b
                rand_other[i, k] = d(frames[other, int(torch.randint(total, (1,), generator=g))], frames[i, e])
    out = {"join": join, "within": within, "random_same": rand_same}
    if b > 1:
        out["random_other"] = rand_other
    out.update({f"{k}_mean": float(v.mean()) for k, v in list(out.items())})
    return out
