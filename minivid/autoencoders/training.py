r"""One training step for any :class:`~minivid.autoencoders.base.VideoAutoencoder` (P6, R2's losses).

Stage 1 (always): L1 reconstruction (+ ``l2_weight`` · MSE, off by default) + ``kl_weight`` · KL (VAEs; zero
for deterministic encoders) + ``perceptual_weight`` · LPIPS when a
:class:`~minivid.autoencoders.losses.PerceptualLoss` is given.
Stage 2 (when a discriminator is given, from step ``disc_start``): the autoencoder also minimises the
hinge generator loss, weighted by ``disc_weight`` times VQGAN's adaptive weight (when the model exposes
``last_layer``), and the discriminator is trained with the hinge loss on real vs reconstructed clips.

The defaults (``l1_weight=1``, ``perceptual_weight=0.1``, ``kl_weight=1e-6``) are Reducio's released loss
(R2). PVDM's release (P6) weights L1 and LPIPS 4 and 4, with a hinge GAN on 2D and 3D PatchGANs: pass
``l1_weight=4, perceptual=PerceptualLoss(...), perceptual_weight=4, discriminators=[...]`` (and
``kl_weight=0``: its encoder is deterministic). Only the ratio of the weights matters with Adam, up to
the learning rate. ``warmup_steps`` and ``total_steps`` give a linear warm-up and a cosine decay (off by
default: a constant ``lr``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import VideoAutoencoder
from .losses import PerceptualLoss, adaptive_gan_weight, hinge_d_loss, hinge_g_loss


class AutoencoderTrainer:
    def __init__(self, model: VideoAutoencoder, lr: float = 1e-3, l1_weight: float = 1.0, kl_weight: float = 1e-6,
                 perceptual: PerceptualLoss | None = None, perceptual_weight: float = 0.1,
                 discriminators: list[torch.nn.Module] | None = None, disc_start: int = 0, disc_weight: float = 0.5,
                 disc_lr: float | None = None, grad_clip: float | None = 1.0, betas: tuple[float, float] = (0.5, 0.9),
                 seed: int = 0, l2_weight: float = 0.0, warmup_steps: int = 0, total_steps: int | None = None):
        if not lr > 0:
            raise ValueError(f"lr={lr!r} must be positive")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps={warmup_steps!r} must be >= 0")
        if grad_clip is not None and not grad_clip > 0:  # clip_grad_norm_(max_norm=0) would zero every gradient
            raise ValueError(f"grad_clip={grad_clip!r} must be > 0, or None for no clipping")
        if total_steps is not None and total_steps < 1:
            raise ValueError(f"total_steps={total_steps!r} must be >= 1 (or None for no decay)")
        self.lr, self.warmup_steps, self.total_steps = lr, warmup_steps, total_steps
        for name, v in (("l1_weight", l1_weight), ("kl_weight", kl_weight), ("perceptual_weight", perceptual_weight),
                        ("disc_weight", disc_weight), ("l2_weight", l2_weight)):
            if v < 0:
                raise ValueError(f"{name}={v!r} must be >= 0")
        self.model, self.l1_weight, self.kl_weight, self.l2_weight = model, l1_weight, kl_weight, l2_weight
        self.perceptual, self.perceptual_weight = perceptual, perceptual_weight
        self.discriminators = list(discriminators or [])
        self.disc_start, self.disc_weight, self.grad_clip = disc_start, disc_weight, grad_clip
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
        self.d_optimizer = (torch.optim.Adam([p for d in self.discriminators for p in d.parameters()],
                                             lr=disc_lr or lr, betas=betas) if self.discriminators else None)
        self.generator = torch.Generator().manual_seed(seed)  # posterior samples, CPU so CPU/GPU agree
        self.num_updates = 0
        self.history: list[dict[str, float]] = []

    def lr_at(self, step: int) -> float:
        """The learning rate of update ``step`` (0-based): linear warm-up over ``warmup_steps``, then cosine
        decay to 0 at ``total_steps`` (constant when ``total_steps`` is None)."""
        lr = self.lr * min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else self.lr
        if self.total_steps is not None:
            lr *= 0.5 * (1.0 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))
        return lr

    def step(self, video: torch.Tensor) -> dict[str, float]:
        """One update on a batch of clips (B, C, T, H, W) in [-1, 1]; returns the loss terms."""
        for d in self.discriminators:  # from the first step, not only at disc_start: a long run fails early
            if hasattr(d, "check_input"):
                d.check_input(video.shape)
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.num_updates)
        recon, posterior = self.model(video, sample=True, generator=self.generator)
        rec = self.l1_weight * F.l1_loss(recon, video)
        loss = rec + self.kl_weight * posterior.kl().mean()
        logs = {"l1": F.l1_loss(recon, video).item(), "kl": posterior.kl().mean().item()}
        if self.l2_weight > 0:  # MSE: unlike L1, it does not ignore small outliers (sprites) early in training
            mse = F.mse_loss(recon, video)
            rec = rec + self.l2_weight * mse
            loss = loss + self.l2_weight * mse
            logs["l2"] = mse.item()
        if self.perceptual is not None and self.perceptual_weight > 0:
            p = self.perceptual(recon, video).mean()
            rec = rec + self.perceptual_weight * p
            loss = loss + self.perceptual_weight * p
            logs["perceptual"] = p.item()
        gan_on = bool(self.discriminators) and self.num_updates >= self.disc_start
        if gan_on:
            for d in self.discriminators:
                d.eval()  # fixed BatchNorm statistics while the autoencoder is judged
            g = sum(hinge_g_loss(d(recon)) for d in self.discriminators)
            last = self.model.last_layer
            w = adaptive_gan_weight(rec, g, last) if last is not None else torch.tensor(1.0)
            loss = loss + self.disc_weight * w * g
            logs.update(g_loss=g.item(), gan_weight=float(w))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        if gan_on:
            for d in self.discriminators:
                d.train()
            fake = recon.detach()
            d_loss = sum(hinge_d_loss(d(video), d(fake)) for d in self.discriminators)
            self.d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            self.d_optimizer.step()
            logs["d_loss"] = d_loss.item()
        logs["loss"] = loss.item()
        self.num_updates += 1
        self.history.append(logs)
        return logs

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "discriminators": [d.state_dict() for d in self.discriminators],
                "d_optimizer": self.d_optimizer.state_dict() if self.d_optimizer else None,
                "num_updates": self.num_updates, "history": list(self.history), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        n_saved, n_here = len(state["discriminators"]), len(self.discriminators)
        if n_saved != n_here:  # checked first: nothing is loaded from a mismatched state
            raise ValueError(f"the state holds {n_saved} discriminator state(s) but this trainer has {n_here} "
                             "discriminator(s); build the trainer with the discriminators it was saved with")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for d, s in zip(self.discriminators, state["discriminators"]):
            d.load_state_dict(s)
        if self.d_optimizer and state["d_optimizer"]:
            self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.num_updates, self.history = state["num_updates"], list(state["history"])
        self.generator.set_state(state["generator"])
