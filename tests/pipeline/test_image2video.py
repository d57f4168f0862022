"""Image-to-video (OpenCLIP + Reducio-DiT, R4-R5): the start-frame scores against MiniSprites' own clips and
shuffled frames, the null condition, the content positions, sampling and a one-batch overfit."""

import math

import pytest
import torch

from minivid.autoencoders import VAE2D, VAE2DConfig, LatentSpace
from minivid.conditioning import SemanticImageEncoderConfig
from minivid.diffusion import DiffusionTrainer
from minivid.nn.embeddings import sincos_2d
from minivid.pipeline.image2video import (ImageToVideo, ImageToVideoConfig, conditioning_frames, content_tokens,
                                          image_to_video_scores, sample_image_to_video)
from minivid.pipeline.text2video import caption_pool, t2v_schedule
from minivid.transformers import ReducioDiTConfig


def tiny(**kw) -> ImageToVideoConfig:
    return ImageToVideoConfig(
        semantic=SemanticImageEncoderConfig(image_size=16, patch_size=8, width=16, layers=1, heads=2, embed_dim=8),
        dit=ReducioDiTConfig(in_channels=4, patch_size=2, dim=32, depth=2, heads=2, cond_dim=16),
        **{"content_grid": (4, 4), **kw})


def tiny_space() -> LatentSpace:
    torch.manual_seed(0)
    vae = VAE2D(VAE2DConfig(channels=8, num_res_blocks=1, norm_groups=4, spatial_factor=4, latent_channels=4)).eval()
    return LatentSpace(vae, 1.0)


def test_scores_are_perfect_on_real_clips_and_low_for_shuffled_frames():
    videos, _ = caption_pool(32, split="test")
    images = conditioning_frames(videos)
    real = image_to_video_scores(videos, images)
    assert real["color_kept"] == 1.0 and real["start_found"] == 1.0 and real["start_error_px"] < 1e-4
    assert real["frame_psnr"] == 100.0
    shuffled = image_to_video_scores(videos, torch.roll(images, 1, 0))
    assert shuffled["color_kept"] < 0.5 and shuffled["frame_psnr"] < 25
    assert shuffled["start_error_px"] is None or shuffled["start_error_px"] > 3
    middle = image_to_video_scores(videos, conditioning_frames(videos, None), frame=None)
    assert middle["start_error_px"] < 1e-4
    with pytest.raises(ValueError, match="one per image"):
        image_to_video_scores(videos, images[:3])
    with pytest.raises(ValueError, match="frame=8 is invalid"):
        conditioning_frames(videos, 8)


def test_null_items_ignore_the_image_and_the_others_do_not():
    torch.manual_seed(0)
    m = ImageToVideo(tiny())
    with torch.no_grad():
        for p in m.parameters():  # zero-initialised outputs would make every comparison trivial
            p.add_(0.05 * torch.randn_like(p))
    m.eval()
    g = torch.Generator().manual_seed(1)
    z, t = torch.randn(2, 4, 2, 4, 4, generator=g), torch.tensor([10, 600])
    img, con = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1, torch.randn(2, 16, 4, generator=g)
    null = torch.tensor([False, True])
    with torch.no_grad():
        out = m(z, t, img, con, null)
        out2 = m(z, t, -img, con + 1, null)
    assert not torch.allclose(out[0], out2[0], atol=1e-5)
    assert torch.allclose(out[1], out2[1], atol=1e-6)
    e_pos = m.image_tokens(img, con)
    m_nopos = ImageToVideo(tiny(content_positions=False))
    m_nopos.load_state_dict(m.state_dict())
    assert torch.allclose(e_pos - m_nopos.image_tokens(img, con), sincos_2d(4, 4, 16).float(), atol=1e-6)


def test_bad_input_is_named():
    m = ImageToVideo(tiny())
    z, t = torch.randn(1, 4, 2, 4, 4), torch.tensor([1])
    with pytest.raises(ValueError, match=r"content must be the frame's VAE tokens \(B, h\*w=16, \|z\|=4\)"):
        m(z, t, torch.zeros(1, 3, 16, 16), torch.zeros(1, 9, 4))
    with pytest.raises(ValueError, match=r"image must be frames \(B=1, 3, H, W\)"):
        m(z, t, torch.zeros(2, 3, 16, 16), torch.zeros(1, 16, 4))
    with pytest.raises(ValueError, match=r"null must be a \(B,\) = \(1,\)"):
        m(z, t, torch.zeros(1, 3, 16, 16), torch.zeros(1, 16, 4), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="content_grid"):
        ImageToVideoConfig(content_grid=(0, 4))
    with pytest.raises(ValueError, match="pooled_only"):
        ImageToVideoConfig(semantic=SemanticImageEncoderConfig(pooled_only=True))


def test_sampling_is_seeded_and_decodes_clips():
    space = tiny_space()
    torch.manual_seed(0)
    m = ImageToVideo(tiny()).eval()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    a = sample_image_to_video(m, space, images, steps=3, frames=2)
    b = sample_image_to_video(m, space, images, steps=3, frames=2)
    assert a.shape == (2, 3, 2, 16, 16) and torch.equal(a, b)
    assert content_tokens(space, images).shape == (2, 16, 4)


def test_overfit_one_batch():
    """The Karpathy check: a tiny model fits 2 latent clips given their first frames (v-loss well below its start)."""
    space = tiny_space()
    videos, _ = caption_pool(2, size=16, frames=2)
    images = conditioning_frames(videos)
    x0, con = space.encode(videos), content_tokens(space, images)
    torch.manual_seed(0)
    m = ImageToVideo(tiny())
    trainer = DiffusionTrainer(m, t2v_schedule(), prediction="v", lr=3e-3, warmup_steps=5, ema_decay=None)
    first = [trainer.step(x0, image=images, content=con)["loss"] for _ in range(5)]
    for _ in range(150):
        trainer.step(x0, image=images, content=con)
    assert sum(trainer.losses[-20:]) / 20 < 0.5 * sum(first) / 5


class _NoWork:
    """A latent space that fails the test if anything is encoded."""

    def encode(self, videos):
        raise AssertionError("work started before the arguments were checked")


def test_train_image_to_video_runs_and_checks_its_arguments_first():
    """The trainer end to end on 8 clips (3 steps, the EMA model returned in eval mode, finite losses, the log every
    steps // 10); naming the CPU as a string or a torch.device trains bit for bit as the default; a bad ``device``,
    ``steps`` or ``image_dropout`` is refused before any clip is encoded."""
    from minivid.pipeline.image2video import train_image_to_video

    for bad, match in ((dict(device="tpu"), "device='tpu'"), (dict(steps=0), "steps=0"),
                       (dict(image_dropout=1.0), "image_dropout=1.0")):
        with pytest.raises(ValueError, match=match):
            train_image_to_video(_NoWork(), **{"steps": 3, **bad})
    runs = []
    for device in (None, "cpu", torch.device("cpu")):
        lines = []
        model, trainer = train_image_to_video(tiny_space(), 3, batch=4, num_clips=8, config=tiny(content_grid=(8, 8)),
                                              progress=False, log=lines.append,
                                              **({} if device is None else {"device": device}))
        assert not model.training and len(trainer.losses) == 3 and all(map(math.isfinite, trainer.losses))
        assert lines[-1].startswith("  step 3/3: loss")
        runs.append((model.state_dict(), trainer.losses))
    for state, losses in runs[1:]:
        assert losses == runs[0][1] and all(torch.equal(v, runs[0][0][k]) for k, v in state.items())
