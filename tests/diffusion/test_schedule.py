"""Schedules, forward process (D1-D3), posterior and parameterisations, checked against ground truth:
diffusers' schedulers (an independent implementation), exact moment recursions, Bayes' rule."""

import math

import numpy as np
import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, DDPMScheduler
from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as diffusers_rescale

from minivid.diffusion import NoiseSchedule, split_learned_variance

F64 = torch.float64


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: NoiseSchedule.linear(1000, 1e-4, 0.02), dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)),
        (
            lambda: NoiseSchedule.scaled_linear(1000, 0.00085, 0.012),
            dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        ),
        (lambda: NoiseSchedule.cosine(1000), dict(beta_schedule="squaredcos_cap_v2")),
        (lambda: NoiseSchedule.linear(50, 1e-3, 0.2), dict(num_train_timesteps=50, beta_start=1e-3, beta_end=0.2)),
    ],
)
def test_betas_match_diffusers(ours, theirs):
    ref = DDPMScheduler(**{"num_train_timesteps": 1000, **theirs})
    s = ours()
    assert s.betas.dtype == F64 and s.alphas_cumprod.dtype == F64 and s.betas.shape == (s.num_steps,)
    torch.testing.assert_close(s.betas, ref.betas.double(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(s.alphas_cumprod, ref.alphas_cumprod.double(), rtol=1e-5, atol=1e-7)


def test_zero_terminal_snr_matches_diffusers_and_keeps_the_first_step():
    s = NoiseSchedule.scaled_linear()
    z = s.rescale_zero_terminal_snr()
    assert z.alphas_cumprod[-1] == 0 and z.snr()[-1] == 0 and z.log_snr()[-1] == -math.inf
    torch.testing.assert_close(z.alphas_cumprod[0], s.alphas_cumprod[0])
    torch.testing.assert_close(z.betas, diffusers_rescale(s.betas.clone()), rtol=1e-9, atol=1e-12)
    # s is unchanged (transformations return new schedules)
    assert s.alphas_cumprod[-1] > 0


def test_snr_shift_divides_every_snr_and_cogvideox_matches_diffusers():
    s = NoiseSchedule.scaled_linear()
    shifted = s.shift_snr(3.0)
    torch.testing.assert_close(shifted.snr(), s.snr() / 3.0, rtol=1e-10, atol=0)
    ref = CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, snr_shift_scale=3.0,
        rescale_betas_zero_snr=True,
    )
    torch.testing.assert_close(NoiseSchedule.cogvideox().alphas_cumprod, ref.alphas_cumprod.double(), rtol=1e-4, atol=1e-6)


def test_q_step_is_d1_exactly_at_its_own_timestep():
    """D1 written out with the linear schedule's betas built here (np.linspace in float64), for given noise: one
    step at t uses beta_t, per batch element (an off-by-one to beta_{t+1} moves x_t by 1e-3 here and fails)."""
    s = NoiseSchedule.linear(200, 1e-4, 0.05)
    betas = torch.as_tensor(np.linspace(1e-4, 0.05, 200), dtype=F64)
    g = torch.Generator().manual_seed(3)
    x, eps = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64)
    t = torch.tensor([0, 1, 57, 198, 199])
    want = (1 - betas[t]).sqrt()[:, None] * x + betas[t].sqrt()[:, None] * eps
    torch.testing.assert_close(s.q_step(x, t, eps), want, rtol=1e-12, atol=1e-14)
    for ti in (0, 120, 199):  # a scalar timestep too
        torch.testing.assert_close(s.q_step(x, ti, eps), (1 - betas[ti]).sqrt() * x + betas[ti].sqrt() * eps,
                                   rtol=1e-12, atol=1e-14)


