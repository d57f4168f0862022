"""Samplers D5, D7, D8, measured against exact answers: the Gaussian oracle (optimal denoiser and exact
probability-flow map in closed form) and diffusers' schedulers."""


import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from minivid.diffusion import (
    GaussianOracle,
    NoiseSchedule,
    ddim_sample,
    ddpm_sample,
    dpm_solver_pp_sample,
    make_timesteps,
)

F64 = torch.float64
MU, SD = 0.5, 0.3


def rms(a, b):
    return (a - b).pow(2).mean().sqrt().item()


@pytest.fixture(scope="module")
def setup():
    s = NoiseSchedule.linear()
    x_T = torch.randn(4000, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    return s, GaussianOracle(s, MU, SD), x_T


def ode_error(sampler, s, oracle, x_T, n, spacing, **kw):
    ts = make_timesteps(s, n, spacing)
    exact = oracle.flow_map(x_T, float(s.alphas_cumprod[ts[0]]))
    return rms(sampler(oracle, x_T, s, ts, **kw), exact)


def test_dpm_solver_pp_is_far_more_accurate_than_ddim_at_20_steps(setup):
    s, oracle, x_T = setup
    e_ddim = ode_error(ddim_sample, s, oracle, x_T, 20, "logsnr")
    e_dpm = ode_error(dpm_solver_pp_sample, s, oracle, x_T, 20, "logsnr")
    assert e_dpm < e_ddim / 5, (e_dpm, e_ddim)  # measured: 4.3e-3 vs 3.6e-2


def test_convergence_orders(setup):
    """DDIM is a first-order ODE solver, DPM-Solver++(2M) second order: doubling the steps halves the
    error of one and quarters the other's (in the asymptotic regime)."""
    s, oracle, x_T = setup
    d = [ode_error(ddim_sample, s, oracle, x_T, n, "linspace") for n in (160, 320)]
    p = [ode_error(dpm_solver_pp_sample, s, oracle, x_T, n, "linspace") for n in (160, 320)]
    assert 1.8 < d[0] / d[1] < 2.2, d
    assert p[0] / p[1] > 3.5, p


def test_dpm_solver_first_order_is_ddim(setup):
    s, oracle, x_T = setup
    ts = make_timesteps(s, 15, "logsnr")
    torch.testing.assert_close(dpm_solver_pp_sample(oracle, x_T, s, ts, order=1), ddim_sample(oracle, x_T, s, ts))


def test_ddim_matches_diffusers(setup):
    s, oracle, x_T = setup
    ref = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=True, steps_offset=0)
    ref.set_timesteps(25)
    x = x_T.clone()
    for t in ref.timesteps:
        x = ref.step(oracle(x, torch.full((x.shape[0],), int(t))), t, x, eta=0.0).prev_sample
    ours = ddim_sample(oracle, x_T, s, make_timesteps(s, 25, "leading"))
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)  # diffusers keeps its schedule in float32


@pytest.mark.parametrize("spacing", ["logsnr", "linspace"])
def test_dpm_solver_pp_matches_diffusers(setup, spacing):
    s, oracle, x_T = setup
    ts = make_timesteps(s, 20, spacing)
    ref = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
    )
    ref.set_timesteps(timesteps=ts.tolist())
    x = x_T.clone()
    for t in ref.timesteps:
        x = ref.step(oracle(x, torch.full((x.shape[0],), int(t))), t, x).prev_sample
    # diffusers keeps its schedule in float32; linspace's large step ratios amplify that to ~1e-5
    torch.testing.assert_close(dpm_solver_pp_sample(oracle, x_T, s, ts), x, rtol=0, atol=5e-5)


def test_v_prediction_with_zero_terminal_snr():
    """D10: CogVideoX's schedule starts from pure noise (alpha_bar = 0), which a v model can denoise and an
    eps model cannot. With a v oracle the samplers are exact up to discretisation; the last step jumps from
    t = 0 (alpha_bar = 0.9975 here) to the clean data, which leaves a floor of about 4e-3."""
    s = NoiseSchedule.cogvideox()
    oracle = GaussianOracle(s, MU, SD, prediction="v")
    x_T = torch.randn(4000, 1, dtype=F64, generator=torch.Generator().manual_seed(5))
    exact = oracle.flow_map(x_T, 0.0)  # from pure noise
    assert abs(exact.std() - SD) < 0.02
    ts = make_timesteps(s, 25, "logsnr")
    e_dpm = rms(dpm_solver_pp_sample(oracle, x_T, s, ts, prediction="v"), exact)
    e_ddim = rms(ddim_sample(oracle, x_T, s, ts, prediction="v"), exact)
    assert e_dpm < 0.005 and e_dpm < e_ddim / 5, (e_dpm, e_ddim)  # measured 2.4e-3 vs 3.6e-2
    # trailing spacing (CogVideoX's) ends at t = 19: its final x0 jump dominates, but it still converges
    errs = [rms(ddim_sample(oracle, x_T, s, make_timesteps(s, n, "trailing"), prediction="v"), exact) for n in (25, 100)]
    assert errs[1] < errs[0] / 2, errs
    with pytest.raises(ValueError, match="zero terminal SNR"):
        ddim_sample(GaussianOracle(s, MU, SD), x_T, s, make_timesteps(s, 10, "trailing"))


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_ddpm_with_the_oracle_samples_the_data_distribution(variance):
    """D5: ancestral sampling with the exact eps ends in N(mu, s^2) (and the review's mean does not)."""
    s = NoiseSchedule.linear()
    oracle = GaussianOracle(s, MU, SD)
    x_T = torch.randn(8000, 1, dtype=F64, generator=torch.Generator().manual_seed(1))
    x0 = ddpm_sample(oracle, x_T, s, generator=torch.Generator().manual_seed(2), variance=variance)
    assert abs(x0.mean() - MU) < 0.012 and abs(x0.std() / SD - 1) < 0.03  # 3.5 and 4 standard errors


