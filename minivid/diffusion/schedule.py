r"""Noise schedules and the Gaussian forward process (D1-D3), its posterior, and the eps / x0 / v
parameterisations (D4, D5, D10).

Indexing. A schedule with ``T`` steps stores ``betas[t]`` for ``t = 0 .. T-1``; index ``t`` is the
paper's step ``t + 1``. So ``alphas_cumprod[t]`` is :math:`\bar\alpha_{t+1} = \prod_{i \le t}(1-\beta_i)`
and ``x_t`` (index ``t``) is one forward step (D1) beyond ``x_{t-1}``, with ``x_{-1} = x_0`` (the
clean data). ``alphas_cumprod_prev[0] = 1``.

All schedule arrays are float64 on the CPU; coefficients are gathered and cast to the device and
dtype of the tensor they multiply.

Notation used in docstrings: :math:`\alpha_t = \sqrt{\bar\alpha_t}`, :math:`\sigma_t =
\sqrt{1-\bar\alpha_t}`, :math:`\mathrm{SNR}_t = \bar\alpha_t / (1-\bar\alpha_t)`, and the velocity
:math:`v = \alpha_t \epsilon - \sigma_t x_0` (D10).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..utils.validation import check_int

PREDICTIONS = ("eps", "v", "x0")
VARIANCES = ("beta", "posterior", "learned")


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction={prediction!r} is not supported; allowed: {PREDICTIONS}")
    return prediction


class NoiseSchedule:
    r"""A discrete variance schedule :math:`\beta_1..\beta_T` and everything derived from it.

    Build one with :meth:`linear`, :meth:`scaled_linear`, :meth:`cosine`, :meth:`cogvideox` or from
    explicit ``betas``. Transformations (:meth:`rescale_zero_terminal_snr`, :meth:`shift_snr`,
    :meth:`respace`) return new schedules; a schedule is never modified in place.

    Args:
        betas: the T values :math:`0 < \beta_t < 1` (D1). The last one may equal 1, which is what a
            zero-terminal-SNR schedule has (:math:`\bar\alpha_T = 0`).
    """

    def __init__(self, betas: torch.Tensor | Sequence[float]):
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu().clone()
        if betas.ndim != 1 or betas.numel() < 2:
            raise ValueError(f"betas must be a 1-D sequence of at least 2 values, got shape {tuple(betas.shape)}")
        if not torch.isfinite(betas).all():
            raise ValueError("betas must be finite")
        if (betas[:-1] <= 0).any() or (betas[:-1] >= 1).any() or betas[-1] <= 0 or betas[-1] > 1:
            raise ValueError(
                f"betas must lie in (0, 1) (the last may be exactly 1 for zero terminal SNR); "
                f"got min {betas.min().item():.3g}, max {betas.max().item():.3g}"
            )
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)  # D2: abar_t
        if betas[-1] == 1:
            self.alphas_cumprod[-1] = 0.0  # exactly zero, not a rounding residue
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        # Posterior q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta_tilde_t I)
        one_minus_ac = 1.0 - self.alphas_cumprod
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / one_minus_ac  # beta_tilde_t
        # beta_tilde_0 = 0: clip its log to beta_tilde_1 (as improved DDPM does) so logs stay finite.
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / one_minus_ac
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / one_minus_ac

    # ------------------------------------------------------------------ constructors
    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """DDPM's linear betas (used by PVDM and Latte: 1e-4 to 0.02 over 1000 steps)."""
        num_steps = check_int("num_steps", num_steps, 2)
        cls._check_beta_range(beta_start, beta_end)
        return cls(torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64))

    @classmethod
    def scaled_linear(
        cls, num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
    ) -> "NoiseSchedule":
        """Latent-diffusion ("scaled linear") betas: linear in sqrt(beta). CogVideoX's base schedule."""
        num_steps = check_int("num_steps", num_steps, 2)
        cls._check_beta_range(beta_start, beta_end)
        return cls(torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2)

    @classmethod
    def cosine(cls, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        r"""Improved DDPM's cosine schedule: :math:`\bar\alpha(\tau) \propto \cos^2(\frac{\tau/T + s}{1+s}\frac{\pi}{2})`,
        betas clipped at ``max_beta``."""
        num_steps = check_int("num_steps", num_steps, 2)
        if not 0 <= s < 1:
            raise ValueError(f"s={s!r} must lie in [0, 1)")
        if not 0 < max_beta <= 1:
            raise ValueError(f"max_beta={max_beta!r} must lie in (0, 1]")
        tau = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((tau + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
        return cls(betas)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: torch.Tensor | Sequence[float]) -> "NoiseSchedule":
        r"""The schedule whose :math:`\bar\alpha_t` are given (strictly decreasing, in (0, 1], the last may be 0)."""
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if ac.ndim != 1 or ac.numel() < 2:
            raise ValueError(f"alphas_cumprod must be 1-D with at least 2 values, got shape {tuple(ac.shape)}")
        if (ac[:-1] <= 0).any() or (ac > 1).any() or ac[-1] < 0 or not (ac[1:] < ac[:-1]).all():
            raise ValueError("alphas_cumprod must be strictly decreasing within (0, 1] (the last may be 0)")
        prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        return cls(1.0 - ac / prev)

    @classmethod
    def cogvideox(cls, num_steps: int = 1000, snr_shift_scale: float = 3.0) -> "NoiseSchedule":
        """D10: scaled-linear betas 0.00085 -> 0.012, SNR shifted by ``snr_shift_scale`` (3 for
        CogVideoX-2B, 1 for 5B), then rescaled to zero terminal SNR. Use with v-prediction and
        ``make_timesteps(..., spacing="trailing")``."""
        return cls.scaled_linear(num_steps, 0.00085, 0.012).shift_snr(snr_shift_scale).rescale_zero_terminal_snr()

    @staticmethod
    def _check_beta_range(beta_start: float, beta_end: float) -> None:
        for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
            if not 0 < value < 1:
                raise ValueError(f"{name}={value!r} must lie in (0, 1)")
        if beta_start > beta_end:  # noise that shrinks with t: almost certainly swapped arguments
            raise ValueError(f"beta_start={beta_start!r} must be <= beta_end={beta_end!r} (betas grow with t); "
                             "were the two swapped?")

    # ------------------------------------------------------------------ transformations
    def rescale_zero_terminal_snr(self) -> "NoiseSchedule":
        r"""D10 (Lin et al. 2024): shift and scale :math:`\sqrt{\bar\alpha_t}` so that the first value
        is unchanged and the last is exactly 0 (SNR_T = 0). Returns a new schedule."""
        a = self.sqrt_alphas_cumprod
        a0, aT = a[0], a[-1]
        a = (a - aT) * a0 / (a0 - aT)
        return NoiseSchedule.from_alphas_cumprod(a**2)

    def shift_snr(self, scale: float) -> "NoiseSchedule":
        r"""D10 (CogVideoX): :math:`\bar\alpha' = \bar\alpha / (s + (1-s)\bar\alpha)`, i.e. every SNR
        divided by ``scale`` (s > 1 means noisier). Returns a new schedule."""
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"scale={scale!r} must be a positive number")
        ac = self.alphas_cumprod
        return NoiseSchedule.from_alphas_cumprod(ac / (scale + (1 - scale) * ac))

    def respace(self, timesteps: Sequence[int] | torch.Tensor) -> "NoiseSchedule":
        r"""The schedule that jumps between the kept ``timesteps`` (any order; sorted ascending here):
        :math:`\beta'_i = 1 - \bar\alpha_{\tau_i} / \bar\alpha_{\tau_{i-1}}`. Its index ``i`` has the same
        :math:`\bar\alpha` as index ``sorted(timesteps)[i]`` of this schedule, so a model trained on this
        schedule is called with the original timestep. Used for DDPM with fewer steps (Latte samples with
        250 of 1000; D6)."""
        ts = torch.as_tensor(timesteps, dtype=torch.long).flatten().unique(sorted=True)
        self._check_t(ts)
        return NoiseSchedule.from_alphas_cumprod(self.alphas_cumprod[ts])

    # ------------------------------------------------------------------ helpers
    @property
    def num_steps(self) -> int:
        return self.betas.numel()

    def __len__(self) -> int:
        return self.num_steps

    def __repr__(self) -> str:
        ac = self.alphas_cumprod
        return (
            f"NoiseSchedule(T={self.num_steps}, beta=[{self.betas[0]:.3g} .. {self.betas[-1]:.3g}], "
            f"alpha_bar=[{ac[0]:.4g} .. {ac[-1]:.3g}])"
        )

    def _check_t(self, t: torch.Tensor) -> None:
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_steps):
            raise ValueError(
                f"timestep t must lie in 0..{self.num_steps - 1}; got values in {int(t.min())}..{int(t.max())}"
            )

    def gather(self, values: torch.Tensor, t, x: torch.Tensor) -> torch.Tensor:
        """``values[t]`` shaped ``(B, 1, ..., 1)`` to broadcast against ``x``, on x's device and dtype.
        ``t`` is an int or a LongTensor of shape () or (B,) with B = ``x.shape[0]`` ((1,) is shared by the batch)."""
        t = torch.as_tensor(t)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"timesteps t must be integers, got dtype {t.dtype}")
        t = t.long().cpu()
        batch = x.shape[0] if x.ndim else None
        if t.ndim > 1 or (t.ndim == 1 and batch is not None and t.shape[0] not in (1, batch)):
            raise ValueError(f"t must have shape () or (B,)=({batch},) (or (1,), shared by the batch), "
                             f"got {tuple(t.shape)}")
        self._check_t(t)
        out = values[t]
        dtype = x.dtype if x.dtype.is_floating_point else torch.float32
        out = out.to(device=x.device, dtype=dtype)
        if t.ndim == 0:
            return out
        return out.reshape(-1, *([1] * (x.ndim - 1)))

    def snr(self, t=None) -> torch.Tensor:
        r""":math:`\bar\alpha_t / (1 - \bar\alpha_t)` (float64), for all t when ``t`` is None."""
        ac = self.alphas_cumprod if t is None else self.alphas_cumprod[torch.as_tensor(t).long()]
        return ac / (1 - ac)

    def log_snr(self, t=None) -> torch.Tensor:
        r""":math:`\log \mathrm{SNR}_t` (float64; -inf where :math:`\bar\alpha_t = 0`)."""
        ac = self.alphas_cumprod if t is None else self.alphas_cumprod[torch.as_tensor(t).long()]
        return torch.log(ac) - torch.log1p(-ac)

    # ------------------------------------------------------------------ forward process
    def q_step(self, x_prev: torch.Tensor, t, noise: torch.Tensor | None = None) -> torch.Tensor:
        r"""D1: one forward step :math:`x_t = \sqrt{1-\beta_t}\, x_{t-1} + \sqrt{\beta_t}\, \epsilon`."""
        noise = torch.randn_like(x_prev) if noise is None else noise
        beta = self.gather(self.betas, t, x_prev)
        return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise

    def q_mean_variance(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        r"""D2: mean :math:`\sqrt{\bar\alpha_t} x_0` and variance :math:`1-\bar\alpha_t` of q(x_t | x_0)."""
        return self.gather(self.sqrt_alphas_cumprod, t, x0) * x0, self.gather(1 - self.alphas_cumprod, t, x0)

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor | None = None) -> torch.Tensor:
        r"""D3: :math:`x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1-\bar\alpha_t}\, \epsilon`."""
        noise = torch.randn_like(x0) if noise is None else noise
        if noise.shape != x0.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, x0 has {tuple(x0.shape)}; they must match")
        return self.gather(self.sqrt_alphas_cumprod, t, x0) * x0 + self.gather(
            self.sqrt_one_minus_alphas_cumprod, t, x0
        ) * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        r"""q(x_{t-1} | x_t, x_0) = N(mean, variance I) with
        :math:`\text{mean} = \frac{\beta_t\sqrt{\bar\alpha_{t-1}}}{1-\bar\alpha_t} x_0 +
        \frac{(1-\bar\alpha_{t-1})\sqrt{1-\beta_t}}{1-\bar\alpha_t} x_t` and
        :math:`\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t`. At t = 0 the variance is 0
        (x_{-1} is x_0 itself)."""
        mean = self.gather(self.posterior_mean_coef1, t, xt) * x0 + self.gather(self.posterior_mean_coef2, t, xt) * xt
        return mean, self.gather(self.posterior_variance, t, xt)

    # ------------------------------------------------------------------ parameterisations
    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        r"""D10: the v-prediction target :math:`v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\, x_0`."""
        return self.gather(self.sqrt_alphas_cumprod, t, x0) * noise - self.gather(
            self.sqrt_one_minus_alphas_cumprod, t, x0
        ) * x0

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t, prediction: str = "eps") -> torch.Tensor:
        """The regression target of a network with the given parameterisation."""
        check_prediction(prediction)
        if prediction == "eps":
            return noise
        if prediction == "x0":
            return x0
        return self.velocity(x0, noise, t)

    def _check_out(self, xt: torch.Tensor, out: torch.Tensor) -> None:
        if out.shape != xt.shape:
            raise ValueError(
                f"model output has shape {tuple(out.shape)} but x_t has {tuple(xt.shape)}; "
                "split a learned-variance output first (see minivid.diffusion.split_learned_variance)"
            )

    def predict_x0(self, xt: torch.Tensor, t, out: torch.Tensor, prediction: str = "eps") -> torch.Tensor:
        r"""x_0 implied by a network output. eps: :math:`(x_t - \sigma_t\hat\epsilon)/\alpha_t` (undefined
        where :math:`\bar\alpha_t = 0`); v: :math:`\alpha_t x_t - \sigma_t \hat v`; x0: the output itself."""
        check_prediction(prediction)
        self._check_out(xt, out)
        if prediction == "x0":
            return out
        a = self.gather(self.sqrt_alphas_cumprod, t, xt)
        s = self.gather(self.sqrt_one_minus_alphas_cumprod, t, xt)
        if prediction == "v":
            return a * xt - s * out
        if (a == 0).any():
            raise ValueError(
                "prediction='eps' cannot give x0 where alpha_bar_t = 0 (a zero-terminal-SNR schedule at its "
                "last step); train with prediction='v' for such schedules (D10)"
            )
        return (xt - s * out) / a

    def predict_eps(self, xt: torch.Tensor, t, out: torch.Tensor, prediction: str = "eps") -> torch.Tensor:
        r"""epsilon implied by a network output. x0: :math:`(x_t - \alpha_t\hat x_0)/\sigma_t`;
        v: :math:`\sigma_t x_t + \alpha_t \hat v`."""
        check_prediction(prediction)
        self._check_out(xt, out)
        if prediction == "eps":
            return out
        a = self.gather(self.sqrt_alphas_cumprod, t, xt)
        s = self.gather(self.sqrt_one_minus_alphas_cumprod, t, xt)
        if prediction == "v":
            return s * xt + a * out
        return (xt - a * out) / s

    def predict_v(self, xt: torch.Tensor, t, out: torch.Tensor, prediction: str = "eps") -> torch.Tensor:
        r"""v implied by a network output: :math:`v = \alpha_t\hat\epsilon - \sigma_t\hat x_0`."""
        check_prediction(prediction)
        if prediction == "v":
            self._check_out(xt, out)
            return out
        a = self.gather(self.sqrt_alphas_cumprod, t, xt)
        s = self.gather(self.sqrt_one_minus_alphas_cumprod, t, xt)
        return a * self.predict_eps(xt, t, out, prediction) - s * self.predict_x0(xt, t, out, prediction)

    def convert(self, xt: torch.Tensor, t, out: torch.Tensor, source: str, target: str) -> torch.Tensor:
        """Convert a network output between the "eps", "v" and "x0" parameterisations."""
        check_prediction(target)
        fn = {"eps": self.predict_eps, "x0": self.predict_x0, "v": self.predict_v}[target]
        return fn(xt, t, out, source)

    # ------------------------------------------------------------------ reverse process
    def ddpm_mean_from_eps(self, xt: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        r"""D5 (corrected, see the erratum): :math:`\mu_\theta = \frac{1}{\sqrt{1-\beta_t}}\big(x_t -
        \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\epsilon_\theta\big)`. Equal to :meth:`q_posterior`'s mean
        with x_0 predicted from eps."""
        beta = self.gather(self.betas, t, xt)
        return (xt - beta / self.gather(self.sqrt_one_minus_alphas_cumprod, t, xt) * eps) / self.gather(
            self.alphas.sqrt(), t, xt
        )

    def learned_log_variance(self, t, var_values: torch.Tensor) -> torch.Tensor:
        r"""D6: :math:`\log\Sigma_\theta = v\log\beta_t + (1-v)\log\tilde\beta_t` with the network's raw
        output in [-1, 1] mapped to :math:`v = (\text{raw}+1)/2` (improved DDPM's "learned range");
        :math:`\log\tilde\beta_t` is clipped at t = 0."""
        frac = (var_values + 1) / 2
        max_log = self.gather(torch.log(self.betas), t, var_values)
        min_log = self.gather(self.posterior_log_variance_clipped, t, var_values)
        return frac * max_log + (1 - frac) * min_log

    def p_mean_variance(
        self,
        xt: torch.Tensor,
        t,
        out: torch.Tensor,
        prediction: str = "eps",
        variance: str = "beta",
        clip_x0: float | None = None,
    ) -> dict[str, torch.Tensor]:
        r"""The reverse step p(x_{t-1} | x_t) = N(mean, exp(log_variance)) (D5, D6).

        The mean is the posterior mean with :math:`\hat x_0` plugged in, which for eps-prediction is exactly
        D5's corrected formula. ``variance``: "beta" (:math:`\sigma_t^2 = \beta_t`, D5), "posterior"
        (:math:`\tilde\beta_t`) or "learned" (D6; ``out`` then has twice the channels of ``xt``: the
        prediction, then the raw variance values). ``clip_x0`` clamps :math:`\hat x_0` to
        [-clip_x0, clip_x0] (pixel-space models). Returns mean, variance, log_variance and x0.
        """
        if variance not in VARIANCES:
            raise ValueError(f"variance={variance!r} is not supported; allowed: {VARIANCES}")
        if variance == "learned":
            out, var_values = split_learned_variance(out, xt)
            log_var = self.learned_log_variance(t, var_values)
        elif variance == "beta":
            log_var = self.gather(torch.log(self.betas), t, xt).expand_as(xt)
        else:
            log_var = self.gather(self.posterior_log_variance_clipped, t, xt).expand_as(xt)
        x0 = self.predict_x0(xt, t, out, prediction)
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        mean, _ = self.q_posterior(x0, xt, t)
        return {"mean": mean, "variance": log_var.exp(), "log_variance": log_var, "x0": x0}


def split_learned_variance(out: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a learned-sigma network output (B, 2C, ...) into (prediction, raw variance values), each (B, C, ...)
    (D6, L8: the output head has twice the input channels)."""
    c = x.shape[1]
    if out.ndim != x.ndim or out.shape[1] != 2 * c or out.shape[2:] != x.shape[2:] or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"a learned-variance output must have shape {(x.shape[0], 2 * c, *x.shape[2:])} for x of shape "
            f"{tuple(x.shape)}; got {tuple(out.shape)}"
        )
    return out[:, :c], out[:, c:]
