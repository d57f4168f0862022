"""CogVideoX's expert transformer (C2-C5): parity with diffusers' CogVideoXTransformer3DModel on tiny random models
of the three released layouts (1.0 with sin-cos, 1.0 with RoPE, 1.5 with patch_size_t = 2), loading from an
instance and from a save_pretrained folder; 3D RoPE scores depend on relative offsets only; expert AdaLN's two
modulations act on their own tokens; full attention spans time and text; clear errors."""

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import CogVideoXTransformer3DModel  # noqa: E402
from diffusers.models.embeddings import get_3d_rotary_pos_embed  # noqa: E402
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid  # noqa: E402

from minivid.transformers.cogvideox import (  # noqa: E402
    ExpertTransformer,
    ExpertTransformerConfig,
    cogvideox_rope,
    cogvideox_rope_positions,
    config_from_diffusers,
    from_diffusers,
    resize_crop_region,
)

TINY = dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=24,
            text_embed_dim=12, num_layers=2, sample_width=8, sample_height=6, sample_frames=9, patch_size=2,
            max_text_seq_length=5, temporal_compression_ratio=4)
LAYOUTS = {
    "1.0-sincos": dict(use_rotary_positional_embeddings=False),
    "1.0-rope": dict(use_rotary_positional_embeddings=True),
    "1.5-rope": dict(use_rotary_positional_embeddings=True, patch_size_t=2, patch_bias=False),
}


def diffusers_model(layout: str, seed: int = 0) -> CogVideoXTransformer3DModel:
    torch.manual_seed(seed)
    m = CogVideoXTransformer3DModel(**TINY, **LAYOUTS[layout]).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # diffusers leaves some layers at zero / one: randomise everything
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return m


def diffusers_rope(m, frames: int, height: int, width: int):
    """The rotary table as diffusers' CogVideoX pipelines compute it (latent sizes in, vae factor folded out)."""
    c = m.config
    p, p_t = c.patch_size, c.patch_size_t
    gh, gw = height // p, width // p
    bw, bh = c.sample_width // p, c.sample_height // p
    if p_t is None:
        crops = get_resize_crop_region_for_grid((gh, gw), bw, bh)
        return get_3d_rotary_pos_embed(c.attention_head_dim, crops, (gh, gw), frames)
    return get_3d_rotary_pos_embed(c.attention_head_dim, None, (gh, gw), (frames + p_t - 1) // p_t,
                                   grid_type="slice", max_size=(bh, bw))


def run_both(m, ours, frames=2, height=6, width=8, batch=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, frames, height, width, generator=g)
    text = torch.randn(batch, TINY["max_text_seq_length"], 12, generator=g)
    t = torch.tensor([3, 917])[:batch]
    rope = diffusers_rope(m, frames, height, width) if m.config.use_rotary_positional_embeddings else None
    with torch.no_grad():
        ref = m(x.permute(0, 2, 1, 3, 4), text, t, image_rotary_emb=rope, return_dict=False)[0]
        out = ours(x, t, text)
    return ref.permute(0, 2, 1, 3, 4), out


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_from_diffusers_instance_matches_diffusers(layout):
    m = diffusers_model(layout)
    ours = from_diffusers(m)
    assert ours.config.positional == ("sincos" if layout == "1.0-sincos" else "rope")
    assert ours.config.patch_size_t == (2 if layout == "1.5-rope" else 1)
    ref, out = run_both(m, ours)
    assert out.shape == ref.shape == (2, 4, 2, 6, 8)
    assert rel_err(out, ref) <= 1e-5
    # and away from the training grid: another size (the 1.0 RoPE rescales it to the base grid; diffusers' 1.5
    # "slice" table is cut from the base grid, so the grid must fit inside it)
    ref, out = run_both(m, ours, frames=4, height=4, width=6)
    assert rel_err(out, ref) <= 1e-5


def test_from_diffusers_folder_matches_instance(tmp_path):
    m = diffusers_model("1.5-rope", seed=5)
    m.save_pretrained(tmp_path / "cogvideox", safe_serialization=True)
    ours = from_diffusers(tmp_path / "cogvideox")
    ref, out = run_both(m, ours)
    assert rel_err(out, ref) <= 1e-5


def test_every_weight_is_copied():
    m = diffusers_model("1.0-rope")
    ours = from_diffusers(m)
    n_src = sum(p.numel() for p in m.parameters())
    assert ours.num_parameters() == n_src
    # one weight changed in diffusers changes minivid's output after loading: nothing is left at its default
    with torch.no_grad():
        m.transformer_blocks[1].attn1.norm_k.weight.mul_(3.0)
    ref, out = run_both(m, from_diffusers(m))
    assert rel_err(out, ref) <= 1e-5


