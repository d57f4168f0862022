"""Shared VAE blocks: CausalConv3d (C1) against an explicitly padded Conv3d and against diffusers'
CogVideoXCausalConv3d (whole clip and chunk by chunk with its conv_cache), the causal resamplers against
diffusers' CogVideoXDownsample3D/Upsample3D, per-frame GroupNorm against a frame loop, and the shape rules."""

import math

import pytest
import torch
import torch.nn.functional as F

from minivid.autoencoders.blocks import (
    CausalConv3d,
    Conv3dSame,
    Decoder,
    Downsample,
    Encoder,
    FrameConv2d,
    GroupNorm3d,
    ResBlock3D,
    Upsample,
    compression_stats,
    log2_exact,
    make_transitions,
)


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("kernel,dilation", [((3, 3, 3), 1), ((3, 1, 1), 2), ((2, 3, 3), 1), ((1, 3, 3), 1)])
def test_causal_conv_equals_explicitly_padded_conv3d(kernel, dilation):
    torch.manual_seed(0)
    conv = CausalConv3d(3, 5, kernel, dilation=dilation).double()
    x = _randn(2, 3, 6, 7, 8, dtype=torch.float64)
    kt, kh, kw = kernel
    pad = (kt - 1) * dilation
    padded = torch.cat([x[:, :, :1]] * pad + [x], dim=2)  # C1: the first frame repeated on the past side
    ref = F.conv3d(padded, conv.conv.weight, conv.conv.bias, padding=(0, kh // 2, kw // 2), dilation=(dilation, 1, 1))
    out = conv(x)
    assert out.shape == (2, 5, 6, 7, 8)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_causal_conv_output_never_sees_the_future_and_streams_exactly():
    torch.manual_seed(0)
    conv = CausalConv3d(2, 3, 3, dilation=2).double()
    x = _randn(1, 2, 9, 5, 5, dtype=torch.float64)
    y = conv(x)
    x2 = x.clone()
    x2[:, :, 5:] = _randn(1, 2, 4, 5, 5, seed=1, dtype=torch.float64)  # change frames after t = 4
    y2 = conv(x2)
    assert torch.equal(y[:, :, :5], y2[:, :, :5])
    assert not torch.allclose(y[:, :, 5:], y2[:, :, 5:])
    cache = {}
    chunks = [conv(x[:, :, a:b], cache) for a, b in ((0, 1), (1, 4), (4, 5), (5, 9))]  # a 1-frame chunk too
    torch.testing.assert_close(torch.cat(chunks, 2), y, rtol=0, atol=1e-12)


def test_causal_conv_matches_diffusers_cogvideox_causal_conv():
    """Independent reference: diffusers' CogVideoXCausalConv3d (pad_mode='constant' = repeat frame 0),
    whole clip and chunked with its own conv_cache."""
    from diffusers.models.autoencoders.autoencoder_kl_cogvideox import CogVideoXCausalConv3d

    torch.manual_seed(0)
    ref = CogVideoXCausalConv3d(4, 6, kernel_size=3)
    ours = CausalConv3d(4, 6, 3)
    ours.conv.load_state_dict(ref.conv.state_dict())
    x = _randn(2, 4, 9, 8, 8)
    out_ref, _ = ref(x)
    torch.testing.assert_close(ours(x), out_ref, rtol=1e-5, atol=1e-5)
    cache, conv_cache, outs, refs = {}, None, [], []
    for a, b in ((0, 5), (5, 9)):
        o, conv_cache = ref(x[:, :, a:b], conv_cache=conv_cache)
        refs.append(o)
        outs.append(ours(x[:, :, a:b], cache))
    torch.testing.assert_close(torch.cat(outs, 2), torch.cat(refs, 2), rtol=1e-5, atol=1e-5)


def test_causal_resamplers_match_diffusers_cogvideox():
    from diffusers.models.downsampling import CogVideoXDownsample3D
    from diffusers.models.upsampling import CogVideoXUpsample3D

    torch.manual_seed(0)
    x = _randn(2, 4, 9, 8, 8)
    ref_down = CogVideoXDownsample3D(4, 4, kernel_size=3, stride=2, padding=0, compress_time=True)
    down = Downsample(4, spatial=True, temporal=True, causal=True)
    down.conv.load_state_dict(ref_down.conv.state_dict())
    y = down(x)
    assert y.shape == (2, 4, 5, 4, 4)  # C1: 1 + 2k -> 1 + k frames
    torch.testing.assert_close(y, ref_down(x), rtol=1e-5, atol=1e-5)

    ref_up = CogVideoXUpsample3D(4, 4, kernel_size=3, stride=1, padding=1, compress_time=True)
    up = Upsample(4, spatial=True, temporal=True, causal=True)
    up.conv.load_state_dict(ref_up.conv.state_dict())
    z = _randn(2, 4, 5, 4, 4, seed=1)
    assert up(z).shape == (2, 4, 9, 8, 8)  # 1 + k -> 1 + 2k
    torch.testing.assert_close(up(z), ref_up(z), rtol=1e-5, atol=1e-5)
    one = _randn(1, 4, 1, 4, 4, seed=2)  # an image stays one frame
    torch.testing.assert_close(up(one), ref_up(one), rtol=1e-5, atol=1e-5)
    assert down(_randn(1, 4, 1, 8, 8)).shape == (1, 4, 1, 4, 4)


def test_resampler_frame_rules_and_errors():
    x = _randn(1, 2, 8, 4, 4)
    down = Downsample(2, spatial=False, temporal=True, causal=False)
    y = down(x)
    assert y.shape == (1, 2, 4, 4, 4)
    up = Upsample(2, spatial=False, temporal=True, causal=False)
    assert up(y).shape == (1, 2, 8, 4, 4)
    with pytest.raises(ValueError, match="even number of frames"):
        down(_randn(1, 2, 7, 4, 4))
    with pytest.raises(ValueError, match="1 \\+ an even number"):
        Downsample(2, temporal=True, causal=True)(_randn(1, 2, 8, 4, 4))
    with pytest.raises(ValueError, match="halve space, time or both"):
        Downsample(2, spatial=False, temporal=False)
    # the temporal mean: the pair average, checked on a signal with known pairs
    ramp = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(1, 2, 8, 4, 4)
    d = Downsample(2, spatial=False, temporal=True, causal=True)
    torch.nn.init.dirac_(d.conv.weight)
    torch.nn.init.zeros_(d.conv.bias)
    out = d(torch.cat([torch.full((1, 2, 1, 4, 4), -1.0), ramp], 2))  # 9 frames: -1, 0..7
    assert out[0, 0, :, 1, 1].tolist() == [-1.0, 0.5, 2.5, 4.5, 6.5]


def test_group_norm_per_frame_equals_a_loop_over_frames():
    torch.manual_seed(0)
    norm = GroupNorm3d(8, groups=4, per_frame=True)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = _randn(2, 8, 5, 3, 3) * 3 + 1
    ref = torch.stack([F.group_norm(x[:, :, t], 4, norm.weight, norm.bias, 1e-6) for t in range(5)], 2)
    torch.testing.assert_close(norm(x), ref)
    clip = GroupNorm3d(8, groups=4, per_frame=False)
    torch.testing.assert_close(clip(x), F.group_norm(x, 4, clip.weight, clip.bias, 1e-6))
    assert GroupNorm3d(24, groups=32).num_groups == 8  # gcd, so small widths work


def test_make_conv_variants_and_non_causal_conv_refuses_to_stream():
    x = _randn(1, 2, 4, 6, 6)
    f2d = FrameConv2d(2, 3, 3, padding=1)
    ref = torch.stack([f2d(x[:, :, t]) for t in range(4)], 2)
    torch.testing.assert_close(f2d(x), ref)
    c3 = Conv3dSame(2, 3, 3)
    assert c3(x).shape == (1, 3, 4, 6, 6)
    with pytest.raises(ValueError, match="cannot be run chunk by chunk"):
        c3(x, {})
    with pytest.raises(ValueError, match="odd"):
        CausalConv3d(2, 2, (3, 2, 2))


def test_resblock_causal_and_per_frame_variants():
    torch.manual_seed(0)
    x = _randn(1, 4, 5, 6, 6)
    block = ResBlock3D(4, 8, causal=True, norm_groups=4)
    y = block(x)
    x2 = x.clone()
    x2[:, :, 3:] += 1.0
    assert y.shape == (1, 8, 5, 6, 6) and torch.equal(block(x2)[:, :, :3], y[:, :, :3])
    per_frame = ResBlock3D(4, 4, temporal_kernel=1, norm_groups=4)
    ref = torch.cat([per_frame(x[:, :, t:t + 1]) for t in range(5)], 2)
    torch.testing.assert_close(per_frame(x), ref, rtol=1e-5, atol=1e-5)


def test_transitions_and_powers_of_two():
    assert make_transitions(8, 4, True) == [(True, True), (True, True), (True, False)]
    assert make_transitions(8, 4, False) == [(True, False), (True, True), (True, True)]
    assert make_transitions(32, 4, False) == [(True, False)] * 3 + [(True, True)] * 2
    assert make_transitions(8, 1, True) == [(True, False)] * 3
    assert make_transitions(2, 8, True) == [(True, True), (False, True), (False, True)]
    with pytest.raises(ValueError, match="power of two"):
        log2_exact(12, "spatial_factor")


def test_encoder_decoder_shapes_pyramid_and_fusion_levels():
    tr = make_transitions(8, 4, True)
    enc = Encoder(3, 6, 4, (1, 2, 2, 2), 1, tr, causal=True, norm_groups=4)
    z = enc(_randn(2, 3, 9, 16, 16))
    assert z.shape == (2, 6, 3, 2, 2)
    feats = Encoder(3, None, 4, (1, 2, 2), 1, make_transitions(4, 1, True), temporal_kernel=1, norm_groups=4)(
        _randn(2, 3, 1, 16, 16))
    assert [tuple(f.shape) for f in feats] == [(2, 4, 1, 16, 16), (2, 8, 1, 8, 8), (2, 8, 1, 4, 4)]
    dec = Decoder(3, 3, 4, (1, 2, 2, 2), 1, make_transitions(8, 4, False), causal=True, norm_groups=4)
    assert dec(z[:, :3]).shape == (2, 3, 9, 16, 16)
    with pytest.raises(ValueError, match="fusion level 7"):
        Decoder(3, 3, 4, (1, 2), 1, [(True, False)], fusions={7: torch.nn.Identity()})
    with pytest.raises(ValueError, match="channel_mult has 2 levels"):
        Encoder(3, 6, 4, (1, 2), 1, tr)


class _Shapes(torch.nn.Module):
    downsample = (4, 32, 32)

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(7))

    def latent_shape(self, s):
        return (s[0], 16, s[2] // 4, s[3] // 32, s[4] // 32)


def test_compression_stats_are_computed_from_shapes():
    s = compression_stats(_Shapes(), (1, 3, 16, 64, 64))
    assert s["factor"] == 4096 == 4 * 32 ** 2
    assert s["latent_elements"] == 16 * 4 * 2 * 2 and s["input_elements"] == 3 * 16 * 64 * 64
    assert math.isclose(s["element_ratio"], 768.0) and s["parameters"] == 7 and s["downsample"] == "4x32x32"


def test_check_video_shape_checks_rank_channels_frames_then_size():
    from minivid.autoencoders.blocks import check_video_shape

    rule = lambda t: None if t % 4 == 0 else f"frames {t}"  # noqa: E731
    check_video_shape((1, 3, 8, 64, 64), 3, 32, rule)
    for shape, match in [((3, 8, 64, 64), "expected a video"),
                         ((1, 4, 7, 60, 64), r"expected 3 channels: video must be \(B, C=3, T, H, W\); got \(1, 4, 7, 60, 64\)$"),
                         ((1, 8, 3, 32, 32), r"got \(1, 8, 3, 32, 32\): if it is \(B, T, C, H, W\), permute it"),
                         ((1, 3, 7, 60, 64), "frames 7"), ((1, 3, 8, 60, 64), "divisible by f_s=32, got 60x64"),
                         ((1, 3, 8, 16, 64), "at least 32x32")]:
        with pytest.raises(ValueError, match=match):
            check_video_shape(shape, 3, 32, rule)


@pytest.mark.parametrize("spatial,temporal", [(True, False), (True, True), (False, True)])
def test_resampler_shortcuts_add_block_means_and_repeats(spatial, temporal):
    """DC-AE's residual paths: with the convolution zeroed a shortcut Downsample is exactly the (first frame kept,
    pairs averaged) x (2x2 block mean) of its input and a shortcut Upsample exactly its repetition; with the
    convolution kept, the output is the plain resampler's plus that path, and causality still holds."""
    x = _randn(2, 4, 5, 8, 8, dtype=torch.float64)
    down = Downsample(4, spatial, temporal, causal=True, shortcut=True).double()
    plain = Downsample(4, spatial, temporal, causal=True).double()
    plain.load_state_dict(down.state_dict())
    head, rest = x[:, :, :1], x[:, :, 1:]
    paired = torch.cat([head, 0.5 * (rest[:, :, 0::2] + rest[:, :, 1::2])], 2) if temporal else x
    means = F.avg_pool3d(paired, (1, 2, 2)) if spatial else paired
    torch.testing.assert_close(down(x) - plain(x), means, rtol=0, atol=1e-12)
    up = Upsample(4, spatial, temporal, causal=True, shortcut=True).double()
    torch.nn.init.zeros_(up.conv.weight), torch.nn.init.zeros_(up.conv.bias)
    y = up(means)
    rep = torch.cat([means[:, :, :1], means[:, :, 1:].repeat_interleave(2, 2)], 2) if temporal else means
    rep = rep.repeat_interleave(2, 3).repeat_interleave(2, 4) if spatial else rep
    torch.testing.assert_close(y, rep, rtol=0, atol=0)
    x2 = x.clone()
    x2[:, :, 3:] += 1.0  # frames 3, 4 only: with pairing, outputs 0 and 1 (frames 0 and 1-2) must not move
    keep = 2 if temporal else 3
    torch.testing.assert_close(down(x2)[:, :, :keep], down(x)[:, :, :keep], rtol=0, atol=0)
    with pytest.raises(ValueError, match="out_channels"):
        Downsample(4, shortcut=True, out_channels=8)


def test_encoder_shortcuts_carry_block_means_to_the_latent():
    """With every learned layer of the residual branches zeroed (res-block second convs, resampler convs, conv_out
    of the encoder, conv_in of the decoder) a shortcut encoder's latent mean is the per-(4x8x8)-block mean of the
    conv_in features, averaged over channel groups."""
    torch.manual_seed(0)
    kw = dict(channels=4, channel_mult=(1, 1, 1, 2), num_res_blocks=1, transitions=make_transitions(8, 4, True),
              causal=True, norm_groups=2, shortcuts=True)
    enc = Encoder(3, 2 * 2, **kw).double()
    for m in enc.modules():
        if isinstance(m, ResBlock3D):
            torch.nn.init.zeros_(m.conv2.weight), torch.nn.init.zeros_(m.conv2.conv.bias)
            if not isinstance(m.skip, torch.nn.Identity):  # the width change 4 -> 8: copy each channel twice
                with torch.no_grad():
                    m.skip.weight.zero_(), m.skip.bias.zero_()
                    for o in range(m.skip.weight.shape[0]):
                        m.skip.weight[o, o * m.skip.weight.shape[1] // m.skip.weight.shape[0]] = 1.0
        if isinstance(m, (Downsample, Upsample)):
            torch.nn.init.zeros_(m.conv.weight), torch.nn.init.zeros_(m.conv.bias)
    torch.nn.init.zeros_(enc.conv_out.weight), torch.nn.init.zeros_(enc.conv_out.conv.bias)
    x = _randn(1, 3, 9, 16, 16, dtype=torch.float64)
    feats = enc.conv_in(x)  # (1, 4, 9, 16, 16)
    paired = torch.cat([feats[:, :, :1], 0.5 * (feats[:, :, 1::2] + feats[:, :, 2::2])], 2)
    paired = torch.cat([paired[:, :, :1], 0.5 * (paired[:, :, 1::2] + paired[:, :, 2::2])], 2)  # 9 -> 5 -> 3
    block = F.avg_pool3d(paired, (1, 8, 8))  # (1, 4, 3, 2, 2)
    want = block.reshape(1, 2, 2, 3, 2, 2).mean(2)  # top width 8 = the 4 channels twice; groups of 4 -> 2 latents
    torch.testing.assert_close(enc(x)[:, :2], want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="multiple"):
        Encoder(3, 2 * 3, **kw)


@pytest.mark.parametrize("kernel,dilation,stride", [(3, 1, 1), (3, 2, 1), ((2, 3, 5), 1, 2)])
def test_causal_conv_on_one_frame_equals_the_padded_conv3d(kernel, dilation, stride):
    """An image (T = 1) takes the 2D path (taps summed over time); it must equal Conv3d on the first frame
    repeated into the past, and a stream that starts with it must continue exactly."""
    torch.manual_seed(0)
    conv = CausalConv3d(3, 4, kernel, stride=stride, dilation=dilation).double()
    x = _randn(2, 3, 5, 8, 8, dtype=torch.float64)
    padded = torch.cat([x[:, :, :1].expand(-1, -1, conv.time_pad, -1, -1), x[:, :, :1]], 2)
    ref = conv.conv(padded)
    torch.testing.assert_close(conv(x[:, :, :1]), ref, rtol=0, atol=1e-12)
    cache = {}
    chunks = [conv(x[:, :, :1], cache), conv(x[:, :, 1:], cache)]
    torch.testing.assert_close(torch.cat(chunks, 2), conv(x), rtol=0, atol=1e-12)
    x.requires_grad_(True)
    conv(x[:, :, :1]).square().sum().backward()
    g = x.grad.clone()
    x.grad = None
    conv.conv(torch.cat([x[:, :, :1].expand(-1, -1, conv.time_pad, -1, -1), x[:, :, :1]], 2)).square().sum().backward()
    torch.testing.assert_close(g, x.grad, rtol=1e-12, atol=1e-12)


def test_decoder_shortcut_repeats_each_latent_channel_over_its_group():
    """The decoder's latent shortcut: with conv_in zeroed, what enters the middle blocks is z with each channel
    repeated over its group (channel k of the top width comes from latent channel k // (C_top / |z|))."""
    kw = dict(channels=4, channel_mult=(1, 2), num_res_blocks=1, transitions=make_transitions(2, 1, True),
              causal=True, norm_groups=2, shortcuts=True)
    dec = Decoder(3, 2, **kw).double()
    torch.nn.init.zeros_(dec.conv_in.weight), torch.nn.init.zeros_(dec.conv_in.conv.bias)
    seen = []
    dec.mid[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    z = _randn(1, 2, 3, 4, 4, dtype=torch.float64)
    dec(z)
    torch.testing.assert_close(seen[0], z[:, [0, 0, 0, 0, 1, 1, 1, 1]], rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple of latent_channels"):
        Decoder(3, 3, **kw)
