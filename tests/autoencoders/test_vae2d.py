"""The per-frame 2D VAE (R2's SD-VAE baseline, f_t = 1): every frame is coded on its own (frames are
independent and permute with the input), shapes, images, errors, save/load."""

import pytest
import torch

from minivid import load_model, save_model
from minivid.autoencoders.blocks import CausalConv3d, Conv3dSame, compression_stats
from minivid.autoencoders.vae2d import VAE2D, VAE2DConfig


def tiny(**kw) -> VAE2D:
    torch.manual_seed(0)
    cfg = dict(latent_channels=4, channels=4, channel_mult=(1, 2, 2, 2), num_res_blocks=1, norm_groups=4)
    cfg.update(kw)
    return VAE2D(VAE2DConfig(**cfg)).eval()


def video(b, t, h, w, seed=0):
    return torch.rand(b, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_defaults_r2():
    m = VAE2D(VAE2DConfig(channels=8, norm_groups=8))
    assert m.downsample == (1, 8, 8) and m.latent_channels == 4
    assert not any(isinstance(mod, (CausalConv3d, Conv3dSame)) for mod in m.modules())  # no temporal kernel


@pytest.mark.parametrize("t,h,w", [(1, 8, 8), (4, 16, 24), (7, 32, 16)])
def test_latent_shape_r1_with_ft_1(t, h, w):
    m = tiny()
    assert m.latent_shape((2, 3, t, h, w)) == (2, 4, t, h // 8, w // 8)
    post = m.encode(video(2, t, h, w))
    assert post.mean.shape == (2, 4, t, h // 8, w // 8)
    assert m.decode(post.mode()).shape == (2, 3, t, h, w)
    s = compression_stats(m, (2, 3, t, h, w))
    assert s["factor"] == 64 and s["element_ratio"] == pytest.approx(3 * 64 / 4)


def test_frames_are_coded_independently():
    m = tiny()
    x = video(1, 5, 16, 16)
    with torch.no_grad():
        whole = m.reconstruct(x)
        per_frame = torch.cat([m.reconstruct(x[:, :, t:t + 1]) for t in range(5)], 2)
        torch.testing.assert_close(whole, per_frame, rtol=1e-5, atol=1e-5)
        perm = torch.tensor([3, 0, 4, 1, 2])
        torch.testing.assert_close(m.reconstruct(x[:, :, perm]), whole[:, :, perm], rtol=1e-5, atol=1e-5)
        image = m.encode(x[:, :, 0]).mean  # (B, C, H, W) images work too
        torch.testing.assert_close(image, m.encode(x).mean[:, :, 0], rtol=1e-5, atol=1e-6)
        assert m.decode(image).shape == (1, 3, 16, 16)


def test_errors_and_round_trip(tmp_path):
    m = tiny()
    with pytest.raises(ValueError, match="divisible by f_s=8, got 12x16"):
        m.encode(video(1, 2, 12, 16))
    with pytest.raises(ValueError, match="expected latents"):
        m.decode(torch.zeros(1, 3, 2, 2, 2))
    loaded = load_model(save_model(m, tmp_path / "vae2d"))
    assert type(loaded) is VAE2D and loaded.config == m.config
    x = video(1, 2, 16, 16)
    torch.testing.assert_close(loaded.eval().reconstruct(x), m.reconstruct(x))


def test_mid_blocks_option(tmp_path):
    """``num_mid_blocks`` sets the middle residual blocks of both halves (SD-VAE: 2); 0 removes them and changes
    nothing else: the two nets then hold exactly the parameters of the default minus its middle blocks."""
    deep, shallow = tiny(), tiny(num_mid_blocks=0)
    assert len(deep.encoder.mid) == len(deep.decoder.mid) == 2
    assert len(shallow.encoder.mid) == len(shallow.decoder.mid) == 0
    n = lambda mod: sum(p.numel() for p in mod.parameters())
    assert n(deep) - n(shallow) == n(deep.encoder.mid) + n(deep.decoder.mid) > 0
    x = video(2, 3, 16, 16)
    with torch.no_grad():
        assert shallow.encode(x).mean.shape == deep.encode(x).mean.shape == (2, 4, 3, 2, 2)
        assert shallow.reconstruct(x).shape == x.shape
    loaded = load_model(save_model(shallow, tmp_path / "shallow"))
    assert loaded.config.num_mid_blocks == 0
    torch.testing.assert_close(loaded.reconstruct(x), shallow.reconstruct(x))
    with pytest.raises(ValueError, match="num_mid_blocks=-1 must be >= 0"):
        VAE2DConfig(num_mid_blocks=-1)


def test_init_logvar_sets_the_posterior_std():
    """``init_logvar`` moves the posterior's log-variance at initialisation and nothing else: the means are the
    same as without it (same seed), the log-variances shift by the bias (exactly, before DiagonalGaussian's
    clamp to [-30, 20])."""
    x = video(2, 2, 16, 16)
    with torch.no_grad():
        plain, low = tiny().encode(x), tiny(init_logvar=-6.0).encode(x)
    torch.testing.assert_close(low.mean, plain.mean)
    bias = tiny().encoder.conv_out.bias[4:].view(1, 4, 1, 1, 1)
    torch.testing.assert_close(low.logvar, plain.logvar - bias - 6.0)
    assert (low.std < 0.1).all() and (plain.std > 0.5).all()  # exp(-3) = 0.0498 times exp(W h / 2)