def test_rope_positions_match_the_pipelines():
    # 1.0: rescaled to the base grid (30 x 45 tokens for 720 x 480); a half-size video is stretched over it
    assert resize_crop_region((15, 22), 45, 30) == get_resize_crop_region_for_grid((15, 22), 45, 30)
    for grid in [(30, 45), (15, 22), (40, 40), (8, 30)]:
        assert resize_crop_region(grid, 45, 30) == get_resize_crop_region_for_grid(grid, 45, 30)
    pos = cogvideox_rope_positions(2, 15, 22, "linspace", (30, 45))
    assert pos[:, 1].max() > 14 and pos[:, 2].max() > 21  # stretched beyond the integer grid
    base = cogvideox_rope_positions(1, 30, 45, "linspace", (30, 45))
    assert torch.allclose(base, cogvideox_rope_positions(1, 30, 45, "slice"))  # at the base size: integers
    # 1.5: integer positions; the tables equal diffusers' (cos, sin)
    rope = cogvideox_rope(3, 4, 5, 64, "slice")
    cos, sin = get_3d_rotary_pos_embed(64, None, (4, 5), 3, grid_type="slice", max_size=(30, 45))
    assert torch.allclose(rope.cos.float(), cos, atol=1e-6) and torch.allclose(rope.sin.float(), sin, atol=1e-6)
    assert rope.axes_dims == (16, 24, 24)  # C3 [code]: d/4 for t, 3d/8 for h and for w


def test_rope_scores_depend_only_on_relative_offsets():
    rope = cogvideox_rope(4, 4, 4, 32, "slice")
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(32, generator=g), torch.randn(32, generator=g)
    qs, ks = rope(q.expand(1, 1, 64, 32)), rope(k.expand(1, 1, 64, 32))

    def idx(t, h, w):
        return (t * 4 + h) * 4 + w

    s1 = qs[0, 0, idx(0, 1, 0)] @ ks[0, 0, idx(1, 2, 3)]  # offset (1, 1, 3)
    s2 = qs[0, 0, idx(2, 2, 0)] @ ks[0, 0, idx(3, 3, 3)]  # same offset elsewhere
    s3 = qs[0, 0, idx(2, 2, 0)] @ ks[0, 0, idx(3, 3, 2)]  # another offset
    assert torch.allclose(s1, s2, atol=1e-5)
    assert not torch.allclose(s1, s3, atol=1e-3)



def _temporal_margin(head_dim, theta, frames=8):
    """The smallest, over frame distances 1..frames-1, of the largest angle (wrapped to [-pi, pi]) by which a
    temporal RoPE pair turns: near 0 means two frames that far apart get (almost) the same rotation."""
    rope = cogvideox_rope(frames, 1, 1, head_dim, "slice", theta=theta)
    ang = torch.atan2(rope.sin, rope.cos)[:, : head_dim // 4]  # (frames, temporal channels)
    d = ang[1:] - ang[:1]
    return float(torch.atan2(d.sin(), d.cos()).abs().amax(dim=1).min())


def test_temporal_rope_aliases_at_head_dim_16_and_the_zoo_t2v_avoids_it():
    """C3 gives time d/4 channels: at head_dim 16 two frequency pairs, 1 and 0.01 rad per frame at theta 1e4, so
    frames 6 apart turn by 6 - 2 pi = -0.28 and 0.06 rad: almost the same position (the zoo's t2v samples at theta
    1e4 broke at frames 0-1 and 6-7). The release's head_dim 64 (8 pairs) and the zoo's t2v (theta 10: 1 and 0.32
    rad per frame) keep every two of 8 frames at least 1 rad apart in some pair."""
    from minivid.pipeline.zoo import t2v_zoo_config

    assert _temporal_margin(16, 1e4) == pytest.approx(2 * torch.pi - 6, abs=1e-6)
    assert _temporal_margin(64, 1e4, frames=13) > 0.9
    cfg = t2v_zoo_config().transformer
    assert _temporal_margin(cfg.head_dim, cfg.rope_theta) > 0.99

def tiny_ours(**kw):
    cfg = dict(in_channels=4, heads=2, head_dim=16, depth=2, time_embed_dim=24, text_dim=12, base_size=(6, 8),
               zero_init=False)
    cfg.update(kw)
    torch.manual_seed(0)
    m = ExpertTransformer(ExpertTransformerConfig(**cfg)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
    return m


def inputs(seed=0, frames=3, text_len=4):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 4, frames, 4, 4, generator=g), torch.tensor([500]),
            torch.randn(1, text_len, 12, generator=g))


