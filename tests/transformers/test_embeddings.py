"""Patch embeddings (L1, L4, L8) against independent ground truth: torch's Conv3d / ConvTranspose3d and the
layout of every pixel."""

import pytest
import torch

from minivid.transformers import PatchDecoder, PatchEmbed, patch_grid, patchify, unpatchify


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
