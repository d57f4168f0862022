r"""Samplers: DDPM ancestral (D5, D6), DDIM with eta (D7), DPM-Solver++(2M) (D8). Classifier-free guidance wraps a
model for any of them (:mod:`minivid.diffusion.guidance`).

Every sampler takes ``model(x, t) -> prediction`` with ``t`` a LongTensor of shape (B,) holding the
schedule index, and a ``prediction`` in {"eps", "v", "x0"} saying what the model outputs. A
learned-variance model (2x channels, D6) may be passed to any sampler: DDIM and DPM-Solver++ use its
first half only. Coefficients are computed in float64 and applied in x's dtype.

Noise: pass a CPU ``torch.Generator`` to draw the same noise on CPU and GPU (the noise is drawn on
the generator's device and moved to x's device).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm import tqdm

from .schedule import NoiseSchedule, check_prediction, split_learned_variance

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device, returned on x's device."""
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def _timesteps_list(schedule: NoiseSchedule, timesteps, min_len: int = 1) -> list[int]:
    if isinstance(timesteps, int) or (isinstance(timesteps, torch.Tensor) and timesteps.ndim == 0):
        raise ValueError(
            f"timesteps={int(timesteps)} is a single number; pass the timesteps to visit, in descending order, "
            f"e.g. make_timesteps(schedule, {int(timesteps)})"
        )
    ts = [int(t) for t in torch.as_tensor(timesteps).flatten().tolist()]
    if not ts:
        raise ValueError("timesteps is empty; make them with minivid.diffusion.make_timesteps")
    if any(b >= a for a, b in zip(ts, ts[1:])):
        raise ValueError(f"timesteps must be strictly descending, got {ts[:8]}{'...' if len(ts) > 8 else ''}")
    if ts[-1] < 0 or ts[0] >= schedule.num_steps:
        raise ValueError(f"timesteps must lie in 0..{schedule.num_steps - 1}, got {ts[-1]}..{ts[0]}")
    if len(ts) < min_len:
        raise ValueError(f"timesteps={ts} has {len(ts)} value(s); this sampler needs at least {min_len}")
    return ts


def _check_start(schedule: NoiseSchedule, t0: int, prediction: str) -> None:
    check_prediction(prediction)
    if prediction == "eps" and schedule.alphas_cumprod[t0] == 0:
        raise ValueError(
            f"prediction='eps' cannot sample from t={t0}, where alpha_bar = 0 (zero terminal SNR): x0 is "
            "undefined there. Use a v-prediction model (D10) or start at an earlier timestep."
        )


def _predict(model: Model, x: torch.Tensor, t: int, prediction: str) -> torch.Tensor:
    out = model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
    if out.shape[1] == 2 * x.shape[1] and out.shape != x.shape:
        out, _ = split_learned_variance(out, x)
    return out


def _x0_eps(schedule: NoiseSchedule, x, t: int, out, prediction: str, clip_x0: float | None):
    """x0 and eps implied by the output; after clipping x0, eps is recomputed to stay consistent with x_t."""
    x0 = schedule.predict_x0(x, t, out, prediction)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        a, s = math.sqrt(schedule.alphas_cumprod[t]), math.sqrt(1 - schedule.alphas_cumprod[t])
        return x0, (x - a * x0) / s
    return x0, schedule.predict_eps(x, t, out, prediction) if prediction != "eps" else out


