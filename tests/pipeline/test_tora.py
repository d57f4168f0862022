"""Tora's pipeline (T4-T9): flow videos for the motion VAE, T8's image conditioning (clean frames) and staged training
(what is frozen), sampling keeps the given first frame, and T9's trajectory error on real clips."""

import pytest
import torch

from minivid.autoencoders import AutoencoderTrainer, CausalVAE
from minivid.data import MiniSprites
from minivid.diffusion import NoiseSchedule, training_losses
from minivid.pipeline.tora import (Tora, ToraConfig, ToraData, ToraStage, choose_fuser, flow_weight, mark_centres,
                                   motion_pool, motion_vae_config, motion_vae_metrics, path_errors, real_clip_scores,
                                   sample_tora, scene_flow_maps, train_tora)
from minivid.transformers import STDiTConfig
from minivid.conditioning.motion import MotionGuidanceConfig


def small_tora(fuser="adanorm", motion=True):
    base = STDiTConfig(in_channels=4, patch_size=2, dim=32, depth=2, heads=4, text_dim=8)
    mg = MotionGuidanceConfig(motion_channels=4, dim=32, depth=2, patch_size=2, motion_dim=16, fuser=fuser)
    return Tora(ToraConfig(base=base, motion=mg if motion else None))


def fake_data(n=8, frames=4):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)
    return ToraData(r(n, 4, frames, 4, 4), r(n, 4, frames, 4, 4), r(n, 4, frames, 4, 4), r(1, 4, frames, 4, 4), [],
                    torch.zeros(n, 1, dtype=torch.long))


# ------------------------------------------------------------------------------------------- flow videos
def test_sparse_flow_marks_sit_on_the_previous_frame_position():
    """T4: frame i's mark is written at the object's position in frame i - 1; the blur keeps its centre there."""
    pool = motion_pool(16, kind="sparse", num_sprites=1, split="test").float()
    data = MiniSprites(num_videos=16, size=32, num_frames=8, split="test", seed=0, num_sprites=1)
    centres = mark_centres(pool)  # (16, 8, 2)
    assert torch.isnan(centres[:, 0]).all()  # frame 0: white
    paths = torch.stack([data[i]["centers"][0] for i in range(16)])
    moving = (paths[:, 1:] - paths[:, :-1]).norm(dim=-1) > 0.05  # a still sprite leaves no mark
    err = (centres[:, 1:] - paths[:, :-1].round()).norm(dim=-1)[moving]
    assert err.max() < 0.6, err.max()  # the rounded pixel, up to the reflect border's pull near an edge


def test_dense_and_sparse_maps_describe_the_scene():
    data = MiniSprites(num_videos=4, size=32, num_frames=6, seed=1, num_sprites=2)
    g = torch.Generator().manual_seed(0)
    dense, paths = scene_flow_maps(data, 0, "dense")
    assert dense.shape == (6, 2, 32, 32) and paths.shape == (2, 6, 2)
    sparse, picked = scene_flow_maps(data, 0, "sparse", g)
    assert sparse.shape == (6, 2, 32, 32) and 1 <= len(picked) <= 2
    assert int((sparse[1].abs().sum(0) > 0).sum()) <= len(picked)  # one pixel per picked object before the blur
    with pytest.raises(ValueError, match="kind"):
        scene_flow_maps(data, 0, "optical")


def test_flow_weight_and_the_weighted_reconstruction_loss():
    v = torch.ones(1, 3, 2, 4, 4)
    v[0, :, 1, 1, 1] = -1
    w = flow_weight(v)
    assert w.shape == (1, 1, 2, 4, 4) and w.sum() == 32 + 20 and w[0, 0, 1, 1, 1] == 21
    # a weight of zero takes a region out of the loss: errors there do not change it
    model = CausalVAE(motion_vae_config().__class__(spatial_factor=2, temporal_factor=1, latent_channels=2, channels=8,
                                                    channel_mult=(1, 1), num_res_blocks=1, norm_groups=4))
    left = lambda x: torch.cat([torch.ones_like(x[..., :2]), torch.zeros_like(x[..., 2:])], -1)
    tr = AutoencoderTrainer(model, pixel_weight=left, kl_weight=0.0, l2_weight=1.0)
    x = torch.rand(2, 3, 2, 4, 4) * 2 - 1
    tr.generator.manual_seed(0)
    loss, logs = tr.loss(x)
    tr.generator.manual_seed(0)
    with torch.no_grad():
        rec, _ = model(x, sample=True, generator=tr.generator)
    e = (rec - x)[..., :2]  # only the weighted half counts
    assert torch.allclose(loss, e.abs().mean() + e.pow(2).mean(), atol=1e-6)
    assert abs(logs["l1"] - e.abs().mean().item()) < 1e-6
    with pytest.raises(ValueError, match="pixel_weight"):
        AutoencoderTrainer(model, pixel_weight=3.0)


