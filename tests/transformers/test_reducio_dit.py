"""Reducio-DiT (R4-R7): configuration and input errors, a new model predicts zeros, the condition key-padding mask,
R5 (the image DiT's parameters as 3D full attention: a one-frame clip is exactly the image DiT; added temporal
layers), R6 (the size reaches the network only through the timestep embedding), R7 (Deepstack: layer i sees only
content group i % 4), and the save/load round trip."""

import pytest
import torch

import minivid
from minivid.transformers.reducio_dit import ReducioDiT, ReducioDiTConfig, SizeEmbedding, deepstack_groups
from minivid.transformers.stdit import embed_scalars

TINY = dict(in_channels=4, patch_size=1, dim=32, heads=2, depth=2, cond_dim=12)  # 2 heads x 16, 2 layers
B, F, S, L = 2, 4, 4, 5  # batch, latent frames, latent side (4 x 4 tokens per frame), condition tokens


def tiny(**kw):
    return ReducioDiTConfig(**{**TINY, **kw})


def randomise_(module, seed=0, std=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def model(seed=0, **kw):
    return randomise_(ReducioDiT(tiny(**kw)), seed).double().eval()


def inputs(frames=F, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, 4, frames, S, S, generator=g, dtype=dtype)
    cond = torch.randn(B, L, 12, generator=g, dtype=dtype)
    mask = torch.tensor([[True, True, True, False, False], [True] * L])  # sample 0: 2 padding tokens
    content = torch.randn(B, 4, 4, 12, generator=g, dtype=dtype)  # a 4 x 4 content token grid
    return z, torch.tensor([3, 700]), cond, mask, content


@pytest.mark.parametrize("kw, message", [
    (dict(attention="2d"), r"attention='2d' is invalid: expected one of \('full', 'factorised', 'spatial'\)"),
    (dict(dim=32, heads=32), r"attention='full' needs an even head_dim for the temporal RoPE, got dim/heads = 1"),
    (dict(heads=3), r"dim=32 must be divisible by heads=3"),
    (dict(dim=18, heads=2), r"dim=18 must be divisible by 4"),
    (dict(cond_dim=0), r"cond_dim=0 is invalid: expected a positive integer"),
    (dict(deepstack=1), r"deepstack=1 is invalid: expected True or False"),
    (dict(size_embedding="yes"), r"size_embedding='yes' is invalid: expected True or False"),
    (dict(mlp_ratio=-1.0), r"mlp_ratio=-1.0 must be a positive number"),
])
def test_configuration_errors_name_the_argument_the_value_and_what_is_allowed(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kw)


def test_input_errors():
    z, t, cond, mask, content = (v.float() if v.is_floating_point() else v for v in inputs())
    m, ds, sz = ReducioDiT(tiny()), ReducioDiT(tiny(deepstack=True)), ReducioDiT(tiny(size_embedding=True))
    for mod, args, kwargs, match in [
        (m, (z[:, :2], t, cond), {}, r"z must be Reducio latents \(B, C=4, T, H, W\), got \(2, 2, 4, 4, 4\)"),
        (m, (z, t[:1], cond), {}, r"t must have shape \(B,\) = \(2,\)"),
        (m, (z, t, cond[..., :3]), {}, r"cond must be condition tokens \(B=2, L, cond_dim=12\), got \(2, 5, 3\)"),
        (m, (z, t, cond, mask[:1]), {}, r"cond_mask must be a bool .* of shape \(B, L\) = \(2, 5\)"),
        (m, (z, t, cond), dict(content=content[..., :5]), r"content must be a content-image token grid \(B=2, h_c, "
                                                          r"w_c, cond_dim=12\), got \(2, 4, 4, 5\)"),
        (m, (z, t, cond), dict(size=(64, 64)), r"size was given but this model has no size embedding"),
        (ds, (z, t, cond), {}, r"Deepstack \(deepstack=True, R7\): pass content"),
        (ds, (z, t, cond), dict(content=content[:, :3]), r"even h_c and w_c for the 2x2 Deepstack groups, got "
                                                         r"\(2, 3, 4, 12\)"),
        (sz, (z, t, cond), {}, r"size_embedding=True, R6\): pass size"),
        (sz, (z, t, cond), dict(size=torch.ones(3, 2)), r"size must be positive \(H, W\) sizes of shape \(B, 2\) = "
                                                        r"\(2, 2\).*got shape \(3, 2\)"),
        (sz, (z, t, cond), dict(size=(0, 64)), r"size must be positive"),
    ]:
        with pytest.raises(ValueError, match=match):
            mod(*args, **kwargs)
    with pytest.raises(ValueError, match=r"image_model must be an image Reducio-DiT \(attention='spatial'\), got 'f"):
        ReducioDiT.from_image_dit(m)
    with pytest.raises(ValueError, match=r"attention='spatial' is invalid: expected one of \('full', 'factorised'\)"):
        ReducioDiT.from_image_dit(ReducioDiT(tiny(attention="spatial")), attention="spatial")


@pytest.mark.parametrize("attention", ["full", "factorised", "spatial"])
def test_shapes_and_a_new_model_predicts_zero(attention):
    m = ReducioDiT(tiny(attention=attention, learn_sigma=True, deepstack=True, size_embedding=True, tubelet=2,
                        patch_size=2))
    z, t, cond, mask, content = (v.float() if v.is_floating_point() else v for v in inputs())
    seen = []
    hooks = [b.register_forward_hook(lambda mod, args, out: seen.append(torch.equal(out, args[0])))
             for b in m.all_blocks]
    out = m(z, t, cond, mask, content=content, size=(256, 128))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 8, 4, 4, 4) and out.abs().max() == 0
    assert seen == [True] * (4 if attention == "factorised" else 2)  # every block starts as the identity


