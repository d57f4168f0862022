"""RoPE (L6, C3) against independent ground truth: complex multiplication, diffusers' CogVideoX rotary
embedding, and the relative-position property."""

import math

import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb, get_3d_rotary_pos_embed

from minivid.nn import Attention, apply_rope, rope_1d, rope_3d, rope_axes_dims

F64 = torch.float64


def test_rope_1d_is_a_complex_rotation_of_channel_pairs():
    """RoPE: pair (x_2i, x_2i+1) as a complex number, times exp(i m theta^(-2i/D))."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 7, 8, generator=g, dtype=F64)
    pos = torch.tensor([0, 1, 2, 5, 9, 10, 40.0])
    rope = rope_1d(pos, 8, theta=100.0)
    z = torch.view_as_complex(x.reshape(2, 3, 7, 4, 2).contiguous())
    angle = pos[:, None] * 100.0 ** (-torch.arange(0, 8, 2, dtype=F64) / 8)
    ref = torch.view_as_real(z * torch.polar(torch.ones_like(angle), angle)).reshape(2, 3, 7, 8)
    torch.testing.assert_close(rope(x), ref)
    torch.testing.assert_close(rope(x).norm(dim=-1), x.norm(dim=-1))  # a rotation keeps norms


def test_rope_3d_matches_diffusers_cogvideox():
    """C3: d/4 channels rotate with t, 3d/8 with h, 3d/8 with w, theta = 10000, interleaved pairs."""
    n_f, n_h, n_w, d = 3, 4, 5, 32
    assert rope_axes_dims(d) == (8, 12, 12) and rope_axes_dims(64) == (16, 24, 24)
    cos, sin = get_3d_rotary_pos_embed(d, ((0, 0), (n_h, n_w)), (n_h, n_w), n_f)
    x = torch.randn(2, 2, n_f * n_h * n_w, d)
    ref = apply_rotary_emb(x, (cos, sin))
    torch.testing.assert_close(rope_3d(n_f, n_h, n_w, d)(x), ref, rtol=1e-5, atol=1e-5)


def _scores(q, k, rope):
    return rope(q) @ rope(k).transpose(-1, -2)


def test_rope_scores_depend_only_on_relative_positions_1d_and_3d():
    """Shift every position by the same amount: the attention scores q_m·k_n are unchanged (1D, and 3D
    with a different shift per axis); rescaling the positions does change them (so the test can fail)."""
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 2, 6, 16, generator=g, dtype=F64), torch.randn(2, 2, 6, 16, generator=g, dtype=F64)
    pos = torch.tensor([0, 1, 2, 3, 7, 11.0])
    base = _scores(q, k, rope_1d(pos, 16))
    torch.testing.assert_close(_scores(q, k, rope_1d(pos + 13.0, 16)), base)
    assert not torch.allclose(_scores(q, k, rope_1d(2 * pos, 16)), base, atol=1e-3)
    q3, k3 = torch.randn(1, 2, 2 * 3 * 4, 16, generator=g, dtype=F64), torch.randn(1, 2, 24, 16, generator=g, dtype=F64)
    base3 = _scores(q3, k3, rope_3d(2, 3, 4, 16))
    torch.testing.assert_close(_scores(q3, k3, rope_3d(2, 3, 4, 16, offset=(5, -2, 9))), base3)
    assert not torch.allclose(_scores(q3, k3, rope_3d(2, 3, 4, 16, axes_dims=(4, 4, 8))), base3, atol=1e-3)


def test_rope_plugs_into_the_attention_module():
    """Attention(rope=...) with positions shifted gives the same output; different RoPE splits do not."""
    torch.manual_seed(4)
    attn = Attention(32, heads=2).eval()
    x = torch.randn(2, 24, 32)
    out = attn(x, rope=rope_3d(2, 3, 4, 16))
    torch.testing.assert_close(attn(x, rope=rope_3d(2, 3, 4, 16, offset=(3, 3, 3))), out, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(attn(x), out, atol=1e-4)
    with pytest.raises(ValueError, match="RoPE built for N=24 tokens of head_dim=16"):
        attn(x[:, :5], rope=rope_3d(2, 3, 4, 16))
    with pytest.raises(ValueError, match="cannot be split"):
        rope_axes_dims(8)  # 8/4 = 2, 3·8/8 = 3: odd slices
    assert math.isclose(sum(rope_axes_dims(48)), 48)


def test_tables_are_cast_once_per_device_and_dtype_and_give_the_same_rotation():
    """A RoPE keeps its float64 tables and, for each (device, dtype) of the queries it rotates, the cast tables: the
    attention calls of every block reuse them (on a GPU, instead of a blocking copy from the CPU per call). The
    rotation is bit for bit apply_rope's with freshly cast tables; ``to`` starts a fresh cache on the new device
    (the meta device stands in for a GPU)."""
    rope = rope_1d(6, 8)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.randn(2, 3, 6, 8).to(dtype)
        assert torch.equal(rope(x), apply_rope(x, rope.cos.to(x), rope.sin.to(x)))
        cos, sin = rope.tables(x)
        assert cos.dtype == sin.dtype == dtype and rope.tables(x.clone())[0] is cos  # kept, not cast again
    assert rope.cos.dtype == torch.float64 and len(rope._cast) == 3
    on_meta = rope.to("meta")
    q = torch.zeros(1, 1, 6, 8, device="meta")
    assert on_meta(q).device.type == "meta" and on_meta.tables(q)[0].device.type == "meta"
    assert len(rope._cast) == 3 and len(on_meta._cast) == 1  # the copy's cache is its own
    meta_on_cpu_rope = rope.tables(q)[0]  # the CPU-built RoPE also serves queries elsewhere, cast there once
    assert meta_on_cpu_rope.device.type == "meta" and rope.tables(q)[0] is meta_on_cpu_rope


def test_latte_builds_its_temporal_rope_once_per_clip_length():
    from minivid.transformers import Latte, LatteConfig

    m = Latte(LatteConfig(in_channels=3, patch_size=2, dim=32, depth=2, heads=2, temporal_pos="rope", size=8,
                          num_frames=4))
    x, t = torch.randn(1, 3, 4, 8, 8), torch.tensor([10])
    first = m(x, t)
    ropes = [v for k, v in m._pos_cache.items() if k[0] == "rope_t"]
    assert len(ropes) == 1 and torch.equal(m(x, t), first)
    assert [v for k, v in m._pos_cache.items() if k[0] == "rope_t"][0] is ropes[0]
