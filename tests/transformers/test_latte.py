"""Latte (L1-L8): configuration errors, the four variants' structure, the learned-sigma head with the D6
hybrid loss, class conditioning and CFG, temporal positions (L6), image-DiT initialisation and image-video
joint training (L7), and the FLOP model against torch's FLOP counter."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from minivid.diffusion import (
    NoiseSchedule,
    classifier_free_guidance,
    ddpm_sample,
    hybrid_loss,
    make_timesteps,
    training_losses,
)
from minivid.diffusion import DiffusionTrainer
from minivid.transformers import (
    Attention,
    ImageDiT,
    Latte,
    LatteConfig,
    RotaryEmbedding,
    set_attention_backend,
    sincos_1d,
    sincos_2d,
)

TINY = dict(dim=16, heads=2, depth=2, size=8, num_frames=4, patch_size=4)  # 2 heads x 8 channels, 2 layers


def tiny(**kw):
    return LatteConfig(**{**TINY, **kw})


def randomise_(module, seed=0, std=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


@pytest.mark.parametrize("kw, message", [
    (dict(variant=5), r"variant=5 is invalid: expected one of \(1, 2, 3, 4\)"),
    (dict(variant=0), r"variant=0 is invalid: expected one of \(1, 2, 3, 4\)"),
    (dict(variant=4, heads=3, dim=24), r"heads=3 must be even for variant=4 .* allowed: 2, 4, 6"),
    (dict(variant=1, depth=3), r"depth=3 must be even for variant=1"),
    (dict(num_frames=6, tubelet=4), r"frames=6 must be a positive multiple of tubelet=4; allowed: 4, 8, 12"),
    (dict(size=10), r"height=10 must be a positive multiple of patch_size=4; allowed: 4, 8, 12"),
    (dict(size=(8, 6)), r"width=6 must be a positive multiple of patch_size=4"),
    (dict(temporal_pos="alibi"), r"temporal_pos='alibi' is not supported; allowed: \('sincos', 'rope'\)"),
    (dict(modulation="film"), r"modulation='film' is invalid: expected one of"),
    (dict(size="32"), r"size='32' must be a positive int or an \(H, W\) pair of positive ints"),
    (dict(size=(32,)), r"size=\(32,\) must be a positive int or an \(H, W\) pair"),
    (dict(mlp_ratio=0), r"mlp_ratio=0 must be a positive number with int\(dim \* mlp_ratio\) >= 1"),
    (dict(mlp_ratio=0.01), r"mlp_ratio=0.01 must be a positive number"),
    (dict(num_classes=2.0), r"num_classes=2.0 is invalid: expected an int >= 0"),
])
def test_configuration_errors_name_the_argument_the_value_and_what_is_allowed(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kw)


def test_forward_errors():
    m = Latte(tiny(num_classes=3))
    t = torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"frames=6 must be a positive multiple of tubelet=4"):
        Latte(tiny(tubelet=4))(torch.zeros(2, 3, 6, 8, 8), t)
    with pytest.raises(ValueError, match=r"width=12 must be a positive multiple of patch_size=8"):
        Latte(tiny(patch_size=8))(torch.zeros(2, 3, 4, 8, 12), t)
    with pytest.raises(ValueError, match="class-conditional .* pass labels y"):
        m(torch.zeros(2, 3, 4, 8, 8), t)
    with pytest.raises(ValueError, match="unconditional .* but labels y were given"):
        Latte(tiny())(torch.zeros(2, 3, 4, 8, 8), t, y=t)
    with pytest.raises(ValueError, match="tubelet=1"):
        Latte(tiny(tubelet=2))(torch.zeros(2, 3, 4, 8, 8), t, num_images=2)
    for y, match in [(torch.tensor([-1, 0]), r"y must be integer class labels of shape \(B,\)=\(2,\) with values in "
                                              r"0\.\.3 \(3 is the null class\); got shape \(2,\), dtype torch.int64, "
                                              r"values in -1\.\.0"),
                     (torch.tensor([0, 4]), r"values in 0\.\.4"), (torch.tensor([0, 1, 2]), r"got shape \(3,\)"),
                     (torch.tensor([0.0, 1.0]), r"dtype torch.float32")]:
        with pytest.raises(ValueError, match=match):
            m(torch.zeros(2, 3, 4, 8, 8), t, y)
    m(torch.zeros(2, 3, 4, 8, 8), t, torch.tensor([0, 3]))  # 3 = num_classes: the null class


@pytest.mark.parametrize("variant, kinds", [
    (1, ["spatial", "temporal", "spatial", "temporal"]),
    (2, ["spatial", "spatial", "temporal", "temporal"]),
    (3, ["factorised"] * 4),
    (4, ["split"] * 4),
])
def test_variants_build_their_block_sequence_and_restore_the_input_shape(variant, kinds):
    """L3 block sequences; L8: the output has the input's shape with 2C channels (noise and covariance);
    a fresh model predicts zeros (adaLN-Zero and a zero decoder). A latent input is a config change."""
    m = Latte(tiny(variant=variant, depth=4))
    assert [b.kind for b in m.blocks] == kinds
    x, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([0, 999])
    out = m(x, t)
    assert out.shape == (2, 6, 4, 8, 8) and out.abs().max() == 0
    latent = Latte(tiny(variant=variant, in_channels=4, patch_size=2, tubelet=2, learn_sigma=False))
    assert latent(torch.randn(2, 4, 4, 8, 8), t).shape == (2, 4, 4, 8, 8)


@pytest.mark.parametrize("tubelet", [1, 2])
def test_learned_sigma_head_trains_with_the_d6_hybrid_loss(tubelet):
    """L8 + D6: the first C output channels are eps, the last C the variance interpolation, in the layout
    minivid.diffusion.split_learned_variance expects: training_losses(learned_variance=True) equals
    hybrid_loss on the model output, and L_simple sends no gradient to the variance half of the decoder."""
    torch.manual_seed(0)
    m = randomise_(Latte(tiny(variant=1, num_classes=4, class_dropout=0.0, tubelet=tubelet)))
    s = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 3, 4, 8, 8, generator=g).clamp(-1, 1), torch.randn(3, 3, 4, 8, 8, generator=g)
    t, y = torch.tensor([0, 10, 900]), torch.tensor([0, 1, 3])
    terms = training_losses(m, s, x0, t, noise, learned_variance=True, y=y)
    ref = hybrid_loss(s, m(s.q_sample(x0, t, noise), t, y=y), x0, s.q_sample(x0, t, noise), noise, t)
    for key in ("loss", "mse", "vlb"):
        torch.testing.assert_close(terms[key], ref[key])
    torch.testing.assert_close(terms["loss"], terms["mse"] + 1e-3 * 1000 * terms["vlb"])
    weight = m.decoder.linear.weight if tubelet == 1 else m.decoder.upsample.weight
    (g_mse,) = torch.autograd.grad(terms["mse"].sum(), weight, retain_graph=True)
    (g_all,) = torch.autograd.grad(terms["loss"].sum(), weight)
    if tubelet == 1:  # Linear(d, p·p·2C): output feature index = (p q c), channel = index % 2C
        var_rows = torch.arange(weight.shape[0]) % 6 >= 3
        g_mse_var, g_all_var, g_mse_eps = g_mse[var_rows], g_all[var_rows], g_mse[~var_rows]
    else:  # ConvTranspose3d weight (d, 2C, s, p, p)
        g_mse_var, g_all_var, g_mse_eps = g_mse[:, 3:], g_all[:, 3:], g_mse[:, :3]
    assert g_mse_var.abs().max() == 0 and g_all_var.abs().max() > 0 and g_mse_eps.abs().max() > 0


def test_class_conditioning_null_class_and_classifier_free_guidance():
    torch.manual_seed(2)
    m = randomise_(Latte(tiny(variant=2, num_classes=5, class_dropout=0.999999))).eval()
    x, t, y = torch.randn(4, 3, 4, 8, 8), torch.full((4,), 500), torch.tensor([0, 1, 2, 4])
    null = torch.full((4,), m.null_class)
    cond, uncond = m(x, t, y), m(x, t, null)
    assert m.null_class == 5 and not torch.allclose(cond, uncond, atol=1e-4)
    m.train()  # label dropout (probability ~1 here) replaces every label by the null class
    torch.testing.assert_close(m(x, t, y), uncond)
    m.eval()
    for w, expected in ((1.0, cond), (0.0, uncond)):
        guided = classifier_free_guidance(m, {"y": y}, {"y": null}, w, guided_channels=3)(x, t)
        torch.testing.assert_close(guided[:, :3], expected[:, :3], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(guided[:, 3:], cond[:, 3:], rtol=1e-5, atol=1e-5)  # variance: conditional pass
    with pytest.raises(ValueError, match="unconditional"):
        Latte(tiny()).null_class


def _capture_attention_calls(model):
    calls = []
    hooks = [mod.register_forward_pre_hook(lambda mod, args, kwargs: calls.append((args[0].shape, kwargs.get("rope"))),
                                           with_kwargs=True) for mod in model.modules() if isinstance(mod, Attention)]
    return calls, hooks


def test_temporal_position_sincos_is_added_to_video_frames_and_rope_rotates_temporal_attention():
    """L1 + L6: z = ẑ + p, p = 2D sin-cos per frame (+ 1D sin-cos of the frame, video frames only: L7);
    with temporal_pos="rope" temporal attention gets a 1D RoPE over the video frames and nothing is added."""
    torch.manual_seed(3)
    x, t = torch.randn(2, 3, 5, 8, 8), torch.tensor([5, 5])  # 3 video frames + 2 images, 2x2 tokens per frame
    for pos in ("sincos", "rope"):
        m = Latte(tiny(variant=1, temporal_pos=pos))
        seen = []
        hook = m.blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0]) and None)
        calls, hooks = _capture_attention_calls(m)
        m(x, t, num_images=2)
        for h in [hook, *hooks]:
            h.remove()
        z_hat = m.patch_embed(x).flatten(2, 3)  # (B, n_f, t, d)
        p = sincos_2d(2, 2, 16)[None, None].expand(2, 5, 4, 16).clone()
        if pos == "sincos":
            p[:, :3] += sincos_1d(3, 16)[None, :, None]  # 3 video frames; the 2 images get none
        torch.testing.assert_close(seen[0], z_hat + p)
        spatial = [r for shape, r in calls if tuple(shape) == (2 * 5, 4, 16)]  # (B·n_f, t, d)
        temporal = [r for shape, r in calls if tuple(shape) == (2 * 4, 3, 16)]  # (B·t, video frames, d)
        assert len(spatial) == 1 and len(temporal) == 1 and len(calls) == 2 and spatial[0] is None
        if pos == "rope":
            assert isinstance(temporal[0], RotaryEmbedding) and temporal[0].num_tokens == 3
        else:
            assert temporal[0] is None


@pytest.mark.parametrize("variant", [1, 2, 3, 4])
def test_initialisation_from_an_image_dit(variant):
    """L7: an image DiT's weights go to the spatial blocks, the label embedding is dropped; with RoPE time
    (nothing added to the tokens) and zero-initialised temporal branches, variants 1-3 then compute the
    image model frame by frame. Variant 4's half-head attention has no image counterpart and starts fresh."""
    torch.manual_seed(4)
    image = randomise_(ImageDiT(tiny(variant=variant, depth=4)), seed=5)
    video = Latte(tiny(variant=variant, depth=4, temporal_pos="rope"))
    report = video.load_image_dit(image)
    x, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([20, 700])
    per_frame = torch.stack([image(x[:, :, f], t) for f in range(4)], dim=2)
    if variant == 4:
        assert any(".attn." in n for n in report["skipped"]) and not report["partial"]
        assert not torch.allclose(video(x, t), per_frame, atol=1e-3)
        return
    assert not report["skipped"] and (bool(report["partial"]) == (variant == 3))
    torch.testing.assert_close(video(x, t), per_frame, rtol=1e-4, atol=1e-5)
    # with a class-conditional image model the label table is dropped, everything else still loads
    labelled = ImageDiT(tiny(variant=variant, depth=4, num_classes=10))
    report = Latte(tiny(variant=variant, depth=4, num_classes=16)).load_image_dit(labelled.state_dict())
    assert report["skipped"] == ["y_embed.weight"]


