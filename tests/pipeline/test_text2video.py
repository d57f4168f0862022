"""Text-to-video (T5 + expert transformer, D9-D10): the caption scorer against MiniSprites' own clips, the mask,
the empty caption, sampling from SNR = 0 and a one-batch overfit."""

import pytest
import torch

from minivid.autoencoders import VAE2D, VAE2DConfig, LatentSpace
from minivid.conditioning import TextEncoderConfig
from minivid.diffusion import DiffusionTrainer
from minivid.pipeline.text2video import (TextToVideo, TextToVideoConfig, caption_accuracy, caption_pool,
                                         parse_caption, sample_text_to_video, t2v_schedule)
from minivid.transformers import ExpertTransformerConfig


def tiny(**kw) -> TextToVideoConfig:
    return TextToVideoConfig(
        text=TextEncoderConfig(max_length=24, pad_to_max_length=True, d_model=16, d_kv=4, d_ff=32, num_layers=1,
                               num_heads=2),
        transformer=ExpertTransformerConfig(in_channels=4, patch_size=2, heads=2, head_dim=16, depth=2,
                                            time_embed_dim=16, text_dim=16, max_text_len=24, rope_grid="slice",
                                            base_size=(4, 4), **kw))


def test_parse_caption_reads_colour_direction_and_turn():
    assert parse_caption("a red triangle moves up") == {"color": "red", "direction": 90.0, "turn": None}
    assert parse_caption("an orange triangle moves left along a wavy path")["direction"] == 180.0
    assert parse_caption("a green diamond moves down and to the right")["direction"] == 315.0
    assert parse_caption("a white diamond circles clockwise")["turn"] == -1
    assert parse_caption("a red square bounces") == {"color": "red", "direction": None, "turn": None}
    with pytest.raises(ValueError, match="caption='a thing moves up'"):
        parse_caption("a thing moves up")


def test_caption_accuracy_is_high_on_real_clips_and_low_on_shuffled_captions():
    videos, captions = caption_pool(64, split="test")
    real = caption_accuracy(videos, captions)
    assert real["color"] == 1.0 and real["direction"] >= 0.9 and real["direction_clips"] >= 30
    shuffled = caption_accuracy(videos, captions[1:] + captions[:1])
    assert shuffled["color"] < 0.4 and shuffled["direction"] < 0.7


def test_caption_accuracy_bad_input():
    with pytest.raises(ValueError, match="equally many"):
        caption_accuracy(torch.zeros(2, 3, 4, 8, 8), ["a red circle bounces"])


def test_config_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="text_dim=8 must equal"):
        TextToVideoConfig(text=TextEncoderConfig(d_model=16), transformer=ExpertTransformerConfig(text_dim=8))


def test_padding_tokens_do_not_change_the_prediction_and_the_caption_does():
    torch.manual_seed(0)
    model = TextToVideo(tiny(zero_init=False)).eval()
    x, t = torch.randn(2, 4, 2, 4, 4), torch.tensor([10, 500])
    ids, mask = model.tokenize(["a red circle moves up", "a blue square bounces"])
    with torch.no_grad():
        out = model(x, t, ids, mask)
        ids2 = ids.clone()
        ids2[~mask] = 7  # change only the padded positions
        assert torch.allclose(model(x, t, ids2, mask), out, atol=1e-6)
        other, other_mask = model.tokenize(["a green circle moves up", "a blue square bounces"])
        changed = model(x, t, other, other_mask)
    assert not torch.allclose(changed[0], out[0], atol=1e-4)
    assert torch.allclose(changed[1], out[1], atol=1e-6)  # the batch's other clip is untouched


def test_the_schedule_ends_at_zero_snr_and_sampling_starts_there():
    s = t2v_schedule()
    assert float(s.alphas_cumprod[-1]) == 0.0
    torch.manual_seed(0)
    model = TextToVideo(tiny(zero_init=False)).eval()
    vae = VAE2D(VAE2DConfig(channels=8, num_res_blocks=1, norm_groups=4, spatial_factor=4, latent_channels=4)).eval()
    videos = sample_text_to_video(model, LatentSpace(vae, 1.0), ["a red circle moves up", "a cyan square bounces"],
                                  steps=4, frames=2, latent_size=4)
    assert videos.shape == (2, 3, 2, 16, 16) and torch.isfinite(videos).all()
    again = sample_text_to_video(model, LatentSpace(vae, 1.0), ["a red circle moves up", "a cyan square bounces"],
                                 steps=4, frames=2, latent_size=4)
    assert torch.equal(videos, again)  # the same seed gives the same clips


