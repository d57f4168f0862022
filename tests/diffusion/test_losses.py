"""Losses D4, D6, D10 against closed forms and independent implementations (torch.distributions, scipy)."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from minivid.diffusion import (
    GaussianOracle,
    NoiseSchedule,
    discretized_gaussian_log_likelihood,
    hybrid_loss,
    l_simple,
    masked_mean_flat,
    normal_kl,
    training_losses,
    vlb_terms,
    x0_weighted_loss,
)

F64 = torch.float64


def test_l_simple_of_the_optimal_denoiser_is_its_closed_form_mmse():
    """D4 with the Bayes-optimal eps predictor for x0 ~ N(mu, s^2): E||eps - E[eps|x_t]||^2 =
    alpha^2 s^2 / (alpha^2 s^2 + sigma^2) per element."""
    s = NoiseSchedule.linear()
    mu, sd = 0.3, 0.5
    oracle = GaussianOracle(s, mu, sd)
    g = torch.Generator().manual_seed(0)
    for t in [10, 300, 900]:
        x0 = oracle.sample_x0((400, 64), g)
        noise = torch.randn(x0.shape, generator=g, dtype=F64)
        tt = torch.full((400,), t)
        loss = l_simple(s, oracle(s.q_sample(x0, tt, noise), tt), x0, noise, tt).mean()
        ab = s.alphas_cumprod[t]
        expected = ab * sd**2 / (ab * sd**2 + 1 - ab)
        assert abs(loss / expected - 1) < 0.02, (t, float(loss), float(expected))


def test_v_loss_equals_x0_loss_weighted_by_one_over_one_minus_alpha_bar():
    """D10: ||v - v_hat||^2 = ||x0 - x0_hat||^2 / (1 - alpha_bar) (CogVideoX's way of writing its loss)."""
    s = NoiseSchedule.cogvideox()
    g = torch.Generator().manual_seed(1)
    x0, noise, out = (torch.randn(4, 2, 3, 5, generator=g, dtype=F64) for _ in range(3))
    t = torch.tensor([0, 10, 500, 999])
    xt = s.q_sample(x0, t, noise)
    torch.testing.assert_close(l_simple(s, out, x0, noise, t, "v"), x0_weighted_loss(s, xt, t, out, x0, "v"))


def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(2)
    m1, m2 = torch.randn(100, generator=g, dtype=F64), torch.randn(100, generator=g, dtype=F64)
    lv1, lv2 = torch.randn(100, generator=g, dtype=F64), torch.randn(100, generator=g, dtype=F64)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, (0.5 * lv1).exp()), torch.distributions.Normal(m2, (0.5 * lv2).exp())
    )
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), ref)


def test_discretized_likelihood_matches_scipy_and_sums_to_one():
    bins = torch.linspace(-1, 1, 256, dtype=F64)
    for mean, scale in [(0.1, 0.05), (-0.95, 0.01), (0.99, 0.2), (0.3, 1e-3), (0.0, 3.0)]:
        logp = discretized_gaussian_log_likelihood(bins, torch.tensor(mean, dtype=F64), torch.tensor(math.log(scale), dtype=F64))
        # probabilities over the 256 levels form a distribution
        assert abs(logp.exp().sum() - 1) < 1e-9
        x = bins.numpy()
        # reference bin masses, each computed in the tail where it is accurate (no cancellation)
        upper = np.where(x > mean, norm.sf(x - 1 / 255, mean, scale) - norm.sf(x + 1 / 255, mean, scale), 0.0)
        lower = norm.cdf(x + 1 / 255, mean, scale) - norm.cdf(x - 1 / 255, mean, scale)
        ref = np.where(x > mean, upper, lower)
        ref[0] = norm.cdf(x[0] + 1 / 255, mean, scale)
        ref[-1] = norm.sf(x[-1] - 1 / 255, mean, scale)
        big = ref > 1e-300
        torch.testing.assert_close(logp[torch.from_numpy(big)], torch.log(torch.from_numpy(ref[big])), rtol=1e-7, atol=1e-9)


