"""Patch embeddings (L1, L4, L8), sin-cos tables and RoPE (L6, C3) against independent ground truth:
torch's Conv3d / ConvTranspose3d, a direct numpy formula, diffusers' CogVideoX embeddings and complex
multiplication."""

import math

import numpy as np
import pytest
import torch
from diffusers.models.embeddings import (
    apply_rotary_emb,
    get_1d_sincos_pos_embed_from_grid,
    get_2d_sincos_pos_embed,
    get_3d_rotary_pos_embed,
    get_3d_sincos_pos_embed,
)

from minivid.transformers import (
    Attention,
    PatchDecoder,
    PatchEmbed,
    patch_grid,
    patchify,
    rope_1d,
    rope_3d,
    rope_axes_dims,
    sincos_1d,
    sincos_2d,
    sincos_3d,
    unpatchify,
)

F64 = torch.float64


@pytest.mark.parametrize("frames, height, width, p, s", [(8, 32, 32, 4, 1), (8, 16, 24, 4, 2), (6, 8, 8, 2, 3)])
def test_patch_embedding_token_counts_and_conv3d_equivalence(frames, height, width, p, s):
    """L4: n_f = F/s, n_h = H/p, n_w = W/p; the linear patch map equals a Conv3d with kernel = stride."""
    torch.manual_seed(0)
    emb = PatchEmbed(3, 16, p, tubelet=s)
    x = torch.randn(2, 3, frames, height, width)
    z = emb(x)
    n_f, n_h, n_w = frames // s, height // p, width // p
    assert z.shape == (2, n_f, n_h, n_w, 16) and emb.grid(frames, height, width) == (n_f, n_h, n_w)
    conv = torch.nn.Conv3d(3, 16, kernel_size=(s, p, p), stride=(s, p, p))
    with torch.no_grad():  # the linear weight is over flattened (s, p, q, c) patches
        conv.weight.copy_(emb.proj.weight.reshape(16, s, p, p, 3).permute(0, 4, 1, 2, 3))
        conv.bias.copy_(emb.proj.bias)
    ref = conv(x).permute(0, 2, 3, 4, 1)  # (B, n_f, n_h, n_w, d)
    torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-5)


def test_patchify_puts_each_pixel_where_the_layout_says_and_unpatchify_inverts_it():
    x = torch.randn(2, 3, 4, 8, 12)
    p, s = 4, 2
    tok = patchify(x, p, s)  # (B, n_f, n_h, n_w, s·p·p·C)
    assert tok.shape == (2, 2, 2, 3, s * p * p * 3)
    b, f, i, j, a, u, v, c = 1, 1, 0, 2, 1, 3, 2, 2
    assert tok[b, f, i, j, ((a * p + u) * p + v) * 3 + c] == x[b, c, f * s + a, i * p + u, j * p + v]
    assert torch.equal(unpatchify(tok, p, s), x)


@pytest.mark.parametrize("s", [1, 2])
def test_decoder_returns_to_the_input_shape_and_transposed_conv_is_linear_plus_reshape(s):
    """L8 / L4: tokens of a (C, F, H, W) clip decode to (C_out, F, H, W); the tubelet decoder (a 3D
    transposed conv with kernel = stride) is the per-token linear map followed by unpatchify."""
    torch.manual_seed(1)
    p, d, c_out = 4, 16, 6
    x = torch.randn(2, 3, 4, 8, 16)
    z = PatchEmbed(3, d, p, tubelet=s)(x)
    dec = PatchDecoder(d, c_out, p, tubelet=s)
    assert all(q.abs().max() == 0 for q in dec.parameters())  # zero-initialised
    out = dec(z)
    assert out.shape == (2, c_out, 4, 8, 16)
    if s > 1:
        with torch.no_grad():
            dec.upsample.weight.normal_()
            dec.upsample.bias.normal_()
        w = dec.upsample.weight  # (d, C_out, s, p, p)
        lin = torch.einsum("bfhwd,dcspq->bfhwspqc", z, w) + dec.upsample.bias
        ref = unpatchify(lin.flatten(-4), p, s)
        torch.testing.assert_close(dec(z), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("args, name, value, divisor", [
    ((7, 32, 32, 4, 2), "frames", 7, "tubelet=2"),
    ((8, 30, 32, 4, 1), "height", 30, "patch_size=4"),
    ((8, 32, 18, 4, 1), "width", 18, "patch_size=4"),
])
def test_sizes_not_divisible_by_the_patch_are_clear_errors(args, name, value, divisor):
    with pytest.raises(ValueError, match=rf"{name}={value} must be a positive multiple of {divisor}; allowed: "):
        patch_grid(*args)
    f, h, w, p, s = args
    with pytest.raises(ValueError, match=rf"{name}={value}"):
        PatchEmbed(3, 8, p, s)(torch.zeros(1, 3, f, h, w))


def test_sincos_tables_match_a_direct_numpy_formula_and_diffusers():
    """PE(m) = [sin(m w_k)] || [cos(m w_k)], w_k = 10000^(-k/(D/2)); 2D: first half the column, second the
    row (MAE / DiT / Latte), checked on a non-square grid; 1D and square 2D also against diffusers."""
    n_h, n_w, d = 3, 5, 16
    q = d // 4
    omega = 10000.0 ** (-np.arange(q) / q)
    ref = np.zeros((n_h * n_w, d))
    for i in range(n_h):
        for j in range(n_w):
            ref[i * n_w + j] = np.concatenate([np.sin(j * omega), np.cos(j * omega),  # column w
                                               np.sin(i * omega), np.cos(i * omega)])  # row h
    np.testing.assert_allclose(sincos_2d(n_h, n_w, d).numpy(), ref, rtol=0, atol=1e-6)
    pos = torch.tensor([0.0, 1.0, 7.0, 30.0])
    torch.testing.assert_close(sincos_1d(pos, 12), get_1d_sincos_pos_embed_from_grid(12, pos).float())
    ref2 = get_2d_sincos_pos_embed(32, 6, base_size=6).float()  # base_size = grid: integer positions
    torch.testing.assert_close(sincos_2d(6, 6, 32), ref2, atol=1e-6, rtol=0)


def test_sincos_3d_matches_diffusers_cogvideox_layout():
    """3D: [1D table of the frame (D/4) || 2D table of (h, w) (3D/4)], tokens (f, h, w)."""
    n_f, n_h, n_w, d = 3, 2, 4, 32
    ref = get_3d_sincos_pos_embed(d, (n_w, n_h), n_f)  # diffusers: spatial_size = (width, height)
    torch.testing.assert_close(sincos_3d(n_f, n_h, n_w, d), ref.float(), atol=1e-6, rtol=0)


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