def test_overfit_one_batch():
    """The Karpathy check: a tiny model fits 2 latent clips with their captions (v-loss well below its start)."""
    torch.manual_seed(0)
    model = TextToVideo(tiny())
    x0 = torch.randn(2, 4, 2, 4, 4)
    ids, mask = model.tokenize(["a red circle moves up", "a blue square bounces"])
    trainer = DiffusionTrainer(model, t2v_schedule(), prediction="v", lr=3e-3, warmup_steps=5, ema_decay=None)
    first = [trainer.step(x0, ids=ids, mask=mask)["loss"] for _ in range(5)]
    for _ in range(150):
        trainer.step(x0, ids=ids, mask=mask)
    last = sum(trainer.losses[-20:]) / 20
    assert last < 0.5 * sum(first) / 5


def test_image_caption_drops_the_motion():
    from minivid.pipeline.text2video import image_caption

    assert image_caption("a yellow diamond moves down and to the right along a wavy path") == "a yellow diamond"
    assert image_caption("an orange square bounces") == "an orange square"
    with pytest.raises(ValueError, match="names no palette colour"):
        image_caption("a sprite moves")


@pytest.mark.filterwarnings("ignore:.*longer than max_length")
def test_progressive_mixed_image_video_training_runs_every_stage():
    """C6 end to end: two resolutions in order, a quarter of every batch images padded with a frame mask (that the
    padded items' loss and outputs equal the unpadded ones is tested in test_losses and test_cogvideox)."""
    from minivid.data import Stage
    from minivid.pipeline.text2video import train_text_to_video

    vae = VAE2D(VAE2DConfig(channels=8, num_res_blocks=1, norm_groups=4, spatial_factor=4, latent_channels=4)).eval()
    lines = []
    model, trainer = train_text_to_video(LatentSpace(vae, 1.0), steps=6, batch=4, num_clips=8, config=tiny(),
                                         stages=[Stage(3, 16, 2), Stage(3, 32, 2)], image_ratio=0.25,
                                         progress=False, log=lines.append)
    assert len(trainer.losses) == 6 and all(torch.isfinite(torch.tensor(trainer.losses)))
    assert [ln.split(":")[0].strip() for ln in lines if "stage" in ln] == ["stage 1/2", "stage 2/2"]
    assert "(latents (4, 2, 4, 4))" in lines[0] and "(latents (4, 2, 8, 8))" in lines[[i for i, ln in
                                                                                      enumerate(lines)
                                                                                      if "stage 2/2" in ln][0]]
    with pytest.raises(ValueError, match="add up to 6 steps, but steps=5"):
        train_text_to_video(LatentSpace(vae, 1.0), steps=5, config=tiny(), stages=[Stage(6, 16, 2)])
    with pytest.raises(ValueError, match="image_ratio=1.0 must lie in"):
        train_text_to_video(LatentSpace(vae, 1.0), steps=5, config=tiny(), image_ratio=1.0)


def test_text_encoder_starts_the_t5_from_the_zoo_system_and_keeps_it_frozen():
    """text_encoder copies a trained T5 (the zoo system's, as CogVideoX starts from a pretrained T5) before the first
    step; with config.text.trainable=False it still equals the source after training, the transformer trains; a
    T5 of another shape is refused with the differing field, anything else before any work."""
    import dataclasses

    from minivid import pretrained
    from minivid.pipeline.text2video import train_text_to_video

    vae = VAE2D(VAE2DConfig(channels=8, num_res_blocks=1, norm_groups=4, spatial_factor=4, latent_channels=4)).eval()
    system_text = pretrained.load("t5")
    source = {k: v.clone() for k, v in system_text.state_dict().items()}
    text = dataclasses.replace(TextToVideoConfig().text, trainable=False)
    small = ExpertTransformerConfig(in_channels=4, patch_size=2, heads=2, head_dim=16, depth=1, time_embed_dim=16,
                                    text_dim=text.d_model, max_text_len=text.max_length, rope_grid="slice",
                                    base_size=(8, 8))
    config = TextToVideoConfig(text=text, transformer=small)
    model, trainer = train_text_to_video(LatentSpace(vae, 1.0), steps=3, batch=2, num_clips=4, config=config,
                                         text_encoder=system_text, progress=False, log=lambda m: None)
    for k, v in source.items():
        assert torch.equal(v, model.text.state_dict()[k]), k
    torch.manual_seed(0)  # train_text_to_video builds its model right after seeding with SEED = 0
    fresh = TextToVideo(config)
    assert not torch.equal(fresh.text.state_dict()["t5.shared.weight"], source["t5.shared.weight"])
    assert any(not torch.equal(a, b) for a, b in zip(fresh.transformer.parameters(), model.transformer.parameters()))
    wide = TextToVideoConfig(text=dataclasses.replace(text, d_ff=64), transformer=small)
    with pytest.raises(ValueError, match=r"text_encoder: its text encoder differs from model.text \(d_ff: 128 -> 64\)"):
        train_text_to_video(LatentSpace(vae, 1.0), steps=1, batch=2, num_clips=4, config=wide,
                            text_encoder=system_text, progress=False)
    with pytest.raises(ValueError, match=r"text_encoder must be a TextEncoder, got str"):
        train_text_to_video(LatentSpace(vae, 1.0), steps=1, config=config, text_encoder="system")


