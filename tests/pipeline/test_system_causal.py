"""The full system on a causal 3D VAE's latents (C1, f_t = 4): the motion latents regrouped to the video latent's grid,
the geometry checks, data and sampling that agree on a trajectory's motion latent, continuation from the last frame,
the released CogVideoX VAE from a diffusers folder, and the zoo's causal VAE through the cpu-causal preset."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from minivid.autoencoders import CausalVAE, CausalVAEConfig, LatentSpace
from minivid.conditioning import TextEncoderConfig
from minivid.conditioning.motion import MotionGuidanceConfig
from minivid.data import MiniSprites
from minivid.conditioning.trajectory import motion_video, rescale_points
from minivid.pipeline import run as run_mod
from minivid.pipeline.run import (SystemRunConfig, generate, preset_config, run_spaces, system_data, system_geometry,
                                  train_system)
from minivid.pipeline.system import ConditionDropout, SystemConfig, motion_on_latent_grid
from minivid.pipeline.tora import SEED, TORA_BLUR, tora_data
from minivid.transformers import ExpertTransformerConfig

sys.path.insert(0, str(Path(__file__).parent))
from test_run import tiny_spaces  # noqa: E402

SIZE, FRAMES = 32, 9  # a causal VAE with f_s = 8: latents (4, 3, 4, 4); the motion VAE (f_s = 4) draws at 16 px


def test_motion_on_latent_grid_stacks_each_latent_frames_motion_frames():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(2, 3, 9, 4, 5, generator=g)
    out = motion_on_latent_grid(m, 4)
    assert out.shape == (2, 12, 3, 4, 5)
    # explicit: latent frame 0 is frame 0 four times; latent frame i the frames 4(i-1)+1 .. 4i, channel block j = frame j
    frames_of = {0: [0, 0, 0, 0], 1: [1, 2, 3, 4], 2: [5, 6, 7, 8]}
    for i, fs in frames_of.items():
        for j, f in enumerate(fs):
            assert torch.equal(out[:, 3 * j:3 * j + 3, i], m[:, :, f])
    assert motion_on_latent_grid(m, 1) is m  # per-frame latents: unchanged
    with pytest.raises(ValueError, match="F=8 frames do not fill a causal latent with f_t=4: F must be 1 \\+ 4k"):
        motion_on_latent_grid(m[:, :, :8], 4)
    with pytest.raises(ValueError, match="temporal_factor"):
        motion_on_latent_grid(m, 0)


def test_rescale_points_keeps_pixel_centres():
    p = torch.tensor([[0.5, 63.5], [31.5, 10.0]])  # 64 px: the point between pixels 0 and 1 is pixel 0's centre at 32
    assert torch.allclose(rescale_points(p, 0.5), torch.tensor([[0.0, 31.5], [15.5, 4.75]]))
    assert torch.allclose(rescale_points(rescale_points(p, 0.5), 2.0), p)
    with pytest.raises(ValueError, match="scale"):
        rescale_points(p, 0)


def causal_spaces(seed: int = 0):
    torch.manual_seed(seed)
    vae = CausalVAE(CausalVAEConfig(spatial_factor=8, temporal_factor=4, latent_channels=4, channels=8,
                                    channel_mult=(1, 1, 2, 2), num_res_blocks=1, norm_groups=4))
    return LatentSpace(vae, 0.8), tiny_spaces()[1]  # motion VAE: per-frame, f_s = 4, 2 channels


def causal_model(zero_init: bool = True) -> SystemConfig:
    return SystemConfig(
        text=TextEncoderConfig(max_length=72, pad_to_max_length=True, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                               num_heads=2),
        transformer=ExpertTransformerConfig(in_channels=5, out_channels=4, patch_size=2, heads=2, head_dim=16, depth=2,
                                            time_embed_dim=32, text_dim=16, max_text_len=72, positional="rope",
                                            rope_grid="slice", base_size=(4, 4), zero_init=zero_init),
        motion=MotionGuidanceConfig(motion_channels=8, dim=32, depth=2, patch_size=2, motion_dim=16, heads=2))


def causal_cfg(**kw) -> SystemRunConfig:
    base = dict(model=causal_model(), latent="causal-vae", size=SIZE, frames=FRAMES, num_clips=8, steps=3,
                global_batch=4, lr=3e-3, warmup=1, ema_decay=0.9, checkpoint_every=3, log_every=1,
                dropout=ConditionDropout(given_modes=(0.5, 0.5, 0.0), previous_frames=1))
    base.update(kw)
    return SystemRunConfig(**base)


def test_geometry_of_a_causal_run_and_its_errors():
    space, motion = causal_spaces()
    geo = system_geometry(causal_cfg(), space, motion)
    assert (geo.latent_shape, geo.temporal_factor, geo.motion_size, geo.motion_channels) == ((4, 3, 4, 4), 4, 16, 8)
    assert system_geometry(causal_cfg(), space).motion_size is None
    cases = [
        (dict(frames=8), "frames=8 is not reachable by the frame rule of latent='causal-vae'.*1, 5, 9"),
        (dict(frames=1), "frames=1 gives 1 latent frame"),
        (dict(size=36), "size=36 must be a multiple of the spatial factor f_s=8"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message):
            system_geometry(causal_cfg(**kw), space, motion)
    wide = causal_model()
    wide.transformer.in_channels, wide.transformer.out_channels = 17, 16
    with pytest.raises(ValueError, match="model.transformer.out_channels=16 must be the 4 latent channels"):
        system_geometry(causal_cfg(model=wide), space, motion)
    narrow = causal_model()
    narrow.motion.motion_channels = 2
    with pytest.raises(ValueError, match="motion_channels=2 must be 8: the 2 latent channels .* x the f_t=4 frames"):
        system_geometry(causal_cfg(model=narrow), space, motion)
    with pytest.raises(ValueError, match="motion_latent='motion-vae' compresses time by 4"):
        system_geometry(causal_cfg(), space, space)


def test_tora_data_draws_the_flow_at_motion_size():
    space, motion = causal_spaces()
    d = tora_data(space, motion, 3, split="test", num_sprites=1, size=SIZE, frames=FRAMES, dense=False, motion_size=16)
    assert d.sparse.shape == (3, 2, FRAMES, 4, 4) and d.video.shape == (3, 4, 3, 4, 4)
    clips = MiniSprites(num_videos=3, size=SIZE, num_frames=FRAMES, split="test", seed=SEED, num_sprites=1)
    for i in range(3):  # paths stay in the clip's pixels; the flow video is drawn from them rescaled to 16 px
        ref = motion.encode(motion_video(rescale_points(d.paths[i], 0.5), 16, 16, TORA_BLUR)[None])
        assert torch.allclose(d.sparse[i:i + 1], ref, atol=1e-4)  # batch of 3 against 1: float rounding
        item = clips[i]  # the one sprite's centres, in the 32 px clip's pixels
        assert torch.allclose(d.paths[i], item["centers"][item["sprite_mask"]].float())
    assert torch.allclose(d.null, motion.encode(torch.ones(1, 3, FRAMES, 16, 16)))
    with pytest.raises(ValueError, match="motion_size=16: the dense flow is drawn at the clip's size 32"):
        tora_data(space, motion, 1, size=SIZE, frames=FRAMES, motion_size=16)
    alone = tora_data(space, None, 3, split="test", num_sprites=1, size=SIZE, frames=FRAMES, dense=False)
    assert alone.sparse is None and alone.null is None  # no motion VAE: the same clips and paths, no flow
    assert torch.equal(alone.video, d.video) and all(torch.equal(a, b) for a, b in zip(alone.paths, d.paths))
    with pytest.raises(ValueError, match="motion_space=None encodes no flow: pass dense=False"):
        tora_data(space, None, 1, size=SIZE, frames=FRAMES)


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory):
    space, motion = causal_spaces()
    data = system_data(space, motion, 8, SIZE, FRAMES, split="test")
    cfg = causal_cfg(model=causal_model(zero_init=False))
    out = tmp_path_factory.mktemp("causal") / "r"
    trainer = train_system(cfg, out, data, progress=False, log=lambda m: None)
    return trainer.ema.eval(), cfg, space, motion, data


def test_data_and_sampling_give_a_path_the_same_motion_latent(causal_run, seen):
    """The motion latent generate makes from a clip's own path (clip pixels, through load_trajectories) is the one the
    system was trained with for that clip (system_data): both on the video latent's (3, 4, 4) grid."""
    model, cfg, space, motion, data = causal_run
    assert data.latents.shape == (8, 4, 3, 4, 4) and data.motion.shape == (8, 8, 3, 4, 4)
    assert data.null_motion.shape == (1, 8, 3, 4, 4)
    generate(model, cfg, space, motion, prompt=data.captions[2], trajectory=data.paths[2], steps=1)
    assert torch.allclose(seen[0]["motion"], data.motion[2:3], atol=1e-5)
    assert torch.allclose(seen[0]["null_motion"], data.null_motion, atol=1e-6)


