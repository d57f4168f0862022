r"""The compression table of R1/R2/C1, shared by notebook 03 and ``bench/vae_compression.py``: the four VAEs built
with the same widths and depth, one training loop for all of them, and the held-out measurements.

=============================  ===============  ====  =====================================================
model                          f_t x f_s x f_s  |z|   what it is
=============================  ===============  ====  =====================================================
2D VAE 1x8x8                   1 x 8 x 8        4     per-frame SD-VAE baseline (R2, f_t = 1)
causal 3D VAE 4x8x8            4 x 8 x 8        16    CogVideoX (C1), 4k+1 frames
Reducio 4x16x16                4 x 16 x 16      16    Reducio's video-only VAE (R2)
Reducio 4x32x32 + content      4 x 32 x 32      16    Reducio's image-conditioned VAE (R2): f_t f_s^2 = 4096
=============================  ===============  ====  =====================================================
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from ..metrics import psnr, ssim
from .base import VideoAutoencoder
from .causal_vae import CausalVAE, CausalVAEConfig
from .reducio import ReducioConfig, ReducioVAE
from .training import AutoencoderTrainer
from .vae2d import VAE2D, VAE2DConfig

#: Reducio's Table 1 (256x256, 16 frames): PSNR (dB) of the VAE reconstructions.
PAPER_PSNR = {"SDXL-VAE 1x8x8 (|z|=4)": 30.54, "Reducio-VAE 4x32x32 (|z|=16)": 35.88}


def build_compression_models(channels: int = 8, num_res_blocks: int = 1, frames: int = 16,
                             spatial_pe: bool = False) -> dict[str, tuple[VideoAutoencoder, int]]:
    """The four VAEs of the table (R2, C1) at the same width ``channels`` and depth: ``name -> (model, frames)``,
    where ``frames`` is the clip length the model trains on (the causal VAE takes ``frames + 1``: C1's 4k+1).
    ``spatial_pe`` switches on minivid's optional 2D position code in Reducio's content fusion.

    GroupNorm uses ``min(channels, 32)`` groups: one channel per group at the CPU width 8, the same setting for all
    four models (fewer, wider groups help one model and hurt another: bench/results/measurements.md)."""
    if channels < 1 or num_res_blocks < 1:
        raise ValueError(f"channels={channels} and num_res_blocks={num_res_blocks} must be >= 1")
    if frames < 4 or frames % 4:
        raise ValueError(f"frames={frames} must be a positive multiple of 4 (f_t = 4)")
    common = dict(channels=channels, num_res_blocks=num_res_blocks, norm_groups=min(channels, 32))
    return {
        "2D VAE 1x8x8": (VAE2D(VAE2DConfig(**common)), frames),
        "causal 3D VAE 4x8x8": (CausalVAE(CausalVAEConfig(**common)), frames + 1),
        "Reducio 4x16x16": (ReducioVAE(ReducioConfig(spatial_factor=16, use_content=False, **common)), frames),
        "Reducio 4x32x32 + content": (ReducioVAE(ReducioConfig(
            spatial_factor=32, use_content=True, content_channels=channels, content_num_res_blocks=num_res_blocks,
            fusion_head_dim=min(64, 4 * channels), fusion_spatial_pe=spatial_pe, **common)), frames),
    }


def train_steps(model: VideoAutoencoder, batches: Callable[[int], torch.Tensor], steps: int, lr: float,
                warmup: int = 20, seed: int = 0, device: str | torch.device = "cpu", log_every: int = 0,
                l1_weight: float = 1.0, l2_weight: float = 1.0, kl_weight: float = 1e-6) -> AutoencoderTrainer:
    """``steps`` updates of ``model`` on ``batches(step)`` (clips (B, 3, T, H, W) in [-1, 1]): R2's L1 + KL loss
    (+ MSE), Adam (0.9, 0.99) with linear warm-up and cosine decay. Returns the trainer (its ``history``)."""
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    torch.manual_seed(seed)
    trainer = AutoencoderTrainer(model, lr=lr, l1_weight=l1_weight, l2_weight=l2_weight, kl_weight=kl_weight,
                                 grad_clip=None, betas=(0.9, 0.99), seed=seed, warmup_steps=warmup, total_steps=steps)
    t0 = time.perf_counter()
    for step in range(steps):
        logs = trainer.step(batches(step).to(device))
        if log_every and (step + 1) % log_every == 0:
            print(f"    step {step + 1}/{steps}  l1 {logs['l1']:.4f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return trainer


def frames_without_content(model: VideoAutoencoder, num_frames: int) -> list[int]:
    """The frame indices of a clip other than the content frame its decoder is given (R2: V_{(T-1)//2})."""
    return [k for k in range(num_frames) if k != model.content_index(num_frames)]


@torch.no_grad()
def evaluate(model: VideoAutoencoder, test: torch.Tensor, device: str | torch.device = "cpu",
             batch: int = 8) -> dict[str, float]:
    """PSNR and SSIM (mean over clips of the per-frame mean, data range 2) of the posterior-mode reconstructions
    of held-out clips ``test`` (N, 3, T, H, W). With a content pathway (R2) also ``psnr_wrong_content``: every
    clip decoded with the next clip's content frame, ``wrong_content_wins``: the share of clips for which the
    wrong frame did at least as well (the content check), and ``psnr_without_content_frame``: the PSNR over the
    other frames (the decoder is given the content frame, so reconstructing it proves nothing about the latent).
    Every model also gets ``psnr_wrong_latent``: each clip decoded from the next clip's latent (with its own
    content frame, if any); a decoder that ignores its latent (posterior collapse) scores the same as with its own."""
    model.eval()
    p, s, p_wrong, p_other, p_wrong_z = [], [], [], [], []
    for i in range(0, len(test), batch):
        x = test[i:i + batch].to(device)
        z = model.encode(x).mode()
        cond = model.conditions(x)
        rec = model.decode(z, **cond).clamp(-1, 1)
        p.append(psnr(rec, x).cpu())
        s.append(ssim(rec, x).cpu())
        other = test[torch.arange(i, i + len(x)).add(1) % len(test)].to(device)  # the next clip
        p_wrong_z.append(psnr(model.decode(model.encode(other).mode(), **cond).clamp(-1, 1), x).cpu())
        if "content" in cond:
            wrong = model.decode(z, content=model.conditions(other)["content"]).clamp(-1, 1)
            p_wrong.append(psnr(wrong, x).cpu())
            others = frames_without_content(model, x.shape[2])
            p_other.append(psnr(rec[:, :, others], x[:, :, others]).cpu())
    p = torch.cat(p)
    out = {"psnr": p.mean().item(), "psnr_std": p.std().item() if len(p) > 1 else 0.0,
           "ssim": torch.cat(s).mean().item(), "psnr_wrong_latent": torch.cat(p_wrong_z).mean().item()}
    if p_wrong:
        pw = torch.cat(p_wrong)
        out["psnr_wrong_content"] = pw.mean().item()
        out["wrong_content_wins"] = (pw >= p).float().mean().item()
        out["psnr_without_content_frame"] = torch.cat(p_other).mean().item()
    return out


def reference_psnr(test: torch.Tensor) -> dict[str, float]:
    """PSNR of latent-free references on held-out clips (N, 3, T, H, W): every pixel the clip's mean colour, every
    frame the clip's average frame, and each frame's f x f block means (f = 8, 16, 32: one colour per latent
    position of a 1 x f x f code; the 2D VAE keeps |z| = 4 values per 8 x 8 block)."""
    mean = test.mean(dim=(2, 3, 4), keepdim=True).expand_as(test)
    out = {"clip mean colour": psnr(mean, test).mean().item(),
           "average frame": psnr(test.mean(2, keepdim=True).expand_as(test), test).mean().item()}
    for f in (8, 16, 32):
        if test.shape[-1] % f == 0 and test.shape[-2] % f == 0:
            low = F.interpolate(F.avg_pool3d(test, (1, f, f)), scale_factor=(1, f, f), mode="nearest")
            out[f"{f}x{f} block means"] = psnr(low, test).mean().item()
    return out


def median_time(fn: Callable[[], object], device: str | torch.device = "cpu", repeats: int = 5,
                warmup: int = 2) -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs after ``warmup`` runs (CUDA synchronised)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
