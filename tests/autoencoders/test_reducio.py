"""Reducio's VAE (R1-R3): latent shapes and the 4096x factor computed from shapes, R3's constant-factor
configurations, the content frame V_{(T-1)//2}, the content pathway really used, the fusion against an
explicit float64 computation, the latent layer norm, errors, learning, save/load."""

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from minivid import load_model, save_model
from minivid.autoencoders.blocks import compression_stats
from minivid.autoencoders.reducio import ContentFusion, ReducioConfig, ReducioVAE
from minivid.autoencoders.training import AutoencoderTrainer
from minivid.data import MiniSprites


def tiny(**kw) -> ReducioVAE:
    torch.manual_seed(0)
    cfg = dict(latent_channels=4, spatial_factor=16, channels=4, num_res_blocks=1, norm_groups=4,
               content_channels=4, content_num_res_blocks=1, fusion_head_dim=4)
    cfg.update(kw)
    return ReducioVAE(ReducioConfig(**cfg)).eval()


def video(b, t, h, w, seed=0, dtype=torch.float32):
    return torch.rand(b, 3, t, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1


def test_defaults_r2():
    m = ReducioVAE(ReducioConfig(channels=8, content_channels=8, norm_groups=8))
    assert m.downsample == (4, 32, 32) and m.latent_channels == 16 and m.config.use_content
    assert sorted(m.fusion_levels.items()) == [(2, 2), (3, 3)]  # decoder levels at H/4 and H/8
    video_only = ReducioVAE(ReducioConfig(spatial_factor=16, use_content=False, channels=8, norm_groups=8))
    assert video_only.downsample == (4, 16, 16) and not hasattr(video_only, "content_encoder")
    assert not video_only.decoder.fusions


@pytest.mark.parametrize("f_s,t,h,w", [(16, 4, 16, 16), (16, 8, 32, 48), (32, 16, 64, 64), (32, 12, 32, 96)])
def test_latent_shape_r1_and_factor(f_s, t, h, w):
    m = ReducioVAE(ReducioConfig(spatial_factor=f_s, latent_channels=16, channels=2, num_res_blocks=1,
                                 norm_groups=2, content_channels=2, content_num_res_blocks=1, fusion_head_dim=2))
    assert m.latent_shape((1, 3, t, h, w)) == (1, 16, t // 4, h // f_s, w // f_s)  # R1
    s = compression_stats(m, (1, 3, t, h, w))
    assert s["factor"] == 4 * f_s ** 2  # f_t·f_s²: 1024 or 4096 (R2)
    assert s["element_ratio"] == pytest.approx(3 * t * h * w / (16 * (t // 4) * (h // f_s) * (w // f_s)))
    if f_s == 16 and t == 4:
        assert m.encode(video(1, t, h, w)).mean.shape == (1, 16, 1, 1, 1)


def test_r3_ablation_configurations_keep_the_latent_size():
    """R3: f_t·f_s² = 4096 with (f_t, f_s) = (4, 32), (16, 16), (1, 64): the same number of latent positions."""
    sizes = set()
    for f_t, f_s in ((4, 32), (16, 16), (1, 64)):
        m = ReducioVAE(ReducioConfig(temporal_factor=f_t, spatial_factor=f_s, channels=1, num_res_blocks=1,
                                     norm_groups=1, content_channels=1, content_num_res_blocks=1, fusion_head_dim=1))
        assert f_t * f_s ** 2 == 4096
        sizes.add(compression_stats(m, (1, 3, 16, 64, 64))["latent_elements"])
    assert sizes == {16 * 16}
    for z in (16, 8, 4):
        assert tiny(latent_channels=z).latent_shape((1, 3, 8, 32, 32))[1] == z


def test_clear_errors_before_any_work():
    m = tiny(spatial_factor=32)
    with pytest.raises(ValueError, match=r"multiple of 4 frames \(4, 8, 12, 16, 20, \.\.\.\), got 17"):
        m.encode(video(1, 17, 64, 64))
    with pytest.raises(ValueError, match="divisible by f_s=32, got 48x64"):
        m.latent_shape((1, 3, 16, 48, 64))
    with pytest.raises(ValueError, match="at least 32x32"):
        m.latent_shape((1, 3, 16, 16, 16))
    z = torch.zeros(1, 4, 2, 1, 1)
    with pytest.raises(ValueError, match="decodes with the content frame"):
        m.decode(z)
    with pytest.raises(ValueError, match=r"content frame must have shape \(1, 3, 32, 32\)"):
        m.decode(z, content=torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="no content pathway"):
        tiny(use_content=False).decode(z, content=torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="fusion at H/8 needs spatial_factor >= 8"):
        ReducioConfig(spatial_factor=4)


def test_content_frame_is_the_middle_frame():
    m = tiny()
    for t, idx in ((4, 1), (8, 3), (16, 7)):
        x = video(2, t, 16, 16)
        assert ReducioVAE.content_index(t) == idx == (t - 1) // 2
        assert torch.equal(m.conditions(x)["content"], x[:, :, idx])
    assert tiny(use_content=False).conditions(video(1, 4, 16, 16)) == {}


def test_the_content_pathway_is_used():
    m = tiny()
    x = video(2, 8, 32, 32)
    with torch.no_grad():
        z = m.encode(x).mode()
        own = m.decode(z, **m.conditions(x))
        other = m.decode(z, content=x.flip(0)[:, :, 3])  # each clip decoded with the other clip's frame
        assert own.shape == (2, 3, 8, 32, 32)
        assert (own - other).abs().mean() > 1e-3
        m.config.use_content = False  # the same weights without fusion give yet another output
        plain = m.decoder(m.normalize(z))
        assert (own - plain).abs().mean() > 1e-3


def test_fusion_happens_at_h8_and_h4_on_every_frame():
    """R2: the content is injected where the decoder works at H/8 x W/8 and H/4 x W/4, with all T frames (the
    temporal upsampling comes before), from content features of the same spatial size."""
    m = tiny(spatial_factor=32)
    seen = []
    hooks = [f.register_forward_hook(lambda mod, args, out: seen.append((tuple(args[0].shape), tuple(args[1].shape),
                                                                        tuple(out.shape))))
             for f in m.decoder.fusions.values()]
    x = video(2, 8, 64, 64)
    with torch.no_grad():
        m.decode(m.encode(x).mode(), **m.conditions(x))
    for h in hooks:
        h.remove()
    widths = {f: m.decoder.widths[lvl] for lvl, f in ((3, 8), (2, 4))}
    c_widths = {f: m.config.content_channels * m.config.content_channel_mult[int(math.log2(f))] for f in (8, 4)}
    assert sorted(seen, key=lambda r: -r[0][3]) == [
        ((2, widths[f], 8, 64 // f, 64 // f), (2, c_widths[f], 64 // f, 64 // f), (2, widths[f], 8, 64 // f, 64 // f))
        for f in (4, 8)]


def test_reducio_trains_with_perceptual_and_3d_patchgan_through_the_shared_trainer():
    """R2's full loss (L1 + 0.1 LPIPS + 1e-6 KL, + a 3D PatchGAN later) is the shared AutoencoderTrainer's: the
    adaptive GAN weight uses Reducio's last decoder layer, and both sides are updated."""
    from minivid.autoencoders import PatchDiscriminator3D, PerceptualLoss

    m = tiny()
    disc = PatchDiscriminator3D(channels=4, num_layers=1)
    d0 = [p.detach().clone() for p in disc.parameters()]
    trainer = AutoencoderTrainer(m, lr=1e-3, kl_weight=1e-6, perceptual=PerceptualLoss(allow_random=True),
                                 perceptual_weight=0.1, discriminators=[disc], disc_start=1)
    x = video(2, 4, 16, 16)
    logs = [trainer.step(x) for _ in range(2)]
    assert "g_loss" not in logs[0] and {"l1", "kl", "perceptual", "g_loss", "d_loss", "gan_weight"} <= set(logs[1])
    assert m.last_layer is m.decoder.conv_out.weight and math.isfinite(logs[1]["gan_weight"])
    assert any(not torch.equal(a, b) for a, b in zip(d0, disc.parameters()))


def test_the_latent_is_layer_normalised_before_decoding():
    m = tiny()
    x = video(1, 8, 32, 32)
    with torch.no_grad():
        z = m.encode(x).mode() + torch.randn(1, 4, 2, 2, 2, generator=torch.Generator().manual_seed(1))
        mu, var = z.mean(), z.var(unbiased=False)  # over all (|z|, T', H', W') values of the one item
        torch.testing.assert_close(m.normalize(z), (z - mu) / torch.sqrt(var + 1e-5))
        c = m.conditions(x)
        torch.testing.assert_close(m.decode(3.0 * z + 0.5, **c), m.decode(z, **c), rtol=1e-4, atol=1e-4)


def test_content_fusion_matches_an_explicit_float64_computation():
    torch.manual_seed(0)
    fuse = ContentFusion(dim=8, context_dim=6, head_dim=4).double()
    for p in fuse.parameters():
        torch.nn.init.normal_(p, std=0.5)
    h = torch.randn(2, 8, 3, 2, 2, dtype=torch.float64)
    content = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    # reference: sin-cos over t (cos half, then sin half), LayerNorm, 2-head softmax attention, residual
    t = torch.arange(3, dtype=torch.float64)[:, None]
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4, dtype=torch.float64) / 4)
    pe = torch.cat([torch.cos(t * freqs), torch.sin(t * freqs)], 1)  # (T, C)
    x = rearrange(h, "b c t h w -> b t (h w) c") + pe[None, :, None]
    x = rearrange(x, "b t n c -> b (t n) c")
    q_in = F.layer_norm(x, (8,), fuse.norm.weight, fuse.norm.bias, fuse.norm.eps)
    ctx = rearrange(content, "b c h w -> b (h w) c")
    a = fuse.attn
    q = rearrange(q_in @ a.to_q.weight.T, "b n (h d) -> b h n d", h=2)
    k, v = rearrange(ctx @ a.to_kv.weight.T, "b m (two h d) -> two b h m d", two=2, h=2)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)
    o = rearrange(w @ v, "b h n d -> b n (h d)") @ a.to_out.weight.T + a.to_out.bias
    ref = rearrange(x + o, "b (t h w) c -> b c t h w", t=3, h=2)
    # minivid's sin-cos table is computed in float32, hence 1e-6 rather than float64 round-off
    torch.testing.assert_close(fuse(h, content), ref, rtol=1e-6, atol=1e-6)
    same = h[:, :, :1].expand(-1, -1, 3, -1, -1)  # identical frames come out different (temporal PE)
    out = fuse(same, content)
    assert (out[:, :, 0] - out[:, :, 2]).abs().amax() > 1e-3


def test_a_tiny_reducio_learns_and_round_trips(tmp_path):
    clips = MiniSprites(num_videos=2, size=16, num_frames=4, seed=0)
    x = torch.stack([clips[i]["video"] for i in range(2)])
    m = tiny()
    before = (m.reconstruct(x) - x).abs().mean()
    trainer = AutoencoderTrainer(m, lr=1e-2, kl_weight=1e-6, grad_clip=None)
    for _ in range(40):
        trainer.step(x)
    after = (m.eval().reconstruct(x) - x).abs().mean()
    assert after < 0.4 * before, (before, after)
    loaded = load_model(save_model(m, tmp_path / "reducio"))
    assert type(loaded) is ReducioVAE
    assert loaded.config == m.config and loaded.config.fusion_factors == (8, 4)
    torch.testing.assert_close(loaded.eval().reconstruct(x), m.eval().reconstruct(x))


def test_fusion_skip_starts_as_the_official_fusion_and_adds_content_in_place():
    """``fusion_skip`` (minivid's option): zero-initialised, so a model with it decodes exactly as the same weights
    without it; once trained, the skip adds W·content(h, w) + b to every frame at the same position (float64
    reference), so changing one content position changes only that position of the skip's term."""
    torch.manual_seed(0)
    plain = ContentFusion(dim=8, context_dim=6, head_dim=4).double()
    fuse = ContentFusion(dim=8, context_dim=6, head_dim=4, skip=True).double()
    fuse.load_state_dict({**plain.state_dict(), "skip.weight": fuse.skip.weight, "skip.bias": fuse.skip.bias})
    h = torch.randn(2, 8, 3, 4, 4, dtype=torch.float64)
    content = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(fuse(h, content), plain(h, content), rtol=0, atol=0)
    with torch.no_grad():
        fuse.skip.weight.normal_()
        fuse.skip.bias.normal_()
    term = torch.einsum("oc,bchw->bohw", fuse.skip.weight[:, :, 0, 0], content) + fuse.skip.bias[:, None, None]
    torch.testing.assert_close(fuse(h, content) - plain(h, content), term[:, :, None].expand(-1, -1, 3, -1, -1))
    moved = content.clone()
    moved[:, :, 1, 2] += 1.0
    delta = (fuse(h, moved) - plain(h, moved)) - (fuse(h, content) - plain(h, content))
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1, 2] = True
    assert delta[..., mask].abs().amin() > 0 and delta[..., ~mask].abs().amax() < 1e-12
    with pytest.raises(ValueError, match="content grid"):
        fuse(h, torch.randn(2, 6, 2, 2, dtype=torch.float64))
    # in the VAE: off by default (the release), and the option round-trips through the config
    assert ReducioConfig().fusion_skip is False
    m = tiny(fusion_skip=True)
    x = video(2, 8, 32, 32)
    with torch.no_grad():
        ref = tiny()
        ref.load_state_dict({k: v for k, v in m.state_dict().items() if not (k.startswith("decoder.fusions.") and ".skip." in k)})
        torch.testing.assert_close(m.reconstruct(x), ref.reconstruct(x))


def test_fusion_points_sample_the_content_where_the_query_points():
    """``fusion_points`` (minivid's option, Deformable DETR's sampling as the skip): with the skip's projection
    zeroed a model decodes exactly as the official fusion; one point with a fixed offset of (+1, 0) cells fetches
    the content one cell to the right (an explicit shift, edges repeated); the weights of several points are a
    softmax; a trained value path passes gradients to the offsets; bad values are refused before any work."""
    torch.manual_seed(0)
    plain = ContentFusion(dim=8, context_dim=6, head_dim=4).double()
    fuse = ContentFusion(dim=8, context_dim=6, head_dim=4, skip=True, points=5).double()
    fuse.load_state_dict({**plain.state_dict(), **{k: v for k, v in fuse.state_dict().items()
                                                   if k.startswith(("skip.", "offsets."))}})
    h = torch.randn(2, 8, 3, 4, 5, dtype=torch.float64)
    content = torch.randn(2, 6, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(fuse(h, content), plain(h, content), rtol=0, atol=0)  # the release at the start
    one = ContentFusion(dim=8, context_dim=6, head_dim=4, skip=True, points=1).double()
    one.load_state_dict({**plain.state_dict(), **{k: v for k, v in one.state_dict().items()
                                                  if k.startswith(("skip.", "offsets."))}})
    with torch.no_grad():
        one.skip.weight.normal_()
        one.skip.bias.normal_()
        one.offsets[2].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))  # dx = +1 cell, dy = 0, whatever the query
    value = torch.einsum("oc,bchw->bohw", one.skip.weight[:, :, 0, 0], content) + one.skip.bias[:, None, None]
    shifted = torch.cat([value[..., 1:], value[..., -1:]], dim=-1)  # v(x + 1), the last column repeated
    torch.testing.assert_close(one(h, content) - plain(h, content), shifted[:, :, None].expand(-1, -1, 3, -1, -1))
    with torch.no_grad():  # half a cell up: the mean of two rows (bilinear), the first row repeated at the top
        one.offsets[2].bias.copy_(torch.tensor([0.0, -0.5, 0.0]))
    up = 0.5 * (value + torch.cat([value[..., :1, :], value[..., :-1, :]], dim=-2))
    torch.testing.assert_close(one(h, content) - plain(h, content), up[:, :, None].expand(-1, -1, 3, -1, -1))
    with torch.no_grad():  # two points at offsets 0 and +1 with logits 0 and log 3: weights 1/4 and 3/4
        two = ContentFusion(dim=8, context_dim=6, head_dim=4, skip=True, points=2).double()
        two.load_state_dict({**one.state_dict(), "offsets.2.weight": two.offsets[2].weight,
                             "offsets.2.bias": torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, math.log(3.0)])})
    torch.testing.assert_close(two(h, content) - plain(h, content),
                               (0.25 * value + 0.75 * shifted)[:, :, None].expand(-1, -1, 3, -1, -1))
    fuse.skip.weight.data.normal_()
    fuse(h, content).square().sum().backward()
    assert fuse.offsets[2].weight.grad.abs().amax() > 0  # the offsets learn once the value path carries content
    with pytest.raises(ValueError, match="points=2"):
        ContentFusion(dim=8, context_dim=6, points=2)  # needs skip=True
    with pytest.raises(ValueError, match="points=-1"):
        ContentFusion(dim=8, context_dim=6, skip=True, points=-1)
    with pytest.raises(ValueError, match="fusion_points=3"):
        ReducioConfig(fusion_points=3)
    m = tiny(fusion_skip=True, fusion_points=3)
    loaded = ReducioVAE(m.config)
    loaded.load_state_dict(m.state_dict())
    x = video(2, 8, 32, 32)
    torch.testing.assert_close(loaded.eval().reconstruct(x), m.reconstruct(x))


