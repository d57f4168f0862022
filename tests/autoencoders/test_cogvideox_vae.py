"""CogVideoX's released causal 3D VAE (C1): parity with diffusers' AutoencoderKLCogVideoX on tiny random models (the
release's layout with f_t = 4, and a two-level one with f_t = 2 and both quant convs), loaded from an instance, a
save_pretrained folder and a sharded one; every weight copied exactly once; diffusers' frame batches; clear errors;
save_model / load_model."""

import json

import pytest
import torch

import minivid
from minivid.autoencoders.cogvideox_vae import (
    DECODE_BATCH_LATENTS,
    ENCODE_BATCH_FRAMES,
    CogVideoXVAE,
    CogVideoXVAEConfig,
    SafeConv3d,
    config_from_diffusers,
    frame_batches,
    from_diffusers,
    map_diffusers_key,
)

LAYOUTS = {
    # the release's layout (f_t = 4 at the two finest levels) at tiny widths: f_s = 4
    "ft4": dict(block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4,
                temporal_compression_ratio=4),
    # two levels, f_t = f_s = 2, two residual blocks per level, quant_conv and post_quant_conv, another norm_eps
    "ft2-quant": dict(block_out_channels=(8, 16), layers_per_block=2, norm_num_groups=4, latent_channels=3,
                      temporal_compression_ratio=2, use_quant_conv=True, use_post_quant_conv=True, norm_eps=1e-2),
    # f_t = f_s = 8: time halved at three levels
    "ft8": dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4,
                temporal_compression_ratio=8),
}
# (frames, size): 1 frame (an image), one encoder batch, several batches (encoder [0, 9), [9, 17))
CLIPS = {"ft4": [(1, 16), (9, 16), (17, 16)], "ft2-quant": [(5, 8), (17, 8)], "ft8": [(17, 8)]}


def diffusers_vae(layout: str, seed: int = 0):
    diffusers = pytest.importorskip("diffusers")
    cfg = dict(LAYOUTS[layout])
    n = len(cfg["block_out_channels"])
    torch.manual_seed(seed)
    m = diffusers.AutoencoderKLCogVideoX(down_block_types=("CogVideoXDownBlock3D",) * n,
                                         up_block_types=("CogVideoXUpBlock3D",) * n, **cfg).eval()
    assert not m.use_tiling and not m.use_slicing  # minivid reproduces the untiled pass
    assert (m.num_sample_frames_batch_size, m.num_latent_frames_batch_size) == (ENCODE_BATCH_FRAMES,
                                                                                DECODE_BATCH_LATENTS)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # diffusers starts the norms at 1 / 0: randomise every weight
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return m


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def video(frames, size, batch=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=g) * 2 - 1  # [-1, 1]


def assert_matches(m, ours, frames, size):
    x = video(frames, size)
    with torch.no_grad():
        ref = m.encode(x).latent_dist
        post = ours.encode(x)
        assert post.mean.shape == ref.mean.shape == ours.latent_shape(x.shape)
        assert rel_err(post.mean, ref.mean) <= 1e-5 and rel_err(post.logvar, ref.logvar) <= 1e-5
        z = ref.mean + 0.5 * torch.randn(ref.mean.shape, generator=torch.Generator().manual_seed(4))
        ref_dec, dec = m.decode(z).sample, ours.decode(z)
    assert dec.shape == ref_dec.shape == x.shape  # 2 f_t N + 1 frames survive the round trip
    assert rel_err(dec, ref_dec) <= 1e-5


# ------------------------------------------------------------------ parity with diffusers


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_from_diffusers_instance_matches_diffusers(layout):
    m = diffusers_vae(layout)
    ours = from_diffusers(m)
    f = {"ft4": 4, "ft2-quant": 2, "ft8": 8}[layout]
    assert ours.downsample == (f, f, f)
    assert (ours.quant_conv is None) == (layout != "ft2-quant")
    for frames, size in CLIPS[layout]:
        assert_matches(m, ours, frames, size)