def test_vlb_is_zero_for_the_true_reverse_step_and_positive_otherwise():
    """L_t = KL(q(x_{t-1}|x_t,x_0) || p): zero when p's mean uses the true x0 and its variance is beta_tilde."""
    s = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(3, 4, generator=g, dtype=F64), torch.randn(3, 4, generator=g, dtype=F64)
    t = torch.tensor([5, 200, 999])
    xt = s.q_sample(x0, t, noise)
    at_truth = vlb_terms(s, x0, xt, t, noise, -torch.ones_like(x0))  # raw -1 -> beta_tilde
    torch.testing.assert_close(at_truth, torch.zeros(3, dtype=F64), atol=1e-12, rtol=0)
    assert (vlb_terms(s, x0, xt, t, noise + 0.1, -torch.ones_like(x0)) > 0).all()
    assert (vlb_terms(s, x0, xt, t, noise, torch.ones_like(x0)) > 0).all()


def test_vlb_terms_equal_a_float64_reference_written_from_the_papers():
    """D6 against a reference built here from the betas alone (numpy): for t > 0, KL(q(x_{t-1}|x_t,x_0) || p) from
    torch.distributions in bits per dimension; at t = 0, -log of p's Gaussian mass on x0's 1/127.5-wide bin (scipy's
    normal CDF, edge bins open) in bits. p's mean is the posterior mean at the predicted x0 (eps prediction) and its
    log-variance v log beta_t + (1 - v) log beta_tilde_t, v = (raw + 1) / 2, beta_tilde_0's log clipped to
    beta_tilde_1's. A KL in the other direction, nats for bits, or the variance for the scale at t = 0 fails."""
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - betas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    beta_tilde = betas * (1 - ab_prev) / (1 - ab)
    log_beta_tilde = np.log(np.concatenate([[beta_tilde[1]], beta_tilde[1:]]))

    s = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(11)
    t = torch.tensor([0, 0, 1, 37, 500, 999])
    x0 = torch.randint(0, 256, (6, 5), generator=g).double() / 127.5 - 1  # data on the 256-level grid
    x0[0, 0], x0[1, 1] = -1.0, 1.0  # the two open edge bins
    noise, pred = torch.randn(6, 5, generator=g, dtype=F64), torch.randn(6, 5, generator=g, dtype=F64)
    raw = torch.rand(6, 5, generator=g, dtype=F64) * 2 - 1
    xt = s.q_sample(x0, t, noise)
    got = vlb_terms(s, x0, xt, t, pred, raw)

    def posterior_mean(x_start, x_t, i):
        c1 = betas[i] * np.sqrt(ab_prev[i]) / (1 - ab[i])
        c2 = (1 - ab_prev[i]) * np.sqrt(1 - betas[i]) / (1 - ab[i])
        return c1 * x_start + c2 * x_t

    for row, i in enumerate(t.tolist()):
        x_t = xt[row].numpy()
        x0_hat = (x_t - np.sqrt(1 - ab[i]) * pred[row].numpy()) / np.sqrt(ab[i])
        model_mean = posterior_mean(x0_hat, x_t, i)
        v = (raw[row].numpy() + 1) / 2
        model_logvar = v * np.log(betas[i]) + (1 - v) * log_beta_tilde[i]
        if i > 0:
            q = torch.distributions.Normal(torch.from_numpy(posterior_mean(x0[row].numpy(), x_t, i)),
                                           math.sqrt(beta_tilde[i]))
            p = torch.distributions.Normal(torch.from_numpy(model_mean), torch.from_numpy(np.exp(0.5 * model_logvar)))
            want = float(torch.distributions.kl_divergence(q, p).mean()) / math.log(2)
        else:
            x, scale = x0[row].numpy(), np.exp(0.5 * model_logvar)
            mass = norm.cdf(x + 1 / 255, model_mean, scale) - norm.cdf(x - 1 / 255, model_mean, scale)
            mass = np.where(x < -0.999, norm.cdf(x + 1 / 255, model_mean, scale), mass)
            mass = np.where(x > 0.999, norm.sf(x - 1 / 255, model_mean, scale), mass)
            want = -np.log(mass).mean() / math.log(2)
        assert float(got[row]) == pytest.approx(want, rel=1e-9), (i, float(got[row]), want)


