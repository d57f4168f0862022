"""PVDM's plane U-Net (P7, P8): one network for three planes of different shapes, tuple and packed inputs,
cross-plane attention as the only path between planes, the channel-concatenated condition with zeros as the
null condition, and clear errors."""

import pytest
import torch

from minivid.nn.triplane import pack_planes
from minivid.unets import PlaneUNet, PlaneUNetConfig, axis_position_embedding

TINY = dict(in_channels=3, channels=8, channel_mult=(1, 2), heads=2, norm_groups=4)


def randomised(model: PlaneUNet) -> PlaneUNet:
    """Zero-initialised output layers (attention out, res-block out, head) make a fresh model trivial."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def planes(b, s, hp, wp, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, hp, wp, generator=g), torch.randn(b, c, s, wp, generator=g),
            torch.randn(b, c, s, hp, generator=g))


@pytest.mark.parametrize("shape", [(4, 4, 4), (8, 4, 6), (2, 8, 4)])
@pytest.mark.parametrize("conditional", [True, False])
def test_shapes_tuple_and_packed(shape, conditional):
    m = PlaneUNet(PlaneUNetConfig(conditional=conditional, **TINY))
    z = planes(2, *shape)
    t = torch.tensor([0, 999])
    out = m(z, t)
    assert tuple(o.shape for o in out) == tuple(p.shape for p in z)
    assert all(o.abs().max() == 0 for o in out)  # zero-initialised head
    m = randomised(m)
    cond = planes(2, *shape, seed=1) if conditional else None
    with torch.no_grad():
        out = m(z, t, cond=cond)
        packed = m(pack_planes(z), t, cond=pack_planes(cond) if cond else None, shape=shape)
    torch.testing.assert_close(packed, pack_planes(out))


def test_cross_plane_attention_mixes_planes_and_the_conv_path_does_not():
    """P7: perturb z^s only. With cross-plane attention the outputs for z^h and z^w change; without it they
    stay bit-for-bit the same (convolutions, norms and the timestep embedding act on each plane alone)."""
    z = planes(2, 4, 4, 8)
    z2 = (z[0] + 1.0, z[1], z[2])
    t = torch.tensor([10, 500])
    for attention in (True, False):
        torch.manual_seed(0)
        m = randomised(PlaneUNet(PlaneUNetConfig(cross_plane_attention=attention, **TINY)))
        with torch.no_grad():
            a, b = m(z, t), m(z2, t)
        assert (a[0] - b[0]).abs().max() > 1e-3
        for k in (1, 2):
            if attention:
                assert (a[k] - b[k]).abs().max() > 1e-3
            else:
                assert torch.equal(a[k], b[k])


def test_batch_items_stay_separate():
    m = randomised(PlaneUNet(PlaneUNetConfig(**TINY)))
    z = planes(3, 4, 4, 4)
    z2 = tuple(p.clone() for p in z)
    z2[1][1] += 1.0
    t = torch.tensor([3, 3, 3])
    with torch.no_grad():
        a, b = m(z, t), m(z2, t)
    for k in range(3):
        torch.testing.assert_close(a[k][[0, 2]], b[k][[0, 2]], rtol=0, atol=1e-6)
        assert (a[k][1] - b[k][1]).abs().max() > 1e-3


def test_condition_is_used_and_none_means_zeros():
    """P8: cond=None is the null condition (zeros); a condition changes every plane's output."""
    m = randomised(PlaneUNet(PlaneUNetConfig(**TINY)))
    z, c = planes(2, 4, 4, 4), planes(2, 4, 4, 4, seed=5)
    t = torch.tensor([100, 100])
    with torch.no_grad():
        none, zeros, cond = m(z, t), m(z, t, cond=tuple(torch.zeros_like(p) for p in z)), m(z, t, cond=c)
        late = m(z, torch.tensor([900, 900]), cond=c)
    for k in range(3):
        assert torch.equal(none[k], zeros[k])
        assert (cond[k] - none[k]).abs().max() > 1e-3
        assert (cond[k] - late[k]).abs().max() > 1e-3  # the timestep matters too


