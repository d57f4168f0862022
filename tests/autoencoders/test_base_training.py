"""The shared autoencoder interface and trainer: KL against torch.distributions, a tiny autoencoder that
must learn, the GAN stage really training both sides, and a state round trip."""

import copy
import math

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from minivid.autoencoders import PatchDiscriminator3D, PerceptualLoss
from minivid.autoencoders.base import DiagonalGaussian, DiracLatent, VideoAutoencoder
from minivid.autoencoders.training import AutoencoderTrainer
from minivid.nn import ModelConfig


@dataclass
class TinyVAEConfig(ModelConfig):
    """No options: a model defined outside minivid still follows the contract (a config dataclass)."""


class TinyVAE(VideoAutoencoder):
    """A linear VAE with as many latent values as pixels (12 = 3 x 2 x 2), so it can learn to be lossless."""

    config_class = TinyVAEConfig
    downsample = (1, 2, 2)
    latent_channels = 12

    def __init__(self, config: TinyVAEConfig | None = None):
        super().__init__(config)
        self.enc = nn.Conv3d(3, 24, (1, 2, 2), stride=(1, 2, 2))
        self.dec = nn.ConvTranspose3d(12, 3, (1, 2, 2), stride=(1, 2, 2))

    def encode(self, video):
        return DiagonalGaussian.from_moments(self.enc(video))

    def decode(self, z, **conditions):
        return self.dec(z)

    def latent_shape(self, input_shape):
        b, _, t, h, w = input_shape
        return (b, 12, t, h // 2, w // 2)

    @property
    def last_layer(self):
        return self.dec.weight


def test_diagonal_gaussian_kl_sample_and_nll():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    q = DiagonalGaussian(mean, logvar)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(q.kl(), ref)
    z = q.sample(torch.Generator().manual_seed(1))
    ref_nll = -torch.distributions.Normal(mean, (0.5 * logvar).exp()).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(q.nll(z), ref_nll)
    big = DiagonalGaussian(torch.full((20000,), 2.0)[None], torch.full((20000,), 2 * torch.tensor(0.5).log().item())[None])
    s = big.sample(torch.Generator().manual_seed(2))
    assert abs(s.mean() - 2) < 0.02 and abs(s.std() - 0.5) < 0.02
    with pytest.raises(ValueError, match="even number of channels"):
        DiagonalGaussian.from_moments(torch.zeros(1, 3, 2))


def test_dirac_latent():
    planes = (torch.ones(2, 4, 3, 3), torch.zeros(2, 4, 5, 3))
    d = DiracLatent(planes)
    assert d.sample() is planes and d.mode() is planes and torch.equal(d.kl(), torch.zeros(2))


def test_trainer_learns_and_the_gan_stage_trains_both_sides():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    video = torch.tanh(torch.randn(4, 3, 2, 8, 8, generator=g))
    model = TinyVAE()
    trainer = AutoencoderTrainer(model, lr=3e-2, kl_weight=1e-6)
    first = trainer.step(video)["l1"]
    for _ in range(150):
        logs = trainer.step(video)
    assert logs["l1"] < 0.5 * first
    assert set(logs) == {"l1", "kl", "loss", "lr"}

    disc = PatchDiscriminator3D(channels=4, num_layers=1)
    d_before = copy.deepcopy(disc.state_dict())
    gan = AutoencoderTrainer(model, lr=1e-3, discriminators=[disc], disc_start=2,
                             perceptual=PerceptualLoss(allow_random=True), perceptual_weight=0.1)
    video16 = torch.tanh(torch.randn(2, 3, 2, 16, 16, generator=g))  # LPIPS needs >= 16 px
    logs = [gan.step(video16) for _ in range(4)]
    assert "g_loss" not in logs[1] and {"g_loss", "d_loss", "gan_weight", "perceptual"} <= set(logs[3])
    assert any(not torch.equal(v, disc.state_dict()[k]) for k, v in d_before.items() if v.dtype.is_floating_point)

    state = gan.state_dict()
    other = AutoencoderTrainer(TinyVAE(), discriminators=[PatchDiscriminator3D(channels=4, num_layers=1)])
    other.load_state_dict(state)
    assert other.num_updates == 4 and len(other.history) == 4
    torch.testing.assert_close(other.model.reconstruct(video), model.reconstruct(video))
    with pytest.raises(ValueError, match="at least 16x16"):
        PerceptualLoss(allow_random=True)(video, video)


def test_trainer_bad_input():
    with pytest.raises(ValueError, match="kl_weight=-1"):
        AutoencoderTrainer(TinyVAE(), kl_weight=-1)


def test_trainer_checks_the_discriminator_input_size_on_its_first_step():
    """Before disc_start too: a run must not train for disc_start steps and then fail in the discriminator."""
    model = TinyVAE()
    before = copy.deepcopy(model.state_dict())
    trainer = AutoencoderTrainer(model, discriminators=[PatchDiscriminator3D(channels=4, num_layers=2)], disc_start=1000)
    with pytest.raises(ValueError, match=r"needs frames of at least 12x12 .*got 8x8"):
        trainer.step(torch.zeros(1, 3, 2, 8, 8))
    assert trainer.num_updates == 0 and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_load_state_dict_needs_as_many_discriminators():
    one = AutoencoderTrainer(TinyVAE(), discriminators=[PatchDiscriminator3D(channels=4, num_layers=1)])
    with pytest.raises(ValueError, match=r"the state holds 1 discriminator state\(s\) but this trainer has 0"):
        AutoencoderTrainer(TinyVAE()).load_state_dict(one.state_dict())
    two = AutoencoderTrainer(TinyVAE(), discriminators=[PatchDiscriminator3D(channels=4, num_layers=1) for _ in range(2)])
    with pytest.raises(ValueError, match=r"holds 2 discriminator state\(s\) but this trainer has 1"):
        one.load_state_dict(two.state_dict())


def test_warmup_and_cosine_schedule_reach_the_optimizer():
    torch.manual_seed(0)
    trainer = AutoencoderTrainer(TinyVAE(), lr=1e-2, warmup_steps=4, total_steps=10)
    expected = [1e-2 * min(1.0, (s + 1) / 4) * 0.5 * (1 + math.cos(math.pi * s / 10)) for s in range(10)]
    x = torch.randn(2, 3, 2, 4, 4)
    seen = []
    for _ in range(10):
        trainer.step(x)
        seen.append(trainer.optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[3] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 0.3)))  # warm-up done at step 3
    constant = AutoencoderTrainer(TinyVAE(), lr=3e-3)
    assert [constant.lr_at(s) for s in (0, 5, 10_000)] == [3e-3] * 3
    with pytest.raises(ValueError, match="warmup_steps=-1"):
        AutoencoderTrainer(TinyVAE(), warmup_steps=-1)
    with pytest.raises(ValueError, match="total_steps=0"):
        AutoencoderTrainer(TinyVAE(), total_steps=0)
    with pytest.raises(ValueError, match=r"grad_clip=0 must be > 0, or None"):  # max_norm 0 zeroes every gradient
        AutoencoderTrainer(TinyVAE(), grad_clip=0)


