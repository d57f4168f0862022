"""Tora's extractor (T6) and fusers (T7): shapes, the residual recursion, zero initialisation (the base model's output is
unchanged by a new fuser, on ST-DiT and on the expert transformer), that a trained fuser does change it, and where
in the block it acts."""

import pytest
import torch

from minivid.conditioning.motion import (FUSERS, AdaNormFuser, ConcatFuser, CrossAttentionFuser, MotionGuidance,
                                         MotionGuidanceConfig, TrajectoryExtractor, make_fuser)
from minivid.transformers import ExpertTransformer, ExpertTransformerConfig, STDiT, STDiTConfig


def _randomise(model, seed=0):
    """Every parameter random (a zero-initialised decoder or gate would hide what a fuser does)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def test_extractor_patchifies_like_the_video_and_follows_t6():
    ex = TrajectoryExtractor(motion_channels=4, motion_dim=16, depth=3, patch_size=2)
    g_m = torch.randn(2, 4, 5, 8, 12)
    feats = ex(g_m)
    assert len(feats) == 3 and all(f.shape == (2, 5, 4, 6, 16) for f in feats)
    # T6: f_i = Conv^i(f_{i-1}) + f_{i-1}, f_{-1} the patchified latents
    f = ex.patch(g_m)
    for stage, got in zip(ex.stages, feats):
        f = stage(f) + f
        assert torch.allclose(got, f.permute(0, 2, 3, 4, 1), atol=1e-6)
    # the patchify is local: changing one latent pixel changes only its patch's token in f_{-1}
    g2 = g_m.clone()
    g2[:, :, 2, 0, 0] += 1
    d = (ex.patch(g2) - ex.patch(g_m)).abs().sum(1)  # (B, T, n_h, n_w)
    assert d[:, 2, 0, 0].min() > 0 and d.sum() == d[:, 2, 0, 0].sum()
    with pytest.raises(ValueError, match="divisible by patch_size=2"):
        ex(torch.randn(1, 4, 5, 7, 8))


@pytest.mark.parametrize("kind", FUSERS)
def test_a_new_fuser_is_the_identity_and_a_trained_one_is_not(kind):
    fuser = make_fuser(kind, dim=32, motion_dim=16, heads=4)
    h, f = torch.randn(2, 3, 4, 4, 32), torch.randn(2, 3, 4, 4, 16)
    assert torch.equal(fuser(h, f), h)
    _randomise(fuser)
    out = fuser(h, f)
    assert out.shape == h.shape and (out - h).abs().max() > 1e-3
    # the motion feature matters: another f gives another output
    assert (fuser(h, torch.randn_like(f)) - out).abs().max() > 1e-3
    with pytest.raises(ValueError, match="motion feature must be"):
        fuser(h, torch.randn(2, 3, 4, 5, 16))


def test_concat_fuser_is_a_linear_map_of_the_concatenation():
    fuser = _randomise(ConcatFuser(8, 4))
    h, f = torch.randn(1, 2, 3, 3, 8), torch.randn(1, 2, 3, 3, 4)
    w, b = fuser.proj.weight, fuser.proj.bias
    assert torch.allclose(fuser(h, f), h + torch.cat([h, f], -1) @ w.T + b, atol=1e-6)


def test_adanorm_fuser_matches_the_release_formula_and_is_causal_only_through_its_temporal_kernel():
    fuser = _randomise(AdaNormFuser(8, 4, groups=2))
    h, f = torch.randn(1, 4, 3, 3, 8), torch.randn(1, 4, 3, 3, 4)
    out = fuser(h, f)
    x = f.permute(0, 4, 1, 2, 3)
    gb = fuser.temporal(torch.nn.functional.silu(fuser.spatial(x))).permute(0, 2, 3, 4, 1)
    gamma, beta = gb.chunk(2, -1)
    frames = h.permute(0, 1, 4, 2, 3).reshape(4, 8, 3, 3)
    normed = torch.nn.functional.group_norm(frames, 2, fuser.norm.weight, fuser.norm.bias, 1e-6)
    normed = normed.reshape(1, 4, 8, 3, 3).permute(0, 1, 3, 4, 2)
    assert torch.allclose(out, h + normed * gamma + beta, atol=1e-5)
    # the temporal convolution has kernel 3: frame 0's output does not see f at frame 2 or later
    f2 = f.clone()
    f2[:, 2:] += 1
    assert torch.allclose(fuser(h, f2)[:, 0], out[:, 0], atol=1e-6) and not torch.allclose(fuser(h, f2)[:, 1], out[:, 1])


def test_cross_attention_fuser_stays_within_a_frame():
    fuser = _randomise(CrossAttentionFuser(8, 4, heads=2))
    h, f = torch.randn(1, 3, 2, 2, 8), torch.randn(1, 3, 2, 2, 4)
    out = fuser(h, f)
    f2 = f.clone()
    f2[:, 1] = torch.randn_like(f2[:, 1])  # (a constant shift would vanish in LN(f))
    out2 = fuser(h, f2)
    assert torch.allclose(out2[:, 0], out[:, 0], atol=1e-6) and torch.allclose(out2[:, 2], out[:, 2], atol=1e-6)
    assert not torch.allclose(out2[:, 1], out[:, 1])


def _stdit():
    return _randomise(STDiT(STDiTConfig(in_channels=4, patch_size=2, dim=32, depth=2, heads=4, text_dim=16)))


def _expert():
    cfg = ExpertTransformerConfig(in_channels=4, patch_size=2, heads=2, head_dim=16, depth=2, text_dim=16,
                                  time_embed_dim=32, max_text_len=8, base_size=(8, 8))
    return _randomise(ExpertTransformer(cfg))


@pytest.mark.parametrize("build", [_stdit, _expert], ids=["stdit", "expert"])
@pytest.mark.parametrize("kind", FUSERS)
def test_zero_initialised_guidance_leaves_the_base_model_unchanged(build, kind):
    torch.manual_seed(0)
    model = build()
    dim = model.config.dim
    mg = MotionGuidance(MotionGuidanceConfig(motion_channels=4, dim=dim, depth=2, patch_size=2, motion_dim=16,
                                             fuser=kind))
    x, t, text = torch.randn(2, 4, 5, 8, 8), torch.tensor([10, 700]), torch.randn(2, 3, 16)
    g_m = torch.randn(2, 4, 5, 8, 8)
    base = model(x, t, text)
    assert base.abs().max() > 1e-3  # a randomised base: the comparison is not 0 == 0
    assert torch.allclose(model(x, t, text, fuser=mg.fusers, motion_features=mg(g_m)), base, atol=1e-6)
    _randomise(mg.fusers, seed=1)
    moved = model(x, t, text, fuser=mg.fusers, motion_features=mg(g_m))
    assert (moved - base).abs().max() > 1e-3


def test_expert_transformer_fuser_hook_sees_the_video_token_grid_after_norm1():
    model = _expert()
    seen = []

    def spy(h, f):
        seen.append((tuple(h.shape), f))
        return h

    x, text = torch.randn(1, 4, 5, 8, 8), torch.randn(1, 3, 16)
    out = model(x, torch.tensor([5]), text, fuser=spy, motion_features=["f0", "f1"])
    assert [s[0] for s in seen] == [(1, 5, 4, 4, 32)] * 2 and [s[1] for s in seen] == ["f0", "f1"]
    assert torch.allclose(out, model(x, torch.tensor([5]), text))  # the identity fuser changes nothing
    # the hook's input is block 0's norm1 output on the video tokens
    captured, grids = [], []
    handle = model.blocks[0].norm1.register_forward_hook(lambda m, i, o: captured.append(o[0]))
    model(x, torch.tensor([5]), text, fuser=lambda h, f: grids.append(h) or h, motion_features=[0, 1])
    handle.remove()
    assert torch.equal(grids[0].reshape(1, -1, 32), captured[0])
    with pytest.raises(ValueError, match="fuser and motion_features go together"):
        model(x, torch.tensor([5]), text, fuser=spy)
    with pytest.raises(ValueError, match="depth=2"):
        model(x, torch.tensor([5]), text, fuser=spy, motion_features=[0])
    with pytest.raises(ValueError, match="the fuser must return"):
        model(x, torch.tensor([5]), text, fuser=lambda h, f: h[..., :3], motion_features=[0, 1])


def test_motion_guidance_config_errors():
    with pytest.raises(ValueError, match="fuser"):
        MotionGuidanceConfig(fuser="film")
    with pytest.raises(ValueError, match="motion_dim"):
        MotionGuidanceConfig(motion_dim=0)