def test_axis_positions_share_coordinates_across_planes():
    """z^s token (h, w), z^h token (s, w) and z^w token (s, h) carry the same code for a shared axis."""
    dim = 24
    e_s = axis_position_embedding(("h", "w"), 4, 6, dim, 1).reshape(4, 6, dim)
    e_h = axis_position_embedding(("s", "w"), 3, 6, dim, 1).reshape(3, 6, dim)
    e_w = axis_position_embedding(("s", "h"), 3, 4, dim, 1).reshape(3, 4, dim)
    k = 2 * (dim // 6)
    w_slice, h_slice, s_slice = slice(2 * k, 3 * k), slice(k, 2 * k), slice(0, k)
    torch.testing.assert_close(e_s[2, 5, w_slice], e_h[1, 5, w_slice])
    torch.testing.assert_close(e_s[3, 0, h_slice], e_w[2, 3, h_slice])
    torch.testing.assert_close(e_h[2, 0, s_slice], e_w[2, 1, s_slice])
    assert e_s[..., s_slice].abs().max() == 0 and e_h[..., h_slice].abs().max() == 0
    # stride: a token of a 2x-downsampled plane sits where full-resolution token 2i does
    torch.testing.assert_close(axis_position_embedding(("h", "w"), 2, 3, dim, 2).reshape(2, 3, dim),
                               e_s[::2, ::2])


def test_clear_errors():
    m = PlaneUNet(PlaneUNetConfig(**TINY))
    t = torch.tensor([1, 1])
    z = planes(2, 4, 4, 4)
    with pytest.raises(ValueError, match="inconsistent plane shapes"):
        m((z[0], z[1], z[2][:, :, :2]), t)
    with pytest.raises(ValueError, match="2 channels; expected latent_channels=3"):
        m(tuple(p[:, :2] for p in z), t)
    with pytest.raises(ValueError, match=r"pass shape=\(S, H', W'\)"):
        m(pack_planes(z), t)
    with pytest.raises(ValueError, match="must be divisible by 2"):
        m(planes(2, 3, 4, 4), t)
    with pytest.raises(ValueError, match="cond: inconsistent plane shapes"):
        m(z, t, cond=planes(2, 4, 4, 4)[:2] + (torch.zeros(2, 3, 4, 8),))
    with pytest.raises(ValueError, match="cond planes .* must have the shapes of z"):
        m(z, t, cond=planes(2, 8, 4, 4))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        m(z, torch.tensor([1]))
    with pytest.raises(ValueError, match="unconditional"):
        PlaneUNet(PlaneUNetConfig(conditional=False, **TINY))(z, t, cond=z)
    with pytest.raises(ValueError, match="channel_mult"):
        PlaneUNetConfig(channel_mult=())


def test_every_stage_has_its_cross_plane_attention_in_the_releases_places():
    """[code] The release's AttentionBlock1D follows every input block, the whole middle block (after its second
    res block) and every output block. Each of them is used: perturbing any one's output projection changes the
    result; and the middle one runs after both middle res blocks."""
    torch.manual_seed(0)
    m = randomised(PlaneUNet(PlaneUNetConfig(**TINY)))
    down = [b for b in m.down if "res" in b]
    up = [b for b in m.up if "res" in b]
    assert all("attn" in b for b in down + up) and "attn" in m.mid
    assert len(up) == len(TINY["channel_mult"]) * (m.config.num_res_blocks + 1)
    z, t = planes(2, 4, 4, 4), torch.tensor([10, 500])
    with torch.no_grad():
        base = pack_planes(m(z, t))
        for attn in [b["attn"] for b in down + up] + [m.mid["attn"]]:
            out_proj = [p for n, p in attn.named_parameters() if n.endswith("weight")][-1]
            out_proj.add_(0.5)
            assert (pack_planes(m(z, t)) - base).abs().max() > 1e-4
            out_proj.sub_(0.5)
    order = []
    hooks = [m.mid[k].register_forward_hook(lambda mod, i, o, k=k: order.append(k)) for k in ("res1", "res2", "attn")]
    with torch.no_grad():
        m(z, t)
    for h in hooks:
        h.remove()
    assert order == ["res1", "res2", "attn"]  # the res blocks (all planes in one call), then the planes meet


def test_class_labels_act_like_a_timestep_shift_and_none_is_the_null_class():
    """num_classes > 0 (minivid's addition): a label changes every plane's output and only its own batch item;
    y=None equals the explicit null class; the class-free model has no embedding and refuses labels."""
    m = randomised(PlaneUNet(PlaneUNetConfig(**TINY, num_classes=5)))
    z, t = planes(2, 4, 4, 4), torch.tensor([100, 100])
    with torch.no_grad():
        none = m(z, t)
        null = m(z, t, y=torch.tensor([5, 5]))
        a = m(z, t, y=torch.tensor([1, 5]))
        b = m(z, t, y=torch.tensor([2, 5]))
    for k in range(3):
        assert torch.equal(none[k], null[k])
        assert (a[k][0] - b[k][0]).abs().max() > 1e-3  # the label matters on every plane
        torch.testing.assert_close(a[k][1], null[k][1])  # and stays with its own clip
    plain = PlaneUNet(PlaneUNetConfig(**TINY))
    assert plain.class_embed is None and sum(p.numel() for p in m.parameters()) - sum(
        p.numel() for p in plain.parameters()) == 6 * 4 * TINY["channels"]  # (num_classes + 1) x emb_dim
    with pytest.raises(ValueError, match="no class embedding"):
        plain(z, t, y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels in 0..5"):
        m(z, t, y=torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="num_classes=-1 must be an int >= 0"):
        PlaneUNetConfig(**TINY, num_classes=-1)
