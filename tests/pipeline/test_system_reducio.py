"""The full system on the Reducio VAE's latents (R1-R2): the content frame is the clip's image (the model's semantic
tokens, R4, and the decoder's content frame, R2), an image coin of its own, the geometry checks, data that keeps the
content frames, sampling and decoding with them, continuation through each clip's last frame, and the zoo's Reducio
VAE through the cpu-reducio preset."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from minivid.autoencoders import LatentSpace, ReducioConfig, ReducioVAE
from minivid.conditioning import SemanticImageEncoderConfig, TextEncoderConfig
from minivid.conditioning.motion import MotionGuidanceConfig
from minivid.data import MiniSprites
from minivid.pipeline.run import (SystemRunConfig, content_frame, decode_latents, generate, preset_config, run_spaces,
                                  system_data, system_geometry, system_metrics, train_system)
from minivid.pipeline.system import ConditionDropout, SystemConfig, condition_batch
from minivid.pipeline.tora import SEED
from minivid.transformers import ExpertTransformerConfig

sys.path.insert(0, str(Path(__file__).parent))
from test_run import T, cfg as vae2d_cfg, fake_data, tiny_spaces  # noqa: E402

SIZE, FRAMES = 32, 8  # a Reducio VAE with f_s = 16, f_t = 4: latents (4, 2, 2, 2); content frame 3


def reducio_space(seed: int = 0) -> LatentSpace:
    torch.manual_seed(seed)
    vae = ReducioVAE(ReducioConfig(spatial_factor=16, temporal_factor=4, latent_channels=4, channels=8,
                                   num_res_blocks=1, norm_groups=4, content_channels=8, content_num_res_blocks=1,
                                   fusion_head_dim=8, content_warp=2, warp_latent=True, latent_skip=True))
    return LatentSpace(vae, 0.9)


def reducio_model(zero_init: bool = True) -> SystemConfig:
    return SystemConfig(
        text=TextEncoderConfig(max_length=72, pad_to_max_length=True, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                               num_heads=2),
        image=SemanticImageEncoderConfig(image_size=32, patch_size=16, width=16, layers=1, heads=2, embed_dim=16),
        image_grid_channels=4, image_grid_patch=16,
        transformer=ExpertTransformerConfig(in_channels=9, out_channels=4, patch_size=1, heads=2, head_dim=16, depth=2,
                                            time_embed_dim=32, text_dim=16, max_text_len=72, positional="rope",
                                            rope_grid="slice", base_size=(2, 2), zero_init=zero_init),
        motion=None)


def reducio_cfg(**kw) -> SystemRunConfig:
    base = dict(model=reducio_model(), latent="reducio-vae", size=SIZE, frames=FRAMES, num_clips=8, steps=3,
                global_batch=4, lr=3e-3, warmup=1, ema_decay=0.9, checkpoint_every=3, log_every=1,
                dropout=ConditionDropout(given_modes=(1.0, 0.0, 0.0), previous_frames=1, image_dropout=0.25))
    base.update(kw)
    return SystemRunConfig(**base)


def test_the_image_coin_is_its_own_and_leaves_the_other_coins_alone():
    """image_dropout set: the image is given with probability 1 - p whatever the given frames; the coins drawn before
    it (text, trajectory, frames) are the ones a run without it draws, so older runs keep their draws."""
    old = ConditionDropout(given_modes=(0.5, 0.5, 0.0), previous_frames=1)
    new = ConditionDropout(given_modes=(0.5, 0.5, 0.0), previous_frames=1, image_dropout=0.25)
    a = condition_batch(old, 4000, 3, torch.Generator().manual_seed(3))
    b = condition_batch(new, 4000, 3, torch.Generator().manual_seed(3))
    for k in ("keep_text", "keep_trajectory", "given_frames"):
        assert torch.equal(a[k], b[k])
    assert torch.equal(a["image_given"], a["given_frames"][:, 0])  # None: the image is the given first frame
    first = b["given_frames"][:, 0]
    rate_with, rate_without = b["image_given"][first].float().mean(), b["image_given"][~first].float().mean()
    assert abs(rate_with - 0.75) < 0.04 and abs(rate_without - 0.75) < 0.04  # independent of the frames: 0.75 each
    part = condition_batch(new, 4000, 3, torch.Generator().manual_seed(3), slice(100, 300))
    assert torch.equal(part["image_given"], b["image_given"][100:300])  # sliced from the global draw
    with pytest.raises(ValueError, match="image_dropout"):
        ConditionDropout(image_dropout=1.5)


def test_geometry_of_a_reducio_run_and_its_errors():
    space = reducio_space()
    assert content_frame(space, 8) == 3 and content_frame(space, 12) == 5
    geo = system_geometry(reducio_cfg(), space)
    assert (geo.latent_shape, geo.temporal_factor, geo.motion_size) == ((4, 2, 2, 2), 4, None)
    with_motion = reducio_model()
    with_motion.motion = MotionGuidanceConfig(motion_channels=8, dim=32, depth=2, patch_size=1, motion_dim=16, heads=2)
    without_image = reducio_model()
    without_image.image = None
    without_image.image_grid_channels, without_image.transformer.in_channels = 0, 5
    tokens_only = reducio_model()  # semantic tokens alone are enough for the check
    tokens_only.image_grid_channels, tokens_only.transformer.in_channels = 0, 5
    assert system_geometry(reducio_cfg(model=tokens_only), space).latent_shape == (4, 2, 2, 2)
    wrong_patch = reducio_model()
    wrong_patch.image_grid_patch = 8
    cases = [
        (dict(frames=6), "frames=6 is not reachable by the frame rule of latent='reducio-vae'.*multiple of 4"),
        (dict(frames=4), "frames=4 gives 1 latent frame"),
        (dict(model=without_image), "model.image=None and model.image_grid_channels=0: with latent='reducio-vae' "
                                    "the model must read an image"),
        (dict(model=wrong_patch), "model.image_grid_patch=8 must be the spatial factor f_s=16 of "
                                  "latent='reducio-vae'"),
        (dict(model=with_motion), "model.motion must be null with latent='reducio-vae': its latent grid is 2 x 2"),
        (dict(dropout=ConditionDropout(given_modes=(1.0, 0.0, 0.0), previous_frames=1)),
         "dropout.image_dropout=None: with latent='reducio-vae'"),
        (dict(dropout=ConditionDropout(given_modes=(0.5, 0.5, 0.0), previous_frames=1, image_dropout=0.1)),
         "dropout.given_modes=\\[0.5, 0.5, 0.0\\] must be \\[1, 0, 0\\] with latent='reducio-vae'"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message):
            system_geometry(reducio_cfg(**kw), space)


def test_system_data_keeps_the_content_frames_and_decoding_needs_them():
    space = reducio_space()
    data = system_data(space, None, 3, SIZE, FRAMES, split="test")
    clips = MiniSprites(num_videos=3, size=SIZE, num_frames=FRAMES, split="test", seed=SEED, num_sprites=1)
    video = torch.stack([clips[i]["video"] for i in range(3)])
    assert data.latents.shape == (3, 4, 2, 2, 2) and data.motion is None
    assert torch.equal(data.images, video[:, :, 3].half())  # V_{(T-1)//2}, not the first frame
    assert torch.allclose(data.latents, space.encode(video), atol=1e-5)
    decoded = decode_latents(space, data.latents, data.images)
    assert torch.allclose(decoded, space.decode(data.latents, content=data.images.float()))
    other = decode_latents(space, data.latents, data.images.flip(0))  # the content frame is an input of the decoder
    assert (decoded - other).abs().amax() > 0.1
    with pytest.raises(ValueError, match="the Reducio VAE decodes with each clip's content frame"):
        decode_latents(space, data.latents)
    vae2d = tiny_spaces()[0]
    assert content_frame(vae2d, 8) is None
    with pytest.raises(ValueError, match="decodes from its latents alone: pass no images"):
        decode_latents(vae2d, torch.zeros(1, 4, 8, 4, 4), data.images[:1])


@pytest.fixture(scope="module")
def reducio_run(tmp_path_factory):
    space = reducio_space()
    data = system_data(space, None, 8, SIZE, FRAMES, split="test")
    cfg = reducio_cfg(model=reducio_model(zero_init=False))
    out = tmp_path_factory.mktemp("reducio") / "r"
    trainer = train_system(cfg, out, data, progress=False, log=lambda m: None)
    return trainer.ema.eval(), cfg, space, data, out


def test_the_run_trains_on_content_frames(reducio_run):
    model, cfg, space, data, out = reducio_run
    assert model.semantic is not None and model.motion is None
    assert (out / "checkpoints").is_dir() and json.loads((out / "run.json").read_text())["dropout"]["image_dropout"] \
        == 0.25


def test_reducio_generate_is_conditioned_on_and_decoded_with_the_image(reducio_run, seen, decoded):
    model, cfg, space, data, _ = reducio_run
    image = data.images[1].float()
    kw = dict(prompt=data.captions[1], image=image, steps=2, seed=4)
    one = generate(model, cfg, space, **kw)
    assert one.shape == (3, FRAMES, SIZE, SIZE) and one.abs().max() <= 1
    assert torch.equal(seen[0]["image"], image[None]) and seen[0]["given"] is None  # no latent frame is given
    assert torch.equal(decoded[0], image[None])  # the decoder's content frame is the image
    assert torch.equal(one, generate(model, cfg, space, **kw))  # same inputs and seed, same video
    with pytest.raises(ValueError, match="image is required with latent='reducio-vae'.*frame 3 of each 8-frame clip"):
        generate(model, cfg, space, prompt="a red circle")
    with pytest.raises(ValueError, match="no trajectory condition"):
        generate(model, cfg, space, image=image, trajectory="[[4, 4], [28, 20]]")


def test_reducio_generate_continues_through_the_last_frame(reducio_run, seen, decoded):
    """Each next clip's content frame is the previous clip's last frame; it adds the T - 1 - c = 4 frames after it."""
    model, cfg, space, data, _ = reducio_run
    kw = dict(prompt=data.captions[2], image=data.images[2].float(), steps=2, seed=1)
    long = generate(model, cfg, space, frames=15, **kw)  # 8 + 4 + 4 - 1: three clips, the last cut
    assert long.shape == (3, 15, SIZE, SIZE) and len(seen) == 3
    short = generate(model, cfg, space, **kw)
    assert torch.equal(long[:, :FRAMES], short)  # window 0 is the one-clip video
    for w in (1, 2):
        last = long[:, FRAMES - 1 + 4 * (w - 1)]  # the previous clip's last frame in the video
        assert torch.equal(seen[w]["image"][0], last) and torch.equal(decoded[w][0], last)
        assert seen[w]["seed"] == 1 + w


def test_reducio_metrics_score_image_and_text_against_the_still_content_frame(reducio_run):
    model, cfg, space, data, _ = reducio_run
    out, videos = system_metrics(model, cfg, space, None, steps=2, data=data, return_videos=True)
    assert set(videos) == {"image+text"} and videos["image+text"].shape == (8, 3, FRAMES, SIZE, SIZE)
    still = out["content frame repeated"]
    assert still["centre_jitter_px"] == 0 and still["caption_accuracy"]["direction"] == 0  # a still video
    assert set(out) == {"image+text", "real clips (autoencoder)", "content frame repeated", "sampler"}
    with pytest.raises(ValueError, match="modes=\\['text'\\]: expected a list of some of \\['image\\+text'\\]"):
        system_metrics(model, cfg, space, None, steps=2, data=data, modes=["text"])


def test_a_run_written_before_image_dropout_existed_resumes(reducio_run, tmp_path):
    """run.json of an older run has no dropout.image_dropout: its default (None) fills it before the comparison."""
    from minivid.pipeline.run import previous_run

    c = vae2d_cfg(steps=2, size=16, frames=T)
    train_system(c, tmp_path / "old", fake_data(), progress=False, log=lambda m: None)
    saved = json.loads((tmp_path / "old" / "run.json").read_text())
    del saved["dropout"]["image_dropout"]
    (tmp_path / "old" / "run.json").write_text(json.dumps(saved))
    assert previous_run(tmp_path / "old", c, resume=True) is not None
    with pytest.raises(ValueError, match="different config \\(\\['dropout'\\]\\)"):
        previous_run(tmp_path / "old", SystemRunConfig.from_dict({**c.to_dict(), "dropout": {
            **c.to_dict()["dropout"], "image_dropout": 0.1}}), resume=True)


def test_run_spaces_takes_the_zoo_reducio_vae():
    cfg = preset_config("cpu-reducio")
    space, motion = run_spaces(cfg)
    assert motion is None and space.autoencoder.downsample == (4, 32, 32)
    card = json.loads((Path(__file__).parents[2] / "data/pretrained/reducio-vae/card.json").read_text())
    assert space.scale == card["latent_scale"]
    assert system_geometry(cfg, space).latent_shape == (16, 2, 2, 2)
    with pytest.raises(ValueError, match="frames=9 is not reachable by the frame rule of latent='reducio-vae'"):
        run_spaces(preset_config("cpu-reducio", {"frames": 9}))
