"""PVDM's triplane autoencoder (P1-P6): shapes for several (S, H, W, d), the P5 element count, the exact
locality of the axis projections (P3) and what the encoder adds to it, the static-video property, the
equivalence of the paper's concatenated grid and the release's broadcast-and-sum (P4), training with the
shared trainer (both stages), and clear errors."""

import pytest
import torch

from minivid.autoencoders import DiracLatent, PatchDiscriminator2D, PatchDiscriminator3D
from minivid.autoencoders.pvdm import (
    PVDMAutoencoder,
    PVDMAutoencoderConfig,
    check_planes,
    latent_cost,
    noisy_planes,
    pack_planes,
    triplane_grid,
    unpack_planes,
)
from minivid.autoencoders.training import AutoencoderTrainer
from minivid.data import MiniSprites

TINY = dict(dim=16, encoder_depth=1, decoder_depth=1, projector_depth=1, heads=2, projector_heads=2,
            latent_channels=3, mlp_ratio=2.0)


def tiny(**kw) -> PVDMAutoencoder:
    torch.manual_seed(0)
    return PVDMAutoencoder(PVDMAutoencoderConfig(**{**TINY, **kw})).eval()


def video(b, s, h, w, seed=0) -> torch.Tensor:
    return torch.rand(b, 3, s, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("s,h,w,d", [(4, 16, 16, 2), (8, 32, 16, 4), (3, 24, 32, 8), (1, 8, 12, 4)])
@pytest.mark.parametrize("grid", ["sum", "concat"])
def test_shapes_p1_to_p5(s, h, w, d, grid, capsys):
    m = tiny(patch_size=d, grid=grid)
    x = video(2, s, h, w)
    hp, wp, c = h // d, w // d, m.latent_channels
    u = m.features(x)  # P2
    assert u.shape == (2, m.config.dim, s, hp, wp)
    posterior = m.encode(x)
    assert isinstance(posterior, DiracLatent) and torch.equal(posterior.kl(), torch.zeros(2))
    z_s, z_h, z_w = planes = posterior.sample()  # P1 / P3
    assert (z_s.shape, z_h.shape, z_w.shape) == ((2, c, hp, wp), (2, c, s, wp), (2, c, s, hp))
    assert tuple(p.shape for p in planes) == m.latent_shape(x.shape) and check_planes(planes, c) == (s, hp, wp)
    assert all(p.abs().max() < 1 for p in planes)  # tanh
    assert m.downsample == (1, d, d)
    v = triplane_grid(planes)  # P4: v_shw = [z^s_hw, z^h_sw, z^w_sh]
    assert v.shape == (2, 3 * c, s, hp, wp)
    i, j, k = s - 1, hp // 2, wp - 1
    torch.testing.assert_close(v[:, :, i, j, k], torch.cat([z_s[:, :, j, k], z_h[:, :, i, k], z_w[:, :, i, j]], 1),
                               rtol=0, atol=0)
    out = m.decode(planes)
    assert out.shape == x.shape and out.abs().max() < 1
    # P5: C (H'W' + SW' + SH') elements against C S H' W' for a 3D latent
    packed = pack_planes(planes)
    cost = latent_cost(s, h, w, d, c)
    assert packed.shape == (2, c, hp * wp + s * wp + s * hp) and packed[0].numel() == cost["triplane_elements"]
    assert cost["grid_elements"] == c * s * hp * wp and cost["triplane_attention"] == cost["triplane_tokens"] ** 2
    print(f"(S,H,W,d)=({s},{h},{w},{d}) C={c}: triplane {cost['triplane_elements']} elements, "
          f"3D latent {cost['grid_elements']}")
    for a, b in zip(unpack_planes(packed, (s, hp, wp)), planes):
        assert torch.equal(a, b)


def test_p5_triplane_is_smaller_exactly_when_the_inverse_sides_sum_below_one():
    # H'W' + SW' + SH' < S H' W'  <=>  1/S + 1/H' + 1/W' < 1 (e.g. every side >= 3, not all equal to 3)
    for s in (1, 2, 3, 8, 16, 64):
        for side in (8, 16, 24, 64, 256):
            c = latent_cost(s, side, side, 8, 4)
            smaller = 1 / s + 2 / (side // 8) < 1
            assert (c["triplane_elements"] < c["grid_elements"]) == smaller
            assert (c["triplane_attention"] < c["grid_attention"]) == smaller
    # the release's setting: 16 x 256 x 256, d = 8, C = 4 -> 4 * (1024 + 512 + 512) = 8192 vs 65536
    c = latent_cost(16, 256, 256, 8, 4)
    assert (c["triplane_elements"], c["grid_elements"]) == (8192, 65536)


def test_p3_projection_written_out_for_one_line_of_each_axis():
    """P3 in float64 for one line per plane: the class token (learnt token + the line's mean) in front of the line,
    1D sin-cos positions over the 1 + L tokens, the projector's layers, LayerNorm of the class token's output, the
    linear map to C channels and tanh; and which line lands where: z^s_hw from u_{:,h,w} over time, z^h_sw over
    height, z^w_sh over width. Reading another token, pooling, or a sigmoid for the tanh fails."""
    import torch.nn.functional as F

    from minivid.nn import sincos_1d

    m = tiny(patch_size=4).double()
    u = torch.randn(2, m.config.dim, 5, 3, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    z_s, z_h, z_w = m.project(u)

    def by_hand(projector, linear, line):  # line (L, D)
        cls = projector.cls[0, 0] + line.mean(0)
        x = torch.cat([cls[None], line]) + sincos_1d(len(line) + 1, line.shape[1]).to(line)
        x = x[None, None]  # (1, 1, 1 + L, D): one "frame", as the projector runs it
        for block in projector.blocks:
            x = block(x)
        out = F.layer_norm(x[0, 0, 0], (line.shape[1],), projector.norm.weight, projector.norm.bias, projector.norm.eps)
        return torch.tanh(out @ linear.weight.T + linear.bias)

    b, s_, h, w = 1, 3, 2, 1
    want = {"s": by_hand(m.project_s, m.to_latent[0], u[b, :, :, h, w].T),
            "h": by_hand(m.project_h, m.to_latent[1], u[b, :, s_, :, w].T),
            "w": by_hand(m.project_w, m.to_latent[2], u[b, :, s_, h, :].T)}
    torch.testing.assert_close(z_s[b, :, h, w], want["s"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(z_h[b, :, s_, w], want["h"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(z_w[b, :, s_, h], want["w"], rtol=1e-10, atol=1e-12)
    assert min(p.min() for p in (z_s, z_h, z_w)) < 0 < max(p.max() for p in (z_s, z_h, z_w))  # tanh's range


def test_projection_is_exactly_local():
    """P3: z^s_hw reads only the line u_{.hw}, z^h_sw only u_{s.w}, z^w_sh only u_{sh.}. Perturb u at one
    position (s0, h0, w0): exactly one value of each plane may change."""
    m = tiny(patch_size=4)
    x = video(2, 5, 24, 32)
    u = m.features(x)
    s0, h0, w0 = 3, 2, 5
    u2 = u.clone()
    u2[:, :, s0, h0, w0] += torch.randn(u.shape[:2], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before, after = m.project(u), m.project(u2)
    where = [(slice(None), slice(None), h0, w0), (slice(None), slice(None), s0, w0),
             (slice(None), slice(None), s0, h0)]
    for a, b, idx in zip(before, after, where):
        changed = (a - b).abs().amax(dim=(0, 1))  # (., .) map of changes
        assert changed[idx[2:]] > 1e-3
        changed[idx[2:]] = 0
        assert changed.max() == 0


def _perturb_frame(x, s0):
    x2 = x.clone()
    x2[:, :, s0, 3:9, 2:7] = -x2[:, :, s0, 3:9, 2:7]
    return x2


def test_frame_locality_holds_exactly_iff_the_encoder_has_no_temporal_mixing():
    """A change to frame s0 changes the rows s0 of z^h and z^w. Whether it leaves the other rows alone is
    not P3's business but f^{shw}'s: divided space-time attention mixes frames, so the claim holds exactly
    only with the temporal attention switched off (here: its output projections zeroed)."""
    x, s0 = video(1, 6, 16, 16), 2
    x2 = _perturb_frame(x, s0)
    others = [s for s in range(6) if s != s0]

    m = tiny(patch_size=4)
    with torch.no_grad():
        for block in m.encoder.blocks:
            block.attn_t.to_out.weight.zero_()
            block.attn_t.to_out.bias.zero_()
        (zs1, zh1, zw1), (zs2, zh2, zw2) = m.encode(x).value, m.encode(x2).value
    for a, b in ((zh1, zh2), (zw1, zw2)):
        assert (a[:, :, s0] - b[:, :, s0]).abs().max() > 1e-3
        assert (a[:, :, others] - b[:, :, others]).abs().max() < 1e-6
    assert (zs1 - zs2).abs().max() > 1e-3  # z^s sees every frame

    m = tiny(patch_size=4)  # with temporal attention: the change leaks into the other frames' rows
    with torch.no_grad():
        (_, zh1, zw1), (_, zh2, zw2) = m.encode(x).value, m.encode(x2).value
    for a, b in ((zh1, zh2), (zw1, zw2)):
        assert (a[:, :, others] - b[:, :, others]).abs().max() > 1e-4


def test_a_static_video_gives_motion_planes_constant_in_time():
    """Without time positions the encoder is equivariant to permuting frames, so all-equal frames give
    z^h, z^w constant along s (their time-varying part is exactly zero) and decode to a static video."""
    frame = video(2, 1, 16, 16)
    x = frame.expand(-1, -1, 6, -1, -1).contiguous()
    m = tiny(patch_size=4)
    with torch.no_grad():
        z_s, z_h, z_w = m.encode(x).value
        out = m.decode((z_s, z_h, z_w))
    for z in (z_h, z_w):
        assert (z - z[:, :, :1]).abs().max() < 1e-5 and z.abs().max() > 1e-3
    assert (out - out[:, :, :1]).abs().max() < 1e-5
    m = tiny(patch_size=4, temporal_positions=True)  # with time positions it need not be
    with torch.no_grad():
        _, z_h, _ = m.encode(x).value
    assert (z_h - z_h[:, :, :1]).abs().max() > 1e-4


def test_concat_and_sum_grids_are_the_same_function():
    """P4: Linear([z^s; z^h; z^w]) = W_s z^s + W_h z^h + W_w z^w + b, so the paper's concatenation and the
    release's broadcast-and-sum decode identically once the weights are split accordingly."""
    cat, add = tiny(grid="concat"), tiny(grid="sum")
    shared = {k: v for k, v in cat.state_dict().items() if not k.startswith("grid_embed")}
    add.load_state_dict(shared, strict=False)
    c = cat.latent_channels
    with torch.no_grad():
        for k, emb in enumerate(add.plane_embed):
            emb.weight.copy_(cat.grid_embed.weight[:, k * c:(k + 1) * c])
            emb.bias.copy_(cat.grid_embed.bias if k == 0 else torch.zeros_like(emb.bias))
        planes = cat.encode(video(2, 4, 16, 16)).value
        torch.testing.assert_close(add.decode(planes), cat.decode(planes), rtol=1e-5, atol=1e-5)
    n_cat, n_add = (sum(p.numel() for p in m.parameters()) for m in (cat, add))
    assert n_add - n_cat == 2 * cat.config.dim  # the only difference: two extra bias vectors


def test_trains_with_the_shared_trainer_both_stages():
    torch.manual_seed(0)
    m = PVDMAutoencoder(PVDMAutoencoderConfig(**TINY, patch_size=4))
    data = MiniSprites(2, size=16, num_frames=4)
    x = torch.stack([data[i]["video"] for i in range(2)])
    trainer = AutoencoderTrainer(m, lr=3e-3, betas=(0.9, 0.99), discriminators=[
        PatchDiscriminator2D(channels=8, num_layers=1), PatchDiscriminator3D(channels=8, num_layers=1)],
        disc_start=30)
    first = trainer.step(x)["l1"]
    for _ in range(29):
        trainer.step(x)
    assert trainer.history[-1]["l1"] < 0.75 * first  # stage 1 (L1) learns
    logs = trainer.step(x)  # stage 2: hinge GAN with the adaptive weight through last_layer
    assert {"g_loss", "d_loss", "gan_weight"} <= set(logs) and 0 < logs["gan_weight"] < 1e4
    assert m.last_layer is m.to_pixels.weight


def test_trainer_l2_term():
    """The pixel term MSE added to AutoencoderTrainer for this notebook: loss = l1_weight L1 + l2_weight MSE."""
    m = tiny(patch_size=4)
    x = video(2, 3, 16, 16)
    with torch.no_grad():
        before = m(x, sample=False)[0]
    logs = AutoencoderTrainer(m, lr=1e-3, l1_weight=0.5, l2_weight=2.0).step(x)
    assert logs["l2"] == pytest.approx(torch.nn.functional.mse_loss(before, x).item(), rel=1e-5)
    assert logs["loss"] == pytest.approx(0.5 * logs["l1"] + 2.0 * logs["l2"], rel=1e-5)
    with pytest.raises(ValueError, match="l2_weight=-1"):
        AutoencoderTrainer(m, l2_weight=-1)


def test_latent_noise_perturbs_only_the_training_decode():
    """latent_noise: in train mode forward(sample=True) decodes planes + sigma * eps, sigma ~ U(0, s) per clip
    (the same draws from the same generator); eval mode, sample=False and latent_noise=0 decode the planes as they
    are; the noise std is within the bound."""
    x = video(3, 4, 16, 16)
    base = tiny(patch_size=4)
    noisy = tiny(patch_size=4, latent_noise=0.3)  # same seed: same weights
    with torch.no_grad():
        planes = base.encode(x).value
        clean = base.decode(planes)
        torch.testing.assert_close(noisy.eval()(x)[0], clean)  # eval: no noise
        noisy.train()
        torch.testing.assert_close(noisy(x, sample=False)[0], clean)
        torch.testing.assert_close(base.train()(x, generator=torch.Generator().manual_seed(1))[0], clean)
        out = noisy(x, generator=torch.Generator().manual_seed(1))[0]
        g = torch.Generator().manual_seed(1)
        sigma = torch.rand(3, generator=g) * 0.3
        expected = tuple(z + sigma.view(-1, 1, 1, 1) * torch.randn(z.shape, generator=g) for z in planes)
        torch.testing.assert_close(out, noisy.decode(expected))
        assert (out - clean).abs().amax() > 1e-3
        big = noisy_planes(tuple(torch.zeros(2000, 1, 16, 16) for _ in range(3)), 0.3,
                           torch.Generator().manual_seed(2))
        per_clip = torch.cat([z.flatten(1) for z in big], 1).std(1)
        assert per_clip.max() < 0.3 * 1.1 and per_clip.mean() == pytest.approx(0.15, rel=0.05)
    with pytest.raises(ValueError, match="latent_noise"):
        PVDMAutoencoderConfig(latent_noise=-0.1)


def test_attention_backends_agree():
    m = tiny(patch_size=4)
    x = video(1, 3, 16, 16)
    with torch.no_grad():
        a = m.decode(m.encode(x).value)
        for mod in m.modules():
            if hasattr(mod, "set_backend"):
                mod.set_backend("math")
        torch.testing.assert_close(m.decode(m.encode(x).value), a, rtol=1e-4, atol=1e-5)


def test_clear_errors():
    m = tiny(patch_size=4)
    with pytest.raises(ValueError, match=r"\(18, 16\) is not divisible by patch_size=4"):
        m.encode(video(1, 2, 18, 16))
    with pytest.raises(ValueError, match="4 channels.*expected in_channels=3"):
        m.encode(torch.zeros(1, 4, 2, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, C, S, H, W\)"):
        m.encode(torch.zeros(3, 2, 16, 16))
    with pytest.raises(ValueError, match="not divisible by patch_size=4"):
        m.latent_shape((1, 3, 2, 16, 10))
    z_s, z_h, z_w = m.encode(video(1, 3, 16, 16)).value
    with pytest.raises(ValueError, match="inconsistent plane shapes"):
        m.decode((z_s, z_h, z_w[:, :, :2]))  # S differs between z^h and z^w
    with pytest.raises(ValueError, match="inconsistent plane shapes"):
        m.decode((z_s[:, :, :2], z_h, z_w))  # H' differs between z^s and z^w
    with pytest.raises(ValueError, match="expected latent_channels=3"):
        m.decode((z_s[:, :2], z_h[:, :2], z_w[:, :2]))
    with pytest.raises(ValueError, match="share batch size and channels"):
        m.decode((z_s, z_h[:, :2], z_w))
    with pytest.raises(ValueError, match="tuple of three tensors"):
        m.decode(z_s)
    with pytest.raises(ValueError, match=r"must be \(B, C, 32\)"):
        unpack_planes(torch.zeros(1, 3, 23), (2, 4, 4))
    with pytest.raises(ValueError, match="grid='stack' is invalid.*'concat', 'sum'"):
        PVDMAutoencoderConfig(grid="stack")
    with pytest.raises(ValueError, match="patch_size=1 is invalid"):
        PVDMAutoencoderConfig(patch_size=1)
    with pytest.raises(ValueError, match="takes no conditions"):
        m.decode((z_s, z_h, z_w), frame=None)
