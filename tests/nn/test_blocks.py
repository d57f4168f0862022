"""The DiT block family (L2, L3, L5, L7): perturbation tests of who attends to whom, the head split of
variant 4, adaLN-Zero's identity at initialisation, image frames outside temporal attention, and the cost
model against torch's FLOP counter."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from minivid.transformers import (
    BLOCK_KINDS,
    MODULATIONS,
    DiTBlock,
    attention_pattern,
    gate,
    modulate,
    spatial_attention,
)

D, H = 16, 2  # 2 heads x 8 channels
N_F, T = 4, 6  # frames, tokens per frame


def randomise_(module, seed=0, std=0.3):
    """Random weights everywhere (adaLN-Zero blocks are the identity at init: nothing would propagate)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def changed(block, z, cond, f, p, **kw):
    """(n_f, t) mask of the outputs that move when token (f, p) of the input moves."""
    out = block(z, cond, **kw)
    z2 = z.clone()
    z2[:, f, p] += torch.randn(z.shape[-1], generator=torch.Generator().manual_seed(9))
    return (block(z2, cond, **kw) - out).abs().amax(dim=(0, -1)) > 1e-9


@pytest.mark.parametrize("kind", BLOCK_KINDS)
def test_perturbation_reaches_exactly_the_attention_pattern(kind):
    """Spatial: a change in frame f moves only frame f. Temporal: a change at position p moves only position
    p. Split (variant 4): the union. Factorised (variant 3) and full 3D attention: every token."""
    blk = randomise_(DiTBlock(D, H, kind).double())
    z, c = torch.randn(2, N_F, T, D, dtype=torch.float64), torch.randn(2, D, dtype=torch.float64)
    f, p = 1, 4
    moved = changed(blk, z, c, f, p)
    expected = attention_pattern(kind, N_F, T)[:, f * T + p].reshape(N_F, T)
    assert torch.equal(moved, expected), (kind, moved.int())
    if kind == "spatial":
        assert moved[f].all() and not moved[torch.arange(N_F) != f].any()
    if kind == "temporal":
        assert moved[:, p].all() and not moved[:, torch.arange(T) != p].any()
    if kind in ("factorised", "full"):
        assert moved.all()


def test_variant4_splits_the_heads_in_half():
    """Variant 4: H/2 heads of d/H channels attend within frames, H/2 across frames; silencing one half's
    output leaves exactly the other half's pattern. Together they cost one ordinary MHA (+ one bias)."""
    blk = randomise_(DiTBlock(D, 4, "split").double(), seed=1)
    assert blk.attn.heads == blk.attn_t.heads == 2 and blk.attn.head_dim == blk.attn_t.head_dim == D // 4
    full = DiTBlock(D, 4, "spatial")
    n_split = sum(p.numel() for p in blk.attn.parameters()) + sum(p.numel() for p in blk.attn_t.parameters())
    assert n_split == sum(p.numel() for p in full.attn.parameters()) + D
    z, c = torch.randn(2, N_F, T, D, dtype=torch.float64), torch.randn(2, D, dtype=torch.float64)
    f, p = 2, 1
    for silenced, pattern in ((blk.attn_t, "spatial"), (blk.attn, "temporal")):
        saved = [q.detach().clone() for q in silenced.to_out.parameters()]
        with torch.no_grad():
            for q in silenced.to_out.parameters():
                q.zero_()
        expected = attention_pattern(pattern, N_F, T)[:, f * T + p].reshape(N_F, T)
        assert torch.equal(changed(blk, z, c, f, p), expected), pattern
        with torch.no_grad():
            for q, s in zip(silenced.to_out.parameters(), saved):
                q.copy_(s)
    with pytest.raises(ValueError, match=r"heads=3 must be even for a head-split block .*allowed: 2, 4, 6"):
        DiTBlock(24, 3, "split")


@pytest.mark.parametrize("kind", BLOCK_KINDS)
def test_adaln_zero_blocks_are_the_identity_at_initialisation(kind):
    torch.manual_seed(2)
    blk = DiTBlock(D, H, kind, modulation="adaln-zero")
    z, c = torch.randn(2, N_F, T, D), torch.randn(2, D)
    assert torch.equal(blk(z, c), z)
    for other in ("s-adaln", "adaln"):  # the same block without the zero initialisation is not
        assert not torch.allclose(DiTBlock(D, H, kind, modulation=other)(z, c), z, atol=1e-3)


