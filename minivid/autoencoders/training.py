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
the learning rate. ``REDUCIO_LOSS`` and ``PVDM_LOSS`` hold the two papers' weights. ``warmup_steps`` and ``total_steps`` give a linear warm-up and a cosine decay (off by
default: a constant ``lr``). ``pixel_weight`` (a callable video -> weights broadcastable to it) turns L1 and MSE into
weighted means, for data whose content is a small part of each frame (Tora's flow videos: coloured marks on white). The optimiser, warm-up, clipping, history and checkpoints are the shared training
core's (:class:`minivid.diffusion.Trainer`); this class adds the losses and the discriminators.
"""

from __future__ import annotations

import torch

from ..diffusion.training import Trainer
from ..utils.validation import check_int, check_number
from .base import VideoAutoencoder
from .losses import PerceptualLoss, adaptive_gan_weight, hinge_d_loss, hinge_g_loss

#: R2 [code]: Reducio's released loss weights (the trainer's defaults): L1 + 0.1 LPIPS + 1e-6 KL.
REDUCIO_LOSS = {"l1_weight": 1.0, "perceptual_weight": 0.1, "kl_weight": 1e-6}
#: P6 [code]: PVDM's released weights: 4 L1 + 4 LPIPS, no KL (its encoder is deterministic), plus the hinge GAN.
PVDM_LOSS = {"l1_weight": 4.0, "perceptual_weight": 4.0, "kl_weight": 0.0}


class AutoencoderTrainer(Trainer):
    """``step(video)`` on clips (B, C, T, H, W) in [-1, 1]: one update of the autoencoder (and of the
    discriminators, once the GAN stage is on); returns the loss terms. See the module docstring."""

    def __init__(self, model: VideoAutoencoder, lr: float = 1e-3, l1_weight: float = 1.0, kl_weight: float = 1e-6,
                 perceptual: PerceptualLoss | None = None, perceptual_weight: float = 0.1,
                 discriminators: list[torch.nn.Module] | None = None, disc_start: int = 0, disc_weight: float = 0.5,
                 disc_lr: float | None = None, grad_clip: float | None = 1.0, betas: tuple[float, float] = (0.5, 0.9),
                 seed: int = 0, l2_weight: float = 0.0, warmup_steps: int = 0, total_steps: int | None = None,
                 ema_decay: float | None = None, pixel_weight=None):
        for name, v in (("l1_weight", l1_weight), ("kl_weight", kl_weight), ("perceptual_weight", perceptual_weight),
                        ("disc_weight", disc_weight), ("l2_weight", l2_weight)):
            check_number(name, v, 0.0)
        check_int("disc_start", disc_start, 0)
        super().__init__(model, lr=lr, betas=betas, warmup_steps=warmup_steps, total_steps=total_steps,
                         grad_clip=grad_clip, ema_decay=ema_decay, seed=seed)
        self.l1_weight, self.kl_weight, self.l2_weight = l1_weight, kl_weight, l2_weight
        if pixel_weight is not None and not callable(pixel_weight):
            raise ValueError(f"pixel_weight={pixel_weight!r} must be None or a callable video -> weights "
                             "(B, 1 or C, T, H, W)")
        self.pixel_weight = pixel_weight
        self.perceptual, self.perceptual_weight = perceptual, perceptual_weight
        self.discriminators = list(discriminators or [])
        self.disc_start, self.disc_weight = disc_start, disc_weight
        self.d_optimizer = (torch.optim.Adam([p for d in self.discriminators for p in d.parameters()],
                                             lr=disc_lr or lr, betas=betas) if self.discriminators else None)

    def loss(self, video: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Stage 1 (L1 [+ MSE] + KL [+ LPIPS]) and, from ``disc_start``, the weighted hinge generator loss."""
        for d in self.discriminators:  # from the first step, not only at disc_start: a long run fails early
            if hasattr(d, "check_input"):
                d.check_input(video.shape)
        recon, posterior = self.model(video, sample=True, generator=self.generator)  # posterior samples: CPU RNG
        err = recon - video
        if self.pixel_weight is None:
            l1, mse = err.abs().mean(), err.pow(2).mean()
        else:  # a weighted mean: the loss keeps its scale, the weights only say which pixels count more
            w = self.pixel_weight(video).to(err).expand_as(err)
            l1, mse = (w * err.abs()).sum() / w.sum(), (w * err.pow(2)).sum() / w.sum()
        rec = self.l1_weight * l1
        loss = rec + self.kl_weight * posterior.kl().mean()
        logs = {"l1": l1.item(), "kl": posterior.kl().mean().item()}
        if self.l2_weight > 0:  # MSE: unlike L1, it does not ignore small outliers (sprites) early in training
            rec = rec + self.l2_weight * mse
            loss = loss + self.l2_weight * mse
            logs["l2"] = mse.item()
        if self.perceptual is not None and self.perceptual_weight > 0:
            p = self.perceptual(recon, video).mean()
            rec = rec + self.perceptual_weight * p
            loss = loss + self.perceptual_weight * p
            logs["perceptual"] = p.item()
        self._gan_batch = None
        if self.discriminators and self.num_updates >= self.disc_start:
            for d in self.discriminators:
                d.eval()  # fixed BatchNorm statistics while the autoencoder is judged
            g = sum(hinge_g_loss(d(recon)) for d in self.discriminators)
            last = self.model.last_layer
            w = adaptive_gan_weight(rec, g, last) if last is not None else torch.tensor(1.0)
            loss = loss + self.disc_weight * w * g
            logs.update(g_loss=g.item(), gan_weight=float(w))
            self._gan_batch = (video, recon.detach())
        return loss, logs

    def step(self, video: torch.Tensor) -> dict[str, float]:
        """One update of the autoencoder, then (GAN stage) one of the discriminators on real vs reconstructed clips;
        returns the loss terms (``d_loss`` too in the GAN stage)."""
        logs = super().step(video)
        if self._gan_batch is not None:
            real, fake = self._gan_batch
            for d in self.discriminators:
                d.train()
            d_loss = sum(hinge_d_loss(d(real), d(fake)) for d in self.discriminators)
            self.d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            self.d_optimizer.step()
            logs["d_loss"] = d_loss.item()  # the dict in self.history too
            self._gan_batch = None
        return logs

    def extra_state(self) -> dict:
        return {"discriminators": [d.state_dict() for d in self.discriminators],
                "d_optimizer": self.d_optimizer.state_dict() if self.d_optimizer else None}

    def load_extra_state(self, state: dict) -> None:
        for d, s in zip(self.discriminators, state["discriminators"]):
            d.load_state_dict(s)
        if self.d_optimizer and state["d_optimizer"]:
            self.d_optimizer.load_state_dict(state["d_optimizer"])

    def load_state_dict(self, state: dict) -> None:
        n_saved, n_here = len(state["extra"]["discriminators"]), len(self.discriminators)
        if n_saved != n_here:  # checked first: nothing is loaded from a mismatched state
            raise ValueError(f"the state holds {n_saved} discriminator state(s) but this trainer has {n_here} "
                             "discriminator(s); build the trainer with the discriminators it was saved with")
        super().load_state_dict(state)
