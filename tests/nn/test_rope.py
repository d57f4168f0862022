"""RoPE (L6, C3) against independent ground truth: complex multiplication, diffusers' CogVideoX rotary
embedding, and the relative-position property."""

import math

import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb, get_3d_rotary_pos_embed

from minivid.nn import Attention, rope_1d, rope_3d, rope_axes_dims

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