def test_d5_erratum_numerically():
    """The exact reverse mean E[x_{t-1} | x_t] for Gaussian data is the posterior mean with E[x0|x_t]; D5's
    corrected formula equals it, the review's (without 1/sqrt(alpha_t)) does not."""
    s = NoiseSchedule.linear()
    oracle = GaussianOracle(s, MU, SD)
    g = torch.Generator().manual_seed(3)
    t = torch.full((1000,), 500)
    xt = oracle.marginal(500)[0] + oracle.marginal(500)[1] * torch.randn(1000, 1, generator=g, dtype=F64)
    eps = oracle(xt, t)
    x0_hat = GaussianOracle(s, MU, SD, prediction="x0")(xt, t)
    exact, _ = s.q_posterior(x0_hat, xt, t)
    correct = s.ddpm_mean_from_eps(xt, t, eps)
    beta, ab = s.betas[500], s.alphas_cumprod[500]
    review = xt - beta / (1 - ab).sqrt() * eps
    torch.testing.assert_close(correct, exact, rtol=1e-10, atol=1e-12)
    assert rms(review, exact) > 1e-3 and rms(review, exact) > 1e6 * rms(correct, exact)


def test_ddim_with_eta_one_has_the_posterior_variance():
    """D7: for consecutive steps, DDIM's sigma at eta = 1 is sqrt(beta_tilde_t): same noise -> same sample as
    DDPM with variance='posterior'."""
    s = NoiseSchedule.linear(50, 1e-3, 0.2)
    oracle = GaussianOracle(s, MU, SD)
    x_T = torch.randn(100, 1, dtype=F64, generator=torch.Generator().manual_seed(4))
    a = ddim_sample(oracle, x_T, s, torch.arange(49, -1, -1), eta=1.0, generator=torch.Generator().manual_seed(9))
    b = ddpm_sample(oracle, x_T, s, generator=torch.Generator().manual_seed(9), variance="posterior")
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_stochastic_ddim_on_strided_timesteps_matches_diffusers(setup, eta):
    """D7's sigma on 25 of 1000 steps (40 apart, where 1 - alpha_bar_t / alpha_bar_prev is far from beta_t): the same
    noise gives diffusers' DDIMScheduler.step(eta, variance_noise=z) trajectory."""
    s, oracle, x_T = setup
    ref = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=True, steps_offset=0)
    ref.set_timesteps(25)
    g = torch.Generator().manual_seed(21)
    x = x_T.clone()
    for i, t in enumerate(ref.timesteps):
        last = i == len(ref.timesteps) - 1  # the step to alpha_bar = 1 has sigma 0 and draws no noise
        z = torch.zeros_like(x) if last else torch.randn(x.shape, generator=g, dtype=x.dtype)
        x = ref.step(oracle(x, torch.full((x.shape[0],), int(t))), t, x, eta=eta, variance_noise=z).prev_sample
    ours = ddim_sample(oracle, x_T, s, make_timesteps(s, 25, "leading"), eta=eta,
                       generator=torch.Generator().manual_seed(21))
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-4)  # diffusers keeps its schedule in float32


def test_ddpm_learned_variance_limits_and_respacing():
    """D6: raw variance +1 is sigma^2 = beta, -1 is beta_tilde; a respaced 250-step run still samples the data."""
    s = NoiseSchedule.linear()
    base = GaussianOracle(s, MU, SD)
    x_T = torch.randn(8000, 1, dtype=F64, generator=torch.Generator().manual_seed(6))

    def with_var(raw):
        return lambda x, t: torch.cat([base(x, t), torch.full_like(x, raw)], 1)

    for raw, fixed in [(1.0, "beta"), (-1.0, "posterior")]:
        a = ddpm_sample(with_var(raw), x_T, s, generator=torch.Generator().manual_seed(7), variance="learned")
        b = ddpm_sample(base, x_T, s, generator=torch.Generator().manual_seed(7), variance=fixed)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    x0 = ddpm_sample(with_var(0.0), x_T, s, timesteps=make_timesteps(s, 250), generator=torch.Generator().manual_seed(8), variance="learned")
    assert abs(x0.mean() - MU) < 0.012 and abs(x0.std() / SD - 1) < 0.03  # 3.5 and 4 standard errors