def _linear_upsample_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float64 weights of 1D linear interpolation with half-pixel centres (align_corners=False)."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = min(int(math.floor(src)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        m[i, lo] += 1 - (src - lo)
        m[i, hi] += src - lo
    return m


def test_latent_skip_adds_a_linear_map_of_the_latent_upsampled_trilinearly():
    """``latent_skip`` (minivid's option): zero-initialised, so the model starts as the release; with weights set,
    decode adds W·LN(z) + b upsampled to the clip by separable linear interpolation (a float64 reference built from
    explicit interpolation matrices), a term no GroupNorm of the decoder can remove."""
    m, ref = tiny(latent_skip=True).double(), tiny().double()
    ref.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("latent_skip.")})
    x = video(2, 8, 32, 32, dtype=torch.float64)
    z = m.encode(x).mode()
    c = m.conditions(x)
    with torch.no_grad():
        torch.testing.assert_close(m.decode(z, **c), ref.decode(z, **c), rtol=0, atol=0)
        m.latent_skip.weight.normal_()
        m.latent_skip.bias.normal_()
        zn = F.layer_norm(z, z.shape[1:])  # (2, 4, 2, 2, 2)
        low = torch.einsum("oc,bcthw->bothw", m.latent_skip.weight[:, :, 0, 0, 0], zn) \
            + m.latent_skip.bias[:, None, None, None]
        mt, mh, mw = (_linear_upsample_matrix(2, 8), _linear_upsample_matrix(2, 32), _linear_upsample_matrix(2, 32))
        term = torch.einsum("Tt,Hh,Ww,bothw->boTHW", mt, mh, mw, low)
        torch.testing.assert_close(m.decode(z, **c) - ref.decode(z, **c), term)
    assert ReducioConfig().latent_skip is False
    loaded = ReducioVAE(m.config).double()
    loaded.load_state_dict(m.state_dict())
    torch.testing.assert_close(loaded.eval().reconstruct(x), m.eval().reconstruct(x))