def test_image_video_joint_training():
    """L7: the last k frames of a clip are images: each depends only on itself (and the condition), the
    video frames do not see them; a training step with them runs through the library trainer."""
    torch.manual_seed(6)
    m = randomise_(Latte(tiny(variant=3, num_classes=4)), seed=7).eval()
    x, t, y = torch.randn(2, 3, 6, 8, 8), torch.tensor([3, 400]), torch.tensor([1, 2])
    out = m(x, t, y, num_images=2)
    x2 = x.clone()
    x2[:, :, 4] += 1.0  # change image 0
    moved = (m(x2, t, y, num_images=2) - out).abs().amax(dim=(0, 1, 3, 4)) > 1e-6  # per frame
    assert moved.tolist() == [False, False, False, False, True, False]
    x3 = x.clone()
    x3[:, :, 1] += 1.0  # change a video frame
    moved = (m(x3, t, y, num_images=2) - out).abs().amax(dim=(0, 1, 3, 4)) > 1e-6
    assert moved.tolist() == [True, True, True, True, False, False]
    trainer = DiffusionTrainer(Latte(tiny(variant=1, num_classes=4)), NoiseSchedule.linear(), learned_variance=True)
    loss = trainer.step(x.clamp(-1, 1), y=y, num_images=2)["loss"]
    assert torch.isfinite(torch.tensor(loss))


