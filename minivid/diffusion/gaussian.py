r"""Gaussian data: the one case where the optimal denoiser and the exact sampler output are closed-form.

If :math:`x_0 \sim N(\mu, s^2)` independently per element, then :math:`x_t = \alpha_t x_0 + \sigma_t\epsilon`
(:math:`\alpha_t = \sqrt{\bar\alpha_t}`, :math:`\sigma_t = \sqrt{1-\bar\alpha_t}`) is Gaussian too,
:math:`x_t \sim N(\alpha_t\mu,\ \alpha_t^2 s^2 + \sigma_t^2)`, and

- the optimal (MMSE) predictors are linear in :math:`x_t`:
  :math:`E[\epsilon|x_t] = \sigma_t (x_t - \alpha_t\mu)/(\alpha_t^2 s^2 + \sigma_t^2)`,
  :math:`E[x_0|x_t] = \mu + \alpha_t s^2 (x_t - \alpha_t\mu)/(\alpha_t^2 s^2 + \sigma_t^2)`;
- the probability-flow ODE is linear, so its flow map is the unique increasing affine map between the
  marginals: :math:`x_{t'} = \alpha_{t'}\mu + \sqrt{\tfrac{\alpha_{t'}^2 s^2 + \sigma_{t'}^2}{\alpha_t^2 s^2
  + \sigma_t^2}}\,(x_t - \alpha_t\mu)`.

So with :class:`GaussianOracle` as the "model", a sampler's only error is its discretisation error, and it
can be measured exactly against :meth:`GaussianOracle.flow_map`. Used by the tests and notebook 01.
"""

from __future__ import annotations

import math

import torch

from .schedule import NoiseSchedule, check_prediction


class GaussianOracle:
    """The exact denoiser for data :math:`x_0 \\sim N(\\mu, s^2)` (element-wise; ``mean`` and ``std`` are
    floats or tensors broadcastable to the data). Call it like a model: ``oracle(x, t) -> prediction``."""

    def __init__(self, schedule: NoiseSchedule, mean=0.0, std=1.0, prediction: str = "eps"):
        self.schedule = schedule
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.std = torch.as_tensor(std, dtype=torch.float64)
        if (self.std <= 0).any():
            raise ValueError(f"std must be positive, got {std!r}")
        self.prediction = check_prediction(prediction)

    def _coeffs(self, t, x: torch.Tensor):
        a = self.schedule.gather(self.schedule.sqrt_alphas_cumprod, t, x).double()
        s = self.schedule.gather(self.schedule.sqrt_one_minus_alphas_cumprod, t, x).double()
        return a, s

    def marginal(self, t, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of x_t (D2 applied to Gaussian data)."""
        ref = torch.zeros(1, dtype=torch.float64) if x is None else x
        a, s = self._coeffs(t, ref)
        return a * self.mean, (a**2 * self.std**2 + s**2).sqrt()

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self._coeffs(t, x)
        mu, var0 = self.mean.to(x.device), (self.std**2).to(x.device)
        xd = x.double()
        centred = (xd - a * mu) / (a**2 * var0 + s**2)
        eps = s * centred  # E[eps | x_t]
        x0 = mu + a * var0 * centred  # E[x_0 | x_t]
        out = {"eps": eps, "x0": x0, "v": a * eps - s * x0}[self.prediction]
        return out.to(x.dtype)

    def flow_map(self, x: torch.Tensor, alpha_bar_from: float, alpha_bar_to: float = 1.0) -> torch.Tensor:
        """The exact probability-flow ODE map from noise level alpha_bar_from to alpha_bar_to (1 = clean data)."""
        a_f, s_f = math.sqrt(alpha_bar_from), math.sqrt(1 - alpha_bar_from)
        a_t, s_t = math.sqrt(alpha_bar_to), math.sqrt(1 - alpha_bar_to)
        mu, var0 = self.mean.to(x.device), (self.std**2).to(x.device)
        scale = ((a_t**2 * var0 + s_t**2) / (a_f**2 * var0 + s_f**2)).sqrt()
        return (a_t * mu + scale * (x.double() - a_f * mu)).to(x.dtype)

    def sample_x0(self, shape, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw data x_0 (float64)."""
        z = torch.randn(shape, generator=generator, dtype=torch.float64)
        return self.mean + self.std * z