def test_causal_generate_continues_from_the_last_frame(causal_run, seen):
    model, cfg, space, motion, data = causal_run
    kw = dict(prompt="a red circle", trajectory="[[4, 4], [28, 20]]", steps=2, seed=5)
    one = generate(model, cfg, space, motion, **kw)
    assert one.shape == (3, FRAMES, SIZE, SIZE) and one.abs().max() <= 1
    assert torch.equal(one, generate(model, cfg, space, motion, **kw))  # same inputs and seed, same video
    assert generate(model, cfg, space, motion, frames=4, **{**kw, "trajectory": None}).shape == (3, 4, SIZE, SIZE)
    seen.clear()
    # 9 + 8 + 8 - 3 frames: three clips, each after the first given the previous clip's last frame as its first frame
    long = generate(model, cfg, space, motion, frames=22, **{**kw, "trajectory": None})
    assert long.shape == (3, 22, SIZE, SIZE) and len(seen) == 3
    short = generate(model, cfg, space, motion, frames=FRAMES, **{**kw, "trajectory": None})
    assert torch.equal(long[:, :FRAMES], short)  # window 0 draws the same noise as a one-clip video
    for w in (1, 2):
        given, mask = seen[w]["given"], seen[w]["given_frames"]
        assert mask.tolist() == [[True, False, False]]
        last = long[:, FRAMES - 1 + 8 * (w - 1)]  # the previous clip's last frame in the video
        assert torch.allclose(given[:, :, 0], space.encode(last[None, :, None])[:, :, 0], atol=1e-5)
    # an image is the given first frame: the video starts with its reconstruction through the causal VAE
    image = torch.rand(3, 40, 40) * 2 - 1
    with_image = generate(model, cfg, space, motion, image=image, steps=2)
    recon = space.decode(space.encode(run_mod.prepare_image(image, SIZE)[None, :, None]))[0, :, 0]
    assert torch.allclose(with_image[:, 0], recon, atol=1e-5)