def test_content_residual_adds_the_content_frame_to_every_decoded_frame():
    """``content_residual`` (minivid's option): decode(z, c) = decoder(z, c) + c on every frame. With the same
    weights the difference from a model without it is exactly the content frame repeated over the frames; with the
    decoder's last convolution zeroed the output *is* that repeat, and the zoo's metrics score it exactly as the
    content-frame baseline on the other frames. Off by default (the release), refused without the content pathway."""
    m, ref = tiny(content_residual=True), tiny()
    ref.load_state_dict(m.state_dict())
    x = video(2, 8, 32, 32)
    c = m.conditions(x)["content"]
    z = m.encode(x).mean
    with torch.no_grad():
        torch.testing.assert_close(m.decode(z, content=c) - ref.decode(z, content=c),
                                   c[:, :, None].expand(-1, -1, 8, -1, -1), rtol=0, atol=1e-6)
        m.decoder.conv_out.weight.zero_()
        m.decoder.conv_out.bias.zero_()
        out = m.decode(z, content=c)
        assert torch.equal(out, c[:, :, None].expand_as(out))
        assert torch.equal(m.decode(torch.randn_like(z), content=c), out)
    # scored as the zoo scores it: such a decoder is the content-frame baseline on the other frames, while its exact
    # content frame lifts the all-frame average far above it (why the zoo reports psnr_without_content_frame)
    from minivid.pipeline.zoo import autoencoder_metrics
    mets = autoencoder_metrics(m, video(3, 8, 32, 32, seed=1))
    base = mets["baselines_psnr"]["content frame repeated (the decoder's side information)"]
    assert mets["psnr_without_content_frame"] == pytest.approx(base, abs=1e-4)
    assert mets["psnr"] > base + 20
    assert mets["margin_on"] == "psnr_without_content_frame"  # the margin is not lifted by the copied frame
    assert mets["margin_db"] == pytest.approx(mets["psnr_without_content_frame"] - mets["best_baseline_psnr"])
    assert ReducioConfig().content_residual is False
    with pytest.raises(ValueError, match="content_residual=True .* use_content=True"):
        ReducioConfig(use_content=False, content_residual=True)