def test_expert_adaln_modulations_are_independent():
    """C4: the text expert's rows of the regression act on the text tokens only, and vice versa; both share
    one LayerNorm."""
    m = tiny_ours(depth=1)
    x, t, text = inputs()
    blk = m.blocks[0]
    emb = m.time_embed(t.float())
    video = torch.randn(1, 12, 32)
    tt = torch.randn(1, 4, 32)
    hv, ht, g, tg = blk.norm1(video, tt, emb)
    with torch.no_grad():
        blk.norm1.linear.weight[3 * 32:4 * 32].add_(1.0)  # the text shift rows
    hv2, ht2, g2, tg2 = blk.norm1(video, tt, emb)
    assert torch.equal(hv, hv2) and torch.equal(g, g2) and not torch.allclose(ht, ht2)
    with torch.no_grad():
        blk.norm1.linear.weight[1 * 32:2 * 32].add_(1.0)  # the vision scale rows
    hv3, ht3, _, _ = blk.norm1(video, tt, emb)
    assert torch.equal(ht2, ht3) and not torch.allclose(hv2, hv3)
    assert len([m_ for m_ in blk.norm1.modules() if isinstance(m_, torch.nn.LayerNorm)]) == 1


def test_full_attention_spans_time_and_text():
    """C5: changing the last frame changes the first frame's output (one layer of 3D attention), changing the
    text changes every video token; with a text mask, masked text tokens change nothing."""
    m = tiny_ours(depth=1)
    x, t, text = inputs()
    with torch.no_grad():
        y = m(x, t, text)
        x2 = x.clone()
        x2[:, :, -1] += 1.0
        assert not torch.allclose(m(x2, t, text)[:, :, 0], y[:, :, 0], atol=1e-6)
        text2 = text.clone()
        text2[:, 0] += 1.0
        assert not torch.allclose(m(x, t, text2), y, atol=1e-6)
        mask = torch.tensor([[False, True, True, True]])
        assert torch.allclose(m(x, t, text, mask), m(x, t, text2, mask), atol=1e-6)


def test_zero_init_predicts_zero_and_errors():
    m = ExpertTransformer(in_channels=4, heads=2, head_dim=16, depth=1, time_embed_dim=24, text_dim=12)
    x, t, text = inputs()
    assert torch.equal(m(x, t, text), torch.zeros_like(x))
    with pytest.raises(ValueError, match="x must be latents"):
        m(torch.randn(1, 3, 3, 4, 4), t, text)
    with pytest.raises(ValueError, match="text_dim=12"):
        m(x, t, torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match="latent height=5 must be a positive multiple of patch_size=2"):
        m(torch.randn(1, 4, 3, 5, 4), t, text)
    with pytest.raises(ValueError, match="text_mask must have shape"):
        m(x, t, text, torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="head_dim=24 must be a multiple of 16"):
        ExpertTransformerConfig(head_dim=24)
    with pytest.raises(ValueError, match="positional"):
        ExpertTransformerConfig(positional="alibi")
    with pytest.raises(ValueError, match="latent frames=3 must be a positive multiple of patch_size_t=2"):
        ExpertTransformer(in_channels=4, heads=2, head_dim=16, depth=1, time_embed_dim=24, text_dim=12,
                          patch_size_t=2)(x, t, text)


def test_unsupported_diffusers_configs_are_named():
    with pytest.raises(ValueError, match="timestep_activation_fn"):
        config_from_diffusers({"timestep_activation_fn": "gelu"})
    with pytest.raises(ValueError, match="use_learned_positional_embeddings"):
        config_from_diffusers({"use_learned_positional_embeddings": True})
    with pytest.raises(ValueError, match="not a diffusers model folder"):
        from_diffusers("/nonexistent/folder")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_padded_frames_leave_the_real_frames_unchanged(layout):
    """C6: a clip padded at the end with a frame mask gives, on its real frames, exactly the unpadded clip's output,
    whatever the padding holds; without the mask the padding leaks in (so the test can fail)."""
    ours = from_diffusers(diffusers_model(layout))
    q = ours.config.patch_size_t
    g = torch.Generator().manual_seed(5)
    real, total = 2 * q, 4 * q
    x = torch.randn(2, 4, real, 6, 8, generator=g)
    text = torch.randn(2, TINY["max_text_seq_length"], 12, generator=g)
    t = torch.tensor([3, 917])
    mask = torch.zeros(2, total, dtype=torch.bool)
    mask[:, :real] = True
    with torch.no_grad():
        ref = ours(x, t, text)
        outs = []
        for fill in (torch.zeros, torch.randn):
            xp = torch.cat([x, fill(2, 4, total - real, 6, 8)], dim=2)
            outs.append(ours(xp, t, text, frame_mask=mask)[:, :, :real])
            leak = ours(xp, t, text)[:, :, :real]
    for out in outs:
        assert rel_err(out, ref) < 1e-5
    assert rel_err(leak, ref) > 1e-3


