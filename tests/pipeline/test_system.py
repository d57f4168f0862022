"""The full system's model (issue: full system): the expert transformer with text, given frames (image, previous
clip) and trajectory conditions; the training coins and keyword arguments; the nested-guidance sampler."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from minivid.conditioning import TextEncoderConfig
from minivid.conditioning.motion import MotionGuidanceConfig
from minivid.diffusion import DiffusionTrainer
from minivid.nn import load_model, save_model
from minivid.pipeline.system import (ConditionDropout, System, SystemConfig, condition_batch, sample_system,
                                     system_schedule, training_kwargs)
from minivid.transformers import ExpertTransformerConfig

sys.path.insert(0, str(Path(__file__).parent))
from system_tiny import HW, C, T, tiny  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = System(tiny()).eval()
    with torch.no_grad():  # Tora's fusers start at zero (T7); give them weights so the trajectory matters
        for p in m.motion.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def _inputs(model, b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, C, T, HW, HW, generator=g)
    ids, mask = model.tokenize(["a red square moves left", "a blue circle"][:b])
    motion = torch.randn(b, 2, T, HW, HW, generator=g)
    return x, torch.tensor([10, 900][:b]), ids, mask, motion


def test_forward_shape_and_each_condition_changes_the_output(model):
    x, t, ids, mask, motion = _inputs(model)
    given = torch.tensor([[True, False, False, False], [True, True, False, False]])
    with torch.no_grad():
        base = model(x, t, ids, mask, given_frames=given, motion=motion)
        assert base.shape == x.shape
        other_given = model(x, t, ids, mask, given_frames=torch.zeros_like(given), motion=motion)
        null_ids, null_mask = model.tokenize(["", ""])
        other_text = model(x, t, null_ids, null_mask, given_frames=given, motion=motion)
        other_motion = model(x, t, ids, mask, given_frames=given, motion=torch.zeros_like(motion))
        # per-sample independence: sample 1's output does not depend on sample 0's inputs
        x2 = x.clone()
        x2[0] += 1
        indep = model(x2, t, ids, mask, given_frames=given, motion=motion)
    for other in (other_given, other_text, other_motion):
        assert (other - base).abs().max() > 1e-4
    assert torch.allclose(indep[1], base[1], atol=1e-5) and (indep[0] - base[0]).abs().max() > 1e-4


def test_a_new_model_predicts_zero_and_round_trips(tmp_path):
    torch.manual_seed(0)
    m = System(tiny(zero_init=True)).eval()
    x, t, ids, mask, motion = _inputs(m)
    with torch.no_grad():
        assert m(x, t, ids, mask, motion=motion).abs().max() == 0  # adaLN-zero output layer, zero-init fusers
    save_model(m, tmp_path / "sys")
    back = load_model(tmp_path / "sys")
    assert isinstance(back, System) and back.config == m.config
    for k, v in m.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    save_model(System(tiny(motion=False)), tmp_path / "no_motion")
    assert load_model(tmp_path / "no_motion").motion is None


def test_config_errors_name_the_field():
    cfg = tiny()
    with pytest.raises(ValueError, match="in_channels=4 must be out_channels \\+ 1 \\+ image_grid_channels = 5"):
        SystemConfig(text=cfg.text, transformer=ExpertTransformerConfig(
            in_channels=4, out_channels=4, heads=2, head_dim=16, depth=2, text_dim=16, max_text_len=24), motion=None)
    synced = SystemConfig(text=cfg.text, transformer=cfg.transformer,
                          motion=MotionGuidanceConfig(motion_channels=2, dim=8, depth=3, patch_size=1))
    assert (synced.motion.dim, synced.motion.depth, synced.motion.patch_size) == (32, 2, 2)  # the transformer's
    with pytest.raises(ValueError, match="text_dim=16 must equal the text encoder's width text.d_model=32"):
        SystemConfig(text=TextEncoderConfig(max_length=24, d_model=32), transformer=cfg.transformer, motion=None)


def test_forward_bad_input(model):
    x, t, ids, mask, motion = _inputs(model)
    with pytest.raises(ValueError, match="given_frames must be a bool \\(B, T\\) = \\(2, 4\\) mask"):
        model(x, t, ids, mask, given_frames=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="motion must be motion latents \\(B=2, C_m, T=4, 4, 4\\)"):
        model(x, t, ids, mask, motion=motion[:, :, :2])
    with pytest.raises(ValueError, match="no trajectory condition"):
        System(tiny(motion=False))(x, t, ids, mask, motion=motion)


def test_condition_coins_follow_their_probabilities_and_slice_the_global_batch():
    d = ConditionDropout(text_dropout=0.2, trajectory_dropout=0.3, given_modes=(0.5, 0.3, 0.2), previous_frames=3)
    n = 20000
    coins = condition_batch(d, n, 8, torch.Generator().manual_seed(0))
    tol = lambda p: 4 * math.sqrt(p * (1 - p) / n)  # noqa: E731
    assert abs((~coins["keep_text"]).float().mean().item() - 0.2) < tol(0.2)
    assert abs((~coins["keep_trajectory"]).float().mean().item() - 0.3) < tol(0.3)
    k = coins["given_frames"].sum(1)
    assert set(k.unique().tolist()) == {0, 1, 3}
    for value, p in ((0, 0.5), (1, 0.3), (3, 0.2)):
        assert abs((k == value).float().mean().item() - p) < tol(p)
    g = coins["given_frames"]
    assert torch.equal(g, torch.arange(8)[None] < k[:, None])  # a prefix of frames
    full = condition_batch(d, 16, 8, torch.Generator().manual_seed(5))
    half = condition_batch(d, 16, 8, torch.Generator().manual_seed(5), part=slice(8, 16))
    for key in full:
        assert torch.equal(full[key][8:], half[key])
    with pytest.raises(ValueError, match="given_modes=.*summing to 1"):
        ConditionDropout(given_modes=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="previous_frames=8 must leave a frame"):
        condition_batch(ConditionDropout(previous_frames=8), 4, 8, torch.Generator())


def test_training_kwargs_drop_to_the_nulls_and_train(model):
    torch.manual_seed(0)
    m = System(tiny(zero_init=True))
    x, _, ids, mask, motion = _inputs(m)
    null_ids, null_mask = m.tokenize(["", ""])
    null_motion = torch.full((1, 2, T, HW, HW), 0.5)
    coins = {"keep_text": torch.tensor([True, False]), "keep_trajectory": torch.tensor([False, True]),
             "given_frames": torch.tensor([[True, False, False, False], [False] * 4])}
    kw = training_kwargs(m, coins, ids, mask, null_ids, null_mask, motion, null_motion)
    assert torch.equal(kw["ids"][0], ids[0]) and torch.equal(kw["ids"][1], null_ids[1])
    assert torch.equal(kw["motion"][0], null_motion[0]) and torch.equal(kw["motion"][1], motion[1])
    assert torch.equal(kw["given_frames"], coins["given_frames"]) and torch.equal(kw["clean_frames"],
                                                                                  coins["given_frames"])
    trainer = DiffusionTrainer(m, system_schedule(), prediction="v", lr=3e-3, warmup_steps=1, ema_decay=None)
    losses = [trainer.step(x, **kw)["loss"] for _ in range(120)]  # one batch, overfit
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert all(math.isfinite(v) for v in losses) and last < 0.6 * first, (first, last)
    with pytest.raises(ValueError, match="pass motion and null_motion"):
        training_kwargs(m, coins, ids, mask, null_ids, null_mask)


def test_training_kwargs_take_cpu_coins_to_the_tokens_device():
    """In a CUDA run the token ids sit on the text encoder's GPU while the coins come from a CPU generator; a (B, 1)
    CPU mask beside GPU tensors is an error in torch.where, so the coins follow the tensors they select (the meta
    device stands in for the GPU: it refuses the mix the same way)."""
    from types import SimpleNamespace

    coins = {"keep_text": torch.tensor([True, False]), "keep_trajectory": torch.tensor([False, True]),
             "given_frames": torch.tensor([[True, False], [False, False]])}
    ids, mask = torch.zeros(2, 5, dtype=torch.long, device="meta"), torch.ones(2, 5, dtype=torch.bool, device="meta")
    with pytest.raises(RuntimeError):  # what the coins met before they followed the ids
        torch.where(coins["keep_text"][:, None], ids, ids)
    motion = torch.zeros(2, 2, 2, 3, 3, device="meta")
    model = SimpleNamespace(motion=object(), takes_image=False)
    kw = training_kwargs(model, coins, ids, mask, ids, mask, motion, torch.zeros(1, 2, 2, 3, 3, device="meta"))
    assert kw["ids"].device.type == kw["mask"].device.type == kw["motion"].device.type == "meta"


def test_sampler_keeps_given_frames_is_seeded_and_runs_only_needed_branches(model):
    n = 2
    g = torch.Generator().manual_seed(3)
    given = torch.randn(n, C, T, HW, HW, generator=g)
    frames = torch.tensor([[True, False, False, False], [True, True, False, False]])
    motion = torch.randn(n, 2, T, HW, HW, generator=g)
    null = torch.zeros(1, 2, T, HW, HW)
    caps = ["a red square moves left", "a blue circle moves up"]
    kw = dict(given=given, given_frames=frames, motion=motion, null_motion=null, steps=3)
    a = sample_system(model, caps, (C, T, HW, HW), seed=7, **kw)
    b = sample_system(model, caps, (C, T, HW, HW), seed=7, **kw)
    c = sample_system(model, caps, (C, T, HW, HW), seed=8, **kw)
    assert torch.equal(a, b) and (a - c).abs().max() > 1e-3
    keep = frames[:, None, :, None, None].expand_as(a)
    assert torch.equal(a[keep], given[keep])  # the given frames come back exactly
    calls = []
    hook = model.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(kwargs.get("given_frames")),
                                           with_kwargs=True)
    try:
        sample_system(model, caps, (C, T, HW, HW), guidance={"frames": 1.0, "text": 1.0, "trajectory": 1.0}, **kw)
        assert len(calls) == 3  # every scale 1: one pass per step
        calls.clear()
        sample_system(model, caps, (C, T, HW, HW), guidance={"frames": 2.0, "text": 4.0, "trajectory": 2.0}, **kw)
        assert len(calls) == 3 * 4 and sum(c is None for c in calls) == 3  # the no-frames branch once a step
    finally:
        hook.remove()


def test_sampler_bad_input(model):
    shape = (C, T, HW, HW)
    null = torch.zeros(1, 2, T, HW, HW)
    with pytest.raises(ValueError, match="shape must be the latent \\(C=4, T, h, w\\)"):
        sample_system(model, ["a"], (3, T, HW, HW), null_motion=null)
    with pytest.raises(ValueError, match="guidance key 'image'"):
        sample_system(model, ["a"], shape, guidance={"image": 2.0}, null_motion=null)
    with pytest.raises(ValueError, match="pass null_motion"):
        sample_system(model, ["a"], shape)
    with pytest.raises(ValueError, match="leave at least one frame"):
        sample_system(model, ["a"], shape, given=torch.zeros(1, *shape), given_frames=torch.ones(1, T, dtype=torch.bool),
                      null_motion=null)
    with pytest.raises(ValueError, match="non-empty list"):
        sample_system(model, "a red square", shape, null_motion=null)


def test_sampler_refuses_conditions_of_the_wrong_shape_before_sampling(model):
    """Each condition of sample_system checked against the latent shape and the model, with a message naming it."""
    shape = (C, T, HW, HW)
    null = torch.zeros(1, 2, T, HW, HW)
    first = torch.zeros(1, T, dtype=torch.bool)
    first[:, 0] = True
    cases = [
        (dict(given=torch.zeros(1, *shape)), "given latents and given_frames together"),
        (dict(given=torch.zeros(1, C, T, HW, HW + 1), given_frames=first), r"given must be latents \(N=1"),
        (dict(given=torch.zeros(1, *shape), given_frames=first.float()), "given_frames must be a bool"),
        (dict(motion=torch.zeros(1, 2, T, HW, HW + 2)), r"motion must be motion latents \(N=1, C_m"),
        (dict(image=torch.zeros(1, 3, 16, 16)), "this System reads no image"),
    ]
    assert not model.takes_image
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            sample_system(model, ["a"], shape, null_motion=null, steps=2, **kwargs)


def test_sampler_treats_a_mask_giving_no_frame_as_no_given_frames(model):
    """given_frames all False gives nothing: the same latents as a call without given frames (same seed)."""
    shape = (C, T, HW, HW)
    null = torch.zeros(1, 2, T, HW, HW)
    plain = sample_system(model, ["a red circle"], shape, null_motion=null, steps=3, seed=4)
    none_given = sample_system(model, ["a red circle"], shape, null_motion=null, steps=3, seed=4,
                               given=torch.randn(1, *shape), given_frames=torch.zeros(1, T, dtype=torch.bool))
    torch.testing.assert_close(none_given, plain, rtol=0, atol=0)


def _with_image(zero_init: bool = False) -> SystemConfig:
    import dataclasses

    from minivid.conditioning import SemanticImageEncoderConfig

    return dataclasses.replace(tiny(zero_init=zero_init), image=SemanticImageEncoderConfig(
        image_size=16, patch_size=8, width=32, layers=1, heads=2, embed_dim=16))


def test_semantic_image_tokens_count_only_where_an_image_is_given():
    """R4's e_s in the system: the OpenCLIP tokens of the first frame join the text tokens. A masked image (not given)
    is no image at all: the output equals the one without an image; a given image changes only its own sample; a
    model without the encoder refuses an image."""
    torch.manual_seed(0)
    m = System(_with_image()).eval()
    assert m.config.image_tokens == 4 and m.semantic.grid_size == (2, 2)
    x, t, ids, mask, motion = _inputs(m)
    g = torch.Generator().manual_seed(4)
    image = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1  # resized to the tower's 16 x 16
    frames = torch.tensor([[True, False, False, False]] * 2)
    with torch.no_grad():
        none = m(x, t, ids, mask, given_frames=frames, motion=motion)
        masked = m(x, t, ids, mask, given_frames=frames, motion=motion, image=image,
                   image_given=torch.tensor([False, False]))
        one = m(x, t, ids, mask, given_frames=frames, motion=motion, image=image,
                image_given=torch.tensor([True, False]))
        other = image.clone()
        other[0] = -other[0]
        changed = m(x, t, ids, mask, given_frames=frames, motion=motion, image=other,
                    image_given=torch.tensor([True, False]))
    assert torch.allclose(masked, none, atol=1e-6)
    assert (one[0] - none[0]).abs().max() > 1e-4 and torch.allclose(one[1], none[1], atol=1e-6)
    assert (changed[0] - one[0]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="reads no image"):
        System(tiny())(x, t, ids, mask, image=image)
    with pytest.raises(ValueError, match="image must be images"):
        m(x, t, ids, mask, image=image[:1])
    # the coins: an image only in the mode "first" (a previous clip's end is not an image)
    coins = condition_batch(ConditionDropout(given_modes=(0.3, 0.4, 0.3), previous_frames=2), 2000, 8,
                            torch.Generator().manual_seed(0))
    n_given = coins["given_frames"].sum(1)
    assert torch.equal(coins["image_given"], n_given == 1) and 0.35 < coins["image_given"].float().mean() < 0.45


def test_image_system_trains_and_samples_with_its_images(tmp_path):
    torch.manual_seed(0)
    m = System(_with_image(zero_init=True))
    x, _, ids, mask, motion = _inputs(m)
    null_ids, null_mask = m.tokenize(["", ""])
    null_motion = torch.zeros(1, 2, T, HW, HW)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    coins = {"keep_text": torch.tensor([True, True]), "keep_trajectory": torch.tensor([True, True]),
             "given_frames": torch.tensor([[True, False, False, False], [False] * 4]),
             "image_given": torch.tensor([True, False])}
    kw = training_kwargs(m, coins, ids, mask, null_ids, null_mask, motion, null_motion, images=images)
    assert torch.equal(kw["image"], images) and torch.equal(kw["image_given"], coins["image_given"])
    with pytest.raises(ValueError, match="pass the clips. images"):
        training_kwargs(m, coins, ids, mask, null_ids, null_mask, motion, null_motion)
    trainer = DiffusionTrainer(m, system_schedule(), prediction="v", lr=3e-3, warmup_steps=1, ema_decay=None)
    before = [p.detach().clone() for p in m.semantic.parameters()]
    for _ in range(3):
        trainer.step(x, **kw)
    assert any(not torch.equal(a, p) for a, p in zip(before, m.semantic.parameters()))  # the image tower learns
    m.eval()
    given = torch.zeros(2, C, T, HW, HW)
    given[:, :, 0] = x[:, :, 0]
    frames = torch.tensor([[True, False, False, False]] * 2)
    common = dict(given=given, given_frames=frames, motion=motion, null_motion=null_motion, steps=2, seed=3)
    a = sample_system(m, ["a red square", "a blue circle"], (C, T, HW, HW), image=images, **common)
    b = sample_system(m, ["a red square", "a blue circle"], (C, T, HW, HW), image=-images, **common)
    assert (a - b).abs().max() > 1e-5  # the image's tokens reach the samples
    save_model(m, tmp_path / "img")
    assert load_model(tmp_path / "img").config == m.config
    with pytest.raises(ValueError, match="reads no image"):
        sample_system(System(tiny()), ["a"], (C, T, HW, HW), image=images[:1], null_motion=null_motion)


def _with_grid(channels: int = 3, patch: int = 4) -> SystemConfig:
    import dataclasses

    cfg = tiny()
    tr = dataclasses.replace(cfg.transformer, in_channels=C + 1 + channels)
    return dataclasses.replace(cfg, transformer=tr, image_grid_channels=channels, image_grid_patch=patch)


def test_the_image_on_the_latent_grid_is_a_linear_map_of_each_cells_square():
    """R4's content side on the latent grid: cell (i, j) of every latent frame holds W · (the image's patch x patch
    square at (i, j)) + b, zero where the image is not given; so changing one pixel changes only its cell's channels,
    and the transformer receives them after the latent and the given-frames channel."""
    torch.manual_seed(0)
    m = System(_with_grid()).eval()
    assert m.takes_image and m.semantic is None
    g = torch.Generator().manual_seed(2)
    image = torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64) * 2 - 1  # 4 px squares -> the 4 x 4 grid
    x = torch.zeros(2, C, T, HW, HW)
    grid = m.image_on_grid(image.float(), torch.tensor([True, False]), T, HW, HW, x)
    w, b = m.image_grid.weight.double(), m.image_grid.bias.double()
    for i in range(HW):
        for j in range(HW):
            square = image[0, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4]
            want = (w * square).sum(dim=(1, 2, 3)) + b
            for f in range(T):
                assert torch.allclose(grid[0, :, f, i, j].double(), want, atol=1e-5)
    assert torch.equal(grid[1], torch.zeros_like(grid[1]))  # not given: zeros
    moved = image.clone()
    moved[0, :, 5, 9] = -moved[0, :, 5, 9]  # a pixel of cell (1, 2)
    other = m.image_on_grid(moved.float(), None, T, HW, HW, x)
    changed = (other[0] - grid[0]).abs().amax(dim=(0, 1)) > 0  # (h, w) cells whose channels changed
    assert changed.nonzero().tolist() == [[1, 2]]
    seen = []
    m.transformer.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    ids, mask = m.tokenize(["a", "b"])
    with torch.no_grad():
        m(x, torch.tensor([5, 5]), ids, mask, image=image.float(), image_given=torch.tensor([True, False]),
          motion=torch.zeros(2, 2, T, HW, HW))
    assert seen[0].shape[1] == C + 1 + 3 and torch.allclose(seen[0][:, C + 1:], grid)
    with pytest.raises(ValueError, match="a \\(8, 8\\) grid; the latents' grid is \\(4, 4\\)"):
        m.image_on_grid(torch.zeros(2, 3, 32, 32), None, T, HW, HW, x)
    with pytest.raises(ValueError, match="in_channels=5 must be out_channels \\+ 1 \\+ image_grid_channels = 8"):
        SystemConfig(text=tiny().text, transformer=tiny().transformer, image_grid_channels=3)


def test_every_trainable_parameter_of_the_gpu_preset_gets_a_gradient():
    """DistributedDataParallel (gpu-multi) fails at its second step when a trainable parameter gets no gradient; with
    every condition given, each one of the gpu preset's model (shrunk to one block) must get one. OpenCLIP's pooled
    projection, which the patch tokens never pass through, is frozen for that reason."""
    from minivid.diffusion import explicit_uniform_timesteps, training_losses
    from minivid.pipeline.run import preset_config, run_spaces, system_data

    cfg = preset_config("gpu", {"model.transformer.depth": 1, "model.motion.depth": 1})
    torch.manual_seed(0)
    m = System(cfg.model).train()
    data = system_data(*run_spaces(cfg), 2, cfg.size, cfg.frames)
    frames = data.latents.shape[2]
    coins = {"keep_text": torch.ones(2, dtype=torch.bool), "keep_trajectory": torch.ones(2, dtype=torch.bool),
             "given_frames": torch.zeros(2, frames, dtype=torch.bool), "image_given": torch.ones(2, dtype=torch.bool)}
    coins["given_frames"][:, 0] = True
    ids, mask = m.tokenize(data.captions)
    null_ids, null_mask = m.tokenize(["", ""])
    kw = training_kwargs(m, coins, ids, mask, null_ids, null_mask, data.motion, data.null_motion,
                         images=data.images.float())
    t = explicit_uniform_timesteps(2, system_schedule().num_steps, generator=torch.Generator().manual_seed(0))
    x0 = data.latents.float()
    training_losses(m, system_schedule(), x0, t, torch.randn_like(x0), prediction="v", **kw)["loss"].mean().backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert m.semantic.visual.proj is not None and not m.semantic.visual.proj.requires_grad


def test_system_data_encodes_on_cuda_and_keeps_the_data_on_the_cpu():
    """``system_data`` with the VAEs on a GPU encodes there (the gpu preset's 16384 clips: seconds instead of minutes
    on a CPU) and returns the same data, on the CPU, as the VAEs on the CPU do (to float32 rounding and TF32
    convolutions). Without CUDA only the CPU half runs."""
    from minivid.pipeline.run import preset_config, run_spaces, system_data

    cfg = preset_config("cpu")
    on_cpu = system_data(*run_spaces(cfg), 4, cfg.size, cfg.frames)
    assert on_cpu.latents.device.type == on_cpu.motion.device.type == on_cpu.images.device.type == "cpu"
    if not torch.cuda.is_available():
        return
    on_gpu = system_data(*run_spaces(cfg, "cuda"), 4, cfg.size, cfg.frames)
    assert on_gpu.latents.device.type == on_gpu.motion.device.type == on_gpu.null_motion.device.type == "cpu"
    assert on_gpu.captions == on_cpu.captions
    assert torch.allclose(on_gpu.latents, on_cpu.latents, atol=2e-2) and torch.allclose(on_gpu.motion, on_cpu.motion,
                                                                                       atol=2e-2)