@torch.no_grad()
def ddim_sample(
    model: Model,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    timesteps,
    eta: float = 0.0,
    prediction: str = "eps",
    generator: torch.Generator | None = None,
    clip_x0: float | None = None,
    progress: bool = False,
) -> torch.Tensor:
    r"""D7, DDIM. From each listed t to the next (and after the last one to :math:`\bar\alpha = 1`):

    .. math:: x_{prev} = \sqrt{\bar\alpha_{prev}}\,\hat x_0 + \sqrt{1-\bar\alpha_{prev}-\sigma^2}\,\hat\epsilon
              + \sigma z,\quad \sigma = \eta\sqrt{\tfrac{1-\bar\alpha_{prev}}{1-\bar\alpha_t}}
              \sqrt{1-\tfrac{\bar\alpha_t}{\bar\alpha_{prev}}}

    ``eta = 0`` is the deterministic sampler (a first-order solver of the probability-flow ODE);
    ``eta = 1`` has DDPM's posterior variance. Returns :math:`\hat x_0` of the last step.
    """
    ts = _timesteps_list(schedule, timesteps)
    _check_start(schedule, ts[0], prediction)
    if not eta >= 0:
        raise ValueError(f"eta={eta!r} must be >= 0")
    ac = schedule.alphas_cumprod
    x = x_T
    for i, t in enumerate(tqdm(ts, desc="DDIM", disable=not progress, leave=False)):
        x0, eps = _x0_eps(schedule, x, t, _predict(model, x, t, prediction), prediction, clip_x0)
        a_t = float(ac[t])
        a_prev = float(ac[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) if a_t < 1 else 0.0
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * randn_like(x, generator)
    return x


@torch.no_grad()
def dpm_solver_pp_sample(
    model: Model,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    timesteps,
    prediction: str = "eps",
    order: int = 2,
    clip_x0: float | None = None,
    progress: bool = False,
) -> torch.Tensor:
    r"""D8, DPM-Solver++(2M): a multistep solver of the probability-flow ODE in data-prediction form.

    With :math:`\lambda_t = \log(\alpha_t/\sigma_t)` (half log-SNR) and :math:`h = \lambda_{t'} - \lambda_t`,
    one step from t to the next listed t' is

    .. math:: x_{t'} = \frac{\sigma_{t'}}{\sigma_t} x_t - \alpha_{t'}(e^{-h} - 1)\, D,\qquad
              D = (1 + \tfrac{1}{2r})\hat x_0^{(t)} - \tfrac{1}{2r}\hat x_0^{(t_{prev})},\ r = h_{prev}/h

    (second order, reusing the previous step's :math:`\hat x_0`). The first step uses D = x̂0 (first order),
    and the final step, from the last listed t to :math:`\bar\alpha = 1` (:math:`\sigma = 0`), returns x̂0
    (also first order). ``order=1`` gives DPM-Solver++(1), which equals DDIM with eta = 0.
    """
    ts = _timesteps_list(schedule, timesteps)
    _check_start(schedule, ts[0], prediction)
    if order not in (1, 2):
        raise ValueError(f"order={order!r} must be 1 or 2")
    ac = schedule.alphas_cumprod
    alpha = [math.sqrt(float(ac[t])) for t in ts]
    sigma = [math.sqrt(1 - float(ac[t])) for t in ts]
    lam = [math.log(a) - math.log(s) if a > 0 else -math.inf for a, s in zip(alpha, sigma)]
    x = x_T
    x0_prev, h_prev = None, None
    for i, t in enumerate(tqdm(ts, desc="DPM-Solver++", disable=not progress, leave=False)):
        x0, _ = _x0_eps(schedule, x, t, _predict(model, x, t, prediction), prediction, clip_x0)
        if i == len(ts) - 1:
            return x0  # final first-order step to sigma = 0
        h = lam[i + 1] - lam[i]
        if order == 2 and x0_prev is not None and math.isfinite(h_prev):
            r = h_prev / h
            d = (1 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
        else:
            d = x0
        x = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x  # unreachable


@torch.no_grad()
def ddpm_sample(
    model: Model,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
    prediction: str = "eps",
    variance: str = "beta",
    timesteps=None,
    clip_x0: float | None = None,
    progress: bool = False,
) -> torch.Tensor:
    r"""Ancestral DDPM sampling (D5), through all T steps by default.

    Each step draws :math:`x_{t-1} \sim N(\mu_\theta(x_t, t), \Sigma)` with the corrected D5 mean (see
    :meth:`NoiseSchedule.p_mean_variance`); no noise is added at the last step. ``variance``: "beta"
    (:math:`\sigma_t^2 = \beta_t`, D5), "posterior" (:math:`\tilde\beta_t`) or "learned" (D6: the model
    outputs 2x channels, the second half interpolating log beta and log beta-tilde).

    ``timesteps``: an optional subset of steps (e.g. 250 of 1000, as Latte samples); the schedule is then
    respaced (:meth:`NoiseSchedule.respace`) and the model is still called with the original indices.
    """
    if timesteps is None:
        ts = list(range(schedule.num_steps - 1, -1, -1))
        sched = schedule
    else:
        ts = _timesteps_list(schedule, timesteps, min_len=2)  # a respaced schedule needs two steps
        sched = schedule.respace(ts)
    _check_start(schedule, ts[0], prediction)
    x = x_T
    n = len(ts)
    for k, t in enumerate(tqdm(ts, desc="DDPM", disable=not progress, leave=False)):
        i = n - 1 - k  # index in the (respaced) schedule
        out = model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        if variance != "learned" and out.shape != x.shape:
            out, _ = split_learned_variance(out, x)
        p = sched.p_mean_variance(x, i, out, prediction=prediction, variance=variance, clip_x0=clip_x0)
        x = p["mean"]
        if i > 0:
            x = x + (0.5 * p["log_variance"]).exp() * randn_like(x, generator)
    return x