def test_mixed_batch_of_an_image_and_a_clip():
    """C6: an image (one latent frame) and a clip in one padded batch each give their own unpadded output."""
    from minivid.data import pack_clips

    ours = from_diffusers(diffusers_model("1.0-rope"))
    g = torch.Generator().manual_seed(6)
    image, clip = torch.randn(4, 1, 6, 8, generator=g), torch.randn(4, 3, 6, 8, generator=g)
    text = torch.randn(2, TINY["max_text_seq_length"], 12, generator=g)
    t = torch.tensor([10, 500])
    x, mask = pack_clips([image, clip])
    assert mask.tolist() == [[True, False, False], [True, True, True]]
    with torch.no_grad():
        out = ours(x, t, text, frame_mask=mask)
        alone_image = ours(image[None], t[:1], text[:1])
        alone_clip = ours(clip[None], t[1:], text[1:])
    assert rel_err(out[:1, :, :1], alone_image) < 1e-5
    assert rel_err(out[1:], alone_clip) < 1e-5


def test_frame_mask_errors():
    ours = from_diffusers(diffusers_model("1.5-rope"))
    x = torch.randn(1, 4, 4, 6, 8)
    text = torch.randn(1, TINY["max_text_seq_length"], 12)
    with pytest.raises(ValueError, match=r"frame_mask must be a \(B, T\) = \(1, 4\)"):
        ours(x, torch.tensor([1]), text, frame_mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="splits a temporal patch of patch_size_t=2"):
        ours(x, torch.tensor([1]), text, frame_mask=torch.tensor([[True, True, True, False]]))
    with pytest.raises(ValueError, match="without any real frame"):
        ours(x, torch.tensor([1]), text, frame_mask=torch.zeros(1, 4, dtype=torch.bool))


def test_triton_kernel_serves_the_expert_transformer_with_text_and_frame_masks():
    """C5 through minivid's Triton kernel (the CPU interpreter here, compiled on CUDA): the same outputs as SDPA with
    a text key-padding mask and padded frames (C6), so the masks reach the kernel."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    m = diffusers_model("1.0-rope")
    sdpa, tri = from_diffusers(m).to(device), from_diffusers(m, attention_backend="triton").to(device)
    assert {a.backend for a in tri.modules() if hasattr(a, "backend")} == {"triton"}
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 3, 6, 8, generator=g).to(device)
    text = torch.randn(2, TINY["max_text_seq_length"], 12, generator=g).to(device)
    t = torch.tensor([3, 917], device=device)
    text_mask = torch.tensor([[True, True, False, False, False], [True] * 5], device=device)
    frame_mask = torch.tensor([[True, False, False], [True, True, True]], device=device)
    with torch.no_grad():
        ref = sdpa(x, t, text, text_mask, frame_mask=frame_mask)
        out = tri(x, t, text, text_mask, frame_mask=frame_mask)
        unmasked = sdpa(x, t, text)
    assert rel_err(out, ref) < 1e-4
    assert rel_err(unmasked, ref) > 1e-3  # the masks matter


def test_auto_backend_is_the_triton_kernel_on_cuda_and_sdpa_on_the_cpu():
    """``attention_backend="auto"`` (the gpu presets'): the same numbers as ``"triton"`` on CUDA tensors and as
    ``"sdpa"`` on CPU tensors, bit for bit, masks included."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    m = diffusers_model("1.0-rope")
    auto = from_diffusers(m, attention_backend="auto").to(device)
    same = from_diffusers(m, attention_backend="triton" if device == "cuda" else "sdpa").to(device)
    other = from_diffusers(m, attention_backend="math").to(device)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 3, 6, 8, generator=g).to(device)
    text = torch.randn(2, TINY["max_text_seq_length"], 12, generator=g).to(device)
    t = torch.tensor([3, 917], device=device)
    text_mask = torch.tensor([[True, True, False, False, False], [True] * 5], device=device)
    with torch.no_grad():
        out = auto(x, t, text, text_mask)
        assert torch.equal(out, same(x, t, text, text_mask))
        ref = other(x, t, text, text_mask)
    assert rel_err(out, ref) < 1e-4 and not torch.equal(out, ref)  # a different backend rounds differently


