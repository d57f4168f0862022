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