@pytest.mark.parametrize("deepstack", [False, True])
def test_condition_key_padding_mask(deepstack):
    m = model(deepstack=deepstack)
    z, t, cond, mask, content = inputs()
    out = m(z, t, cond, mask, content=content)
    cond2 = cond.clone()
    cond2[0, 3] += 3.0  # padding of sample 0
    assert torch.equal(m(z, t, cond2, mask, content=content), out)
    cond2[0, 0] += 3.0  # a real token
    moved = (m(z, t, cond2, mask, content=content) - out).abs().amax(dim=(1, 2, 3, 4))
    assert moved[0] > 1e-6 and moved[1] == 0


# ------------------------------------------------------------------ R5


def test_r5_full_attention_has_exactly_the_image_dits_parameters():
    image, full = ReducioDiT(tiny(attention="spatial")), ReducioDiT(tiny(attention="full"))
    assert {k: v.shape for k, v in image.state_dict().items()} == {k: v.shape for k, v in full.state_dict().items()}
    factorised = ReducioDiT(tiny(attention="factorised"))
    extra = set(factorised.state_dict()) - set(image.state_dict())
    assert extra and all(k.startswith("temporal_blocks.") for k in extra)
    assert set(image.state_dict()) <= set(factorised.state_dict())


def test_r5_image_dit_is_per_frame_and_a_one_frame_clip_under_full_attention_is_exactly_the_image_dit():
    """The image DiT (attention='spatial') treats a clip as independent images; ``from_image_dit`` copies its
    parameters into 3D full attention, which on a one-frame clip computes exactly the same thing (the temporal RoPE
    is the identity at frame 0) and on a longer clip mixes the frames."""
    image = model(attention="spatial", deepstack=True, size_embedding=True, seed=3)
    full = ReducioDiT.from_image_dit(image)
    assert full.config.attention == "full" and next(full.parameters()).dtype == torch.float64 and not full.training
    for k, v in image.state_dict().items():
        assert torch.equal(full.state_dict()[k], v), k
    z, t, cond, mask, content = inputs(frames=1)
    kw = dict(content=content, size=(128, 256))
    torch.testing.assert_close(full(z, t, cond, mask, **kw), image(z, t, cond, mask, **kw), rtol=0, atol=0)
    clip = inputs(frames=F)[0]
    per_frame = torch.cat([image(clip[:, :, f:f + 1], t, cond, mask, **kw) for f in range(F)], dim=2)
    torch.testing.assert_close(image(clip, t, cond, mask, **kw), per_frame, rtol=1e-12, atol=1e-12)
    clip2 = clip.clone()
    clip2[:, :, 0] += 1.0
    moved = (full(clip2, t, cond, mask, **kw) - full(clip, t, cond, mask, **kw)).abs().amax(dim=(0, 1, 3, 4))
    assert (moved > 1e-6).all()  # 3D attention: frame 0 reaches every frame
    moved = (image(clip2, t, cond, mask, **kw) - image(clip, t, cond, mask, **kw)).abs().amax(dim=(0, 1, 3, 4))
    assert moved[0] > 1e-6 and (moved[1:] == 0).all()  # the image DiT never mixes frames


def test_r5_added_temporal_layers_start_as_the_identity_and_then_mix_frames():
    image = model(attention="spatial", seed=4)
    fact = ReducioDiT.from_image_dit(image, attention="factorised")
    assert len(fact.temporal_blocks) == 2 and fact.config.attention == "factorised"
    z, t, cond, mask, _ = inputs()
    torch.testing.assert_close(fact(z, t, cond, mask), image(z, t, cond, mask), rtol=1e-12, atol=1e-12)
    randomise_(fact.temporal_blocks, seed=5)
    z2 = z.clone()
    z2[:, :, 0] += 1.0
    moved = (fact(z2, t, cond, mask) - fact(z, t, cond, mask)).abs().amax(dim=(0, 1, 3, 4))
    assert (moved > 1e-6).all()


# ------------------------------------------------------------------ R6