def test_motion_vae_metrics_structure_and_baselines():
    pool = motion_pool(8, split="test").float()
    m = motion_vae_metrics(CausalVAE(motion_vae_config()), pool)
    assert m["latent_shape"] == [4, 8, 8, 8] and m["test_clips"] == 8
    assert m["marked_l1_all_white"] > 0.1 and m["clip_psnr_all_white"] > 15


# ------------------------------------------------------------------------------------------- T8
def test_clean_frames_are_given_to_the_model_and_leave_the_loss():
    s = NoiseSchedule.cogvideox(1000)
    x0 = torch.randn(3, 4, 5, 2, 2)
    clean = torch.zeros(3, 5, dtype=torch.bool)
    clean[:, 0] = True
    seen = {}

    def model(xt, t):
        seen["xt"] = xt
        return torch.zeros_like(xt)

    t = torch.tensor([999, 500, 10])
    noise = torch.randn_like(x0)
    out = training_losses(model, s, x0, t, noise, prediction="v", clean_frames=clean)
    assert torch.equal(seen["xt"][:, :, 0], x0[:, :, 0])  # frame 0 un-noised, even at t = 999
    assert not torch.allclose(seen["xt"][:, :, 1:], x0[:, :, 1:])
    # the loss is the v-loss over frames 1.. only: a model wrong only at frame 0 has the same loss
    target = s.target(x0, noise, t, "v")
    assert torch.allclose(out["loss"], (target[:, :, 1:] ** 2).mean((1, 2, 3, 4)))

    def wrong_at_0(xt, t):
        o = torch.zeros_like(xt)
        o[:, :, 0] = 100.0
        return o

    assert torch.allclose(training_losses(wrong_at_0, s, x0, t, noise, prediction="v", clean_frames=clean)["loss"],
                          out["loss"])
    with pytest.raises(ValueError, match="clean_frames must be a bool"):
        training_losses(model, s, x0, t, noise, prediction="v", clean_frames=clean[:, :3])
    with pytest.raises(ValueError, match="without a noised"):
        training_losses(model, s, x0, t, noise, prediction="v", clean_frames=torch.ones(3, 5, dtype=torch.bool))


def test_tora_without_motion_is_its_base_and_config_must_match():
    torch.manual_seed(0)
    m = small_tora()
    x, t = torch.randn(2, 4, 4, 4, 4), torch.tensor([3, 900])
    assert torch.equal(m(x, t), m.base(x, t, torch.zeros(2, 1, 8)))
    with pytest.raises(ValueError, match="motion.dim=16 must equal base.dim=32"):
        ToraConfig(base=STDiTConfig(dim=32, depth=2, heads=4), motion=MotionGuidanceConfig(dim=16, depth=2))
    with pytest.raises(ValueError, match="no motion guidance"):
        small_tora(motion=False)(x, t, motion=torch.randn(2, 4, 4, 4, 4))
    with pytest.raises(ValueError, match="on the video latents' grid"):
        m(x, t, motion=torch.randn(2, 4, 3, 4, 4))


def test_temporal_stage_trains_only_guidance_and_temporal_blocks():
    torch.manual_seed(0)
    m = small_tora()
    quiet = dict(batch=4, progress=False, log=lambda s: None)
    train_tora(m, fake_data(), [ToraStage(3, None, "all")], **quiet)  # a base whose zero decoder has moved
    before = {k: v.clone() for k, v in m.state_dict().items()}
    train_tora(m, fake_data(), [ToraStage(3, "sparse", "temporal")], **quiet)
    after = m.state_dict()
    kinds = m.config.base.block_kinds
    for k in before:
        changed = not torch.equal(before[k], after[k])
        if k.startswith("guidance."):
            continue  # zero-initialised parts may move or not in 3 steps; checked below as a whole
        if k.startswith("base.blocks."):
            j = int(k.split(".")[2])
            if kinds[j] == "spatial":
                assert not changed, k
        elif k.startswith("base."):
            assert not changed, k  # embeddings, final layer: frozen
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("guidance."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("base.blocks.1."))
    assert all(p.requires_grad for p in m.parameters())  # unfrozen again for whoever uses the model next


