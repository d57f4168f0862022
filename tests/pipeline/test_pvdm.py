"""Diffusion on PVDM's planes: the P8 loss against independently computed L_simple (lambda = 1, 0 and in
between, exact and sampled), the JointTrainer's wiring into DiffusionTrainer, DDIM on packed planes against the
exact Gaussian flow map with the condition routed through, and P9's long videos."""

import math

import pytest
import torch

from minivid.autoencoders.pvdm import PVDMAutoencoder, PVDMAutoencoderConfig
from minivid.diffusion import DiffusionTrainer, GaussianOracle, NoiseSchedule
from minivid.nn.triplane import pack_planes, unpack_planes
from minivid.pipeline.pvdm import JointTrainer, generate_long_video, joint_loss, sample_planes
from minivid.unets import PlaneUNet, PlaneUNetConfig

SHAPE = (4, 4, 4)  # (S, H', W')
C = 3


def planes(b, seed=0, shape=SHAPE):
    s, hp, wp = shape
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, C, hp, wp, generator=g), torch.randn(b, C, s, wp, generator=g),
            torch.randn(b, C, s, hp, generator=g))


def tiny_unet():
    torch.manual_seed(0)
    m = PlaneUNet(PlaneUNetConfig(in_channels=C, channels=8, channel_mult=(1, 2), heads=2, norm_groups=4))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m.eval()


def mse_per_sample(eps, out):
    """||eps - out||^2 as a mean over elements, written out independently of minivid.diffusion."""
    return torch.stack([((e - o) ** 2).mean() for e, o in zip(eps, out)])


@torch.no_grad()
def test_p8_with_lambda_one_and_zero_is_the_conditional_and_unconditional_l_simple():
    s = NoiseSchedule.linear(1000)
    m = tiny_unet()
    z2, z1 = planes(4), planes(4, seed=1)
    t = torch.tensor([0, 250, 600, 999])
    eps = torch.randn(pack_planes(z2).shape, generator=torch.Generator().manual_seed(2))
    ab = s.alphas_cumprod[t].float()[:, None, None]
    zt = unpack_planes(ab.sqrt() * pack_planes(z2) + (1 - ab).sqrt() * eps, SHAPE)  # D3, written out
    cond = mse_per_sample(eps, pack_planes(m(zt, t, cond=z1)))
    uncond = mse_per_sample(eps, pack_planes(m(zt, t, cond=tuple(torch.zeros_like(p) for p in z1))))
    assert (cond - uncond).abs().min() > 1e-4  # the condition matters, so the test can tell them apart
    for estimator in ("exact", "sample"):
        torch.testing.assert_close(joint_loss(m, s, z2, z1, t, eps, lam=1.0, estimator=estimator), cond)
        torch.testing.assert_close(joint_loss(m, s, z2, z1, t, eps, lam=0.0, estimator=estimator), uncond)
    torch.testing.assert_close(joint_loss(m, s, z2, z1, t, eps, lam=0.3), 0.3 * cond + 0.7 * uncond)
    # the sampled estimator: each sample's loss is one of the two terms, the conditional one w.p. lambda
    b = 400
    z2b, z1b = (tuple(p[:1].expand(b, -1, -1, -1) for p in z) for z in (z2, z1))
    tb, eb = t[1:2].expand(b), eps[:1].expand(b, -1, -1)
    sampled = joint_loss(m, s, z2b, z1b, tb, eb, lam=0.3, estimator="sample",
                         generator=torch.Generator().manual_seed(3))
    one2, one1 = tuple(p[:1] for p in z2b), tuple(p[:1] for p in z1b)
    term_c = joint_loss(m, s, one2, one1, tb[:1], eb[:1], lam=1.0)
    term_u = joint_loss(m, s, one2, one1, tb[:1], eb[:1], lam=0.0)
    is_cond = (sampled - term_c).abs() < 1e-5
    is_uncond = (sampled - term_u).abs() < 1e-5
    assert bool((is_cond ^ is_uncond).all())
    frac = is_cond.float().mean().item()
    assert abs(frac - 0.3) < 4 * math.sqrt(0.3 * 0.7 / b)  # binomial, 4 standard deviations