def test_hybrid_loss_trains_the_mean_with_l_simple_only():
    """D6: L_vlb sees the mean detached, so the eps channels' gradient comes from L_simple alone, and the
    variance channels' only from L_vlb; the weight is lambda * T."""
    s = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(4)
    x0, noise = torch.randn(4, 3, 8, generator=g), torch.randn(4, 3, 8, generator=g)
    t = torch.tensor([0, 3, 400, 999])
    xt = s.q_sample(x0, t, noise)
    out = torch.randn(4, 6, 8, generator=g, requires_grad=True)
    terms = hybrid_loss(s, out, x0, xt, noise, t)
    torch.testing.assert_close(terms["loss"], terms["mse"] + 1e-3 * 1000 * terms["vlb"])
    (grad_mse,) = torch.autograd.grad(terms["mse"].sum(), out, retain_graph=True)
    (grad_all,) = torch.autograd.grad(terms["loss"].sum(), out)
    torch.testing.assert_close(grad_all[:, :3], grad_mse[:, :3])
    assert grad_mse[:, 3:].abs().max() == 0 and grad_all[:, 3:].abs().max() > 0


def test_training_losses_runs_a_model_and_reports_per_sample_losses():
    s = NoiseSchedule.linear(100)
    oracle = GaussianOracle(s, 0.0, 1.0, prediction="v")
    x0 = torch.randn(8, 2, 3, 4, 4, dtype=F64)
    t = torch.randint(0, 100, (8,))
    out = training_losses(oracle, s, x0, t, prediction="v")
    assert out["loss"].shape == (8,)
    with pytest.raises(ValueError, match="learned-variance"):
        training_losses(oracle, s, x0, t, learned_variance=True)


def test_frame_masked_loss_equals_the_loss_of_the_unpadded_clip():
    """C6: with a frame mask, a clip padded at the end has exactly the loss of the clip alone, and the padded frames'
    values (prediction and target) do not enter; the mask reaches the model."""
    s = NoiseSchedule.cogvideox(1000)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 5, 4, 4, generator=g), torch.randn(2, 3, 5, 4, 4, generator=g)
    out = torch.randn(2, 3, 5, 4, 4, generator=g)
    t = torch.tensor([10, 900])
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    masked = l_simple(s, out, x0, noise, t, "v", frame_mask=mask)
    alone = l_simple(s, out[:1, :, :2], x0[:1, :, :2], noise[:1, :, :2], t[:1], "v")
    assert torch.allclose(masked[0], alone[0], rtol=1e-6) and torch.allclose(masked[1], l_simple(s, out, x0, noise, t,
                                                                                                  "v")[1])
    out2 = out.clone()
    out2[0, :, 2:] += 5.0
    assert torch.equal(l_simple(s, out2, x0, noise, t, "v", frame_mask=mask), masked)
    assert masked_mean_flat(torch.ones(2, 3, 5, 4, 4), mask).tolist() == [1.0, 1.0]
    seen = {}

    def model(xt, t_, frame_mask=None):
        seen["mask"] = frame_mask
        return torch.zeros_like(xt)

    training_losses(model, s, x0, t, noise, prediction="v", frame_mask=mask)
    assert torch.equal(seen["mask"], mask)
    with pytest.raises(ValueError, match=r"frame_mask must have shape \(B, T\) = \(2, 5\)"):
        training_losses(model, s, x0, t, noise, prediction="v", frame_mask=mask[:, :4])
    with pytest.raises(ValueError, match="without any real frame"):
        l_simple(s, out, x0, noise, t, "v", frame_mask=torch.zeros(2, 5, dtype=torch.bool))