def test_from_diffusers_folder_and_shards_match_the_instance(tmp_path):
    m = diffusers_vae("ft4", seed=5)
    m.save_pretrained(tmp_path / "single", safe_serialization=True)
    m.save_pretrained(tmp_path / "sharded", safe_serialization=True, max_shard_size="20KB")
    index = json.loads((tmp_path / "sharded" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    for folder in ("single", "sharded"):
        ours = from_diffusers(tmp_path / folder)
        assert ours.config == from_diffusers(m).config
        assert_matches(m, ours, 9, 16)


def test_every_weight_is_copied_exactly_once(tmp_path):
    m = diffusers_vae("ft2-quant")
    ours = from_diffusers(m)
    src, own = m.state_dict(), ours.state_dict()
    assert {map_diffusers_key(k) for k in src} == set(own) and len(src) == len(own)
    assert all(torch.equal(own[map_diffusers_key(k)], v) for k, v in src.items())
    assert ours.num_parameters() == sum(p.numel() for p in m.parameters())

    from safetensors.torch import save_file

    def folder(name, state):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(dict(m.config)))
        save_file({k: v.contiguous() for k, v in state.items()},
                  tmp_path / name / "diffusion_pytorch_model.safetensors")
        return tmp_path / name

    with pytest.raises(ValueError, match=r"encoder\.extra\.weight.* no counterpart"):
        from_diffusers(folder("extra", {**src, "encoder.extra.weight": torch.zeros(1)}))
    with pytest.raises(ValueError, match=r"lacks weight.*decoder\.norm_out\.conv_b\.conv\.bias"):
        from_diffusers(folder("missing", {k: v for k, v in src.items() if k != "decoder.norm_out.conv_b.conv.bias"}))
    with pytest.raises(ValueError, match=r"weight encoder\.conv_in\.conv\.bias: minivid expects shape \(8,\)"):
        from_diffusers(folder("shape", {**src, "encoder.conv_in.conv.bias": torch.zeros(9)}))


def test_the_release_layout_has_the_same_weights():
    """The released size (CogVideoX-2B's config, 216M weights), built without memory on the meta device: the same
    names (after map_diffusers_key) and shapes."""
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        m = diffusers.AutoencoderKLCogVideoX()
        ours = CogVideoXVAE(config_from_diffusers(dict(m.config)))
    src = {map_diffusers_key(k): v.shape for k, v in m.state_dict().items()}
    assert src == {k: v.shape for k, v in ours.state_dict().items()} and len(src) == 436


def test_diffusers_frame_batches():
    """C1 [code]: the batches equal those of diffusers' _encode / _decode loops."""
    for size in (ENCODE_BATCH_FRAMES, DECODE_BATCH_LATENTS):
        for n in range(1, 40):
            rem, count = n % size, max(n // size, 1)
            ref = [(size * i + (0 if i == 0 else rem), min(size * (i + 1) + rem, n)) for i in range(count)]
            assert frame_batches(n, size) == ref
    assert frame_batches(17, 8) == [(0, 9), (9, 17)] and frame_batches(5, 2) == [(0, 3), (3, 5)]


# ------------------------------------------------------------------ minivid-only checks (no diffusers)


def tiny(seed=0, **kw) -> CogVideoXVAE:
    cfg = dict(channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, norm_groups=4, latent_channels=4)
    cfg.update(kw)
    torch.manual_seed(seed)
    m = CogVideoXVAE(CogVideoXVAEConfig(**cfg)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    return m


def test_batches_carry_the_past_but_frames_within_a_batch_see_each_other():
    """The encoder runs frames [0, 9) then [9, 17): the first batch's latents (0..2) ignore frames >= 9 exactly
    (the cache only flows forward), but GroupNorm pools over a batch, so latent 0 sees frame 8 (unlike CausalVAE's
    per-frame norm)."""
    m = tiny()
    x = video(17, 16, batch=1)
    with torch.no_grad():
        mu = m.encode(x).mean  # (1, 4, 5, 4, 4)
        later = x.clone()
        later[:, :, 9:] += 0.5
        assert torch.equal(m.encode(later).mean[:, :, :3], mu[:, :, :3])
        assert not torch.allclose(m.encode(later).mean[:, :, 3:], mu[:, :, 3:])
        within = x.clone()
        within[:, :, 8] += 0.5
        assert not torch.allclose(m.encode(within).mean[:, :, 0], mu[:, :, 0])


def test_shapes_and_the_videoautoencoder_contract():
    m = tiny()
    assert m.valid_frames(4) == [1, 9, 17, 25] and m.num_frames(5) == 17
    assert m.latent_shape((2, 3, 17, 32, 16)) == (2, 4, 5, 8, 4)
    x = video(9, 16, batch=1)
    with torch.no_grad():
        rec, post = m(x, generator=torch.Generator().manual_seed(0))
    assert rec.shape == x.shape and post.mean.shape == (1, 4, 3, 4, 4) and post.kl().shape == (1,)
    assert m.reconstruct(video(1, 8, batch=1)).shape == (1, 3, 1, 8, 8)  # an image is a one-frame video
    assert m.last_layer is m.decoder.conv_out.conv.weight


def test_bad_inputs_raise_clear_errors():
    m = tiny()
    with pytest.raises(ValueError, match=r"video has T=5 frames; the CogVideoX VAE takes 8N \+ 1 frames "
                                         r"\(1, 9, 17, 25, 33, \.\.\.\).*use 1 or 9"):
        m.encode(torch.zeros(1, 3, 5, 16, 16))
    with pytest.raises(ValueError, match=r"T=10 frames.*use 9 or 17"):
        m.latent_shape((1, 3, 10, 16, 16))
    with pytest.raises(ValueError, match=r"expected a video \(B, C, T, H, W\)"):
        m.encode(torch.zeros(3, 9, 16, 16))
    with pytest.raises(ValueError, match=r"expected 3 channels.*permute"):
        m.encode(torch.zeros(1, 9, 3, 16, 16))
    with pytest.raises(ValueError, match=r"divisible by f_s=4, got 18x16"):
        m.encode(torch.zeros(1, 3, 9, 18, 16))
    with pytest.raises(ValueError, match=r"z has n=2 latent frames; the decoder takes an odd number"):
        m.decode(torch.zeros(1, 4, 2, 4, 4))
    with pytest.raises(ValueError, match=r"z must be latents \(B, \|z\|=4, n, h, w\), got shape \(1, 3, 3, 4, 4\)"):
        m.decode(torch.zeros(1, 3, 3, 4, 4))
    with pytest.raises(ValueError, match="no decoding conditions"):
        m.decode(torch.zeros(1, 4, 3, 4, 4), content=torch.zeros(1))
    assert tiny(temporal_factor=2).valid_frames(3) == [1, 5, 9]


@pytest.mark.parametrize("fields, match", [
    (dict(channel_mult=(1, 2), temporal_factor=4), r"temporal_factor=4 is invalid: expected one of \(1, 2\)"),
    (dict(temporal_factor=3), r"temporal_factor=3 is invalid"),
    (dict(norm_groups=3), r"norm_groups=3 is invalid: it must divide every width"),
    (dict(channel_mult=()), r"channel_mult=\(\) is invalid"),
    (dict(latent_channels=0), r"latent_channels=0 is invalid"),
    (dict(scaling_factor=0.0), r"scaling_factor=0.0 is invalid"),
])
def test_config_errors_name_the_field(fields, match):
    with pytest.raises(ValueError, match=match):
        CogVideoXVAEConfig(**{"channels": 8, "norm_groups": 4, **fields})


@pytest.mark.parametrize("cfg, field", [
    (dict(act_fn="gelu"), "act_fn"),
    (dict(block_out_channels=(8, 12)), "block_out_channels"),
    (dict(down_block_types=("DownEncoderBlock2D",) * 4), "down_block_types"),
    (dict(up_block_types=("CogVideoXUpBlock3D",) * 3), "up_block_types"),
    (dict(temporal_compression_ratio=3), "temporal_compression_ratio"),
    (dict(block_out_channels=(8, 16), down_block_types=("CogVideoXDownBlock3D",) * 2,
          up_block_types=("CogVideoXUpBlock3D",) * 2, temporal_compression_ratio=4), "temporal_compression_ratio"),
    (dict(latents_mean=(0.0,) * 16), "latents_mean"),
    (dict(use_quant_conv=True), "use_quant_conv"),  # diffusers sizes it by out_channels = 3 != latent_channels
    (dict(use_framewise_encoding=True), "use_framewise_encoding"),
])
def test_unsupported_diffusers_configs_are_named(cfg, field):
    with pytest.raises(ValueError, match=field):
        config_from_diffusers(cfg)


def test_diffusers_config_defaults_are_the_release_and_bad_sources_are_refused(tmp_path):
    c = config_from_diffusers({"_class_name": "AutoencoderKLCogVideoX", "sample_height": 480, "scaling_factor": 0.7})
    assert c == CogVideoXVAEConfig(scaling_factor=0.7) and c.widths == (128, 256, 256, 512)
    assert (c.spatial_factor, c.temporal_factor, c.latent_channels) == (8, 4, 16)  # C1: 8x8x4, 16 channels
    with pytest.raises(ValueError, match="not a diffusers model folder"):
        from_diffusers(tmp_path / "nowhere")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "config.json").write_text(json.dumps({"_class_name": "CogVideoXTransformer3DModel"}))
    with pytest.raises(ValueError, match="holds a diffusers CogVideoXTransformer3DModel, not an AutoencoderKL"):
        from_diffusers(tmp_path / "t")
    with pytest.raises(ValueError, match="expected a diffusers AutoencoderKLCogVideoX, got a Linear"):
        from_diffusers(torch.nn.Linear(2, 2))


def test_safe_conv_in_pieces_equals_one_piece():
    conv = SafeConv3d(3, 5, 3, padding=(0, 1, 1))
    x = torch.randn(2, 3, 11, 6, 6)
    whole = conv(x)
    conv.max_bytes = x.numel() * 2 // 4  # about 4 pieces along time, overlapping by 2 frames
    assert torch.allclose(conv(x), whole, atol=1e-6) and conv(x).shape == (2, 5, 9, 6, 6)
    with pytest.raises(ValueError, match="temporal padding 0"):
        SafeConv3d(3, 5, 3, padding=1)


def test_save_model_load_model_round_trip(tmp_path):
    m = tiny(temporal_factor=2, use_quant_conv=True, use_post_quant_conv=True, scaling_factor=0.7)
    folder = minivid.save_model(m, tmp_path / "vae")
    loaded = minivid.load_model(folder)
    assert type(loaded) is CogVideoXVAE and loaded.config == m.config
    x = video(5, 16, batch=1)
    assert torch.equal(loaded.reconstruct(x), m.reconstruct(x))
