"""The model zoo: the loader API on a zoo the test writes itself, and the shipped zoo in data/pretrained/ (every
entry the issue lists, each loading, reproducible by the command on its card, its metrics recomputable)."""

import json
import math

import pytest
import torch

import minivid.pretrained as zoo
from minivid import save_model
from minivid.autoencoders import VAE2D, VAE2DConfig

SHIPPED = ("vae2d", "causal-vae", "reducio-vae", "pvdm-ae", "pvdm-unet", "latte", "latent-unet", "t5", "t2v", "i2v",
           "motion-vae", "tora", "system", "system-causal", "system-reducio")


def _entry(root, name, model, card=True):
    save_model(model, root / name)
    if card:
        (root / name / "card.json").write_text(json.dumps({"name": name, "metrics": {"psnr": 1.0}}))


def test_api_on_a_zoo_written_here(tmp_path):
    torch.manual_seed(0)
    m = VAE2D(VAE2DConfig(channels=8, channel_mult=(1, 2), spatial_factor=2, num_res_blocks=1, norm_groups=4))
    _entry(tmp_path, "tiny", m)
    _entry(tmp_path, "no-card", m, card=False)  # incomplete: not listed
    (tmp_path / "stray.txt").write_text("not an entry")
    assert zoo.available(tmp_path) == ["tiny"]
    assert zoo.card("tiny", root=tmp_path)["metrics"] == {"psnr": 1.0}
    loaded = zoo.load("tiny", root=tmp_path)
    x = torch.rand(1, 3, 2, 8, 8) * 2 - 1
    assert type(loaded) is VAE2D and not loaded.training
    assert torch.equal(loaded.reconstruct(x), m.eval().reconstruct(x))
    with pytest.raises(ValueError, match=r"name='no-card' is not in the model zoo at .*available: \['tiny'\]"):
        zoo.load("no-card", root=tmp_path)
    with pytest.raises(ValueError, match=r"name=3 must be a zoo name"):
        zoo.card(3, root=tmp_path)
    assert zoo.available(tmp_path / "missing") == []