def test_run_spaces_takes_the_zoo_causal_vae_and_names_what_does_not_fit():
    space, motion = run_spaces(preset_config("cpu-causal"))
    assert space.autoencoder.downsample == (4, 8, 8) and space.scale > 0
    assert system_geometry(preset_config("cpu-causal"), space, motion).latent_shape == (16, 3, 8, 8)
    cases = [
        ("cpu", {"latent": "causal-vae"}, "frames=8 is not reachable by the frame rule of latent='causal-vae': the "
                                          "causal VAE takes f_t\\*k \\+ 1 frames \\(1, 5, 9, 13, 17, ...\\), got 8; use 5 or 9"),
        ("cpu", {"latent": "causal-vae", "frames": 9}, "model.transformer.out_channels=4 must be the 16 latent "
                                                       "channels of latent='causal-vae'"),
        ("cpu-causal", {"latent": "reducio-vae"}, "frames=9 is not reachable by the frame rule of "
                                                  "latent='reducio-vae': Reducio \\(f_t=4\\) takes a multiple of 4"),
        ("cpu-causal", {"latent": "pvdm-ae"}, "latent='pvdm-ae' is not a latent space the full system can run on.*zoo "
                                              "entries it takes: causal-vae, motion-vae, reducio-vae, vae2d$"),
        ("cpu-causal", {"motion_latent": "causal-vae"}, "motion_latent='causal-vae' is not a latent space.*it takes: "
                                                        "motion-vae, vae2d$"),
    ]
    for preset, overrides, message in cases:
        with pytest.raises(ValueError, match=message):
            run_spaces(preset_config(preset, overrides))


def test_the_released_cogvideox_vae_from_a_diffusers_folder(tmp_path):
    """``latent`` may be a diffusers AutoencoderKLCogVideoX folder: minivid's CogVideoXVAE with its weights, scaled by
    its scaling_factor (C1), checked against the run (its 8N + 1 frame rule)."""
    diffusers = pytest.importorskip("diffusers")
    from minivid.autoencoders.cogvideox_vae import from_diffusers

    torch.manual_seed(0)
    m = diffusers.AutoencoderKLCogVideoX(down_block_types=("CogVideoXDownBlock3D",) * 3,
                                         up_block_types=("CogVideoXUpBlock3D",) * 3, block_out_channels=(8, 16, 16),
                                         layers_per_block=1, norm_num_groups=4, latent_channels=4,
                                         temporal_compression_ratio=4, scaling_factor=0.7).eval()
    m.save_pretrained(tmp_path / "vae", safe_serialization=True)
    model = causal_model()
    model.motion.motion_channels = 16  # the zoo's motion VAE: 4 channels x 4 frames
    cfg = causal_cfg(latent=str(tmp_path / "vae"), size=16, model=model)
    space, motion = run_spaces(cfg)
    assert space.scale == pytest.approx(0.7) and motion.autoencoder.downsample[0] == 1
    video = torch.rand(1, 3, FRAMES, 16, 16) * 2 - 1
    with torch.no_grad():
        ref = m.encode(video).latent_dist.mode() * 0.7
    assert torch.allclose(space.encode(video), ref, atol=1e-4)
    assert system_geometry(cfg, space, motion).latent_shape == (4, 3, 4, 4)
    assert torch.equal(space.encode(video), LatentSpace(from_diffusers(tmp_path / "vae"), 0.7).encode(video))
    with pytest.raises(ValueError, match="frames=5 is not reachable by the frame rule .* 8N \\+ 1 frames"):
        run_spaces(causal_cfg(latent=str(tmp_path / "vae"), size=16, frames=5, model=model))