def test_content_warp_samples_the_content_frame_at_predicted_offsets_and_blends():
    """``content_warp`` = K (minivid's option): the decoder's extra channels are K (dx, dy, logit) triples and a mask
    logit; out = m·sum_k a_k c(p + Δ_k) + (1 - m)·rgb. At the start (point 0 in place, mask logit 2) every frame is
    0.881·content + 0.119·the plain decoder's output (the same weights, float64); a fixed offset of +1 px in x is an
    explicit shift of the content frame (last column repeated), half a pixel up the mean of two rows, two points with
    logits 0 and log 3 weigh 1/4 and 3/4; the offsets get gradients; bad values are refused before any work."""
    m, ref = tiny(content_warp=1).double(), tiny().double()
    state = m.state_dict()
    state = {k: (v[:3] if k.startswith("decoder.conv_out.") else v) for k, v in state.items()}
    ref.load_state_dict(state)
    x = video(2, 8, 32, 32, dtype=torch.float64)
    c = m.conditions(x)["content"]
    z = m.encode(x).mode()
    assert m.decoder.conv_out.weight.shape[0] == 3 + 4
    s = torch.sigmoid(torch.tensor(2.0, dtype=torch.float64))
    rep = c[:, :, None].expand(-1, -1, 8, -1, -1)
    with torch.no_grad():
        rgb = ref.decode(z, content=c)
        torch.testing.assert_close(m.decode(z, content=c), s * rep + (1 - s) * rgb)
        m.decoder.conv_out.bias[-1] = 40.0  # mask 1: the warped content alone
        m.decoder.conv_out.bias[3:6] = torch.tensor([1.0 / m.config.warp_scale, 0.0, 0.0])  # dx = +1 pixel
        shifted = torch.cat([c[..., 1:], c[..., -1:]], dim=-1)  # c(x + 1), the last column repeated
        torch.testing.assert_close(m.decode(z, content=c), shifted[:, :, None].expand(-1, -1, 8, -1, -1))
        m.decoder.conv_out.bias[3:6] = torch.tensor([0.0, -0.5 / m.config.warp_scale, 0.0])  # half a pixel up
        up = 0.5 * (c + torch.cat([c[..., :1, :], c[..., :-1, :]], dim=-2))
        torch.testing.assert_close(m.decode(z, content=c), up[:, :, None].expand(-1, -1, 8, -1, -1))
        m.decoder.conv_out.bias[-1] = -40.0  # mask 0: the decoder's own colours
        torch.testing.assert_close(m.decode(z, content=c), rgb)
    two = tiny(content_warp=2).double()
    with torch.no_grad():
        two.decoder.conv_out.weight[3:].zero_()
        two.decoder.conv_out.bias[3:] = torch.tensor([0.0, 0.0, 0.0, 1.0 / two.config.warp_scale, 0.0, math.log(3.0),
                                                      40.0])
        out = two.decode(two.encode(x).mode(), content=c)
    torch.testing.assert_close(out, (0.25 * c + 0.75 * shifted)[:, :, None].expand(-1, -1, 8, -1, -1))
    five = tiny(content_warp=5, warp_radius=3.0)  # the ring at the start: points 1-4 three pixels away
    ring = five.decoder.conv_out.bias[3:-1].view(5, 3)[1:, :2] * five.config.warp_scale
    torch.testing.assert_close(ring.norm(dim=-1), torch.full((4,), 3.0))
    five.train()
    five(video(2, 8, 32, 32), sample=False)[0].square().sum().backward()
    assert five.decoder.conv_out.weight.grad[3:].abs().amax() > 0  # the offsets and mask learn
    loaded = ReducioVAE(five.config)
    loaded.load_state_dict(five.state_dict())
    torch.testing.assert_close(loaded.eval().reconstruct(x.float()), five.eval().reconstruct(x.float()))
    assert ReducioConfig().content_warp == 0
    for bad, match in ((dict(content_warp=-1), "content_warp=-1"), (dict(content_warp=True), "content_warp=True"),
                       (dict(content_warp=2, use_content=False), "content_warp=2 .* use_content=True"),
                       (dict(content_warp=1, content_residual=True), "content_warp=1 and content_residual"),
                       (dict(content_warp=1, warp_scale=0.0), "warp_scale=0.0")):
        with pytest.raises(ValueError, match=match):
            ReducioConfig(**bad)