@pytest.mark.parametrize("preset", ["reducio", "pvdm"])
def test_trainer_loss_is_the_papers_weighted_sum(preset):
    """R2 / P6: the trainer's loss equals w_1 L1 + w_p LPIPS + w_kl KL + w_gan * lambda_adaptive * G, computed here
    term by term from the same posterior sample, for each paper's weights (REDUCIO_LOSS = the trainer's defaults,
    PVDM_LOSS). Dropping or changing a weight changes the loss, so this fails."""
    import inspect

    from minivid.autoencoders.losses import adaptive_gan_weight, hinge_g_loss
    from minivid.autoencoders.training import PVDM_LOSS, REDUCIO_LOSS

    defaults = {k: v.default for k, v in inspect.signature(AutoencoderTrainer).parameters.items()}
    assert {k: defaults[k] for k in REDUCIO_LOSS} == REDUCIO_LOSS == {"l1_weight": 1.0, "perceptual_weight": 0.1,
                                                                      "kl_weight": 1e-6}
    assert PVDM_LOSS == {"l1_weight": 4.0, "perceptual_weight": 4.0, "kl_weight": 0.0}
    weights = REDUCIO_LOSS if preset == "reducio" else PVDM_LOSS
    torch.manual_seed(0)
    model = TinyVAE()
    perceptual = PerceptualLoss(allow_random=True)
    disc = PatchDiscriminator3D(channels=4, num_layers=1)
    video = torch.tanh(torch.randn(2, 3, 2, 16, 16, generator=torch.Generator().manual_seed(1)))
    trainer = AutoencoderTrainer(model, perceptual=perceptual, discriminators=[disc], disc_weight=0.5, seed=5,
                                 **weights)
    loss, logs = trainer.loss(video)

    recon, posterior = model(video, sample=True, generator=torch.Generator().manual_seed(5))  # the trainer's draw
    l1 = (recon - video).abs().mean()
    lp = perceptual(recon, video).mean()
    rec = weights["l1_weight"] * l1 + weights["perceptual_weight"] * lp
    disc.eval()
    g = hinge_g_loss(disc(recon))
    lam = adaptive_gan_weight(rec, g, model.last_layer)
    want = rec + weights["kl_weight"] * posterior.kl().mean() + 0.5 * lam * g
    torch.testing.assert_close(loss, want)
    assert logs["perceptual"] == pytest.approx(lp.item()) and logs["l1"] == pytest.approx(l1.item())
