r"""Training losses: L_simple for eps / v / x0 networks (D4, D10) and the learned-variance hybrid loss
L_simple + lambda * L_vlb (D6).

All per-sample losses are means over the non-batch dimensions ("mean-flat"), as in DDPM, improved
DDPM, DiT and Latte; reduce them over the batch yourself (or use ``.mean()``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .schedule import NoiseSchedule, check_prediction, split_learned_variance


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all dimensions but the first: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def check_frame_mask(frame_mask: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """C6: a (B, T) bool mask of the real frames of video latents x0 (B, C, T, H, W), each clip with at least one."""
    if x0.ndim != 5:
        raise ValueError(f"frame_mask needs video latents (B, C, T, H, W), got x0 of shape {tuple(x0.shape)}")
    want = (x0.shape[0], x0.shape[2])
    if not isinstance(frame_mask, torch.Tensor) or tuple(frame_mask.shape) != want:
        got = tuple(frame_mask.shape) if isinstance(frame_mask, torch.Tensor) else type(frame_mask).__name__
        raise ValueError(f"frame_mask must have shape (B, T) = {want}, got {got}")
    m = frame_mask.to(device=x0.device, dtype=torch.bool)
    if not bool(m.any(dim=1).all()):
        raise ValueError("frame_mask has a clip without any real frame")
    return m


def masked_mean_flat(x: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """C6: the per-sample mean of x (B, C, T, H, W) over its real frames only (``frame_mask`` (B, T), True = real),
    so a padded clip's loss equals the unpadded clip's."""
    w = frame_mask.to(x.dtype)[:, None, :, None, None].expand_as(x)
    return (x * w).reshape(x.shape[0], -1).sum(dim=1) / w.reshape(x.shape[0], -1).sum(dim=1)


def l_simple(
    schedule: NoiseSchedule,
    model_out: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    prediction: str = "eps",
    frame_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""D4: :math:`\|\text{target} - \text{out}\|^2` per sample, target = eps, v (D10) or x0; with ``frame_mask``
    (B, T) the mean runs over the real frames only (C6, mixed image-video batches).

    For v-prediction this equals the x0 loss weighted by :math:`1/(1-\bar\alpha_t)` (how CogVideoX writes
    it, D10): :math:`\|v - \hat v\|^2 = \|x_0 - \hat x_0\|^2 / (1-\bar\alpha_t)`; see
    :func:`x0_weighted_loss` and its test.
    """
    target = schedule.target(x0, noise, t, prediction)
    if model_out.shape != target.shape:
        raise ValueError(f"model output has shape {tuple(model_out.shape)}, target {tuple(target.shape)}")
    dtype = torch.promote_types(model_out.dtype, torch.float32)  # half-precision outputs: loss in fp32
    sq = (target.to(dtype) - model_out.to(dtype)) ** 2
    if frame_mask is not None:
        return masked_mean_flat(sq, check_frame_mask(frame_mask, x0))
    return mean_flat(sq)


def x0_weighted_loss(
    schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, model_out: torch.Tensor, x0: torch.Tensor,
    prediction: str = "v",
) -> torch.Tensor:
    r"""D10 as CogVideoX writes it: :math:`\frac{1}{1-\bar\alpha_t}\|x_0 - \hat x_0\|^2` with
    :math:`\hat x_0` implied by the network output."""
    x0_hat = schedule.predict_x0(xt, t, model_out, prediction)
    w = 1.0 / schedule.gather(1 - schedule.alphas_cumprod, t, x0).reshape(-1)
    dtype = torch.promote_types(x0_hat.dtype, torch.float32)
    return w.to(dtype) * mean_flat((x0.to(dtype) - x0_hat.to(dtype)) ** 2)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    r"""KL(N(mean1, e^{logvar1}) || N(mean2, e^{logvar2})), element-wise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    r"""log P(x) for data on a grid of 256 levels in [-1, 1] under N(mean, e^{2 log_scale}): the Gaussian
    mass of the bin [x - 1/255, x + 1/255], with the two edge bins extended to -inf / +inf (DDPM's decoder
    L_0). Element-wise, in nats. Uses exact normal CDFs (``torch.special.ndtr`` / ``log_ndtr``)."""
    inv_std = torch.exp(-log_scale)
    upper = inv_std * (x - mean + 1.0 / 255)
    lower = inv_std * (x - mean - 1.0 / 255)
    log_mid = _log_ndtr_diff(lower, upper)
    log_cdf_upper = torch.special.log_ndtr(upper)  # left edge bin: P(X < x + 1/255)
    log_sf_lower = torch.special.log_ndtr(-lower)  # right edge bin: P(X > x - 1/255)
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, log_mid))


def _log_ndtr_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Phi(b) - Phi(a)) for b > a, computed in whichever tail keeps precision (by symmetry of Phi)."""
    flip = (a + b) > 0
    a, b = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log(-torch.expm1((log_a - log_b).clamp(max=-1e-30)))


