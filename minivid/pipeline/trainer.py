"""One optimisation step of a diffusion model, shared by the demo, the notebooks and later pipelines.

``DiffusionTrainer.step(x0)`` draws timesteps (uniform or explicit uniform, D9), noises the batch (D3),
evaluates L_simple (D4, eps / v / x0 targets, D10) or the hybrid loss (D6), takes an AdamW step with
linear warm-up and gradient clipping, and updates an EMA copy of the weights used for sampling.
"""

from __future__ import annotations

import copy

import torch

from ..diffusion import NoiseSchedule, check_prediction, explicit_uniform_timesteps, training_losses, uniform_timesteps


class DiffusionTrainer:
    def __init__(self, model: torch.nn.Module, schedule: NoiseSchedule, prediction: str = "eps", lr: float = 1e-3,
                 warmup_steps: int = 50, grad_clip: float | None = 1.0, ema_decay: float = 0.995,
                 timestep_sampling: str = "explicit_uniform", learned_variance: bool = False, seed: int = 0,
                 weight_decay: float = 0.0):
        check_prediction(prediction)
        if timestep_sampling not in ("uniform", "explicit_uniform"):
            raise ValueError(f"timestep_sampling={timestep_sampling!r}; allowed: 'uniform', 'explicit_uniform'")
        if not lr > 0:
            raise ValueError(f"lr={lr!r} must be positive")
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay={ema_decay!r} must lie in [0, 1)")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps={warmup_steps!r} must be >= 0 (0: no warm-up)")
        if grad_clip is not None and not grad_clip > 0:  # clip_grad_norm_(max_norm=0) would zero every gradient
            raise ValueError(f"grad_clip={grad_clip!r} must be > 0, or None for no clipping")
        self.model, self.schedule, self.prediction = model, schedule, prediction
        self.lr, self.warmup_steps, self.grad_clip, self.ema_decay = lr, max(1, warmup_steps), grad_clip, ema_decay
        self.timestep_sampling, self.learned_variance = timestep_sampling, learned_variance
        self.ema = copy.deepcopy(model).requires_grad_(False).eval()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.generator = torch.Generator().manual_seed(seed)  # timesteps; CPU so CPU and GPU runs agree
        self.num_updates = 0
        self.losses: list[float] = []

    def sample_timesteps(self, batch_size: int) -> torch.Tensor:
        draw = explicit_uniform_timesteps if self.timestep_sampling == "explicit_uniform" else uniform_timesteps
        return draw(batch_size, self.schedule.num_steps, generator=self.generator)

    def step(self, x0: torch.Tensor, **model_kwargs) -> float:
        """One update on a batch of clean data x0 (B, C, ...); returns the batch's mean loss."""
        self.model.train()
        t = self.sample_timesteps(x0.shape[0]).to(x0.device)
        noise = torch.randn(x0.shape, generator=self.generator).to(x0)
        losses = training_losses(self.model, self.schedule, x0, t, noise, prediction=self.prediction,
                                 learned_variance=self.learned_variance, **model_kwargs)
        loss = losses["loss"].mean()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * min(1.0, (self.num_updates + 1) / self.warmup_steps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self._update_ema()
        self.num_updates += 1
        self.losses.append(loss.item())
        return self.losses[-1]

    @torch.no_grad()
    def _update_ema(self) -> None:
        n = self.num_updates
        d = min(self.ema_decay, (1 + n) / (10 + n))  # short warm-up: early EMA weights are not the init
        for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
            pe.lerp_(pm, 1 - d)
        for be, bm in zip(self.ema.buffers(), self.model.buffers()):
            be.copy_(bm)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
                "num_updates": self.num_updates, "losses": list(self.losses), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_updates, self.losses = state["num_updates"], list(state["losses"])
        self.generator.set_state(state["generator"])