@pytest.mark.parametrize("kind", ["temporal", "factorised", "split"])
def test_appended_images_are_excluded_from_temporal_attention(kind):
    """L7: with num_video_frames = 2 of 4 frames, an image frame neither reaches nor is reached by other
    frames through temporal attention; a temporal block passes the images through untouched."""
    blk = randomise_(DiTBlock(D, H, kind).double(), seed=3)
    z, c = torch.randn(2, N_F, T, D, dtype=torch.float64), torch.randn(2, D, dtype=torch.float64)
    for f, p in ((3, 2), (0, 5)):  # an image token, a video token
        expected = attention_pattern(kind, N_F, T, num_video_frames=2)[:, f * T + p].reshape(N_F, T)
        assert torch.equal(changed(blk, z, c, f, p, num_video_frames=2), expected), (f, p)
    out = blk(z, c, num_video_frames=2)
    if kind == "temporal":
        assert torch.equal(out[:, 2:], z[:, 2:])
    else:  # the images get nothing from the temporal branch: they are spatial attention + MLP alone
        m_attn, m_mlp = blk.modulation(c)[:2]
        zi = z[:, 2:]
        zi = zi + gate(spatial_attention(blk.attn, modulate(blk.norm1(zi), m_attn.shift, m_attn.scale)), m_attn.gate)
        zi = zi + gate(blk.mlp(modulate(blk.norm2(zi), m_mlp.shift, m_mlp.scale)), m_mlp.gate)
        torch.testing.assert_close(out[:, 2:], zi)


@pytest.mark.parametrize("modulation", MODULATIONS)
@pytest.mark.parametrize("kind", BLOCK_KINDS)
def test_block_flops_match_torch_flop_counter(kind, modulation):
    blk = DiTBlock(D, H, kind, modulation=modulation, backend="math")
    z = torch.randn(3, N_F, T, D)
    cond = {"adaln-single": torch.randn(3, 3 * blk.branches, D), "tokens": None}.get(modulation, torch.randn(3, D))
    with FlopCounterMode(display=False) as counter:
        blk(z, cond, num_video_frames=3)
    ours = blk.flops(3, N_F, T, num_video_frames=3)
    assert counter.get_total_flops() == ours["linear"] + ours["attention"]


def test_temporal_first_is_timesformer_order_and_none_is_a_plain_pre_norm_block():
    """``temporal_first`` (PVDM's P2, TimeSformer) computes z + T(LN z) first, then the spatial branch, then the MLP,
    written out here with the block's own modules; ``modulation="none"``: no condition, affine LayerNorms, no
    gates. Latte's order (spatial first) gives a different function on the same weights."""
    blk = randomise_(DiTBlock(D, H, "factorised", "none", temporal_first=True).double())
    z = torch.randn(2, N_F, T, D, dtype=torch.float64)
    from minivid.nn import temporal_attention

    h = z + temporal_attention(blk.attn_t, blk.norm_t(z))
    h = h + spatial_attention(blk.attn, blk.norm1(h))
    expected = h + blk.mlp(blk.norm2(h))
    torch.testing.assert_close(blk(z), expected)
    assert blk.norm1.weight is not None and not any("modulation" in n for n, _ in blk.named_parameters())
    blk.temporal_first = False
    assert not torch.allclose(blk(z), expected)
    with pytest.raises(ValueError, match="temporal_first=True orders the two attentions of a 'factorised' block"):
        DiTBlock(D, H, "spatial", temporal_first=True)


# ------------------------------------------------------------------ the optional cross-attention branch (R4, T3)

from minivid.nn import AdaLNSingle  # noqa: E402
from minivid.nn.blocks import cross_attention, zero_adaln_single_gates_  # noqa: E402

C, L = 12, 5  # width and number of condition tokens


def cond_tokens(dtype=torch.float64):
    g = torch.Generator().manual_seed(4)
    mask = torch.tensor([[True, True, True, False, False], [True] * L])  # sample 0: two padding tokens
    return torch.randn(2, L, C, generator=g, dtype=dtype), mask


