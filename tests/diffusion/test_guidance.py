"""Classifier-free guidance: the condition dropped in training (its coins, the null it puts in) and the guided
combination of the two passes in sampling."""

import math

import pytest
import torch

from minivid.diffusion import classifier_free_guidance, drop_condition, nested_guidance


def test_drop_condition_keeps_each_sample_whole_with_probability_keep_prob():
    c = torch.ones(2000, 3, 5)
    g = torch.Generator().manual_seed(0)
    out = drop_condition(c, 0.25, g)
    kept = out.flatten(1).amax(1)
    assert set(kept.unique().tolist()) <= {0.0, 1.0}
    assert bool((out.flatten(1).amin(1) == kept).all())  # a sample is kept or zeroed whole
    assert abs(kept.mean().item() - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 2000)  # binomial, 4 standard deviations
    assert torch.equal(drop_condition(c, 1.0, g), c) and drop_condition(c, 0.0, g).abs().max() == 0
    for bad in (-0.1, 1.5, True, float("nan")):
        with pytest.raises(ValueError, match="keep_prob=.* expected a number >= 0.0 and <= 1.0"):
            drop_condition(c, bad)


def test_drop_condition_puts_the_given_null_where_it_drops():
    """A learned null embedding (one sample's shape) replaces the dropped rows; the coins are the same as with the
    zero null for the same generator state."""
    c = torch.randn(500, 4, 3)
    null = torch.full((4, 3), 7.0)
    a = drop_condition(c, 0.5, torch.Generator().manual_seed(3), null=null)
    b = drop_condition(c, 0.5, torch.Generator().manual_seed(3))
    dropped = (b == 0).flatten(1).all(1)
    assert 0 < dropped.sum() < 500
    assert torch.equal(a[dropped], null.expand(int(dropped.sum()), 4, 3))
    assert torch.equal(a[~dropped], c[~dropped])


def test_classifier_free_guidance_combines_the_two_passes():
    """out = u + w (c - u) on the guided channels; w = 1 gives the conditional model, w = 0 the
    unconditional; extra (variance) channels come from the conditional pass; conditions stay with their rows."""
    calls = []

    def model(x, t, cond):
        calls.append(x.shape[0])
        # per-row output depending on the row's own condition: 2C channels (C guided + C variance)
        return torch.cat([x * cond[:, None], x + cond[:, None]], 1)

    x, t = torch.randn(3, 2), torch.zeros(3, dtype=torch.long)
    c, u = torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3)
    for w in [0.0, 1.0, 4.5]:
        out = classifier_free_guidance(model, c, u, w)(x, t)
        torch.testing.assert_close(out[:, :2], x * 0 + w * (x * c[:, None] - 0))
        torch.testing.assert_close(out[:, 2:], x + c[:, None])
    assert calls == [6, 6, 6]  # one batched pass of 2B per call

    def model_kw(x, t, text, mask):
        return x * (text * mask).sum(1, keepdim=True)

    out = classifier_free_guidance(model_kw, {"text": torch.ones(3, 4), "mask": torch.ones(3, 4)},
                                   {"text": torch.zeros(3, 4), "mask": torch.ones(3, 4)}, 2.0)(x, t)
    torch.testing.assert_close(out, 2.0 * 4 * x)


def _constant_branches(values, calls):
    def make(k, v):
        def fn(x, t):
            calls.append(k)
            return torch.full_like(x, v)
        return fn
    return [make(k, v) for k, v in enumerate(values)]


def test_nested_guidance_is_the_telescoped_sum_and_skips_cancelled_branches():
    """e = e_0 + sum_k s_k (e_k - e_{k-1}); branches whose coefficient is zero are not run."""
    x, t = torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)
    e = [0.5, -1.25, 2.0, 3.5]
    for scales in ([2.0, 4.0, 1.5], [1.0, 1.0, 1.0], [3.0, 3.0, 3.0], [0.0, 0.0, 0.0], [1.0, 4.0, 4.0]):
        calls = []
        out = nested_guidance(_constant_branches(e, calls), scales)(x, t)
        want = e[0] + sum(s * (e[k + 1] - e[k]) for k, s in enumerate(scales))
        assert torch.allclose(out, torch.full_like(x, want), atol=1e-12), (scales, out[0, 0].item(), want)
        coeffs = [1 - scales[0]] + [scales[k - 1] - scales[k] for k in range(1, 3)] + [scales[-1]]
        assert calls == [k for k, c in enumerate(coeffs) if c != 0], (scales, calls)
    calls = []
    nested_guidance(_constant_branches(e, calls), [1.0, 1.0, 1.0])(x, t)
    assert calls == [3]  # every scale 1: the fully conditional model, one pass
    calls = []
    nested_guidance(_constant_branches(e, calls), [3.0, 3.0, 3.0])(x, t)
    assert calls == [0, 3]  # equal scales: all conditions guided together against none


def test_nested_guidance_with_one_condition_is_classifier_free_guidance():
    torch.manual_seed(0)
    w = torch.randn(4, 4)

    def model(x, t, c):
        return x @ w + c

    x, t = torch.randn(3, 4), torch.zeros(3, dtype=torch.long)
    cond, uncond = torch.randn(3, 4), torch.zeros(3, 4)
    a = classifier_free_guidance(model, cond, uncond, 3.0)(x, t)
    b = nested_guidance([lambda x, t: model(x, t, uncond), lambda x, t: model(x, t, cond)], [3.0])(x, t)
    assert torch.allclose(a, b, atol=1e-6)


def test_nested_guidance_bad_input():
    f = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="K \\+ 1 >= 2 branches and K scales, got 2 branches and 2 scales"):
        nested_guidance([f, f], [1.0, 2.0])
    with pytest.raises(ValueError, match="scales\\[0\\]"):
        nested_guidance([f, f], [float("nan")])