def test_sampling_with_learned_variance_and_guidance():
    torch.manual_seed(8)
    m = randomise_(Latte(tiny(variant=4, num_classes=4)), seed=9, std=0.05).eval()
    s = NoiseSchedule.linear()
    fn = classifier_free_guidance(m, {"y": torch.tensor([1, 2])}, {"y": torch.tensor([4, 4])}, 2.0, guided_channels=3)
    x_T = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    out = ddpm_sample(fn, x_T, s, generator=torch.Generator().manual_seed(1), variance="learned",
                      timesteps=make_timesteps(s, 5))
    assert out.shape == x_T.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("kw", [
    dict(variant=1), dict(variant=2, modulation="adaln-single"), dict(variant=3, modulation="tokens", num_classes=3),
    dict(variant=4, temporal_pos="rope"), dict(variant=3, tubelet=2), dict(variant=4, num_classes=3, num_frames=6),
])
def test_flop_model_matches_torch_flop_counter(kw):
    """Latte.flops (forward matmul FLOPs, K4 for attention) equals FlopCounterMode on the math backend;
    the sdpa and math backends agree on the output."""
    torch.manual_seed(10)
    m = randomise_(Latte(tiny(**kw)), std=0.1).eval()
    frames = m.config.num_frames
    images = 2 if kw.get("num_frames") == 6 else 0
    x, t = torch.randn(2, 3, frames, 8, 8), torch.tensor([1, 2])
    y = torch.tensor([0, 1]) if m.config.num_classes else None
    ref = m(x, t, y, num_images=images)
    set_attention_backend(m, "math")
    with FlopCounterMode(display=False) as counter:
        out = m(x, t, y, num_images=images)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert counter.get_total_flops() == m.flops(2, num_images=images)["total"]


