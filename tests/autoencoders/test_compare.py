"""The compression table's shared pieces (R1, R2, C1): the four models' factors come from their shapes, the
latent-free references match closed forms, and the content check measures what it claims."""

import math

import pytest
import torch

from minivid.autoencoders import CausalVAE, ReducioVAE, VAE2D
from minivid.autoencoders.compare import (PAPER_PSNR, build_compression_models, evaluate, median_time,
                                          reference_psnr, train_steps)
from minivid.metrics import psnr


def test_the_four_models_and_their_factors():
    models = build_compression_models(channels=4, num_res_blocks=1, frames=8)
    assert list(models) == ["2D VAE 1x8x8", "causal 3D VAE 4x8x8", "Reducio 4x16x16", "Reducio 4x32x32 + content"]
    kinds = [VAE2D, CausalVAE, ReducioVAE, ReducioVAE]
    downs = [(1, 8, 8), (4, 8, 8), (4, 16, 16), (4, 32, 32)]
    frames = [8, 9, 8, 8]  # the causal VAE takes 4k + 1
    for (model, t), kind, d, f in zip(models.values(), kinds, downs, frames):
        assert isinstance(model, kind) and model.downsample == d and t == f
        shape = model.latent_shape((1, 3, t, 64, 64))
        assert shape[2:] == ((t - 1) // 4 + 1 if kind is CausalVAE else t // d[0], 64 // d[1], 64 // d[2])
    assert models["Reducio 4x32x32 + content"][0].config.use_content
    assert not models["Reducio 4x16x16"][0].config.use_content
    assert PAPER_PSNR["Reducio-VAE 4x32x32 (|z|=16)"] > PAPER_PSNR["SDXL-VAE 1x8x8 (|z|=4)"]
    with pytest.raises(ValueError, match="frames=6"):
        build_compression_models(frames=6)
    with pytest.raises(ValueError, match="channels=0"):
        build_compression_models(channels=0)


def test_reference_psnr_matches_closed_forms():
    g = torch.Generator().manual_seed(0)
    colour = torch.rand(3, 3, 1, 1, 1, generator=g) * 2 - 1
    static = (colour + 0.1 * torch.randn(3, 3, 1, 32, 32, generator=g)).expand(3, 3, 4, 32, 32).contiguous()
    refs = reference_psnr(static)
    assert refs["average frame"] > 200  # a static clip is its own average frame (PSNR at the clamp)
    x = torch.rand(2, 3, 4, 32, 32, generator=g) * 2 - 1
    refs = reference_psnr(x)
    mse = (x - x.mean(dim=(2, 3, 4), keepdim=True)).pow(2).mean(dim=(1, 3, 4))  # per clip and frame
    assert refs["clip mean colour"] == pytest.approx((10 * torch.log10(4 / mse)).mean().item(), rel=1e-5)
    blocks = x.unfold(3, 8, 8).unfold(4, 8, 8)  # (2, 3, 4, 4, 4, 8, 8)
    low = blocks.mean(dim=(-1, -2), keepdim=True).expand_as(blocks)
    mse8 = (blocks - low).pow(2).mean(dim=(1, 3, 4, 5, 6))
    assert refs["8x8 block means"] == pytest.approx((10 * torch.log10(4 / mse8)).mean().item(), rel=1e-5)
    assert "32x32 block means" in refs and refs["32x32 block means"] <= refs["16x16 block means"] + 1e-6


def test_evaluate_and_the_content_check_on_a_decoder_that_copies_the_content_frame():
    class CopyContent(ReducioVAE):
        """Decodes every frame as the content frame: perfect on static clips, so a wrong frame must be worse."""

        def decode(self, z, content=None):
            return content[:, :, None].expand(-1, -1, 4 * z.shape[2], -1, -1)

    model = CopyContent(build_compression_models(channels=4, frames=4)["Reducio 4x32x32 + content"][0].config)
    g = torch.Generator().manual_seed(0)
    clips = (torch.rand(5, 3, 1, 64, 64, generator=g) * 2 - 1).expand(5, 3, 4, 64, 64).contiguous()
    m = evaluate(model, clips, batch=2)
    assert m["psnr"] > 100 and m["ssim"] == pytest.approx(1.0, abs=1e-4)
    wrong = torch.cat([clips[1:], clips[:1]])  # every clip decoded with the next clip's frame, across batches
    assert m["psnr_wrong_content"] == pytest.approx(psnr(wrong, clips).mean().item(), rel=1e-5)
    assert m["wrong_content_wins"] == 0.0
    assert m["psnr_wrong_latent"] == m["psnr"]  # this decoder ignores its latent: another clip's does as well
    # clips that change: the copy is exact on the content frame V_1 only; psnr_without_content_frame scores frames 0, 2, 3
    moving = torch.rand(4, 3, 4, 64, 64, generator=g) * 2 - 1
    mm = evaluate(model, moving, batch=2)
    copy = moving[:, :, 1:2].expand_as(moving)
    assert mm["psnr_without_content_frame"] == pytest.approx(psnr(copy[:, :, [0, 2, 3]], moving[:, :, [0, 2, 3]]).mean().item(), rel=1e-5)
    assert mm["psnr"] > mm["psnr_without_content_frame"] + 40  # the exact content frame dominates the all-frame mean
    plain = evaluate(build_compression_models(channels=4, frames=4)["2D VAE 1x8x8"][0], clips[:2])
    assert "psnr_wrong_content" not in plain and math.isfinite(plain["psnr"])
    vae = build_compression_models(channels=4, frames=4)["2D VAE 1x8x8"][0].eval()
    with torch.no_grad():  # the next clip's latent, decoded: what psnr_wrong_latent scores (the last clip gets the first's)
        swapped = vae.decode(vae.encode(moving.roll(-1, 0)).mode()).clamp(-1, 1)
    got = evaluate(vae, moving, batch=3)["psnr_wrong_latent"]
    assert got == pytest.approx(psnr(swapped, moving).mean().item(), rel=1e-5)


def test_train_steps_learns_with_the_shared_recipe_and_median_time():
    torch.manual_seed(0)  # the model's initialisation must not depend on which tests ran before in this process
    model = build_compression_models(channels=4, frames=4)["2D VAE 1x8x8"][0]
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(2, 3, 1, 1, 1, generator=g) * 2 - 1).expand(2, 3, 2, 16, 16).contiguous()
    before = (model.reconstruct(x) - x).abs().mean()
    trainer = train_steps(model, lambda step: x, steps=40, lr=1e-2, warmup=5)
    after = (model.eval().reconstruct(x) - x).abs().mean()
    assert after < 0.5 * before, (before, after)
    assert len(trainer.history) == 40 and trainer.optimizer.param_groups[0]["lr"] == pytest.approx(trainer.lr_at(39))
    assert median_time(lambda: None, repeats=3) >= 0
    with pytest.raises(ValueError, match="steps=0"):
        train_steps(model, lambda step: x, steps=0, lr=1e-3)
