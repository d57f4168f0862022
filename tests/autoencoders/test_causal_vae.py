"""CogVideoX's causal 3D VAE (C1): latent shapes, causality of encoder and decoder (the future never
changes the past), the receptive field (latent i sees frames <= 4i), images as 1-frame videos, chunked ==
whole, clear errors, learning, save/load."""

import pytest
import torch

from minivid import load_model, save_model
from minivid.autoencoders.base import DiagonalGaussian, VideoAutoencoder
from minivid.autoencoders.blocks import compression_stats
from minivid.autoencoders.causal_vae import CausalVAE, CausalVAEConfig
from minivid.autoencoders.training import AutoencoderTrainer
from minivid.data import MiniSprites


def tiny(**kw) -> CausalVAE:
    torch.manual_seed(0)
    cfg = dict(latent_channels=4, channels=4, channel_mult=(1, 2, 2, 2), num_res_blocks=1, norm_groups=4)
    cfg.update(kw)
    return CausalVAE(CausalVAEConfig(**cfg)).eval()


def video(b, t, h, w, seed=0, dtype=torch.float32):
    return torch.rand(b, 3, t, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1


def test_defaults_follow_c1_and_interface():
    m = CausalVAE(CausalVAEConfig(channels=8, norm_groups=8))
    assert isinstance(m, VideoAutoencoder)
    assert m.downsample == (4, 8, 8) and m.latent_channels == 16
    f_t, f_s, _ = m.downsample
    assert f_t * f_s * f_s == 256


@pytest.mark.parametrize("t,h,w", [(1, 16, 16), (5, 16, 24), (9, 32, 16), (17, 64, 64), (33, 8, 8)])
def test_latent_shape_c1(t, h, w):
    m = tiny()
    k = (t - 1) // 4
    assert m.latent_shape((2, 3, t, h, w)) == (2, 4, k + 1, h // 8, w // 8)  # C1: 4k+1 -> k+1, /8 in space
    if t * h * w <= 9 * 32 * 16:
        post = m.encode(video(2, t, h, w))
        assert isinstance(post, DiagonalGaussian) and post.mean.shape == m.latent_shape((2, 3, t, h, w))
        assert m.decode(post.mode()).shape == (2, 3, t, h, w)
    s = compression_stats(m, (1, 3, t, h, w))
    assert s["factor"] == 256
    assert s["element_ratio"] == pytest.approx(3 * t * h * w / (4 * (k + 1) * (h // 8) * (w // 8)))


def test_clear_errors_before_any_work():
    m = tiny()
    with pytest.raises(ValueError, match=r"takes f_t\*k \+ 1 frames \(1, 5, 9, 13, 17, \.\.\.\), got 16; use 13 or 17"):
        m.encode(video(1, 16, 16, 16))
    with pytest.raises(ValueError, match=r"got 0; use 1 or 5$"):  # never a negative frame count
        m.latent_shape((1, 3, 0, 16, 16))
    with pytest.raises(ValueError, match="divisible by f_s=8, got 12x16"):
        m.latent_shape((1, 3, 5, 12, 16))
    with pytest.raises(ValueError, match="multiple of f_t=4"):
        m.encode(video(1, 9, 8, 8), chunk_frames=6)
    with pytest.raises(ValueError, match="no decoding conditions"):
        m.decode(torch.zeros(1, 4, 2, 1, 1), content=torch.zeros(1, 3, 8, 8))


def test_encoder_and_decoder_are_causal():
    """Change every input frame after t = 8: latent frames 0..2 (which see frames <= 8) and the frames
    decoded from them (0..8) do not move; later ones do."""
    m = tiny()
    x = video(1, 17, 16, 16)
    x2 = x.clone()
    x2[:, :, 9:] = video(1, 8, 16, 16, seed=5)
    with torch.no_grad():
        z, z2 = m.encode(x).mode(), m.encode(x2).mode()
        assert torch.equal(z[:, :, :3], z2[:, :, :3])
        assert (z[:, :, 3:] - z2[:, :, 3:]).abs().amax() > 1e-3
        y, y2 = m.decode(z), m.decode(z2)
    assert torch.equal(y[:, :, :9], y2[:, :, :9])
    assert (y[:, :, 9:] - y2[:, :, 9:]).abs().amax() > 1e-3


@pytest.mark.parametrize("t", [0, 4, 6, 12])
def test_changing_frames_after_t_leaves_the_past_unchanged(t):
    """C1 for any cut t: latent i sees frames <= 4i, so latents i <= t // 4 must not move; decoded frame s comes
    from latents <= ceil(s / 4), so frames s <= 4 (t // 4) must not move (all of 0..t when 4 divides t)."""
    m = tiny()
    x = video(1, 17, 8, 8)
    x2 = x.clone()
    x2[:, :, t + 1:] = video(1, 16 - t, 8, 8, seed=7)
    with torch.no_grad():
        z, z2 = m.encode(x).mode(), m.encode(x2).mode()
        y, y2 = m.decode(z), m.decode(z2)
    k = t // 4
    assert torch.equal(z[:, :, :k + 1], z2[:, :, :k + 1])
    assert torch.equal(y[:, :, :4 * k + 1], y2[:, :, :4 * k + 1])
    assert not torch.equal(z[:, :, k + 1], z2[:, :, k + 1])  # the next latent frame does see the change
    assert not torch.equal(y[:, :, 4 * k + 1], y2[:, :, 4 * k + 1])


def test_receptive_field_decoded_frame_s_sees_latents_up_to_ceil_s_over_4():
    """C1's decoder mirrors the encoder: frame 0 comes from latent 0 alone, frames 4j-3..4j from latents <= j."""
    m = tiny()
    z = torch.randn(1, 4, 4, 1, 1, generator=torch.Generator().manual_seed(3), requires_grad=True)
    y = m.decode(z)  # (1, 3, 13, 8, 8)
    for s in range(y.shape[2]):
        (g,) = torch.autograd.grad(y[:, :, s].sum(), z, retain_graph=True)
        seen = g.abs().flatten(3).sum(dim=(0, 1, 3)) > 0  # (4,) which latent frames reach decoded frame s
        assert seen.tolist() == [j <= -(-s // 4) for j in range(4)], (s, seen.tolist())


def test_receptive_field_latent_i_sees_frames_up_to_4i():
    m = tiny()
    x = video(1, 13, 8, 8).requires_grad_(True)
    z = m.encode(x).mean  # (1, 4, 4, 1, 1)
    for i in range(z.shape[2]):
        (g,) = torch.autograd.grad(z[:, :, i].sum(), x, retain_graph=True)
        seen = g.abs().flatten(3).sum(dim=(0, 1, 3)) > 0  # (T,) which input frames reach latent frame i
        assert seen.tolist() == [t <= 4 * i for t in range(13)], (i, seen.tolist())


def test_image_is_a_one_frame_video():
    m = tiny()
    x = video(2, 9, 16, 16)
    with torch.no_grad():
        whole = m.encode(x).mean
        image = m.encode(x[:, :, :1]).mean
        assert image.shape == (2, 4, 1, 2, 2)
        torch.testing.assert_close(image, whole[:, :, :1], rtol=1e-5, atol=1e-6)
        assert m.decode(image).shape == (2, 3, 1, 16, 16)


@pytest.mark.parametrize("chunk", [4, 8])
def test_chunked_encode_decode_equal_the_whole_clip(chunk):
    m = tiny().double()
    x = video(1, 17, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        whole = m.encode(x)
        chunked = m.encode(x, chunk_frames=chunk)
        torch.testing.assert_close(chunked.mean, whole.mean, rtol=0, atol=1e-10)
        torch.testing.assert_close(chunked.logvar, whole.logvar, rtol=0, atol=1e-10)
        z = whole.mean
        torch.testing.assert_close(m.decode(z, chunk_frames=chunk // 4), m.decode(z), rtol=0, atol=1e-10)
        torch.testing.assert_close(m.decode(z, chunk_frames=3), m.decode(z), rtol=0, atol=1e-10)


def test_a_tiny_causal_vae_learns_and_round_trips(tmp_path):
    clips = MiniSprites(num_videos=2, size=16, num_frames=5, seed=0)
    x = torch.stack([clips[i]["video"] for i in range(2)])
    m = tiny()
    before = (m.reconstruct(x) - x).abs().mean()
    trainer = AutoencoderTrainer(m, lr=1e-2, kl_weight=1e-6, grad_clip=None)
    for _ in range(40):
        trainer.step(x)
    after = (m.eval().reconstruct(x) - x).abs().mean()
    assert after < 0.4 * before, (before, after)
    assert m.last_layer is m.decoder.conv_out.conv.weight
    path = save_model(m, tmp_path / "causal")
    loaded = load_model(path)
    assert type(loaded) is CausalVAE
    assert loaded.config == m.config
    torch.testing.assert_close(loaded.eval().reconstruct(x), m.eval().reconstruct(x))