def test_joint_trainer_is_diffusion_trainer_with_the_condition_dropped():
    """With lam = 1, JointTrainer.step(z2, z1) is DiffusionTrainer.step on the packed planes with the packed
    condition (same seeds -> same loss and weights); with z1=None it trains the null condition."""
    s = NoiseSchedule.linear(1000)
    z2, z1 = planes(4), planes(4, seed=1)
    a = JointTrainer(tiny_unet().train(), s, lam=1.0, seed=0, warmup_steps=1)
    b = DiffusionTrainer(tiny_unet().train(), s, seed=0, warmup_steps=1)
    for _ in range(2):
        la = a.step(z2, z1)["loss"]
        lb = b.step(pack_planes(z2), cond=pack_planes(z1), shape=SHAPE)["loss"]
        assert la == pytest.approx(lb, rel=1e-6)
    for pa, pb in zip(a.ema.parameters(), b.ema.parameters()):
        torch.testing.assert_close(pa, pb)
    c = JointTrainer(tiny_unet().train(), s, lam=0.5, seed=0, warmup_steps=1)
    d = DiffusionTrainer(tiny_unet().train(), s, seed=0, warmup_steps=1)
    assert c.step(z2)["loss"] == pytest.approx(
        d.step(pack_planes(z2), cond=torch.zeros_like(pack_planes(z2)), shape=SHAPE)["loss"], rel=1e-6)
    state = c.state_dict()
    c.step(z2, z1)
    c.load_state_dict(state)
    assert c.num_updates == 1 and len(c.history) == 1
    with pytest.raises(ValueError, match="must have the shapes of z2"):
        c.step(z2, planes(4, shape=(8, 4, 4)))


class ConditionalOracle:
    """The exact eps-denoiser for planes z ~ N(mu, std^2) with mu = cond (or `mean0` for the null condition),
    called like a PlaneUNet on packed planes."""

    def __init__(self, schedule, mean0, std):
        self.schedule, self.mean0, self.std = schedule, mean0, std
        self.calls = []

    def __call__(self, x, t, cond=None, shape=None):
        assert shape == SHAPE and x.ndim == 3
        null = cond is None or cond.abs().max() == 0
        self.calls.append(null)
        return GaussianOracle(self.schedule, self.mean0 if null else cond.double(), self.std)(x, t)


def test_ddim_on_packed_planes_follows_the_exact_flow_map_with_the_condition():
    """D7 through sample_planes with an exact Gaussian denoiser: the result equals the closed-form
    probability-flow map of the same x_T (up to DDIM's discretisation error), for the null condition and
    for a condition (the mean moves to the condition)."""
    s = NoiseSchedule.linear(1000)
    std = 0.1
    oracle = ConditionalOracle(s, 0.5, std)
    cond = planes(2, seed=4)
    for c, mean in ((None, 0.5), (cond, pack_planes(cond).double())):
        g = torch.Generator().manual_seed(7)
        out = sample_planes(oracle, s, SHAPE, 2, C, cond=c, steps=200, eta=0.0, generator=g, clip=None)
        x_T = torch.randn(pack_planes(out).shape, generator=torch.Generator().manual_seed(7))
        ref = GaussianOracle(s, mean, std).flow_map(x_T, float(s.alphas_cumprod[999]), 1.0)
        torch.testing.assert_close(pack_planes(out), ref.float(), rtol=0, atol=0.02)
        err_to_mean = (pack_planes(out).double() - mean).std()
        assert abs(err_to_mean - std) < 0.02  # spread of the data around its (conditional) mean


