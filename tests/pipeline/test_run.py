"""A run of the full system in a folder: a stopped and resumed run equals an uninterrupted one bit for bit (weights,
EMA, log), and the folder is protected (no overwrite, no resume with another config)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from minivid.nn import load_model
from minivid.pipeline.run import SystemData, SystemRunConfig, read_log, train_system
from minivid.pipeline.system import ConditionDropout

sys.path.insert(0, str(Path(__file__).parent))
from system_tiny import HW, T, tiny  # noqa: E402

N = 16


def fake_data() -> SystemData:
    g = torch.Generator().manual_seed(0)
    caps = [f"a {c} dot, {d}" for c in ("red", "blue", "green", "pink") for d in ("left", "up", "down", "right")]
    return SystemData(torch.randn(N, 4, T, HW, HW, generator=g), caps, torch.randn(N, 2, T, HW, HW, generator=g),
                      torch.zeros(1, 2, T, HW, HW), [None] * N)


def cfg(**kw) -> SystemRunConfig:
    base = dict(model=tiny(zero_init=True), dropout=ConditionDropout(previous_frames=2), num_clips=N, steps=6,
                global_batch=4, lr=3e-3, warmup=2, ema_decay=0.9, checkpoint_every=3, log_every=1, keep=2)
    base.update(kw)
    return SystemRunConfig(**base)


def test_stopped_and_resumed_equals_uninterrupted(tmp_path):
    data = fake_data()
    whole = train_system(cfg(), tmp_path / "whole", data, progress=False, log=lambda m: None)
    part = train_system(cfg(), tmp_path / "part", data, stop_after=4, progress=False, log=lambda m: None)
    assert part.num_updates == 4  # stopped after step 4: the last checkpoint is step 3, step 4 is lost
    assert [r["step"] for r in read_log(tmp_path / "part" / "log.csv")] == [1, 2, 3, 4]
    del part
    resumed = train_system(cfg(), tmp_path / "part", data, resume=True, progress=False, log=lambda m: None)
    assert resumed.num_updates == whole.num_updates == 6
    for a, b in ((whole.model, resumed.model), (whole.ema, resumed.ema)):
        for k, v in a.state_dict().items():
            assert torch.equal(v, b.state_dict()[k]), k
    log_a, log_b = read_log(tmp_path / "whole" / "log.csv"), read_log(tmp_path / "part" / "log.csv")
    assert [(r["step"], r["loss"], r["lr"]) for r in log_a] == [(r["step"], r["loss"], r["lr"]) for r in log_b]
    # the checkpoint's EMA loads with minivid.load_model; the run's config round-trips
    ema = load_model(tmp_path / "whole" / "checkpoints" / "step-00000006" / "ema")
    assert torch.equal(ema.state_dict()["transformer.proj_out.weight"], whole.ema.state_dict()["transformer.proj_out.weight"])
    assert SystemRunConfig.from_dict(json.loads((tmp_path / "whole" / "run.json").read_text())) == cfg()
    # the check can fail: a run that differs in one coin (the seed) ends elsewhere
    other = train_system(cfg(seed=1), tmp_path / "other", data, progress=False, log=lambda m: None)
    assert any(not torch.equal(v, other.model.state_dict()[k]) for k, v in whole.model.state_dict().items())


def test_the_folder_is_protected(tmp_path):
    data = fake_data()
    train_system(cfg(steps=3), tmp_path / "run", data, progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="step-00000003 exists \\(step 3\\); pass --resume"):
        train_system(cfg(steps=3), tmp_path / "run", data, progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="different config \\(\\['lr'\\]\\): lr: 0.003 -> 0.001"):
        train_system(cfg(steps=6, lr=1e-3), tmp_path / "run", data, resume=True, progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="holds no checkpoint"):
        train_system(cfg(), tmp_path / "empty", data, resume=True, progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="num_clips=8 of each"):
        train_system(cfg(num_clips=8), tmp_path / "small", data, progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="autocast='fp8'"):
        cfg(autocast="fp8")


def tiny_spaces():
    from minivid.autoencoders import CausalVAE, CausalVAEConfig, LatentSpace, VAE2D, VAE2DConfig

    torch.manual_seed(0)
    vae = VAE2D(VAE2DConfig(spatial_factor=4, latent_channels=4, channels=8, channel_mult=(1, 2, 2), num_res_blocks=1,
                            norm_groups=4, num_mid_blocks=0))
    motion = CausalVAE(CausalVAEConfig(spatial_factor=4, temporal_factor=1, latent_channels=2, channels=8,
                                       channel_mult=(1, 2, 2), num_res_blocks=1, norm_groups=4))
    return LatentSpace(vae), LatentSpace(motion)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    c = cfg(steps=3, size=16, frames=T)
    train_system(c, out, fake_data(), progress=False, log=lambda m: None)
    return out, c


def test_load_run_and_generate(trained):
    from minivid.pipeline.run import generate, load_run

    out, c = trained
    with pytest.raises(ValueError, match="device='tpu' is invalid"):
        load_run(out, device="tpu")
    model, cfg_back, folder = load_run(out)
    assert cfg_back == c and folder.name == "step-00000003"
    space, motion_space = tiny_spaces()
    kw = dict(prompt="a red dot, left", trajectory="[[2, 2], [12, 12]]", steps=2, seed=3)
    one = generate(model, c, space, motion_space, **kw)
    assert one.shape == (3, T, 16, 16) and one.abs().max() <= 1
    assert torch.equal(one, generate(model, c, space, motion_space, **kw))  # same inputs and seed, same video
    # a longer video continues the first clip: its first frames are that clip (window 0 draws the same noise)
    long = generate(model, c, space, motion_space, frames=7, prompt="a red dot, left", steps=2, seed=3)
    short = generate(model, c, space, motion_space, frames=T, prompt="a red dot, left", steps=2, seed=3)
    assert long.shape == (3, 7, 16, 16) and torch.equal(long[:, :T], short)
    # an image is the given first frame: the video starts with its reconstruction, at any input size (resized)
    image = torch.rand(3, 24, 24) * 2 - 1
    with_image = generate(model, c, space, motion_space, image=image, steps=2)
    from minivid.pipeline.run import prepare_image
    recon = space.decode(space.encode(prepare_image(image, 16)[None, :, None]))[0, :, 0]
    assert torch.allclose(with_image[:, 0], recon, atol=1e-5)


def test_generate_bad_input(trained):
    from minivid.pipeline.run import generate, load_run

    out, c = trained
    model, _, _ = load_run(out)
    space, motion_space = tiny_spaces()
    with pytest.raises(ValueError, match="prompt is 30 bytes; the text encoder reads at most 23"):
        generate(model, c, space, motion_space, prompt="x" * 30)
    with pytest.raises(ValueError, match="image must be \\(3, H, W\\)"):
        generate(model, c, space, motion_space, image=torch.zeros(16, 16))
    with pytest.raises(ValueError, match="not a run folder"):
        load_run(out.parent / "nothing")


def test_cli_refuses_bad_input_before_any_work(tmp_path, capsys, trained):
    from minivid.__main__ import main

    out, _ = trained
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("lr: [1, 2\n")
    traj = tmp_path / "t.json"
    traj.write_text('[[1, 2], [3, ')
    cases = [
        (["train", "cpux"], "did you mean 'cpu'"),
        (["train", "cpu", "--set", "model.transformr.depth=2"], "did you mean 'transformer'"),
        (["train", "cpu", "--set", "ema=0.9"], "did you mean 'ema_decay'"),
        (["train", "cpu", "--set", "lr"], "must be KEY=VALUE"),
        (["train", "cpu", "--config", str(bad_yaml)], "does not parse"),
        (["train", "cpu", "--device", "cuda:7"] if not torch.cuda.is_available() else ["train", "cpu", "--device", "tpu"],
         "--device"),
        (["train", "latte", "--resume"], "apply to the presets"),
        (["train", "cpu", "--rescore"], "--rescore applies to zoo recipes"),
        (["train", "cpu", "--threads", "0"], "--threads 0"),
        (["train", "cpu", "--out", str(out), "--set", "size=16"], "pass --resume to continue"),
        (["train", "cpu", "--out", str(tmp_path / "r1"), "--set", "latent=causal-vae"],
         "frames=8 is not reachable by the frame rule of latent='causal-vae'"),
        (["train", "cpu", "--out", str(tmp_path / "r1"), "--set", "latent=pvdm-ae"],
         "latent='pvdm-ae' is not a latent space the full system can run on"),
        (["train", "cpu", "--out", str(tmp_path / "r1"), "--set", "latent=reducio-vae", "size=64"],
         "model.transformer.out_channels=4 must be the 16 latent channels of latent='reducio-vae'"),
        (["train", "cpu-causal", "--out", str(tmp_path / "r1"), "--set", "model.motion.motion_channels=4"],
         "model.motion.motion_channels=4 must be 16"),
        (["train", "cpu", "--out", str(tmp_path / "r2"), "--set", "latent=vae"], "latent='vae' is not a zoo entry"),
        (["sample", "--checkpoint", str(tmp_path)], "not a run folder"),
        (["sample", "--checkpoint", str(out), "--image", str(tmp_path / "none.png")], "no such file"),
        (["sample", "--checkpoint", str(out), "--image", str(traj)], "not a readable image"),
        (["sample", "--checkpoint", str(out), "--trajectory", str(traj)], "line 1 column"),
        (["sample", "--checkpoint", str(out), "--out", "x.gif"], "must end with .mp4"),
        (["sample", "--checkpoint", str(out), "--frames", "0"], "--frames 0"),
        (["sample", "--checkpoint", str(out), "--steps", "0"], "--steps 0"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err
        assert message in err, (argv, err[-500:])
    # a key near nothing gets no guess: 'data' once drew "did you mean 'autocast'" (difflib ratio 0.5)
    with pytest.raises(SystemExit):
        main(["train", "cpu", "--set", "data.frames=9"])
    err = capsys.readouterr().err
    assert "has no field 'data'" in err and "did you mean" not in err, err[-500:]


def test_overrides_read_numbers_as_numbers_and_repeat(tmp_path):
    """`--set lr=5e-4` is a number (PyYAML alone keeps the string "5e-4": YAML 1.1 wants 5.0e-4), in a --config file
    too; repeated --set flags add up instead of the last one winning."""
    from minivid.pipeline.run import load_overrides_file, parse_overrides, preset_config

    got = parse_overrides(["lr=5e-4", "a=2E+3", "b=-1.5e-3", "c=3", "d=e5", "e=1e5x", "f=[0.7, 0.1, 0.2]"])
    assert got == {"lr": 5e-4, "a": 2000.0, "b": -1.5e-3, "c": 3, "d": "e5", "e": "1e5x", "f": [0.7, 0.1, 0.2]}
    assert type(got["c"]) is int
    f = tmp_path / "o.yaml"
    f.write_text("lr: 5e-4\nmodel:\n  transformer:\n    depth: 2\n")
    assert load_overrides_file(f) == {"lr": 5e-4, "model.transformer.depth": 2}
    assert preset_config("cpu", parse_overrides(["lr=2e-3"])).lr == 2e-3
    from minivid.__main__ import main

    seen = {}

    def fake_preset_config(name, overrides):
        seen.update(overrides)
        raise ValueError("stop here")

    import minivid.pipeline.run as run_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_module, "preset_config", fake_preset_config)
        with pytest.raises(SystemExit):
            main(["train", "cpu", "--set", "lr=2e-3", "--set", "warmup=80", "seed=3"])
    assert seen == {"lr": 2e-3, "warmup": 80, "seed": 3}


def test_text_from_starts_the_text_encoder_from_another_run(tmp_path):
    """text_from copies a trained run's T5 (its EMA weights) before the first step; with model.text.trainable=False
    it stays frozen (CogVideoX's frozen T5), so after training it still equals the source; another shape is refused,
    and a source that does not exist is refused before any work."""
    import dataclasses

    from minivid.pipeline.run import load_run, previous_run

    data = fake_data()
    train_system(cfg(steps=3), tmp_path / "a", data, progress=False, log=lambda m: None)
    source, _, _ = load_run(tmp_path / "a")
    frozen = dataclasses.replace(tiny(zero_init=True), text=dataclasses.replace(tiny().text, trainable=False))
    b = train_system(cfg(steps=2, model=frozen, text_from=str(tmp_path / "a")), tmp_path / "b", data, progress=False,
                     log=lambda m: None)
    for k, v in source.text.state_dict().items():
        assert torch.equal(v, b.model.text.state_dict()[k]), k
    fresh = train_system(cfg(steps=2, model=frozen), tmp_path / "c", data, progress=False, log=lambda m: None)
    assert not torch.equal(fresh.model.text.state_dict()["t5.shared.weight"], source.text.state_dict()["t5.shared.weight"])
    wide = dataclasses.replace(tiny(zero_init=True), text=dataclasses.replace(tiny().text, d_ff=64))
    with pytest.raises(ValueError, match="d_ff: 32 -> 64"):
        train_system(cfg(steps=1, model=wide, text_from=str(tmp_path / "a")), tmp_path / "d", data, progress=False,
                     log=lambda m: None)
    with pytest.raises(ValueError, match="neither a zoo entry"):
        previous_run(tmp_path / "e", cfg(text_from=str(tmp_path / "nothing")), resume=False)


def test_a_run_with_semantic_image_tokens_trains_resumes_and_generates(tmp_path):
    """model.image (R4's OpenCLIP tokens of the first frame) through the run: the data's first frames feed it, a
    stopped run resumes bit for bit, and generate's image reaches the video through both the given first frame and
    its tokens."""
    import dataclasses

    from minivid.conditioning import SemanticImageEncoderConfig
    from minivid.pipeline.run import generate, load_run

    spec = SemanticImageEncoderConfig(image_size=16, patch_size=8, width=32, layers=1, heads=2, embed_dim=16)
    model_cfg = dataclasses.replace(tiny(zero_init=False), image=spec)
    data = fake_data()
    with pytest.raises(ValueError, match="images"):
        train_system(cfg(model=model_cfg, steps=2, size=16, frames=T), tmp_path / "x", data, progress=False,
                     log=lambda m: None)
    data.images = torch.rand(N, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    c = cfg(model=model_cfg, steps=4, size=16, frames=T, dropout=ConditionDropout(given_modes=(0.2, 0.6, 0.2),
                                                                                  previous_frames=2))
    whole = train_system(c, tmp_path / "whole", data, progress=False, log=lambda m: None)
    train_system(c, tmp_path / "part", data, stop_after=3, progress=False, log=lambda m: None)
    resumed = train_system(c, tmp_path / "part", data, resume=True, progress=False, log=lambda m: None)
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    model, c_back, _ = load_run(tmp_path / "whole")
    assert c_back.model.image == spec and model.semantic is not None
    space, motion_space = tiny_spaces()
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        model.image_proj[-1].weight.add_(0.5)  # make the tokens count a lot, whatever 4 steps learnt
    a = generate(model, c, space, motion_space, image=image, prompt="a red dot, left", steps=2)
    # the same first frame with the tokens of another image: the video changes after frame 0
    original = model.encode_image

    def swapped(img, given, b, device):
        return original(torch.flip(img, dims=[-1]) if img is not None else None, given, b, device)

    model.encode_image = swapped
    try:
        b = generate(model, c, space, motion_space, image=image, prompt="a red dot, left", steps=2)
    finally:
        model.encode_image = original
    assert torch.allclose(a[:, 0], b[:, 0], atol=1e-6) and (a[:, 1:] - b[:, 1:]).abs().max() > 1e-4


def test_system_metrics_modes_are_independent_and_return_their_videos(trained):
    """system_metrics scores each use from its own seeded generator: a subset of the modes scores exactly as in the
    full set, return_videos hands back the decoded samples the scores came from, bad modes are refused first."""
    from minivid.metrics.sprites import sprite_scores
    from minivid.pipeline.run import load_run, system_data, system_metrics

    out, c = trained
    model, _, _ = load_run(out)
    space, motion_space = tiny_spaces()
    test = system_data(space, motion_space, 3, size=16, frames=T, split="test")
    full = system_metrics(model, c, space, motion_space, steps=2, data=test)
    assert set(full) == {"text", "text+trajectory", "image+text+trajectory", "real clips (autoencoder)", "sampler"}
    sub, videos = system_metrics(model, c, space, motion_space, steps=2, data=test, modes=["text+trajectory"],
                                 return_videos=True)
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN equals NaN here
    assert same(sub["text+trajectory"], full["text+trajectory"]) and "text" not in sub
    assert set(videos) == {"text+trajectory"} and videos["text+trajectory"].shape == (3, 3, T, 16, 16)
    own = sprite_scores(videos["text+trajectory"])
    assert same(own, {k: sub["text+trajectory"][k] for k in own})
    for bad in (["trajectory"], [], "text"):
        with pytest.raises(ValueError, match=r"modes=.*expected a list of some of \['text', 'text\+trajectory'"):
            system_metrics(model, c, space, motion_space, steps=2, data=test, modes=bad)


def test_system_metrics_first_frame_and_caption_without_a_path(trained):
    """A model with motion guidance takes the opt-in use ``image+text``: the clip's first frame given and the null
    trajectory, sampled as sample_system samples it called directly (and not in the default set)."""
    from minivid.pipeline.run import decode_latents, load_run, system_data, system_metrics
    from minivid.pipeline.system import sample_system

    out, c = trained
    model, _, _ = load_run(out)
    space, motion_space = tiny_spaces()
    test = system_data(space, motion_space, 3, size=16, frames=T, split="test")
    scores, videos = system_metrics(model, c, space, motion_space, steps=2, data=test, modes=["image+text"],
                                    return_videos=True)
    assert set(scores) == {"image+text", "real clips (autoencoder)", "sampler"} and set(videos) == {"image+text"}
    shape = (model.config.latent_channels, *test.latents.shape[2:])
    first = torch.zeros(3, *shape)
    first[:, :, 0] = test.latents[:, :, 0]
    given = torch.zeros(3, shape[1], dtype=torch.bool)
    given[:, 0] = True
    image = {"image": test.images.float()} if model.takes_image else {}
    z = sample_system(model, test.captions, shape, null_motion=test.null_motion, given=first, given_frames=given,
                      steps=2, seed=0, **image)
    assert torch.equal(videos["image+text"], decode_latents(space, z, None).cpu())
    # frame 0 is the clip's own first frame, decoded
    assert torch.allclose(videos["image+text"][:, :, 0], decode_latents(space, test.latents, None).cpu()[:, :, 0],
                          atol=1e-5)
    assert "trajectory_error_px" in scores["image+text"]


def test_training_memory_counts_weights_and_the_saved_activations():
    """The weights are 5 float32 copies of the parameters (2 of a frozen T5's: no gradient, no moments); the activations
    one clip's saved tensors times the batch;
    gradient checkpointing (recompute the blocks) saves less; the global RNG is left as it was."""
    import dataclasses

    from minivid.pipeline.run import training_memory
    from minivid.pipeline.system import System

    c, data = cfg(), fake_data()
    state = torch.random.get_rng_state()
    mem = training_memory(c, data, 4)
    assert torch.equal(state, torch.random.get_rng_state())
    assert mem["weights"] == 20 * sum(p.numel() for p in System(c.model).parameters())  # every parameter trains
    frozen_text = dataclasses.replace(c.model, text=dataclasses.replace(c.model.text, trainable=False))
    t5 = sum(p.numel() for p in System(c.model).text.parameters())
    assert training_memory(dataclasses.replace(c, model=frozen_text), data, 4)["weights"] == mem["weights"] - 12 * t5
    assert mem["activations"] == 4 * mem["activations_per_clip"] > 0
    assert mem["total"] == mem["weights"] + mem["activations"]
    assert training_memory(c, data, 1)["activations_per_clip"] == mem["activations_per_clip"]
    low = training_memory(dataclasses.replace(c, gradient_checkpointing=True), data, 4)
    assert low["activations_per_clip"] < 0.6 * mem["activations_per_clip"]
    with pytest.raises(ValueError, match="per_process_batch=0"):
        training_memory(c, data, 0)


def test_a_run_without_trajectory_guidance_trains_generates_and_scores(tmp_path):
    """``model.motion=None``: system_data makes no motion latents (the paths stay, for the metrics), the run trains,
    generate makes videos (a trajectory is refused) and system_metrics scores its two uses, text and image+text."""
    from minivid.pipeline.run import generate, system_data, system_metrics

    space, _ = tiny_spaces()
    data = system_data(space, None, 8, 16, T, split="test")
    assert data.motion is None and data.null_motion is None and len(data.paths) == 8
    assert data.latents.shape == (8, 4, T, 4, 4)
    c = cfg(model=tiny(motion=False), num_clips=8, steps=2, size=16, frames=T)
    trainer = train_system(c, tmp_path / "r", data, progress=False, log=lambda m: None)
    assert trainer.num_updates == 2
    video = generate(trainer.ema, c, space, None, prompt="a red dot", frames=7, steps=2)
    assert video.shape == (3, 7, 16, 16)
    with pytest.raises(ValueError, match="no trajectory condition"):
        generate(trainer.ema, c, space, None, trajectory="[[2, 2], [12, 12]]", steps=2)
    scores = system_metrics(trainer.ema, c, space, None, data=data, steps=2)
    assert set(scores) == {"text", "image+text", "real clips (autoencoder)", "sampler"}
    # a model with trajectory guidance refuses data without motion latents, before any step
    with pytest.raises(ValueError, match="the data needs motion latents"):
        train_system(cfg(num_clips=8, size=16, frames=T), tmp_path / "m", data, progress=False, log=lambda m: None)