def vlb_terms(
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    xt: torch.Tensor,
    t: torch.Tensor,
    pred: torch.Tensor,
    var_values: torch.Tensor,
    prediction: str = "eps",
) -> torch.Tensor:
    r"""D6, the variational bound term :math:`L_t` per sample, in bits per dimension:
    :math:`L_{t} = KL(q(x_{t-1}|x_t,x_0) \,\|\, p_\theta(x_{t-1}|x_t))` for t > 0 and the discretised
    decoder NLL :math:`-\log p_\theta(x_0|x_1)` at t = 0. The mean of p uses ``pred`` as given: detach it
    so that L_vlb trains only the variance (improved DDPM's stop-gradient)."""
    true_mean, _ = schedule.q_posterior(x0, xt, t)
    true_logvar = schedule.gather(schedule.posterior_log_variance_clipped, t, xt)
    x0_hat = schedule.predict_x0(xt, t, pred, prediction)
    model_mean, _ = schedule.q_posterior(x0_hat, xt, t)
    model_logvar = schedule.learned_log_variance(t, var_values)
    kl = mean_flat(normal_kl(true_mean, true_logvar, model_mean, model_logvar)) / math.log(2.0)
    nll = -mean_flat(discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar)) / math.log(2.0)
    return torch.where(t.to(kl.device) == 0, nll, kl)


def hybrid_loss(
    schedule: NoiseSchedule,
    model_out: torch.Tensor,
    x0: torch.Tensor,
    xt: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    prediction: str = "eps",
    vlb_weight: float = 1e-3,
) -> dict[str, torch.Tensor]:
    r"""D6: :math:`L_{hybrid} = L_{simple} + \lambda L_{vlb}` for a learned-variance network whose output
    has 2C channels (prediction, raw variance values in [-1, 1]).

    :math:`L_{vlb} = \sum_t L_t`; one sampled t estimates it without bias as :math:`T\cdot L_t`, so the
    per-sample loss is ``mse + vlb_weight * T * L_t``. With improved DDPM's :math:`\lambda = 0.001` and
    T = 1000 this is DiT's and Latte's ``mse + vb``. The mean enters L_vlb detached, so L_vlb trains only the
    variance channels. Returns per-sample ``loss``, ``mse`` and ``vlb`` (the latter in bits/dim).
    """
    check_prediction(prediction)
    pred, var_values = split_learned_variance(model_out, x0)
    mse = l_simple(schedule, pred, x0, noise, t, prediction)
    vlb = vlb_terms(schedule, x0, xt, t, pred.detach(), var_values, prediction)
    return {"loss": mse + vlb_weight * schedule.num_steps * vlb, "mse": mse, "vlb": vlb}


def training_losses(
    model: Callable[..., torch.Tensor],
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor | None = None,
    prediction: str = "eps",
    learned_variance: bool = False,
    vlb_weight: float = 1e-3,
    frame_mask: torch.Tensor | None = None,
    clean_frames: torch.Tensor | None = None,
    **model_kwargs,
) -> dict[str, torch.Tensor]:
    """One training evaluation: noise x0 to x_t (D3), run ``model(x_t, t, **model_kwargs)``, and return the
    per-sample losses: L_simple (D4 / D10) or, with ``learned_variance``, the hybrid loss (D6).

    ``frame_mask`` (B, T), for a batch of clips padded to one length (C6; :func:`minivid.data.pack_clips`): it is
    handed to the model as ``frame_mask=`` and the loss averages over the real frames only.

    ``clean_frames`` (B, T) bool, T8's image conditioning: those frames of x_t are the clean latents x0 (left
    un-noised, the model sees them as given) and they leave the loss (each clip needs at least one noised frame)."""
    if frame_mask is not None:
        frame_mask = check_frame_mask(frame_mask, x0)
        if learned_variance:
            raise ValueError("frame_mask is not supported with learned_variance=True (the hybrid loss of D6)")
        model_kwargs["frame_mask"] = frame_mask
    loss_mask = frame_mask
    if clean_frames is not None:
        want = (x0.shape[0], x0.shape[2]) if x0.ndim == 5 else None
        if want is None or not isinstance(clean_frames, torch.Tensor) or tuple(clean_frames.shape) != want \
                or clean_frames.dtype.is_floating_point:
            got = tuple(clean_frames.shape) if isinstance(clean_frames, torch.Tensor) else type(clean_frames).__name__
            raise ValueError(f"clean_frames must be a bool (B, T) mask of video latents x0 (B, C, T, H, W) (shape "
                             f"{want}), got {got} for x0 of shape {tuple(x0.shape)}")
        clean = clean_frames.to(device=x0.device, dtype=torch.bool)
        if learned_variance:
            raise ValueError("clean_frames is not supported with learned_variance=True (the hybrid loss of D6)")
        loss_mask = ~clean if loss_mask is None else loss_mask & ~clean
        if not bool(loss_mask.any(1).all()):
            raise ValueError("clean_frames leaves a clip without a noised (real) frame to learn from")
    noise = torch.randn_like(x0) if noise is None else noise
    t = t.to(x0.device)
    xt = schedule.q_sample(x0, t, noise)
    if clean_frames is not None:  # T8: the chosen frames stay clean
        xt = torch.where(clean[:, None, :, None, None], x0, xt)
    out = model(xt, t, **model_kwargs)
    if learned_variance:
        return hybrid_loss(schedule, out, x0, xt, noise, t, prediction, vlb_weight)
    mse = l_simple(schedule, out, x0, noise, t, prediction, loss_mask)
    return {"loss": mse, "mse": mse}
