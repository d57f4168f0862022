"""L5: AdaLN, S-AdaLN, adaLN-Zero, adaLN-single and condition tokens, against their formulas written out
explicitly (LayerNorm by hand in float64)."""

import pytest
import torch
from torch import nn

from minivid.transformers import (
    AdaLN,
    DiTBlock,
    Latte,
    LatteConfig,
    append_condition_tokens,
    make_block_modulation,
    modulate,
    spatial_attention,
    strip_condition_tokens,
)

F64 = torch.float64


def layer_norm(h):
    mu = h.mean(-1, keepdim=True)
    var = ((h - mu) ** 2).mean(-1, keepdim=True)
    return (h - mu) / torch.sqrt(var + 1e-6)


def test_adaln_is_gamma_layernorm_plus_beta():
    """AdaLN(h, c) = gamma_c LN(h) + beta_c with (beta, gamma - 1) = W silu(c) + b, per branch in DiT's order."""
    torch.manual_seed(0)
    d = 8
    mod = AdaLN(d, cond_dim=5, branches=2, kind="adaln").double()
    assert mod.linear.out_features == 4 * d  # (shift, scale) x 2 branches, no gate
    with torch.no_grad():
        mod.linear.weight.normal_()
        mod.linear.bias.normal_()
    c, h = torch.randn(3, 5, dtype=F64), torch.randn(3, 4, 6, d, dtype=F64)
    (m1, m2) = mod(c)
    assert m1.gate is None and m2.gate is None
    raw = nn.functional.silu(c) @ mod.linear.weight.T + mod.linear.bias  # (B, 4d)
    beta, gamma = raw[:, 2 * d:3 * d], 1 + raw[:, 3 * d:]  # second branch
    ref = gamma[:, None, None] * layer_norm(h) + beta[:, None, None]
    out = modulate(nn.functional.layer_norm(h, (d,), eps=1e-6), m2.shift, m2.scale)
    torch.testing.assert_close(out, ref)


def test_adaln_zero_has_6d_zero_outputs_and_s_adaln_does_not():
    d = 16
    zero = AdaLN(d, kind="adaln-zero")
    assert zero.linear.out_features == 6 * d
    mods = zero(torch.randn(2, d))
    assert all(v.abs().max() == 0 for m in mods for v in m)
    s = AdaLN(d, kind="s-adaln")
    assert s.linear.out_features == 6 * d and s.linear.weight.abs().max() > 0
    with pytest.raises(ValueError, match=r"modulation='film' is not supported; allowed: \('adaln', 's-adaln'"):
        make_block_modulation("film", d)


def test_s_adaln_gate_scales_the_branch_before_the_residual():
    """S-AdaLN block: z + alpha_c f(gamma_c LN(z) + beta_c); with the MLP gate zeroed, the block's change
    is exactly alpha_c times the modulated attention branch."""
    torch.manual_seed(1)
    d = 16
    blk = DiTBlock(d, 2, "spatial", modulation="s-adaln").double()
    with torch.no_grad():
        blk.modulation.linear.weight[5 * d:] = 0  # gate of the MLP branch
        blk.modulation.linear.bias[5 * d:] = 0
    z, c = torch.randn(2, 3, 4, d, dtype=F64), torch.randn(2, d, dtype=F64)
    raw = nn.functional.silu(c) @ blk.modulation.linear.weight.T + blk.modulation.linear.bias
    shift, scale, alpha = raw[:, :d], raw[:, d:2 * d], raw[:, 2 * d:3 * d]
    h = layer_norm(z) * (1 + scale[:, None, None]) + shift[:, None, None]
    ref = z + alpha[:, None, None] * spatial_attention(blk.attn, h)
    torch.testing.assert_close(blk(z, c), ref)


def test_adaln_single_is_one_shared_regression_plus_a_table_per_block():
    """adaLN-single: block l uses E(c) + S_l with E shared; it saves (L-1) regressions over adaLN-Zero."""
    torch.manual_seed(2)
    d, depth = 16, 4
    kw = dict(variant=1, dim=d, heads=2, depth=depth, size=8, num_frames=2, patch_size=4)
    single, zero = Latte(LatteConfig(modulation="adaln-single", **kw)), Latte(LatteConfig(**kw))
    n_single = sum(p.numel() for p in single.parameters())
    n_zero = sum(p.numel() for p in zero.parameters())
    regression = d * 6 * d + 6 * d
    # adaLN-Zero: one regression per block + the final (2d); adaLN-single: one shared + 6d per block + 2d final
    assert n_zero - n_single == (depth * regression + 2 * d * d + 2 * d) - (regression + depth * 6 * d + 2 * d)
    c = torch.randn(3, d)
    shared = single.shared_modulation(c)  # (B, 6, d)
    for blk in single.blocks:
        mods = blk.modulation(shared)
        table = blk.modulation.table
        torch.testing.assert_close(mods[1].scale, shared[:, 4] + table[4])  # branch 1 = MLP: (shift, scale, gate)
        torch.testing.assert_close(mods[0].gate, shared[:, 2] + table[2])


def test_condition_tokens_join_every_frame_and_condition_the_output():
    """L5 as tokens: the k condition tokens are appended to every frame and stripped after the blocks;
    the model's output depends on the timestep through them alone (no modulation anywhere)."""
    z, tok = torch.randn(2, 3, 5, 8), torch.randn(2, 2, 8)
    zz = append_condition_tokens(z, tok)
    assert zz.shape == (2, 3, 7, 8) and torch.equal(zz[:, 1, 5:], tok)
    assert torch.equal(strip_condition_tokens(zz, 2), z)
    torch.manual_seed(3)
    m = Latte(LatteConfig(variant=3, dim=16, heads=2, depth=2, size=8, num_frames=2, modulation="tokens",
                          num_classes=4)).eval()
    assert not any("modulation" in n for n, _ in m.named_parameters())
    with torch.no_grad():
        m.decoder.linear.weight.normal_()
    x = torch.randn(2, 3, 2, 8, 8)
    y = torch.tensor([0, 1])
    assert not torch.allclose(m(x, torch.tensor([3, 3]), y), m(x, torch.tensor([900, 900]), y), atol=1e-4)
    other_labels = m(x, torch.tensor([3, 3]), torch.tensor([2, 3]))
    assert not torch.allclose(m(x, torch.tensor([3, 3]), y), other_labels, atol=1e-4)