@pytest.mark.parametrize("variant", (1, 2, 3, 4))
def test_every_variant_runs_on_the_triton_kernel(variant):
    """K1 through minivid's own kernel: set_attention_backend(model, "triton") switches every attention layer
    (spatial, temporal, and variant 2's split blocks) to flash_attention (compiled on CUDA, Triton's interpreter
    on the CPU) and the output and the input gradient match the sdpa backend. Random weights, so that the
    adaLN-zero gates do not make every backend agree trivially."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(variant)
    m = randomise_(Latte(tiny(variant=variant, dim=32, heads=2)), std=0.1).eval().to(device)
    x = torch.randn(2, 3, m.config.num_frames, 8, 8, device=device, requires_grad=True)
    t = torch.tensor([3, 7], device=device)
    ref = m(x, t)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    set_attention_backend(m, "triton")
    assert {a.backend for a in m.modules() if isinstance(a, Attention)} == {"triton"}
    out = m(x, t)
    (g,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("modulation", ["adaln-zero", "adaln-single"])
def test_final_layer_modulation_is_shift_then_scale(modulation):
    """L8: the final LayerNorm is modulated as LN(z)(1 + scale) + shift, with (shift, scale) in DiT's order (AdaLN's
    first d outputs are the shift) and PixArt's (table row 0 is the shift). Written out independently here: a swap
    of shift and scale, or of the table rows, changes the output."""
    from minivid.transformers import Latte, LatteConfig
    torch.manual_seed(0)
    m = Latte(LatteConfig(variant=1, in_channels=3, num_frames=2, size=8, patch_size=4, dim=16, depth=2, heads=2,
                          modulation=modulation)).eval()
    d = 16
    shift, scale = torch.randn(d), torch.randn(d)
    c = torch.randn(2, d)
    with torch.no_grad():
        for p in m.decoder.parameters():  # zero-initialised (DiT): give it weights so its input shows
            p.normal_()
        if modulation == "adaln-single":
            m.final_table.copy_(torch.stack([shift, scale]))
            want_shift, want_scale = shift + c, scale + c  # PixArt: (table + c), row 0 shift, row 1 scale
        else:
            lin = m.final_modulation.linear
            lin.weight.zero_()
            lin.bias.copy_(torch.cat([shift, scale]))
            want_shift, want_scale = shift.expand(2, d), scale.expand(2, d)
        z = torch.randn(2, 2, 4, d)  # (B, n_f, n_h * n_w, d)
        got = m._decode(z, c, n_h=2)
        h = torch.nn.functional.layer_norm(z, (d,), eps=1e-6)
        h = h * (1 + want_scale[:, None, None]) + want_shift[:, None, None]
        want = m.decoder(h.reshape(2, 2, 2, 2, d))
        swapped = m.decoder((torch.nn.functional.layer_norm(z, (d,), eps=1e-6) * (1 + want_shift[:, None, None])
                             + want_scale[:, None, None]).reshape(2, 2, 2, 2, d))
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, swapped, atol=1e-3)