@torch.no_grad()
def test_long_video_chains_clips_through_the_condition():
    """P9 with the oracle of a random walk: clip 1 ~ N(0.5, std^2) from the null condition, clip l+1 ~
    N(clip l, std^2). The video has L*S frames; each clip's planes sit within std of the previous ones."""
    s = NoiseSchedule.linear(1000)
    std = 0.2
    oracle = ConditionalOracle(s, 0.5, std)
    torch.manual_seed(0)
    ae = PVDMAutoencoder(PVDMAutoencoderConfig(dim=16, encoder_depth=1, decoder_depth=1, projector_depth=1,
                                               heads=2, projector_heads=2, latent_channels=C, patch_size=4)).eval()
    out = generate_long_video(oracle, ae, s, num_clips=3, shape=SHAPE, batch_size=2, steps_first=100,
                              steps_next=100, generator=torch.Generator().manual_seed(0))
    assert out["video"].shape == (2, 3, 3 * SHAPE[0], 16, 16)
    assert oracle.calls[:100] == [True] * 100 and not any(oracle.calls[100:])  # clip 1 null, then conditional
    p = [pack_planes(z) for z in out["planes"]]
    assert abs((p[0] - 0.5).std() - std) < 0.03
    for a, b in zip(p, p[1:]):
        assert abs((b - a).std() - std) < 0.03
    torch.testing.assert_close(out["video"][:, :, SHAPE[0]:2 * SHAPE[0]], ae.decode(out["planes"][1]))
    with pytest.raises(ValueError, match="num_clips=0 is invalid"):
        generate_long_video(oracle, ae, s, num_clips=0, shape=SHAPE)


def test_release_defaults_p8_lambda_and_ddim_eta_one_100_steps():
    """[code] The release keeps the previous clip with probability 0.3 (UCF-101) and evaluates with DDIM eta = 1,
    100 steps; these are the defaults of joint_loss, JointTrainer, sample_planes and generate_long_video."""
    import inspect
    assert inspect.signature(joint_loss).parameters["lam"].default == 0.3
    assert JointTrainer(torch.nn.Linear(1, 1), NoiseSchedule.linear(10)).lam == 0.3
    for fn, names in ((sample_planes, ("steps", "eta")), (generate_long_video, ("steps_first", "steps_next", "eta"))):
        params = inspect.signature(fn).parameters
        assert [params[n].default for n in names] == ([100, 1.0] if len(names) == 2 else [100, 100, 1.0])
    # the default (eta = 1) is a different sampler from eta = 0: same x_T, different result
    s = NoiseSchedule.linear(1000)
    oracle = ConditionalOracle(s, 0.5, 0.1)
    run = lambda **kw: pack_planes(sample_planes(oracle, s, SHAPE, 1, C, steps=10, clip=None,
                                                 generator=torch.Generator().manual_seed(0), **kw))
    torch.testing.assert_close(run(), run(eta=1.0))
    assert not torch.allclose(run(), run(eta=0.0))


@torch.no_grad()
def test_long_video_latent_scale_samples_scaled_planes_and_decodes_them_unscaled():
    """``latent_scale`` = k: the model works in planes multiplied by k (LDM's scale factor). With the oracle of
    N(2.0, (0.3)^2) in those units, the returned planes follow it (clamped at the tanh bound times k, not at 1), and
    the decoder receives them divided by k; bad scales are refused before any work."""
    s = NoiseSchedule.linear(1000)
    torch.manual_seed(0)
    ae = PVDMAutoencoder(PVDMAutoencoderConfig(dim=16, encoder_depth=1, decoder_depth=1, projector_depth=1,
                                               heads=2, projector_heads=2, latent_channels=C, patch_size=4)).eval()
    run = lambda k: generate_long_video(ConditionalOracle(s, 2.0, 0.3), ae, s, num_clips=1, shape=SHAPE, batch_size=4,
                                        generator=torch.Generator().manual_seed(0), latent_scale=k)
    out = run(3.0)
    p = pack_planes(out["planes"][0])
    assert abs(p.mean() - 2.0) < 0.05 and abs(p.std() - 0.3) < 0.05 and p.abs().max() <= 3.0
    torch.testing.assert_close(out["video"], ae.decode(tuple(z / 3.0 for z in out["planes"][0])))
    assert pack_planes(run(1.0)["planes"][0]).max() <= 1.0  # unscaled: the clamp at the tanh bound bites
    for bad in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="latent_scale"):
            generate_long_video(ConditionalOracle(s, 2.0, 0.3), ae, s, num_clips=1, shape=SHAPE, latent_scale=bad)