def test_gradient_checkpointing_gives_the_same_gradients(monkeypatch):
    """Recomputing each block in the backward pass changes memory, not the numbers."""
    import torch.utils.checkpoint as tuc

    calls = []
    real = tuc.checkpoint
    monkeypatch.setattr(tuc, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    cfg = ExpertTransformerConfig(in_channels=4, patch_size=2, heads=2, head_dim=16, depth=2, time_embed_dim=32,
                                  text_dim=16, max_text_len=8, rope_grid="slice", base_size=(4, 4), zero_init=False)
    model = ExpertTransformer(cfg).train()
    x, t, text = torch.randn(2, 4, 2, 4, 4), torch.tensor([3, 700]), torch.randn(2, 5, 16)
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = ckpt
        model(x, t, text).square().mean().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    assert len(calls) == 2  # one per block, only in the checkpointed pass
    for k, g in grads[0].items():
        torch.testing.assert_close(grads[1][k], g, atol=1e-6, rtol=1e-5)


def test_pooled_text_starts_as_the_plain_model_and_adds_the_masked_mean_to_the_modulation():
    """minivid's option ``pooled_text``: zero-initialised, so a model with it equals the same weights without it;
    once trained, the modulation's embedding is time_embed(t) + W · mean(real text tokens) + b (float64 reference,
    read at the output AdaLN's input); masked tokens still change nothing; off by default."""
    import torch.nn.functional as F

    cfg = dict(in_channels=4, heads=2, head_dim=16, depth=1, time_embed_dim=24, text_dim=12, zero_init=False)
    torch.manual_seed(0)
    m = ExpertTransformer(ExpertTransformerConfig(**cfg, pooled_text=True)).eval()
    plain = ExpertTransformer(ExpertTransformerConfig(**cfg)).eval()
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("text_pool.")})
    x, t, text = inputs()
    seen = []
    m.norm_out_linear.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].double()))
    with torch.no_grad():
        torch.testing.assert_close(m(x, t, text), plain(x, t, text), rtol=0, atol=0)
        m.text_pool.weight.normal_()
        m.text_pool.bias.normal_()
        w, b = m.text_pool.weight.double(), m.text_pool.bias.double()
        base = plain.time_embed(t.float()).double()
        mask = torch.tensor([[True, False, True, True]])
        for kw, mean in ((dict(), text[0].double().mean(0)), (dict(text_mask=mask), text[0, [0, 2, 3]].double().mean(0))):
            seen.clear()
            y = m(x, t, text, **kw)
            torch.testing.assert_close(seen[0], F.silu(base + mean @ w.T + b), rtol=1e-5, atol=1e-5)
            assert not torch.allclose(y, plain(x, t, text, **kw), atol=1e-4)
        text2 = text.clone()
        text2[:, 1] += 5.0  # the masked token
        torch.testing.assert_close(m(x, t, text2, mask), m(x, t, text, mask), rtol=0, atol=1e-6)
    assert ExpertTransformerConfig().pooled_text is False


def test_rope_tables_are_cached_on_the_tokens_device():
    """C3's tables are built once per grid and device and kept there: a GPU's attention calls read them in place
    instead of copying them from the CPU (a blocking copy) four times per block (the meta device stands in)."""
    cfg = ExpertTransformerConfig(in_channels=4, patch_size=2, heads=2, head_dim=16, depth=1, time_embed_dim=32,
                                  text_dim=16, max_text_len=8, rope_grid="slice", base_size=(4, 4))
    m = ExpertTransformer(cfg)
    on_cpu = m.positions(2, 2, 2, torch.zeros(1))
    on_meta = m.positions(2, 2, 2, torch.zeros(1, device="meta"))
    assert on_cpu.cos.device.type == "cpu" and on_meta.cos.device.type == on_meta.sin.device.type == "meta"
    assert on_meta.cos.dtype == on_cpu.cos.dtype == torch.float64 and on_meta.cos.shape == on_cpu.cos.shape
    assert m.positions(2, 2, 2, torch.zeros(1, device="meta")) is on_meta  # cached
