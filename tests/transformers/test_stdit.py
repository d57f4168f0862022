"""ST-DiT (T1-T3) and its motion-fuser hook (T7): configuration and input errors, a new model predicts zeros, the
text key-padding mask, spatial blocks never mix frames and temporal blocks never mix positions, self-attention reads
the normalised tokens (T2), the fuser hook's place and features, and the save/load round trip."""

import pytest
import torch
from einops import rearrange

import minivid
from minivid.nn import Attention, modulate
from minivid.transformers.stdit import STDiT, STDiTConfig

TINY = dict(in_channels=4, patch_size=2, dim=32, heads=2, depth=2, text_dim=12)  # 2 heads x 16, 2 ST-DiT blocks
B, F, S = 2, 4, 8  # batch, latent frames, latent side (4 x 4 tokens per frame)


def tiny(**kw):
    return STDiTConfig(**{**TINY, **kw})


def randomise_(module, seed=0, std=0.2):
    """Random weights everywhere (a new model has zero gates and a zero decoder: nothing would propagate)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def inputs(dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 4, F, S, S, generator=g, dtype=dtype)
    text = torch.randn(B, 5, 12, generator=g, dtype=dtype)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])  # sample 0: 2 padding tokens
    return x, torch.tensor([3, 700]), text, mask


def model(seed=0, **kw):
    return randomise_(STDiT(tiny(**kw)), seed).double().eval()


@pytest.mark.parametrize("kw, message", [
    (dict(layout="interleaved"), r"layout='interleaved' is invalid: expected one of \('alternating', 'factorised'\)"),
    (dict(fuser_at="cross"), r"fuser_at='cross' is invalid: expected one of \('temporal', 'spatial'\)"),
    (dict(heads=3), r"dim=32 must be divisible by heads=3"),
    (dict(dim=18, heads=2), r"dim=18 must be divisible by 4"),
    (dict(depth=0), r"depth=0 is invalid: expected a positive integer"),
    (dict(text_dim=-1), r"text_dim=-1 is invalid: expected a positive integer"),
    (dict(mlp_ratio=0), r"mlp_ratio=0 must be a positive number"),
    (dict(attention_backend="flash"), r"attention_backend='flash' is invalid"),
])
def test_configuration_errors_name_the_argument_the_value_and_what_is_allowed(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kw)


def test_input_errors():
    m = STDiT(tiny())
    x, t, text, mask = inputs(torch.float32)
    for args, kwargs, match in [
        ((x[:, :3], t, text), {}, r"x must be latents \(B, C=4, T, H, W\), got \(2, 3, 4, 8, 8\)"),
        ((x[:, :, :, :7], t, text), {}, r"height=7 must be a positive multiple of patch_size=2"),
        ((x, t[:1], text), {}, r"t must have shape \(B,\) = \(2,\) or be a scalar, got \(1,\)"),
        ((x, t, text[..., :8]), {}, r"text must be condition tokens \(B=2, L, text_dim=12\), got \(2, 5, 8\)"),
        ((x, t, None), {}, r"text must be condition tokens .*got NoneType"),
        ((x, t, text, mask[:, :4]), {}, r"text_mask must be a bool .* mask of shape \(B, L\) = \(2, 5\)"),
        ((x, t, text, mask.float()), {}, r"text_mask must be a bool .*torch.float32"),
        ((x, t, text), dict(fuser=lambda h, f: h), "fuser and motion_features go together"),
        ((x, t, text), dict(fuser=lambda h, f: h, motion_features=[1]), r"sequence of depth=2 motion features"),
        ((x, t, text), dict(fuser=[lambda h, f: h], motion_features=[1, 2]), r"a sequence of depth=2 of them"),
        ((x, t, text), dict(fuser=lambda h, f: h[..., :3], motion_features=[1, 2]),
         r"the fuser must return the hidden tokens' shape \(B, n_f, n_h, n_w, d\) = \(2, 4, 4, 4, 32\)"),
    ]:
        with pytest.raises(ValueError, match=match):
            m(*args, **kwargs)
    assert m(x, 5, text).shape == (2, 4, 4, 8, 8)  # a scalar timestep is broadcast


@pytest.mark.parametrize("layout, kinds", [("alternating", ["spatial", "temporal"] * 2),
                                           ("factorised", ["factorised"] * 2)])
def test_structure_shapes_and_a_new_model_predicts_zero(layout, kinds):
    """T3 (alternating spatial / temporal DiT blocks) or OpenSora 1.0's in-block order; every DiT block has a
    cross-attention; a new model is zero (zero decoder) and each of its blocks is the identity (zero gates, zero
    cross-attention output)."""
    m = STDiT(tiny(layout=layout, learn_sigma=True))
    assert [b.kind for b in m.blocks] == kinds and all(b.context_dim == 32 for b in m.blocks)
    x, t, text, mask = inputs(torch.float32)
    seen = []
    hooks = [b.register_forward_hook(lambda mod, args, out: seen.append(torch.equal(out, args[0]))) for b in m.blocks]
    out = m(x, t, text, mask)
    for h in hooks:
        h.remove()
    assert out.shape == (2, 8, 4, 8, 8) and out.abs().max() == 0
    assert seen == [True] * len(kinds)


def test_text_key_padding_mask():
    """A padding token of the text (mask False) changes nothing; a real one changes the output; an all-padding
    row gets no cross-attention at all (the same as a model whose cross-attention outputs are zero)."""
    m = model()
    x, t, text, mask = inputs()
    out = m(x, t, text, mask)
    text2 = text.clone()
    text2[0, 4] += 3.0  # padding of sample 0
    assert torch.equal(m(x, t, text2, mask), out)
    text2[0, 1] += 3.0  # a real token of sample 0
    moved = (m(x, t, text2, mask) - out).abs().amax(dim=(1, 2, 3, 4))
    assert moved[0] > 1e-6 and moved[1] == 0
    assert not torch.allclose(m(x, t, text), out)  # without the mask the padding is attended to
    none = torch.zeros_like(mask)
    for b in m.blocks:
        with torch.no_grad():
            b.cross_attn.to_out.bias.zero_()  # an all-padding row's attention is zero, then only the bias remains
    reference = m(x, t, text, none)
    for b in m.blocks:
        with torch.no_grad():
            b.cross_attn.to_out.weight.zero_()
    torch.testing.assert_close(m(x, t, text, mask), reference, rtol=0, atol=0)


def _silence_(m, names):
    with torch.no_grad():
        for b in m.blocks:
            for name in names:
                if hasattr(b, name):
                    getattr(b, name).to_out.weight.zero_()
                    getattr(b, name).to_out.bias.zero_()


def _moved(m, x, t, text, mask, perturb):
    out = m(x, t, text, mask)
    x2 = x.clone()
    perturb(x2)
    return (m(x2, t, text, mask) - out).abs().amax(dim=(0, 1)) > 1e-9  # (T, H, W)


@pytest.mark.parametrize("layout", ["alternating", "factorised"])
def test_spatial_attention_never_mixes_frames_and_temporal_attention_never_mixes_positions(layout):
    """With the temporal attentions silenced, a change in frame 0 moves frame 0 only (spatial self-attention and the
    per-clip cross-attention keep frames apart); with the spatial attentions silenced, a change in one patch moves
    that patch in every frame and nothing else; with both, everything moves."""
    x, t, text, mask = inputs()

    def frame0(v):
        v[:, :, 0] += 1.0

    def patch(v):  # the 2x2 patch of token (h, w) = (1, 2) in frame 2
        v[:, :, 2, 2:4, 4:6] += 1.0

    full = model(layout=layout)
    assert _moved(full, x, t, text, mask, frame0).all()
    spatial_only = model(layout=layout)
    kinds = {b.kind for b in spatial_only.blocks}
    temporal_attn = ["attn_t"] if layout == "factorised" else []
    if layout == "alternating":
        with torch.no_grad():
            for b in spatial_only.blocks:
                if b.kind == "temporal":
                    b.attn.to_out.weight.zero_()
                    b.attn.to_out.bias.zero_()
    _silence_(spatial_only, temporal_attn)
    moved = _moved(spatial_only, x, t, text, mask, frame0)
    assert moved[0].all() and not moved[1:].any(), kinds
    temporal_only = model(layout=layout)
    with torch.no_grad():
        for b in temporal_only.blocks:
            if b.kind in ("spatial", "factorised"):
                b.attn.to_out.weight.zero_()
                b.attn.to_out.bias.zero_()
    moved = _moved(temporal_only, x, t, text, mask, patch)
    expected = torch.zeros(F, S, S, dtype=torch.bool)
    expected[:, 2:4, 4:6] = True
    assert torch.equal(moved, expected)


def test_self_attention_reads_the_normalised_tokens_spatially_then_temporally():
    """T2: Q, K, V are linear maps of I_norm = γ LN(I) + β; a spatial block attends over the s tokens of each frame
    ((b l) s d sequences), the temporal block after it over the l frames of each position ((b s) l d)."""
    m = model()
    x, t, text, mask = inputs()
    ins, attn_in = {}, {}
    hooks = [m.blocks[j].register_forward_pre_hook(lambda mod, args, j=j: ins.setdefault(j, args)) for j in (0, 1)]
    hooks += [m.blocks[j].attn.register_forward_pre_hook(lambda mod, args, j=j: attn_in.setdefault(j, args[0]))
              for j in (0, 1)]
    m(x, t, text, mask)
    for h in hooks:
        h.remove()
    for j, pattern in ((0, "b l s d -> (b l) s d"), (1, "b l s d -> (b s) l d")):
        z, shared = ins[j]
        mod = m.blocks[j].modulation(shared)[0]
        i_norm = modulate(m.blocks[j].norm1(z), mod.shift, mod.scale)
        assert torch.equal(attn_in[j], rearrange(i_norm, pattern)), j


@pytest.mark.parametrize("layout, fuser_at, sites", [("alternating", "temporal", [1, 3]),
                                                     ("alternating", "spatial", [0, 2]),
                                                     ("factorised", "temporal", [0, 1])])
def test_the_fuser_hook(layout, fuser_at, sites):
    """T7 [code]: fuser i is called once, in DiT block ``sites[i]``, with motion feature f_i and the block's normalised
    and modulated tokens as a (B, n_f, n_h, n_w, d) grid; what it returns is what the attention reads. The identity
    fuser changes nothing; adding a constant changes the output."""
    m = model(layout=layout, fuser_at=fuser_at)
    assert m.config.fuser_blocks == sites
    x, t, text, mask = inputs()
    features = [torch.full((1,), 10.0), torch.full((1,), 20.0)]
    out = m(x, t, text, mask)
    calls = []

    def recorder(i):
        def fuse(h, f):
            calls.append((i, f, h.clone()))
            return h
        return fuse

    ins = {}
    hooks = [b.register_forward_pre_hook(lambda mod, args, j=j: ins.setdefault(j, args))
             for j, b in enumerate(m.blocks)]
    assert torch.equal(m(x, t, text, mask, fuser=[recorder(0), recorder(1)], motion_features=features), out)
    for h in hooks:
        h.remove()
    assert [(i, f) for i, f, _ in calls] == [(0, features[0]), (1, features[1])]
    for (i, f, h), j in zip(calls, sites):
        assert h.shape == (B, F, 4, 4, 32) and f is features[i]
        z, shared = ins[j]
        mod = m.blocks[j].modulation(shared)[0]
        expected = modulate(m.blocks[j].norm1(z), mod.shift, mod.scale)
        assert torch.equal(h, rearrange(expected, "b l (n_h n_w) d -> b l n_h n_w d", n_h=4))
    moved = m(x, t, text, mask, fuser=lambda h, f: h + 0.1 * f, motion_features=features)  # one callable for all
    assert not torch.allclose(moved, out)
    only_last = m(x, t, text, mask, fuser=torch.nn.ModuleList([_AddFeature(0.0), _AddFeature()]),
                  motion_features=features)
    assert not torch.allclose(only_last, out) and not torch.allclose(only_last, moved)


class _AddFeature(torch.nn.Module):
    """A fuser module: h + weight · f_i."""

    def __init__(self, weight=1.0):
        super().__init__()
        self.weight = weight

    def forward(self, h, f):
        return h + self.weight * f


def test_save_and_load_round_trip(tmp_path):
    m = model(layout="factorised", learn_sigma=True).float()
    x, t, text, mask = inputs(torch.float32)
    folder = minivid.save_model(m, tmp_path / "stdit")
    loaded = minivid.load_model(folder)
    assert type(loaded) is STDiT and loaded.config == m.config
    assert torch.equal(loaded(x, t, text, mask), m(x, t, text, mask))
    assert all(isinstance(b.cross_attn, Attention) for b in loaded.blocks)


def test_channel_conditions_enter_through_the_patch_embedding_only():
    """cond_channels widens the patch embedding and nothing else: with the cond columns of its weight set to zero the
    model equals one without channel conditions holding the other weights; with them non-zero the cond changes the
    output; a cond of the wrong shape, a missing one, or one for a model without cond_channels is refused."""
    from minivid.transformers.embeddings import patchify

    wide = model(cond_channels=3)
    x, t, text, mask = inputs()
    cond = torch.randn(B, 3, F, S, S, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    marker = torch.zeros(1, 7, 1, 2, 2, dtype=torch.float64)
    marker[:, 4:] = 1
    cols = patchify(marker, 2, 1).reshape(-1) == 1  # which inputs of the patch embedding are cond channels
    assert int(cols.sum()) == 3 * 2 * 2
    state = wide.state_dict()
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"][:, ~cols]
    plain = STDiT(tiny()).double().eval()
    plain.load_state_dict(state)
    ref = plain(x, t, text, mask)
    out = wide(x, t, text, mask, cond=cond)
    assert out.shape == x.shape and (out - ref).abs().max() > 1e-3
    with torch.no_grad():
        wide.patch_embed.proj.weight[:, cols] = 0
    torch.testing.assert_close(wide(x, t, text, mask, cond=cond), ref)
    with pytest.raises(ValueError, match=r"cond must be channel conditions of shape \(B, cond_channels, T, H, W\) = "
                                         r"\(2, 3, 4, 8, 8\).*got \(2, 4, 4, 8, 8\)"):
        wide(x, t, text, mask, cond=x)
    with pytest.raises(ValueError, match="got NoneType"):
        wide(x, t, text, mask)
    with pytest.raises(ValueError, match="config.cond_channels=0"):
        plain(x, t, text, mask, cond=cond)
    with pytest.raises(ValueError, match="cond_channels=-1 must be an integer >= 0"):
        tiny(cond_channels=-1)