def test_train_tora_checks_its_device_first_and_cpu_is_the_default():
    """``device`` is checked before the model moves or trains; naming the CPU (as a string or a torch.device) trains
    bit for bit as the default does."""
    stage = [ToraStage(2, "sparse", "all")]
    quiet = dict(batch=4, progress=False, log=lambda s: None)
    torch.manual_seed(0)
    m = small_tora()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    for bad in ("tpu", 0.5, None):
        with pytest.raises(ValueError, match="device=.* is invalid"):
            train_tora(m, fake_data(), stage, device=bad, **quiet)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    runs = []
    for device in (None, "cpu", torch.device("cpu")):
        torch.manual_seed(0)
        m = small_tora()
        train_tora(m, fake_data(), stage, **quiet, **({} if device is None else {"device": device}))
        runs.append(m.state_dict())
    assert any(not torch.equal(before[k], runs[0][k]) for k in before)  # it trained
    for other in runs[1:]:
        assert all(torch.equal(runs[0][k], other[k]) for k in runs[0])


def test_tora_overfits_one_batch():
    """The overfit check for Tora: 2 clips, fixed timesteps and noise; 150 steps of every parameter with motion cut the
    v-loss to under 40% of its start."""
    torch.manual_seed(0)
    m = small_tora()
    d = fake_data(n=2)
    s = NoiseSchedule.cogvideox(1000)
    t = torch.tensor([200, 600])
    noise = torch.randn(d.video.shape, generator=torch.Generator().manual_seed(1))
    clean = torch.zeros(2, 4, dtype=torch.bool)
    clean[:, 0] = True
    loss = lambda: training_losses(m, s, d.video, t, noise, "v", clean_frames=clean, motion=d.sparse)["loss"].mean()
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    start = loss().item()
    for _ in range(150):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.4 * start


class _IdentitySpace:
    def decode(self, z):
        return z[:, :3]


def test_sampling_keeps_the_given_first_frame_and_is_seeded():
    torch.manual_seed(0)
    m = small_tora()
    d = fake_data(n=3)
    first = d.video[:, :, 0]
    a = sample_tora(m, _IdentitySpace(), first, d.sparse, d.null, guidance=2.0, steps=3, frames=4)
    b = sample_tora(m, _IdentitySpace(), first, d.sparse, d.null, guidance=2.0, steps=3, frames=4)
    assert a.shape == (3, 3, 4, 4, 4) and torch.equal(a, b)
    assert torch.equal(a[:, :, 0], first[:, :3])
    with pytest.raises(ValueError, match="needs null"):
        sample_tora(m, _IdentitySpace(), first, d.sparse, None, guidance=2.0, steps=3, frames=4)
    with pytest.raises(ValueError, match="motion must be motion latents"):
        sample_tora(m, _IdentitySpace(), first, d.sparse[:, :, :2], d.null, steps=3, frames=4)


# ------------------------------------------------------------------------------------------- T9
def test_trajectory_error_is_near_zero_on_real_clips_and_large_for_shuffled_paths():
    s = real_clip_scores(n=24)
    assert s["own_paths"]["trajectory_error_px"] < 0.2 and s["own_paths"]["lost"] == 0
    assert s["shuffled_paths"]["trajectory_error_px"] > 5


def test_path_errors_grow_with_an_offset_path():
    data = MiniSprites(num_videos=8, size=32, num_frames=8, split="test", seed=0, num_sprites=1)
    items = [data[i] for i in range(8)]
    v = torch.stack([it["video"] for it in items])
    p = torch.stack([it["centers"][0] for it in items])
    c = torch.stack([it["labels"]["color"][0] for it in items])
    base = path_errors(v, p, c)["trajectory_error_px"]
    shifted = path_errors(v, p + torch.tensor([3.0, 4.0]), c)["trajectory_error_px"]
    assert abs(shifted - 5.0) < 0.3 + base


def test_choose_fuser_refuses_a_fuser_that_destroys_the_sprites():
    scores = {"concat": {"trajectory_error_px": 1.0, "sprite_check": 0.3},
              "adanorm": {"trajectory_error_px": 1.5, "sprite_check": 0.8},
              "cross_attention": {"trajectory_error_px": 2.0, "sprite_check": 0.85}}
    assert choose_fuser(scores) == "adanorm"