def test_samplers_reject_bad_timesteps():
    s = NoiseSchedule.linear(100)
    oracle = GaussianOracle(s)
    x = torch.zeros(2, 1)
    with pytest.raises(ValueError, match="descending"):
        ddim_sample(oracle, x, s, torch.tensor([0, 50]))
    with pytest.raises(ValueError, match="0..99"):
        dpm_solver_pp_sample(oracle, x, s, torch.tensor([100, 50]))
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(oracle, x, s, torch.tensor([50, 0]), eta=-1)
    # a step count where the timesteps belong: one step from t = 50 would run without complaint
    with pytest.raises(ValueError, match=r"timesteps=50 is a single number.*make_timesteps\(schedule, 50\)"):
        ddim_sample(oracle, x, s, 50)
    with pytest.raises(ValueError, match="timesteps=25 is a single number"):
        dpm_solver_pp_sample(oracle, x, s, torch.tensor(25))
    with pytest.raises(ValueError, match=r"timesteps=\[25\] has 1 value.*at least 2"):
        ddpm_sample(oracle, x, s, timesteps=[25])
    assert ddim_sample(oracle, x, s, [50]).shape == x.shape  # a one-element list is a valid one-step DDIM


def test_a_cpu_generator_makes_sampling_reproducible():
    s = NoiseSchedule.linear(100)
    oracle = GaussianOracle(s, MU, SD)
    x_T = torch.randn(10, 3)
    a = ddim_sample(oracle, x_T, s, make_timesteps(s, 10), eta=1.0, generator=torch.Generator().manual_seed(0))
    b = ddim_sample(oracle, x_T, s, make_timesteps(s, 10), eta=1.0, generator=torch.Generator().manual_seed(0))
    c = ddim_sample(oracle, x_T, s, make_timesteps(s, 10), eta=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_clip_x0_keeps_the_prediction_in_range():
    s = NoiseSchedule.linear(100)
    oracle = GaussianOracle(s, 3.0, 0.1)  # data far outside [-1, 1]
    x = ddim_sample(oracle, torch.randn(50, 1), s, make_timesteps(s, 10), clip_x0=1.0)
    assert x.abs().max() <= 1.0 + 1e-6


class _WithVarianceChannels(torch.nn.Module):
    """A learned-variance network (Latte, improved DDPM): the oracle's eps and C more channels of raw variance."""

    def __init__(self, oracle):
        super().__init__()
        self.oracle = oracle

    def forward(self, x, t):
        raw = torch.sin(3 * x + t[:, None].to(x) / 100)  # any values in [-1, 1]
        return torch.cat([self.oracle(x, t), raw], dim=1)


def test_samplers_read_the_mean_channels_of_a_learned_variance_output(setup):
    """D6 at sampling time: DDIM and DPM-Solver++ use the first C channels of a 2C-channel output (the variance
    channels do not move the sample), and DDPM with a fixed variance ignores them while variance='learned' uses
    them."""
    s, oracle, x_T = setup
    model = _WithVarianceChannels(oracle)
    ts = make_timesteps(s, 10, "logsnr")
    torch.testing.assert_close(ddim_sample(model, x_T, s, ts), ddim_sample(oracle, x_T, s, ts), rtol=0, atol=0)
    torch.testing.assert_close(dpm_solver_pp_sample(model, x_T, s, ts), dpm_solver_pp_sample(oracle, x_T, s, ts),
                               rtol=0, atol=0)
    small = x_T[:50]
    fixed = ddpm_sample(model, small, s, generator=torch.Generator().manual_seed(2), timesteps=ts)
    torch.testing.assert_close(fixed, ddpm_sample(oracle, small, s, generator=torch.Generator().manual_seed(2),
                                                  timesteps=ts), rtol=0, atol=0)
    learned = ddpm_sample(model, small, s, generator=torch.Generator().manual_seed(2), timesteps=ts,
                          variance="learned")
    assert (learned - fixed).abs().max() > 1e-3


def test_clip_x0_clamps_the_predicted_data_before_the_posterior_mean(setup):
    """D5 with clip_x0 (DDPM's x0 clipping): p's x0 is the prediction clamped to [-c, c] and its mean is q's
    posterior mean at that clamped x0."""
    s, _, _ = setup
    g = torch.Generator().manual_seed(6)
    xt, out = torch.randn(6, 3, generator=g, dtype=F64) * 3, torch.randn(6, 3, generator=g, dtype=F64)
    t = torch.tensor([1, 10, 100, 400, 700, 999])
    p = s.p_mean_variance(xt, t, out, clip_x0=0.5)
    x0 = s.predict_x0(xt, t, out, "eps")
    assert (x0.abs() > 0.5).any()  # the clamp has work to do
    torch.testing.assert_close(p["x0"], x0.clamp(-0.5, 0.5))
    torch.testing.assert_close(p["mean"], s.q_posterior(x0.clamp(-0.5, 0.5), xt, t)[0])