def test_class_labels_are_dropped_to_the_null_class_at_the_trainer_rate():
    """JointTrainer.step(..., y): with label_dropout 0 the step equals DiffusionTrainer's with the labels; with
    0.5 about half the labels become the null class, drawn from their own generator (the condition coins and the
    trainer's noise are unchanged, so the loss of a model that ignores labels would not move)."""
    s = NoiseSchedule.linear(1000)

    def unet():
        torch.manual_seed(0)
        m = PlaneUNet(PlaneUNetConfig(in_channels=C, channels=8, channel_mult=(1, 2), heads=2, norm_groups=4,
                                      num_classes=3))
        return m.train()

    z2, z1, y = planes(4), planes(4, seed=1), torch.tensor([0, 1, 2, 0])
    a = JointTrainer(unet(), s, lam=1.0, seed=0, warmup_steps=1, label_dropout=0.0)
    b = DiffusionTrainer(unet(), s, seed=0, warmup_steps=1)
    assert a.step(z2, z1, y=y)["loss"] == pytest.approx(
        b.step(pack_planes(z2), cond=pack_planes(z1), shape=SHAPE, y=y)["loss"], rel=1e-6)

    seen = []

    class Spy(PlaneUNet):
        def forward(self, z, t, cond=None, shape=None, y=None):
            seen.append(y.clone())
            return super().forward(z, t, cond=cond, shape=shape, y=y)

    torch.manual_seed(0)
    spy = Spy(PlaneUNetConfig(in_channels=C, channels=8, channel_mult=(1, 2), heads=2, norm_groups=4, num_classes=3))
    c = JointTrainer(spy.train(), s, lam=0.3, seed=0, warmup_steps=1, label_dropout=0.5)
    for _ in range(50):
        c.step(z2, z1, y=y)
    labels = torch.cat(seen)
    kept = labels != 3
    assert 0.35 < kept.float().mean() < 0.65 and torch.equal(labels[kept], y.repeat(50)[kept])
    with pytest.raises(ValueError, match="no class embedding"):
        JointTrainer(tiny_unet().train(), s).step(z2, z1, y=y)
    with pytest.raises(ValueError, match="label_dropout=1.0 must lie in"):
        JointTrainer(unet(), s, label_dropout=1.0)


class LabelOracle:
    """An exact eps-denoiser whose data mean is the label (the null class: 0), called like a PlaneUNet."""

    def __init__(self, schedule, std, null):
        self.schedule, self.std, self.null = schedule, std, null
        self.config = PlaneUNetConfig(in_channels=C, channels=8, norm_groups=4, heads=2, num_classes=null)

    def __call__(self, x, t, cond=None, shape=None, y=None):
        mean = torch.where(y == self.null, 0, y).double()[:, None, None]
        return GaussianOracle(self.schedule, mean, self.std)(x, t)


def test_guided_sampling_of_class_labels_moves_the_mean_by_the_guidance_scale():
    """Classifier-free guidance in sample_planes with an exact Gaussian denoiser per label: at scale 1 the planes
    sit at the label's mean; at scale w the guided eps is eps(null) + w (eps(y) - eps(null)), whose flow ends near
    w times the label's mean (means 0 for the null class), as the closed form says for equal variances."""
    s = NoiseSchedule.linear(1000)
    oracle = LabelOracle(s, 0.05, null=4)
    y = torch.tensor([1, 3])
    for w in (1.0, 2.0):
        out = pack_planes(sample_planes(oracle, s, SHAPE, 2, C, steps=100, eta=0.0, clip=None, y=y, guidance=w,
                                        generator=torch.Generator().manual_seed(3)))
        torch.testing.assert_close(out.mean(dim=(1, 2)), w * y.float(), rtol=0, atol=0.05)
    with pytest.raises(ValueError, match=r"y must have shape \(2,\)"):
        sample_planes(oracle, s, SHAPE, 2, C, y=torch.tensor([1]))
    with pytest.raises(ValueError, match="no class embedding"):
        sample_planes(tiny_unet(), s, SHAPE, 2, C, y=y)