def test_first_frame_channels_concatenate_the_first_latent_to_every_frame():
    """first_frame_channels: the base sees frame 0's latent, repeated over the frames, as extra channels: with those
    columns of the patch embedding zeroed the model equals a Tora without them (same other weights), with and
    without motion; with them it differs in every frame; a base without the channels is refused."""
    from dataclasses import replace

    from minivid.transformers.embeddings import patchify

    torch.manual_seed(0)
    plain = small_tora()
    ff = Tora(ToraConfig(base=replace(plain.config.base, cond_channels=4), motion=plain.config.motion,
                         first_frame_channels=True))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ff.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    marker = torch.zeros(1, 8, 1, 2, 2)
    marker[:, 4:] = 1
    cols = patchify(marker, 2, 1).reshape(-1) == 1
    state = ff.state_dict()
    state["base.patch_embed.proj.weight"] = state["base.patch_embed.proj.weight"][:, ~cols]
    plain.load_state_dict(state)
    x, t, m = torch.randn(2, 4, 4, 4, 4, generator=g), torch.tensor([3, 900]), torch.randn(2, 4, 4, 4, 4, generator=g)
    out = ff(x, t, motion=m)
    assert ((out - plain(x, t, motion=m)).abs().amax(dim=(0, 1, 3, 4)) > 1e-3).all()  # every frame
    with torch.no_grad():
        ff.base.patch_embed.proj.weight[:, cols] = 0
    torch.testing.assert_close(ff(x, t, motion=m), plain(x, t, motion=m))
    torch.testing.assert_close(ff(x, t), plain(x, t))
    with pytest.raises(ValueError, match=r"base.cond_channels=0 must be 4 with first_frame_channels=True"):
        ToraConfig(base=plain.config.base, first_frame_channels=True)
    with pytest.raises(ValueError, match=r"base.cond_channels=4 must be 0 with first_frame_channels=False"):
        ToraConfig(base=replace(plain.config.base, cond_channels=4))


def test_tora_recipe_refuses_bad_arguments_before_any_work():
    """The recipe's depth, fusers and learning rate are checked before the (minutes-long) data encoding: no latent space is touched."""
    from minivid.pipeline.tora import tora_recipe

    with pytest.raises(ValueError, match="depth"):
        tora_recipe(None, None, 10, depth=0)
    with pytest.raises(ValueError, match="fusers.*film"):
        tora_recipe(None, None, 10, fusers=("concat", "film"))
    for bad in (0, -1e-3, 2.0, "1e-3"):
        with pytest.raises(ValueError, match="lr="):
            tora_recipe(None, None, 10, lr=bad)
    with pytest.raises(ValueError, match="fuser_trainable.*spatial"):
        tora_recipe(None, None, 10, fuser_trainable="spatial")
    with pytest.raises(ValueError, match="device='tpu'"):
        tora_recipe(None, None, 10, device="tpu")


@pytest.mark.parametrize("which", ["all", "temporal"])
def test_tora_recipe_fuser_stages_train_what_fuser_trainable_names(monkeypatch, which):
    """The base stage trains every parameter; both fuser stages (dense base_steps // 5, then sparse base_steps // 2)
    train ``fuser_trainable``, and the returned table says which (data, training and scoring replaced by fakes)."""
    import minivid.pipeline.tora as tora

    calls = []
    monkeypatch.setattr(tora, "tora_data", lambda *a, **k: None)
    monkeypatch.setattr(tora, "train_tora", lambda model, data, stages, **k: calls.append((model, stages)))
    monkeypatch.setattr(tora, "tora_scores", lambda *a, **k: {"trajectory_error_px": 1.0, "lost": 0.0,
                                                              "sprite_check": 0.5, "clips": 1})
    monkeypatch.setattr(tora, "real_clip_scores", lambda *a, **k: {})
    model, fields = tora.tora_recipe(None, None, 10, fusers=("concat",), progress=False, log=lambda s: None,
                                     fuser_trainable=which)
    assert [[(s.steps, s.flow, s.trainable) for s in st] for _, st in calls] == [
        [(10, None, "all")], [(2, "dense", which), (5, "sparse", which)]]
    assert calls[1][0] is model and model.guidance is not None and calls[0][0].guidance is None
    assert fields["fuser_trainable"] == which and fields["fuser"] == "concat"