def test_warp_latent_adds_a_per_frame_linear_map_of_the_latent_to_every_offset():
    """``warp_latent`` (minivid's option, with ``content_warp``): zero-initialised, so the model starts as without it;
    with weights set, every point's offset gains W·LN(z) + b, whose 2·f_t channels per latent frame are that frame's
    f_t (dx, dy) pairs, upsampled bilinearly in space (a float64 reference from explicit interpolation matrices).
    Checked through the offsets the warp receives; refused without ``content_warp``."""
    m, ref = tiny(content_warp=2, warp_latent=True).double(), tiny(content_warp=2).double()
    ref.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("warp_latent.")})
    x = video(2, 8, 32, 32, dtype=torch.float64)
    z, c = m.encode(x).mode(), m.conditions(x)["content"]
    seen = {}
    for model, key in ((m, "m"), (ref, "ref")):
        model.warp = (lambda key: lambda rgb, warp, content: seen.__setitem__(key, warp) or rgb)(key)
    with torch.no_grad():
        m.decode(z, content=c), ref.decode(z, content=c)
        torch.testing.assert_close(seen["m"], seen["ref"], rtol=0, atol=0)
        m.warp_latent.weight.normal_()
        m.warp_latent.bias.normal_()
        m.decode(z, content=c)
        zn = F.layer_norm(z, z.shape[1:])  # (2, 4, T'=2, 2, 2) with f_t = 4
        low = torch.einsum("oc,bcthw->bothw", m.warp_latent.weight[:, :, 0, 0, 0], zn) \
            + m.warp_latent.bias[:, None, None, None]  # (2, 2·4, 2, 2, 2)
        low = rearrange(low, "b (two f) t h w -> b two (t f) h w", two=2)  # frame 4t' + f gets channel block f
        mh = _linear_upsample_matrix(2, 32)
        shift = torch.einsum("Hh,Ww,bothw->botHW", mh, mh, low)  # (2, 2, 8, 32, 32)
        zero = torch.zeros_like(shift[:, :1])
        want = seen["ref"] + torch.cat([shift, zero, shift, zero, zero], dim=1)  # both points shifted; logits, mask not
        torch.testing.assert_close(seen["m"], want)
    with pytest.raises(ValueError, match="warp_latent=True .* content_warp >= 1"):
        ReducioConfig(warp_latent=True)