def test_marginal_matches_iterating_d1_exactly_and_by_monte_carlo():
    """D2 against D1: propagate mean and variance of x_t | x_0 through T single steps exactly, and by sampling."""
    s = NoiseSchedule.linear(200, 1e-4, 0.05)
    x0 = torch.tensor([0.7, -1.3], dtype=F64)
    mean, var = x0.clone(), torch.zeros(2, dtype=F64)
    for t in range(s.num_steps):
        mean = (1 - s.betas[t]).sqrt() * mean  # D1 mean
        var = (1 - s.betas[t]) * var + s.betas[t]  # D1 variance
        m2, v2 = s.q_mean_variance(x0, t)  # D2
        torch.testing.assert_close(mean, m2, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(var.expand(2), v2.expand(2), rtol=1e-12, atol=1e-14)
    # Monte Carlo: iterate q_step on 200k samples, compare with q_sample's closed form statistics
    g = torch.Generator().manual_seed(0)
    x = torch.full((200_000,), 0.7, dtype=F64)
    for t in range(120):
        x = s.q_step(x, t, torch.randn(x.shape, generator=g, dtype=F64))
    m, v = s.q_mean_variance(torch.tensor(0.7, dtype=F64), 119)
    assert abs(x.mean() - m) < 4 * math.sqrt(v / x.numel())
    assert abs(x.var() / v - 1) < 0.02
    xs = s.q_sample(torch.full((200_000,), 0.7, dtype=F64), 119, torch.randn(200_000, generator=g, dtype=F64))
    assert abs(xs.mean() - x.mean()) < 0.01 and abs(xs.var() / x.var() - 1) < 0.02


def test_posterior_is_bayes_rule():
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): compare with the product of the two Gaussians
    computed independently, and with a normalised density on a grid."""
    s = NoiseSchedule.cosine(100)
    x0, xt = torch.tensor(0.4, dtype=F64), torch.tensor(-0.9, dtype=F64)
    for t in [1, 7, 50, 99]:
        mean, var = s.q_posterior(x0, xt, t)
        a_t, b_t, ab_prev = s.alphas[t], s.betas[t], s.alphas_cumprod_prev[t]
        # product of N(x_t; sqrt(a_t) y, b_t) as a function of y, and N(y; sqrt(ab_prev) x0, 1 - ab_prev)
        prec = a_t / b_t + 1 / (1 - ab_prev)
        ref_mean = (a_t.sqrt() * xt / b_t + ab_prev.sqrt() * x0 / (1 - ab_prev)) / prec
        torch.testing.assert_close(mean, ref_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(var, 1 / prec, rtol=1e-12, atol=1e-14)
        y = torch.linspace(float(mean) - 12 * float(var) ** 0.5, float(mean) + 12 * float(var) ** 0.5, 20001, dtype=F64)
        logp = -((xt - a_t.sqrt() * y) ** 2) / (2 * b_t) - (y - ab_prev.sqrt() * x0) ** 2 / (2 * (1 - ab_prev))
        p = torch.exp(logp - logp.max())
        p = p / torch.trapezoid(p, y)
        m_grid = torch.trapezoid(p * y, y)
        v_grid = torch.trapezoid(p * (y - m_grid) ** 2, y)
        assert abs(m_grid - mean) < 1e-6 and abs(v_grid / var - 1) < 1e-5
    # at t = 0 the posterior is x_0 itself
    mean0, var0 = s.q_posterior(x0, xt, 0)
    torch.testing.assert_close(mean0, x0)
    torch.testing.assert_close(var0, torch.tensor(0.0, dtype=F64))


@pytest.mark.parametrize("schedule", [NoiseSchedule.linear(), NoiseSchedule.cosine(), NoiseSchedule.cogvideox()])
def test_parameterisation_round_trips(schedule):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(6, 3, 2, 4, 4, generator=g, dtype=F64)
    eps = torch.randn(x0.shape, generator=g, dtype=F64)
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    xt = schedule.q_sample(x0, t, eps)
    v = schedule.velocity(x0, eps, t)
    # v = alpha eps - sigma x0 (D10), and every conversion recovers the truth
    a, sg = schedule.gather(schedule.sqrt_alphas_cumprod, t, x0), schedule.gather(schedule.sqrt_one_minus_alphas_cumprod, t, x0)
    torch.testing.assert_close(v, a * eps - sg * x0)
    truth = {"eps": eps, "x0": x0, "v": v}
    for src, out in truth.items():
        for dst in truth:
            if src == "eps" and dst != "eps" and schedule.alphas_cumprod[-1] == 0:
                continue  # eps cannot give x0 at alpha_bar = 0 (tested below)
            torch.testing.assert_close(schedule.convert(xt, t, out, src, dst), truth[dst], rtol=1e-9, atol=1e-9)


def test_eps_at_zero_terminal_snr_is_a_clear_error():
    s = NoiseSchedule.cogvideox()
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="alpha_bar_t = 0"):
        s.predict_x0(x, torch.tensor([999]), x, "eps")
    assert torch.isfinite(s.predict_x0(x, torch.tensor([999]), x, "v")).all()


def test_d5_mean_equals_posterior_mean_with_predicted_x0():
    s = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(2)
    xt, eps = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64)
    t = torch.tensor([1, 5, 100, 700, 999])
    d5 = s.ddpm_mean_from_eps(xt, t, eps)
    via_posterior = s.p_mean_variance(xt, t, eps, "eps", "beta")["mean"]
    torch.testing.assert_close(d5, via_posterior, rtol=1e-10, atol=1e-10)


def test_learned_variance_interpolates_between_beta_tilde_and_beta():
    s = NoiseSchedule.linear()
    t = torch.tensor([3, 400])
    x = torch.zeros(2, 1)
    lo = s.learned_log_variance(t, -torch.ones(2, 1, dtype=F64))
    hi = s.learned_log_variance(t, torch.ones(2, 1, dtype=F64))
    mid = s.learned_log_variance(t, torch.zeros(2, 1, dtype=F64))
    torch.testing.assert_close(lo.flatten(), s.posterior_variance[t].log())
    torch.testing.assert_close(hi.flatten(), s.betas[t].log())
    torch.testing.assert_close(mid, (lo + hi) / 2)
    out = torch.cat([x, torch.ones(2, 1)], 1)
    p = s.p_mean_variance(x, t, out, variance="learned")
    torch.testing.assert_close(p["variance"].flatten().double(), s.betas[t], rtol=1e-6, atol=0)


def test_respace_keeps_alpha_bar_at_kept_steps():
    s = NoiseSchedule.linear()
    keep = [999, 600, 250, 3, 0]
    r = s.respace(keep)
    torch.testing.assert_close(r.alphas_cumprod, s.alphas_cumprod[sorted(keep)])
    assert r.num_steps == 5


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: NoiseSchedule.linear(num_steps=1), "num_steps=1"),
        (lambda: NoiseSchedule.linear(beta_end=1.5), "beta_end=1.5"),
        (lambda: NoiseSchedule([0.1, -0.2]), "betas must lie"),
        (lambda: NoiseSchedule.linear(10).shift_snr(0), "scale=0"),
        (lambda: NoiseSchedule.linear(10).q_sample(torch.zeros(2), torch.tensor([0, 10])), "0..9"),
        (lambda: NoiseSchedule.linear(10).q_sample(torch.zeros(2), torch.tensor([0.5, 1.0])), "integers"),
        (lambda: NoiseSchedule.linear(10).predict_x0(torch.zeros(2, 1), 0, torch.zeros(2, 1), "score"), "prediction='score'"),
        (lambda: split_learned_variance(torch.zeros(2, 3, 4), torch.zeros(2, 2, 4)), "learned-variance"),
        (lambda: NoiseSchedule.linear(10).p_mean_variance(torch.zeros(1, 1), 0, torch.zeros(1, 1), variance="big"), "variance='big'"),
        (lambda: NoiseSchedule.linear(10, 0.02, 1e-4), r"beta_start=0.02 must be <= beta_end=0.0001 .*swapped"),
        (lambda: NoiseSchedule.scaled_linear(10, 0.012, 0.00085), r"beta_start=0.012 must be <= beta_end=0.00085"),
        (lambda: NoiseSchedule.linear(10).q_sample(torch.zeros(4, 3), torch.tensor([0, 1])),
         r"t must have shape \(\) or \(B,\)=\(4,\) .*got \(2,\)"),
        (lambda: NoiseSchedule.linear(10).q_sample(torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.long)),
         r"t must have shape \(\) or \(B,\)=\(4,\) .*got \(4, 1\)"),
        (lambda: NoiseSchedule.linear(np.float64(10)), r"num_steps=np.float64\(10.0\) is invalid: expected an integer >= 2"),
    ],
)
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_numpy_integers_are_integers_and_t_may_be_shared_by_the_batch():
    s = NoiseSchedule.linear(np.int64(10))
    assert s.num_steps == 10 and NoiseSchedule.cosine(np.int32(10)).num_steps == 10
    assert NoiseSchedule.scaled_linear(np.int64(10)).num_steps == 10
    x0, noise = torch.ones(4, 3), torch.zeros(4, 3)
    expected = s.sqrt_alphas_cumprod[5].float() * x0
    for t in (5, torch.tensor(5), torch.tensor([5]), torch.full((4,), 5)):  # (), (1,) and (B,) all broadcast
        torch.testing.assert_close(s.q_sample(x0, t, noise), expected)