def test_a_block_without_context_dim_keeps_its_parameter_names():
    """Existing checkpoints depend on the names: the cross-attention adds ``cross_attn.*`` and nothing else."""
    base = ["attn.to_kv.bias", "attn.to_kv.weight", "attn.to_out.bias", "attn.to_out.weight", "attn.to_q.bias",
            "attn.to_q.weight", "mlp.fc1.bias", "mlp.fc1.weight", "mlp.fc2.bias", "mlp.fc2.weight",
            "modulation.linear.bias", "modulation.linear.weight"]
    assert sorted(DiTBlock(D, H, "spatial").state_dict()) == base
    with_cross = sorted(DiTBlock(D, H, "spatial", context_dim=C).state_dict())
    assert with_cross == sorted(base + [f"cross_attn.{n}" for n in ("to_q.weight", "to_q.bias", "to_kv.weight",
                                                                    "to_kv.bias", "to_out.weight", "to_out.bias")])
    assert DiTBlock(D, H, "spatial", context_dim=C).cross_attn.to_kv.in_features == C


@pytest.mark.parametrize("kind", BLOCK_KINDS)
def test_cross_attention_keeps_the_attention_pattern(kind):
    """Each query of the cross-attention sees only the condition tokens: who attends to whom among the video tokens
    is still exactly the block kind's pattern (a spatial block does not mix frames, a temporal one not positions)."""
    blk = randomise_(DiTBlock(D, H, kind, context_dim=C).double(), seed=5)
    z, c = torch.randn(2, N_F, T, D, dtype=torch.float64), torch.randn(2, D, dtype=torch.float64)
    e, mask = cond_tokens()
    f, p = 2, 3
    moved = changed(blk, z, c, f, p, context=e, context_mask=mask)
    assert torch.equal(moved, attention_pattern(kind, N_F, T)[:, f * T + p].reshape(N_F, T)), (kind, moved.int())