@pytest.mark.filterwarnings("ignore:.*were truncated")
def test_the_cosine_schedule_option_trains_and_samples_on_its_own_schedule():
    """``schedule="cosine"``: training draws from Improved DDPM's schedule (D1) and the sampler equals DPM-Solver++
    composed by hand with that schedule's log-SNR timesteps; the default stays CogVideoX's zero-terminal SNR."""
    from minivid.diffusion import NoiseSchedule, classifier_free_guidance, dpm_solver_pp_sample, make_timesteps
    from minivid.pipeline.text2video import text_to_video_schedule, train_text_to_video

    cos = NoiseSchedule.cosine(1000)
    s, spacing = text_to_video_schedule(_with_schedule("cosine"))
    assert spacing == "logsnr" and torch.equal(s.alphas_cumprod, cos.alphas_cumprod)
    s, spacing = text_to_video_schedule(tiny())
    assert spacing == "trailing" and torch.equal(s.alphas_cumprod, t2v_schedule().alphas_cumprod)

    vae = VAE2D(VAE2DConfig(channels=8, num_res_blocks=1, norm_groups=4, spatial_factor=4, latent_channels=4)).eval()
    space = LatentSpace(vae, 1.0)
    model, trainer = train_text_to_video(space, 2, batch=2, num_clips=4, config=_with_schedule("cosine"),
                                         progress=False, log=lambda _: None)
    assert torch.equal(trainer.schedule.alphas_cumprod.to(cos.alphas_cumprod.dtype), cos.alphas_cumprod)

    captions = ["a red circle moves up", "a cyan square bounces"]
    videos = sample_text_to_video(model, space, captions, steps=4, frames=2, latent_size=4, guidance=3.0)
    ids, mask = model.tokenize(captions)
    null_ids, null_mask = model.tokenize(["", ""])
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn((2, 4, 2, 4, 4), generator=g)
    fn = classifier_free_guidance(model, {"ids": ids, "mask": mask}, {"ids": null_ids, "mask": null_mask}, 3.0)
    with torch.no_grad():
        z = dpm_solver_pp_sample(fn, x_T, cos, make_timesteps(cos, 4, "logsnr"), prediction="v")
        assert torch.allclose(videos, space.decode(z), atol=1e-6)


def _with_schedule(schedule: str) -> TextToVideoConfig:
    import dataclasses

    return dataclasses.replace(tiny(), schedule=schedule)


def test_an_unknown_schedule_is_a_clear_error():
    with pytest.raises(ValueError, match=r"schedule='linear' is not supported; allowed: \('cogvideox', 'cosine'\)"):
        _with_schedule("linear")


class _NoWork:
    """A latent space that fails the test if anything is encoded or decoded."""

    def encode(self, videos):
        raise AssertionError("work started before the arguments were checked")

    decode = encode


@pytest.mark.filterwarnings("ignore:.*were truncated")
def test_device_is_checked_before_any_work_and_cpu_is_the_default():
    """Training and sampling refuse a bad ``device`` before a clip is encoded or decoded; naming the CPU (a string
    or a torch.device) trains and samples bit for bit as the default does."""
    from minivid.pipeline.text2video import train_text_to_video

    with pytest.raises(ValueError, match="device='tpu' is invalid"):
        train_text_to_video(_NoWork(), 2, config=tiny(), device="tpu")
    with pytest.raises(ValueError, match="device='tpu' is invalid"):
        sample_text_to_video(TextToVideo(tiny()), _NoWork(), ["a red circle moves up"], device="tpu")
    vae = VAE2D(VAE2DConfig(channels=8, num_res_blocks=1, norm_groups=4, spatial_factor=4, latent_channels=4)).eval()
    space = LatentSpace(vae, 1.0)
    runs = []
    for device in (None, "cpu", torch.device("cpu")):
        kw = {} if device is None else {"device": device}
        model, trainer = train_text_to_video(space, 2, batch=2, num_clips=4, config=tiny(), progress=False,
                                             log=lambda _: None, **kw)
        videos = sample_text_to_video(model, space, ["a red circle moves up"], steps=2, frames=2, latent_size=4, **kw)
        runs.append((trainer.losses, videos))
    for losses, videos in runs[1:]:
        assert losses == runs[0][0] and torch.equal(videos, runs[0][1])