def test_r6_size_enters_only_through_the_timestep_embedding():
    """The output with a size equals that of the same network without a size embedding whose timestep embedding
    returns c + SizeEmbedding(size): the size reaches nothing but c. Changing the size changes the output."""
    m = model(size_embedding=True)
    z, t, cond, mask, _ = inputs()
    size = torch.tensor([[256.0, 128.0], [64.0, 64.0]], dtype=torch.float64)
    out = m(z, t, cond, mask, size=size)
    assert not torch.allclose(m(z, t, cond, mask, size=size.flip(1)), out)
    plain = ReducioDiT(tiny()).double().eval()
    missing, unexpected = plain.load_state_dict(m.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("size_embed.") for k in unexpected)
    extra = m.size_embed(size)
    plain_c = plain.condition
    plain.condition = lambda tt, s=None: plain_c(tt) + extra  # c = t_emb + size_emb; the plain model sees no size
    torch.testing.assert_close(plain(z, t, cond, mask), out, rtol=0, atol=0)


def test_r6_size_embedding_is_pixart_alphas_concatenation():
    """[E_s(H), E_s(W), E_a(H/W)]: one MLP shared by H and W (d/3 channels each), another for the aspect ratio."""
    emb = randomise_(SizeEmbedding(32), seed=6)
    size = torch.tensor([[256.0, 128.0], [96.0, 160.0]])
    out = emb(size)
    assert out.shape == (2, 32) and emb.size_dim == 10
    torch.testing.assert_close(out[:, :10], embed_scalars(emb.size_mlp, size[:, 0]))
    torch.testing.assert_close(out[:, 10:20], embed_scalars(emb.size_mlp, size[:, 1]))
    torch.testing.assert_close(out[:, 20:], embed_scalars(emb.ar_mlp, size[:, 0] / size[:, 1]))
    swapped = emb(size.flip(1))
    torch.testing.assert_close(swapped[:, :20], torch.cat([out[:, 10:20], out[:, :10]], dim=1))
    assert not torch.allclose(swapped[:, 20:], out[:, 20:])


# ------------------------------------------------------------------ R7


def test_r7_deepstack_groups_are_the_four_interleaved_sub_grids():
    ids = torch.arange(16.0).reshape(1, 4, 4, 1)  # token (r, c) has id 4r + c
    groups = deepstack_groups(ids)[0, :, :, 0]
    assert groups.tolist() == [[0, 2, 8, 10], [1, 3, 9, 11], [4, 6, 12, 14], [5, 7, 13, 15]]


def _contexts_seen(m, *args, **kwargs):
    seen = []
    hooks = [b.register_forward_pre_hook(lambda mod, a, kw: seen.append(kw["context"]), with_kwargs=True)
             for b in m.blocks]
    m(*args, **kwargs)
    for h in hooks:
        h.remove()
    return seen


def test_r7_layer_i_cross_attends_to_content_group_i_mod_4_and_the_text():
    m = model(deepstack=True, depth=5)
    z, t, cond, mask, content = inputs()
    groups = deepstack_groups(content)
    seen = _contexts_seen(m, z, t, cond, mask, content=content)
    for i, ctx in enumerate(seen):
        assert torch.equal(ctx, torch.cat([groups[:, i % 4], cond], dim=1)), i
    plain = model(depth=2)  # without Deepstack every layer gets all content tokens, then the text
    for ctx in _contexts_seen(plain, z, t, cond, mask, content=content):
        assert torch.equal(ctx, torch.cat([content.reshape(B, 16, 12), cond], dim=1))


def test_r7_a_layer_does_not_see_the_other_groups():
    """depth 2: layer 0 takes group 0, layer 1 group 1. Perturbing group 1 leaves layer 0's cross-attention output
    unchanged and moves layer 1's; perturbing groups 2 and 3 changes nothing at all."""
    m = model(deepstack=True)
    z, t, cond, mask, content = inputs()
    outs = {}

    def run(c):
        seen = []
        hooks = [b.cross_attn.register_forward_hook(lambda mod, a, o: seen.append(o)) for b in m.blocks]
        y = m(z, t, cond, mask, content=c)
        for h in hooks:
            h.remove()
        return y, seen

    out, (ca0, ca1) = run(content)
    for group, (a, b) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        c2 = content.clone()
        c2[:, a::2, b::2] += 1.0
        outs[group] = run(c2)
    y, (g1_0, g1_1) = outs[1]
    assert torch.equal(g1_0, ca0) and not torch.allclose(g1_1, ca1)
    y0, (g0_0, _) = outs[0]
    assert not torch.allclose(g0_0, ca0) and not torch.allclose(y0, out)
    for group in (2, 3):
        assert torch.equal(outs[group][0], out)


def test_save_and_load_round_trip(tmp_path):
    m = model(attention="factorised", deepstack=True, size_embedding=True, learn_sigma=True).float()
    z, t, cond, mask, content = (v.float() if v.is_floating_point() else v for v in inputs())
    folder = minivid.save_model(m, tmp_path / "reducio_dit")
    loaded = minivid.load_model(folder)
    assert type(loaded) is ReducioDiT and loaded.config == m.config
    kw = dict(content=content, size=(128, 128))
    assert torch.equal(loaded(z, t, cond, mask, **kw), m(z, t, cond, mask, **kw))