@pytest.mark.parametrize("kind", ["spatial", "temporal"])
def test_cross_attention_is_softmax_qk_v_between_self_attention_and_mlp_in_float64(kind):
    """The block = z + α·SelfAttn(γ LN z + β); + softmax(QKᵀ/√d)V over the unpadded condition tokens (written out
    here with einsum, padding as -inf); + α·MLP(...). A padded condition token changes nothing, a real one does."""
    blk = randomise_(DiTBlock(D, H, kind, "adaln-zero", context_dim=C, backend="math").double(), seed=6)
    z, c = torch.randn(2, N_F, T, D, dtype=torch.float64), torch.randn(2, D, dtype=torch.float64)
    e, mask = cond_tokens()
    m_attn, m_mlp = blk.modulation(c)
    from minivid.nn import temporal_attention

    pattern = spatial_attention if kind == "spatial" else temporal_attention
    z1 = z + gate(pattern(blk.attn, modulate(blk.norm1(z), m_attn.shift, m_attn.scale)), m_attn.gate)
    ca = blk.cross_attn
    q = (z1.reshape(2, N_F * T, D) @ ca.to_q.weight.T + ca.to_q.bias).reshape(2, N_F * T, H, D // H)
    kv = e @ ca.to_kv.weight.T + ca.to_kv.bias  # (B, L, 2·inner): [k | v]
    k, v = kv[..., :D].reshape(2, L, H, D // H), kv[..., D:].reshape(2, L, H, D // H)
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) / (D // H) ** 0.5
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    o = torch.einsum("bhnm,bmhd->bnhd", scores.softmax(-1), v).reshape(2, N_F * T, D)
    z2 = z1 + (o @ ca.to_out.weight.T + ca.to_out.bias).reshape(2, N_F, T, D)
    expected = z2 + gate(blk.mlp(modulate(blk.norm2(z2), m_mlp.shift, m_mlp.scale)), m_mlp.gate)
    out = blk(z, c, context=e, context_mask=mask)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    e2 = e.clone()
    e2[0, 3] += 5.0  # a padding token of sample 0
    assert torch.equal(blk(z, c, context=e2, context_mask=mask), out)
    e2[0, 1] += 5.0  # a real one
    moved = (blk(z, c, context=e2, context_mask=mask) - out).abs().amax(dim=(1, 2, 3))
    assert moved[0] > 1e-6 and moved[1] == 0  # only sample 0 moves
    torch.testing.assert_close(cross_attention(ca, z1, e, mask), z2 - z1)


def test_a_new_cross_attention_branch_is_the_identity_and_context_errors_are_clear():
    blk = DiTBlock(D, H, "spatial", context_dim=C)  # adaLN-Zero + zero cross-attention output
    z, c = torch.randn(2, N_F, T, D), torch.randn(2, D)
    e, mask = cond_tokens(torch.float32)
    assert torch.equal(blk(z, c, context=e, context_mask=mask), z)
    with pytest.raises(ValueError, match=r"context must be condition tokens \(B=2, L, context_dim=12\).*got None"):
        blk(z, c)
    with pytest.raises(ValueError, match=r"context must be condition tokens .*got \(2, 5, 7\)"):
        blk(z, c, context=torch.randn(2, L, 7))
    with pytest.raises(ValueError, match="has no cross-attention \\(context_dim=None\\)"):
        DiTBlock(D, H, "spatial")(z, c, context=e)
    with pytest.raises(ValueError, match=r"context_dim=0 is invalid: expected a positive int"):
        DiTBlock(D, H, "spatial", context_dim=0)


@pytest.mark.parametrize("kind", ["spatial", "temporal", "factorised", "full"])
def test_the_fuse_hook_gets_the_normalised_modulated_input_of_the_main_attention(kind):
    """T7 [code]: the hook sees γ LN(z) + β of norm1 (after the temporal branch of a temporal-first block) and its
    result is what the attention reads; the identity hook changes nothing, adding a constant changes the output."""
    blk = randomise_(DiTBlock(D, H, kind, context_dim=C).double(), seed=7)
    z, c = torch.randn(2, N_F, T, D, dtype=torch.float64), torch.randn(2, D, dtype=torch.float64)
    e, mask = cond_tokens()
    seen = []
    out = blk(z, c, context=e, context_mask=mask)
    assert torch.equal(blk(z, c, context=e, context_mask=mask, fuse=lambda h: seen.append(h) or h), out)
    m_attn = blk.modulation(c)[0]
    torch.testing.assert_close(seen[0], modulate(blk.norm1(z), m_attn.shift, m_attn.scale), rtol=0, atol=0)
    assert not torch.allclose(blk(z, c, context=e, context_mask=mask, fuse=lambda h: h + 0.5), out)
    with pytest.raises(ValueError, match=r"fuse must return the hidden tokens' shape \(2, 4, 6, 16\), got \(2, 4, 6\)"):
        blk(z, c, context=e, context_mask=mask, fuse=lambda h: h[..., 0])


def test_zero_gates_make_adaln_single_blocks_the_identity():
    shared = AdaLNSingle(D, D, 2)
    blocks = [DiTBlock(D, H, kind, "adaln-single", context_dim=C) for kind in ("spatial", "temporal")]
    z, c = torch.randn(2, N_F, T, D), torch.randn(2, D)
    e, _ = cond_tokens(torch.float32)
    assert not torch.allclose(DiTBlock(D, H, "temporal", "adaln-single")(z, shared(c)), z, atol=1e-4)
    zero_adaln_single_gates_(shared, blocks)
    for blk in blocks:
        assert torch.equal(blk(z, shared(c), context=e), z)
    assert shared(c)[:, 2].abs().max() == 0 and shared(c)[:, 0].abs().max() > 0  # gates zero, shifts not


@pytest.mark.parametrize("kind", ["spatial", "temporal", "full"])
def test_block_flops_with_cross_attention_match_torch_flop_counter(kind):
    blk = DiTBlock(D, H, kind, modulation="adaln-zero", backend="math", context_dim=C)
    z, e = torch.randn(3, N_F, T, D), torch.randn(3, L, C)
    with FlopCounterMode(display=False) as counter:
        blk(z, torch.randn(3, D), num_video_frames=3, context=e)
    ours = blk.flops(3, N_F, T, num_video_frames=3, context_len=L)
    assert counter.get_total_flops() == ours["linear"] + ours["attention"]
    with pytest.raises(ValueError, match="context_len=None: pass the number of condition tokens"):
        blk.flops(3, N_F, T)
