"""Timestep spacings (against diffusers) and the D9 explicit uniform sampler (stratification, uniformity,
variance reduction)."""


import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from minivid.diffusion import NoiseSchedule, explicit_uniform_timesteps, make_timesteps, uniform_timesteps


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("n", [1, 7, 20, 50, 250, 1000])
def test_spacings_match_diffusers(spacing, n):
    s = NoiseSchedule.linear()
    ref = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing, steps_offset=0)
    ref.set_timesteps(n)
    ts = make_timesteps(s, n, spacing)
    assert ts.dtype == torch.long and len(ts) == n and (ts[1:] < ts[:-1]).all()
    assert ts.tolist() == ref.timesteps.tolist()


def test_trailing_starts_at_the_last_step():
    ts = make_timesteps(NoiseSchedule.cogvideox(), 50, "trailing")
    assert ts[0] == 999 and ts[-1] == 19


@pytest.mark.parametrize("schedule", [NoiseSchedule.linear(), NoiseSchedule.cosine(), NoiseSchedule.cogvideox()])
def test_logsnr_spacing_is_uniform_in_log_snr(schedule):
    ts = make_timesteps(schedule, 20, "logsnr")
    assert len(ts) == 20 and ts[0] == 999 and ts[-1] == 0 and (ts[1:] < ts[:-1]).all()
    lam = schedule.log_snr(ts).numpy()
    steps = np.diff(lam[np.isfinite(lam)])
    # equal steps, up to the rounding to integer timesteps that matters only at the two ends of the chain
    middle = steps[4:-5]
    assert middle.std() / middle.mean() < 0.05, steps
    assert len(make_timesteps(schedule, 1000, "logsnr").unique()) == 1000


@pytest.mark.parametrize("bad", [0, 1001, 2.5, True])
def test_bad_number_of_steps(bad):
    with pytest.raises(ValueError, match=f"n={bad!r}"):
        make_timesteps(NoiseSchedule.linear(), bad)


def test_numpy_integers_are_accepted():
    s = NoiseSchedule.linear()
    torch.testing.assert_close(make_timesteps(s, np.int64(10)), make_timesteps(s, 10))
    t = explicit_uniform_timesteps(np.int64(4), np.int32(100), rank=np.int64(1), world_size=np.int64(2),
                                   generator=torch.Generator().manual_seed(0))
    assert t.shape == (4,) and t.min() >= 50
    assert uniform_timesteps(np.int64(3), np.int64(10)).shape == (3,)


def test_bad_spacing():
    with pytest.raises(ValueError, match="spacing='uniform'"):
        make_timesteps(NoiseSchedule.linear(), 10, "uniform")


def test_explicit_uniform_puts_one_sample_in_each_interval_across_ranks():
    """D9: the global batch covers [0, T) with one draw per equal interval, whatever generator each rank uses."""
    T, B, W = 1000, 8, 4
    n = B * W
    edges = np.arange(n + 1) * T / n
    for trial in range(20):
        ts = torch.cat([
            explicit_uniform_timesteps(B, T, rank=r, world_size=W, generator=torch.Generator().manual_seed(100 * trial + r))
            for r in range(W)
        ]).numpy()
        assert ts.shape == (n,) and ts.dtype == np.int64
        # global sample i lies in floor([i T/n, (i+1) T/n)), i.e. one sample per interval
        assert ((ts >= np.floor(edges[:-1])) & (ts <= np.floor(edges[1:] - 1e-9))).all(), ts


def test_explicit_uniform_is_marginally_uniform():
    """Pooling the draws of all ranks over many steps gives a uniform histogram (chi-square test)."""
    T, B, W = 50, 3, 2
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([explicit_uniform_timesteps(B, T, r, W, generator=g) for _ in range(4000) for r in range(W)])
    counts = torch.bincount(draws, minlength=T).double()
    expected = draws.numel() / T
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 90  # 49 degrees of freedom: P(chi2 > 90) < 3e-4


def test_explicit_uniform_reduces_the_variance_of_the_batch_mean():
    """The batch-mean of a loss that depends on t has a smaller variance when t is stratified."""
    T, B = 1000, 16
    loss_of_t = lambda t: torch.exp(-t.double() / 200)  # a typical decreasing per-t loss
    g = torch.Generator().manual_seed(1)
    strat = torch.stack([loss_of_t(explicit_uniform_timesteps(B, T, generator=g)).mean() for _ in range(3000)])
    iid = torch.stack([loss_of_t(uniform_timesteps(B, T, generator=g)).mean() for _ in range(3000)])
    assert abs(strat.mean() - iid.mean()) < 0.01  # both unbiased
    assert strat.var() < iid.var() / 20


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(rank=2, world_size=2), "rank=2"), (dict(world_size=0), "world_size=0"), (dict(batch_size=0), "batch_size=0")],
)
def test_explicit_uniform_bad_input(kwargs, match):
    args = dict(batch_size=4, num_steps=100)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        explicit_uniform_timesteps(**args)