def test_half_precision_weights_load_as_float32(tmp_path):
    torch.manual_seed(0)
    m = VAE2D(VAE2DConfig(channels=8, channel_mult=(1, 2), spatial_factor=2, num_res_blocks=1, norm_groups=4))
    _entry(tmp_path, "half", m.half())
    loaded = zoo.load("half", root=tmp_path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert torch.equal(next(loaded.parameters()), next(m.parameters()).float())


def test_env_variable_points_at_another_zoo(tmp_path, monkeypatch):
    _entry(tmp_path, "tiny", VAE2D(VAE2DConfig(channels=8, channel_mult=(1, 2), spatial_factor=2, num_res_blocks=1,
                                               norm_groups=4)))
    monkeypatch.setenv("MINIVID_PRETRAINED", str(tmp_path))
    assert zoo.available() == ["tiny"]


# ---------------------------------------------------------------- the shipped zoo
def test_the_shipped_zoo_has_every_entry_with_a_reproducible_card():
    from minivid.pipeline.zoo import RECIPES
    root = zoo.DEFAULT_ROOT
    assert set(SHIPPED) <= set(zoo.available(root))
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    # the zoo lives in git: 15 entries in 42 MB (system-reducio's 2.9 MB took it past the earlier 40 MB; t5 0.3 MB)
    assert total < 45e6, f"the zoo is {total / 1e6:.1f} MB (limit 45 MB)"
    for name in SHIPPED:
        card = zoo.card(name, root=root)
        assert card["command"].split()[:5] == ["python", "-m", "minivid", "train", name] and name in RECIPES
        assert card["steps"] >= 1 and card["train_seconds"] > 0 and card["machine"] and card["commit"]
        model = zoo.load(name, root=root)
        assert type(model).__name__ == card["model_class"] and model.num_parameters() == card["parameters"]
        assert set(card["requires"]) <= set(SHIPPED)
        assert "metrics" in card and (root / name / "train.log").is_file()


def test_the_zoo_readme_is_rendered_from_the_cards():
    from minivid.pipeline.zoo import zoo_readme
    assert (zoo.DEFAULT_ROOT / "README.md").read_text() == zoo_readme(zoo.DEFAULT_ROOT)


@pytest.mark.parametrize("name", ["vae2d", "causal-vae", "reducio-vae", "pvdm-ae"])
def test_zoo_autoencoder_cards_hold_the_models_numbers(name):
    """The card's numbers are the model's: 8 held-out clips recomputed here agree with the card's 64 (32 at 64 px)
    within the spread of a subset, and the card's margin is its PSNR minus its best baseline (for Reducio, whose decoder
    is given the content frame, its PSNR on the other frames), and its decoder uses its latent."""
    from minivid.pipeline.zoo import autoencoder_metrics, clip_pool
    card = zoo.card(name)
    m = autoencoder_metrics(zoo.load(name), clip_pool(8, card["data"]["size"], card["data"]["frames"], split="test"))
    assert abs(m["psnr"] - card["metrics"]["psnr"]) < 1.5
    c = card["metrics"]
    scored = "psnr_without_content_frame" if name == "reducio-vae" else "psnr"
    assert c["margin_on"] == scored
    assert c["margin_db"] == pytest.approx(c[scored] - max(c["baselines_psnr"].values()), abs=1e-3)
    # the decoder reads its latent: another clip's latent decodes at least 3 dB worse (PSNR over all frames, as
    # psnr_wrong_latent), on the card and here
    assert c["psnr"] > c["psnr_wrong_latent"] + 3 and m["psnr"] > m["psnr_wrong_latent"] + 3


@pytest.mark.parametrize("name", ["vae2d", "pvdm-ae", "causal-vae", "reducio-vae"])
def test_zoo_autoencoders_beat_every_latent_free_baseline_by_3_db(name):
    """Issue 14's goal on the card (32-64 held-out clips): 3 dB above the best latent-free baseline, Reducio on the
    frames other than the content frame it is given; recomputed on 8 clips, at least 2 dB above (a subset's spread)."""
    from minivid.pipeline.zoo import autoencoder_metrics, clip_pool
    card = zoo.card(name)
    m = autoencoder_metrics(zoo.load(name), clip_pool(8, card["data"]["size"], card["data"]["frames"], split="test"))
    assert m["margin_db"] > 2 and card["metrics"]["margin_db"] > 3


def test_the_zoo_reducio_is_within_1_db_of_the_causal_vae_at_16x_its_compression():
    """Issue 14's goal (Reducio's claim at our scale): on the frames it is not given, the Reducio VAE (4x32x32 and the
    content frame) is within 1 dB of the causal VAE (4x8x8), whose compression factor is 16x smaller (256 against
    4096: 3072 latent values for a 9-frame clip against 128 for 8 frames); and its latent carries the motion: another clip's latent decodes at least 3 dB worse (the cards' held-out clips)."""
    red, causal = zoo.card("reducio-vae")["metrics"], zoo.card("causal-vae")["metrics"]
    assert red["psnr_without_content_frame"] > causal["psnr"] - 1
    elements = [math.prod(c["latent_shape"]) for c in (causal, red)]
    assert elements == [3072, 128]
    assert red["psnr"] > red["psnr_wrong_latent"] + 3


def test_zoo_t2v_follows_its_captions_better_than_chance():
    """The zoo's text-to-video model: recomputed on 32 held-out captions, its samples show the caption's colour more
    often than the same samples scored against shuffled captions (chance), as its card (64 captions) says."""
    from minivid.autoencoders import LatentSpace
    from minivid.metrics import caption_accuracy
    from minivid.pipeline.text2video import caption_pool, sample_text_to_video
    card = zoo.card("t2v")
    space = LatentSpace(zoo.load(card["autoencoder"]), card["latent_scale"])
    _, captions = caption_pool(32, split="test")
    videos = sample_text_to_video(zoo.load("t2v"), space, captions, guidance=card["metrics"]["guidance"])
    ours, chance = caption_accuracy(videos, captions), caption_accuracy(videos, captions[1:] + captions[:1])
    assert ours["color"] >= chance["color"] + 0.1
    m = card["metrics"]["samples"]
    assert m["caption_accuracy"]["color"] > m["caption_accuracy_shuffled_captions"]["color"] + 0.1
    assert card["storage_dtype"] == "float16" and card["metrics_float32"]["samples"]["sprite_check"] == pytest.approx(
        m["sprite_check"], abs=0.05)


def test_zoo_latent_unet_samples_pass_the_sprite_check_with_the_asked_colour():
    """The zoo's latent U-Net (one-sprite clips, class = colour x motion): recomputed on 16 samples, most pass the
    sprite check and show the label's colour in every frame; its card's 64 samples say the same."""
    from minivid.autoencoders import LatentSpace
    from minivid.metrics import sprite_scores
    from minivid.pipeline.zoo import color_accuracy, sample_latent_unet
    card = zoo.card("latent-unet")
    space = LatentSpace(zoo.load(card["autoencoder"]), card["latent_scale"])
    labels = torch.arange(16) * 2  # every colour, two motions each
    videos = sample_latent_unet(zoo.load("latent-unet"), space, labels, guidance=card["metrics"]["guidance"])
    assert sprite_scores(videos)["sprite_check"] >= 0.5 and color_accuracy(videos, labels) >= 0.75
    m = card["metrics"]["samples"]
    assert m["sprite_check"] >= 0.8 and m["color_accuracy"] >= 0.9 and m["color_accuracy_shuffled_labels"] <= 0.1


def test_zoo_latte_samples_keep_the_asked_colour():
    """The zoo's Latte (one-sprite clips, class = colour x motion): recomputed on 16 samples, most show the label's
    colour in every frame (chance: 1 in 8) and pass the sprite check; its card's 64 samples meet the issue's 80%."""
    from minivid.autoencoders import LatentSpace
    from minivid.metrics import sprite_scores
    from minivid.pipeline.zoo import color_accuracy, sample_latte
    card = zoo.card("latte")
    space = LatentSpace(zoo.load(card["autoencoder"]), card["latent_scale"])
    labels = torch.arange(16) * 2  # every colour, two motions each
    videos = sample_latte(zoo.load("latte"), space, labels, guidance=card["metrics"]["guidance"])
    assert color_accuracy(videos, labels) >= 0.75 and color_accuracy(videos, (labels + 4) % 32) <= 0.25
    assert sprite_scores(videos)["sprite_check"] >= 0.5
    m = card["metrics"]["samples"]
    assert m["sprite_check"] >= 0.8 and m["color_accuracy"] >= 0.9


def test_zoo_i2v_starts_from_its_frame():
    """The zoo's image-to-video model (Reducio-DiT on the first frame): recomputed on 16 held-out first frames, its
    clips keep the frame's sprite colour and start within a pixel of the frame's sprite, far better than the same
    clips against shuffled frames; its card's 64 samples say the same."""
    from minivid.autoencoders import LatentSpace
    from minivid.pipeline.image2video import conditioning_frames, image_to_video_scores, sample_image_to_video
    from minivid.pipeline.text2video import caption_pool
    card = zoo.card("i2v")
    space = LatentSpace(zoo.load(card["autoencoder"]), card["latent_scale"])
    real, _ = caption_pool(16, split="test", seed=2)
    first = conditioning_frames(real)
    videos = sample_image_to_video(zoo.load("i2v"), space, first, guidance=card["metrics"]["guidance"])
    ours, chance = image_to_video_scores(videos, first), image_to_video_scores(videos, torch.roll(first, 1, 0))
    assert ours["color_kept"] >= 0.5 and ours["start_found"] >= 0.8 and ours["start_error_px"] < 1.5
    assert ours["color_kept"] >= chance["color_kept"] + 0.3 and ours["frame_psnr"] >= chance["frame_psnr"] + 8
    m = card["metrics"]["samples"]
    assert m["sprite_check"] >= 0.8 and m["color_kept"] > m["shuffled_frames"]["color_kept"] + 0.5  # the 80%
    assert card["storage_dtype"] == "float16"


def test_zoo_motion_vae_keeps_where_the_marks_are():
    """Tora's motion VAE: on 8 held-out one-object flow videos its reconstructions beat the all-white output by more
    than 10 dB and keep the marks' centre within 1 px, as its card (64 videos) says."""
    from minivid.pipeline.tora import motion_pool, motion_vae_metrics
    card = zoo.card("motion-vae")
    m = motion_vae_metrics(zoo.load("motion-vae").float(), motion_pool(8, kind="sparse", split="test", num_sprites=1))
    assert m["clip_psnr"] > m["clip_psnr_all_white"] + 10 and m["mark_centre_error_px"] < 1.0
    c = card["metrics"]["sparse_one_object"]
    assert abs(m["clip_psnr"] - c["clip_psnr"]) < 3 and c["mark_centre_error_px"] < 1.0


def test_zoo_tora_follows_the_requested_paths():
    """The zoo's Tora: on 8 held-out one-sprite clips (first frame + the sprite's own path) its sprites are closer to
    the path with the trajectory than the base model is without it, as its card's table (64 clips) says."""
    from minivid.metrics import path_errors
    from minivid.pipeline.tora import sample_tora, tora_data
    from minivid.pipeline.zoo import zoo_latent_space
    card = zoo.card("tora")
    space = zoo_latent_space("vae2d", card["latent_scale"])
    motion = zoo_latent_space("motion-vae", card["motion_latent_scale"])
    test = tora_data(space, motion, 8, split="test", num_sprites=1)
    model = zoo.load("tora").float()
    paths, colors = torch.stack([p[0] for p in test.paths]), test.colors[:, 0]
    first = test.video[:, :, 0]
    with_path = path_errors(sample_tora(model, space, first, test.sparse, test.null, guidance=card["metrics"]["guidance"]),
                            paths, colors)
    without = path_errors(sample_tora(model, space, first, None), paths, colors)
    assert with_path["trajectory_error_px"] < without["trajectory_error_px"]
    table = card["metrics"]["table"]
    assert table[card["metrics"]["fuser"]]["trajectory_error_px"] < table["no trajectory"]["trajectory_error_px"]
    real = card["metrics"]["real_clips"]
    assert real["own_paths"]["trajectory_error_px"] < 0.2 < 5 < real["shuffled_paths"]["trajectory_error_px"]


@pytest.mark.parametrize("name", ["system", "system-causal"])
def test_zoo_system_follows_paths_and_captions(name):
    """The zoo's full systems (the cpu preset on vae2d latents, cpu-causal on the causal VAE's): on 8 held-out
    one-sprite clips, their sprites are closer to the sprites' own paths when the paths are given than when they are
    not, and they show the caption's colour more often than against shuffled captions; their cards (64 clips, three
    uses) say the same, and given a path at least 80% of the samples pass the sprite check."""
    from minivid.metrics import caption_accuracy, path_errors
    from minivid.pipeline.run import load_run, run_spaces, system_data
    from minivid.pipeline.system import sample_system

    model, cfg, _ = load_run(name)
    space, motion_space = run_spaces(cfg)
    test = system_data(space, motion_space, 8, cfg.size, cfg.frames, split="test")
    shape = (model.config.latent_channels, *test.latents.shape[2:])
    paths = torch.stack([p[0] for p in test.paths])
    with_path = space.decode(sample_system(model, test.captions, shape, motion=test.motion,
                                           null_motion=test.null_motion, steps=10))
    without = space.decode(sample_system(model, test.captions, shape, null_motion=test.null_motion, steps=10))
    assert (path_errors(with_path, paths, test.colors, from_frame=0)["trajectory_error_px"]
            < path_errors(without, paths, test.colors, from_frame=0)["trajectory_error_px"])
    ours = caption_accuracy(with_path, test.captions)["color"]
    assert ours >= caption_accuracy(with_path, test.captions[1:] + test.captions[:1])["color"]
    m = zoo.card(name)["metrics"]
    assert m["text+trajectory"]["trajectory_error_px"] < m["text"]["trajectory_error_px"]
    assert m["text+trajectory"]["caption_accuracy"]["color"] > 0.2
    assert m["text+trajectory"]["sprite_check"] >= 0.8


def test_cli_samples_the_zoo_causal_system_to_mp4_and_png(tmp_path, capsys):
    """`python -m minivid sample --checkpoint system-causal`: a 12-frame video (two 9-frame clips, the second continued
    from the first's last frame) written as an mp4 and a PNG frame grid; the mp4 holds what ``generate`` makes for the
    same inputs (to the h264 coding error), and the same seed writes the same video again."""
    from minivid.__main__ import main
    from minivid.pipeline.run import generate, load_run, run_spaces
    from minivid.utils.video import read_video

    traj = tmp_path / "path.json"
    traj.write_text("[[6, 40], [58, 24]]")
    argv = ["sample", "--checkpoint", "system-causal", "--prompt", "a red square moves right", "--trajectory",
            str(traj), "--frames", "12", "--steps", "4", "--seed", "3", "--device", "cpu"]
    outputs = []
    for name in ("a.mp4", "b.mp4"):
        assert main(argv + ["--out", str(tmp_path / name)]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["frames"] == 12 and (tmp_path / name).with_suffix(".png").is_file()
        outputs.append(read_video(tmp_path / name))
    assert outputs[0].shape == (3, 12, 64, 64) and torch.equal(outputs[0], outputs[1])
    model, cfg, _ = load_run("system-causal")
    space, motion = run_spaces(cfg)
    ref = generate(model, cfg, space, motion, prompt="a red square moves right", trajectory=str(traj), frames=12,
                   steps=4, seed=3, guidance={"text": 4.0, "trajectory": 2.0, "frames": 1.0})
    assert (outputs[0] - ref).abs().mean() < 0.05  # h264 at qp 20 on 64 px frames


def test_zoo_reducio_system_moves_the_content_frame_as_the_caption_says():
    """The zoo's full system on the Reducio VAE (cpu-reducio): on 8 held-out one-sprite clips given their content
    frames and captions, the tracked sprites are closer to the clips' own paths than the content frame held still
    for the whole clip, and closer with the clip's own caption than with another clip's (the direction is in the
    caption); its card (64 clips) shows the asked direction more often than half the time, where the still frame shows
    none, and keeps the sprite check at 80% or more."""
    from minivid.metrics import path_errors
    from minivid.pipeline.run import decode_latents, load_run, run_spaces, system_data
    from minivid.pipeline.system import sample_system

    model, cfg, _ = load_run("system-reducio")
    space, _ = run_spaces(cfg)
    test = system_data(space, None, 8, cfg.size, cfg.frames, split="test")
    shape = (model.config.latent_channels, *test.latents.shape[2:])
    paths, images = torch.stack([p[0] for p in test.paths]), test.images.float()

    def error(captions):
        z = sample_system(model, captions, shape, image=images, steps=10)
        return path_errors(decode_latents(space, z, images), paths, test.colors)["trajectory_error_px"]
    still = images[:, :, None].expand(-1, -1, cfg.frames, -1, -1)
    own = error(test.captions)
    assert own < path_errors(still, paths, test.colors)["trajectory_error_px"]
    assert own < error(test.captions[4:] + test.captions[:4])
    m = zoo.card("system-reducio")["metrics"]
    assert m["image+text"]["caption_accuracy"]["direction"] > 0.5 > m["content frame repeated"]["caption_accuracy"][
        "direction"]
    assert m["image+text"]["trajectory_error_px"] < m["content frame repeated"]["trajectory_error_px"]
    assert m["image+text"]["sprite_check"] >= 0.8


def test_cli_samples_the_zoo_reducio_system_through_its_image(tmp_path, capsys):
    """`python -m minivid sample --checkpoint system-reducio --image PNG`: 12 frames (two 8-frame clips, the second
    through the first's last frame); frame 3 is the image (the content frame, which the decoder reproduces up to its
    warp and the h264 coding error), and without --image the command stops before any work, naming it."""
    from minivid.__main__ import main
    from minivid.data import MiniSprites
    from PIL import Image

    from minivid.utils.video import read_video

    clips = MiniSprites(num_videos=1, size=64, num_frames=8, split="test", seed=7, num_sprites=1)
    clip = clips[0]["video"]
    png = tmp_path / "image.png"
    Image.fromarray(((clip[:, 3].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(png)
    argv = ["sample", "--checkpoint", "system-reducio", "--prompt", clips.scene(0).caption, "--frames", "12",
            "--steps", "4", "--device", "cpu"]
    assert main(argv + ["--image", str(png), "--out", str(tmp_path / "a.mp4")]) == 0
    info = json.loads(capsys.readouterr().out)
    video = read_video(tmp_path / "a.mp4")
    assert info["frames"] == 12 and video.shape == (3, 12, 64, 64)
    assert (video[:, 3] - clip[:, 3]).abs().mean() < 0.05
    with pytest.raises(SystemExit):
        main(argv + ["--out", str(tmp_path / "b.mp4")])
    assert "image is required with latent='reducio-vae'" in capsys.readouterr().err
