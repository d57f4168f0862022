"""The recipes that make the model zoo (:mod:`minivid.pretrained`): ``python -m minivid train <name>``.

Each recipe trains one model for a fixed number of steps on MiniSprites (fresh clips from a pre-rendered pool,
never a wall-clock budget), evaluates it on held-out clips of the test split against trivial baselines, and
writes ``data/pretrained/<name>/`` (``minivid.save_model`` + ``card.json``) through a temporary folder renamed at
the end, so an interrupted run never leaves half an entry. The defaults are the CPU recipes that made the
shipped zoo (2 cores, under about an hour each); ``--steps`` shortens one for a smoke test.

Recipes (``RECIPES``), in dependency order:

- ``vae2d``: the per-frame 2D VAE (R2's SD-VAE baseline), f_s = 4, |z| = 4 on 32 px frames; the latent space
  of Latte, the U-Net, t2v, i2v, Tora, the full system's ``cpu`` preset and so the demo.
- ``causal-vae``: CogVideoX's causal 3D VAE (C1), 4 x 8 x 8, |z| = 16, on 64 px clips of 9 frames.
- ``reducio-vae``: Reducio's VAE (R1-R2) with the content frame, 4 x 32 x 32, |z| = 16, on 64 px clips of 8 frames.
- ``pvdm-ae``: PVDM's triplane autoencoder (P1-P4, P6), 32 px clips of 8 frames.
- ``pvdm-unet``: PVDM's plane U-Net (P7-P8) on ``pvdm-ae``'s planes.
- ``latte``: Latte (variant 1, L1-L8) with v-prediction on ``vae2d``'s latents, class-conditional with the null
  label for classifier-free guidance.
- ``latent-unet``: the latent video U-Net (:class:`~minivid.unets.VideoUNet`, a 3-frame temporal convolution at
  every level) on ``vae2d``'s latents of one-sprite clips, class-conditional on colour x motion (32 classes).
- ``motion-vae``: Tora's motion VAE (T5), the causal 3D VAE's blocks configured 1 x 4 x 4, trained on flow
  videos of MiniSprites' dense and sparse trajectories.
- ``t5``: the T5 text encoder, learnt from scratch inside the full system's ``cpu`` preset, then held frozen by
  ``t2v`` and every full system (as CogVideoX holds its pretrained T5).
- ``t2v``: text-to-video (:mod:`minivid.pipeline.text2video`): a T5 and CogVideoX's expert transformer on
  ``vae2d``'s latents of one-sprite clips, v-prediction at zero terminal SNR (D10); scored by the sprite check and
  the caption accuracy (colour, direction) of its samples.
- ``i2v``: image-to-video (:mod:`minivid.pipeline.image2video`): an OpenCLIP tower and Reducio-DiT (R4-R5)
  cross-attending to a clip's first frame, on ``vae2d``'s latents; scored by the sprite check and whether its
  samples keep the frame's sprite colour and start where the frame has it.
- ``tora``: Tora (T1-T8), ST-DiT on ``vae2d``'s latents with the first frame given, trajectories through
  ``motion-vae``, the extractor and the best of three fusers; scored by trajectory error in pixels.
- ``system``, ``system-causal``, ``system-reducio``: the full system (:mod:`minivid.pipeline.system`) as the
  ``cpu``, ``cpu-causal`` and ``cpu-reducio`` presets train it, on ``vae2d``'s, ``causal-vae``'s and
  ``reducio-vae``'s latents; ``python -m minivid demo --pretrained`` samples ``system``.

An autoencoder's card reports held-out PSNR/SSIM beside the latent-free baselines (clip mean colour, average
frame, block means); a denoiser's the sprite-check pass rate (:func:`minivid.metrics.sprite_check`) of its samples
beside real clips (the ceiling) and noise (the floor).
"""

from __future__ import annotations

import platform
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..autoencoders import (AutoencoderTrainer, CausalVAE, CausalVAEConfig, LatentSpace, ReducioConfig, ReducioVAE,
                            VAE2D, VAE2DConfig)
from ..autoencoders.compare import evaluate, frames_without_content, reference_psnr
from ..autoencoders.pvdm import PVDMAutoencoder, PVDMAutoencoderConfig
from ..data import MiniSprites, track_sprites
from ..metrics.sprites import centre_jitter, sprite_scores
from ..diffusion import (DiffusionTrainer, NoiseSchedule, classifier_free_guidance, dpm_solver_pp_sample,
                         make_timesteps)
from ..nn import save_model
from ..pretrained import CARD_FILE, card as read_card, load as load_pretrained, zoo_root
from ..transformers import Latte, LatteConfig
from ..unets import PlaneUNet, PlaneUNetConfig, VideoUNet, VideoUNetConfig
from ..utils.checkpoint import save_json
from ..utils.files import fsync_dir
from ..utils.machine import device_name, versions
from ..utils.validation import check_int
from .pvdm import JointTrainer, generate_long_video

SEED = 0


# ---------------------------------------------------------------------------------------------- data
def clip_pool(n: int, size: int, frames: int, split: str = "train", seed: int = SEED,
              dtype: torch.dtype = torch.float32, num_sprites=(1, 3)) -> torch.Tensor:
    """``n`` MiniSprites clips (n, 3, T, H, W) in [-1, 1], rendered once (item i of the split, a pure function)."""
    data = MiniSprites(num_videos=n, size=size, num_frames=frames, split=split, seed=seed, num_sprites=num_sprites)
    return torch.stack([data[i]["video"].to(dtype) for i in range(n)])


def labelled_pool(n: int, size: int, frames: int, split: str = "train", seed: int = SEED):
    data = MiniSprites(num_videos=n, size=size, num_frames=frames, split=split, seed=seed)
    items = [data[i] for i in range(n)]
    return torch.stack([it["video"] for it in items]), torch.tensor([it["label"] for it in items])


# ---------------------------------------------------------------------------------------------- metrics
def sprite_baselines(size: int, frames: int, n: int = 64, num_sprites=(1, 3)) -> dict:
    """The ceiling (held-out real clips) and floor (uniform noise) of the sprite check at this clip size."""
    real = clip_pool(n, size, frames, split="test", num_sprites=num_sprites)
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(SEED)) * 2 - 1
    return {"real clips": sprite_scores(real), "uniform noise": sprite_scores(noise)}


CONFIG_KEYS = ("run", "system_run")  # card fields holding a run's config: kept exact (1e-5 is not 0.0)


def _round(d):
    if isinstance(d, dict):
        return {k: v if k in CONFIG_KEYS else _round(v) for k, v in d.items()}
    if isinstance(d, float):
        return round(d, 4) if d == d else None  # NaN -> null (JSON has no NaN)
    return d


# ---------------------------------------------------------------------------------------------- training loops
def _bar(total: int, desc: str, progress: bool):
    return tqdm(total=total, desc=desc, disable=not progress, dynamic_ncols=True, mininterval=5.0)


def train_autoencoder(model, pool: torch.Tensor, steps: int, batch: int, lr: float, warmup: int,
                      frames_only: bool = False, l1_weight: float = 1.0, l2_weight: float = 1.0, kl_weight: float = 1e-6,
                      progress: bool = True, log: Callable[[str], None] = print, image_steps: int = 0,
                      image_batch: int = 32) -> AutoencoderTrainer:
    """``steps`` updates on random clips of ``pool`` (``frames_only``: random frames, as 1-frame clips): L1 + MSE +
    KL (R2), Adam (0.9, 0.99), linear warm-up and cosine decay over ``steps``. The first ``image_steps`` updates
    take ``image_batch`` random frames as 1-frame clips (images first, as CogVideoX trains its VAE on images and
    videos; a causal VAE takes an image as a 1-frame video)."""
    if not 0 <= image_steps <= steps:
        raise ValueError(f"image_steps={image_steps} must be in [0, steps={steps}]")
    trainer = AutoencoderTrainer(model, lr=lr, l1_weight=l1_weight, l2_weight=l2_weight, kl_weight=kl_weight, grad_clip=1.0,
                                 betas=(0.9, 0.99), seed=SEED, warmup_steps=warmup, total_steps=steps)
    g = torch.Generator().manual_seed(SEED)
    bar = _bar(steps, type(model).__name__, progress)
    for step in range(steps):
        if frames_only or step < image_steps:
            n, _, t = pool.shape[:3]
            b = batch if frames_only else image_batch
            idx, f = torch.randint(n, (b,), generator=g), torch.randint(t, (b,), generator=g)
            x = pool[idx, :, f][:, :, None]  # (B, 3, 1, H, W)
        else:
            x = pool[torch.randint(len(pool), (batch,), generator=g)]
        logs = trainer.step(x.float())
        bar.update(1)
        if (step + 1) % max(1, steps // 10) == 0:
            log(f"  step {step + 1}/{steps}: l1 {logs['l1']:.4f} lr {logs['lr']:.2e}")
    bar.close()
    return trainer


def latent_grid_baseline(test: torch.Tensor, factors: tuple[int, int, int]) -> float:
    """PSNR of the latent-free code on the latent's own grid: each (f_t x f_s x f_s) block of a clip replaced by
    its mean colour (3 numbers per latent position, where the VAE keeps |z|)."""
    from ..metrics import psnr

    f_t, f_s, _ = factors
    f_t = f_t if test.shape[2] % f_t == 0 else 1  # the causal VAE's 4k+1 frames: per-frame blocks
    low = torch.nn.functional.avg_pool3d(test, (f_t, f_s, f_s))
    up = torch.nn.functional.interpolate(low, scale_factor=(f_t, f_s, f_s), mode="nearest")
    return psnr(up, test).mean().item()


def autoencoder_metrics(model, test: torch.Tensor) -> dict:
    """Held-out PSNR/SSIM of the posterior-mode reconstructions next to the latent-free baselines. A decoder that is
    also given a content frame (Reducio, R2) gets that frame repeated over the clip as one more baseline (what its side
    information alone gives), and ``psnr_without_content_frame``: the per-frame PSNR averaged over the other frames
    (a decoder that copies the content frame scores ~60 dB on it, which lifts an 8-frame average by ~5 dB). For such a
    decoder ``margin_db`` is ``psnr_without_content_frame`` minus the best baseline (``margin_on`` says which PSNR):
    the frames it is not given are the ones its latent must carry."""
    from ..metrics import psnr

    ev = evaluate(model.eval(), test)
    base = reference_psnr(test)
    f_t, f_s, _ = model.downsample
    base[f"{f_t}x{f_s}x{f_s} block means (the latent grid)"] = latent_grid_baseline(test, model.downsample)
    content = model.conditions(test).get("content")
    if content is not None:  # Reducio: frames other than the content frame, which the decoder is given
        others = frames_without_content(model, test.shape[2])
        base["content frame repeated (the decoder's side information)"] = psnr(
            content[:, :, None].expand_as(test)[:, :, others], test[:, :, others]).mean().item()
    best = max(base.values())
    scored = "psnr_without_content_frame" if content is not None else "psnr"
    out = {"psnr": ev["psnr"], "ssim": ev["ssim"], "baselines_psnr": base, "best_baseline_psnr": best,
           "margin_db": ev[scored] - best, "margin_on": scored, "test_clips": len(test),
           "latent_shape": list(model.latent_shape(tuple(test[:1].shape))[1:]) if not isinstance(
               model, PVDMAutoencoder) else [list(s[1:]) for s in model.latent_shape(tuple(test[:1].shape))],
           "input_shape": list(test.shape[1:])}
    for k in ("psnr_without_content_frame", "psnr_wrong_content", "wrong_content_wins", "psnr_wrong_latent"):
        if k in ev:
            out[k] = ev[k]
    return out


# ---------------------------------------------------------------------------------------------- recipes
@dataclass
class Recipe:
    name: str
    description: str
    steps: int
    run: Callable  # (steps, progress, log) -> (model, card fields)
    score: Callable  # (model, card) -> held-out metrics (the card's "metrics")
    requires: tuple[str, ...] = ()
    storage: str = "float32"  # "float16": weights stored in half precision, metrics re-measured on them


def zoo_latent_space(name: str, scale: float | None = None) -> LatentSpace:
    """The latent space of zoo autoencoder ``name``, scaled by ``scale`` (a denoiser's card records the one it was
    trained with) or, when None, by the autoencoder's own card."""
    return LatentSpace(load_pretrained(name), read_card(name)["latent_scale"] if scale is None else scale)


def _vae2d(steps, progress, log):
    size, frames = 32, 8
    model = VAE2D(VAE2DConfig(spatial_factor=4, latent_channels=4, channels=16, channel_mult=(1, 2, 2),
                              num_res_blocks=1, norm_groups=8, num_mid_blocks=0, init_logvar=-6.0))
    pool = clip_pool(2048, size, frames, dtype=torch.float16)
    train_autoencoder(model, pool, steps, batch=32, lr=2e-3, warmup=min(100, steps // 10), frames_only=True,
                      progress=progress, log=log)
    space = LatentSpace.fit(model, clip_pool(256, size, frames))
    return model, {"data": {"size": size, "frames": frames, "train_clips": 2048, "batch": "32 frames"},
                   "metrics": _score_ae(model, {"data": {"size": size, "frames": frames}}), "latent_scale": space.scale}


def _score_ae(model, card: dict) -> dict:
    """Held-out metrics of a zoo autoencoder on 64 test clips (32 at 64 px) of its card's clip size."""
    size, frames = card["data"]["size"], card["data"]["frames"]
    return autoencoder_metrics(model, clip_pool(64 if size <= 32 else 32, size, frames, split="test"))


def _causal_vae(steps, progress, log):
    size, frames = 64, 9
    model = CausalVAE(CausalVAEConfig(latent_channels=16, channels=16, channel_mult=(1, 2, 2, 4), num_res_blocks=1,
                                      norm_groups=8, init_logvar=-6.0, shortcuts=True))
    pool = clip_pool(1024, size, frames, dtype=torch.float16)
    # images first (1-frame clips: the spatial code at 1/3 of a 9-frame step's cost), then 9-frame clips
    image_steps = 3 * steps // 5
    train_autoencoder(model, pool, steps, batch=4, lr=2e-3, warmup=min(100, steps // 10), progress=progress, log=log,
                      image_steps=image_steps, image_batch=32)
    data = {"size": size, "frames": frames, "train_clips": 1024, "batch": 4,
            "images_first": f"{image_steps} updates of 32 frames as 1-frame clips, then clips"}
    return model, {"data": data, "metrics": _score_ae(model, {"data": data}),
                   "latent_scale": causal_latent_scale(model)}


def causal_latent_scale(model) -> float:
    """The causal VAE's latent scale (the full system's ``cpu-causal`` preset multiplies its latents by it): 1 / std
    of the posterior means of 256 training clips of 64 px x 9 frames (:meth:`LatentSpace.fit`, as for vae2d)."""
    return LatentSpace.fit(model, clip_pool(256, 64, 9)).scale


# The zoo's Reducio VAE (R2's layout at width 16) with minivid's fusion_skip, latent_skip (without it the decoder learnt
# to ignore its latent) and content_warp with warp_latent (a moved sprite is a displacement of the content frame's
# pixels, not a shape painted from a 2 x 2 latent): bench/results/measurements.md
REDUCIO_CONFIG = dict(spatial_factor=32, temporal_factor=4, latent_channels=16, use_content=True, channels=16,
                      num_res_blocks=1, norm_groups=8, content_channels=16, content_num_res_blocks=1,
                      fusion_head_dim=32, init_logvar=-6.0, fusion_skip=True, latent_skip=True, content_warp=5,
                      warp_latent=True)


def _reducio_vae(steps, progress, log):
    size, frames = 64, 8
    model = ReducioVAE(ReducioConfig(**REDUCIO_CONFIG))
    pool = clip_pool(1024, size, frames, dtype=torch.float16)
    train_autoencoder(model, pool, steps, batch=4, lr=2e-3, warmup=min(100, steps // 10), progress=progress, log=log)
    data = {"size": size, "frames": frames, "train_clips": 1024, "batch": 4}
    return model, {"data": data, "metrics": _score_ae(model, {"data": data}),
                   "latent_scale": reducio_latent_scale(model)}


def reducio_latent_scale(model) -> float:
    """The Reducio VAE's latent scale (the full system's ``cpu-reducio`` preset multiplies its latents by it): 1 / std
    of the posterior means of 256 training clips of 64 px x 8 frames (:meth:`LatentSpace.fit`). Its decoder
    layer-normalises the latent (R2), so the scale changes what the denoiser sees, not what is decoded."""
    return LatentSpace.fit(model, clip_pool(256, 64, 8)).scale


def _motion_vae(steps, progress, log):
    from .tora import TORA_FRAMES, TORA_SIZE, flow_weight, motion_pool, motion_vae_config

    model = CausalVAE(motion_vae_config())
    pool = motion_pool(2048)
    trainer = AutoencoderTrainer(model, lr=2e-3, l1_weight=1.0, l2_weight=1.0, kl_weight=1e-6, grad_clip=1.0,
                                 betas=(0.9, 0.99), seed=SEED, warmup_steps=min(100, steps // 10), total_steps=steps,
                                 pixel_weight=flow_weight)
    g = torch.Generator().manual_seed(SEED)
    bar = _bar(steps, "motion VAE", progress)
    for step in range(steps):
        logs = trainer.step(pool[torch.randint(len(pool), (8,), generator=g)].float())
        bar.update(1)
        if (step + 1) % max(1, steps // 10) == 0:
            log(f"  step {step + 1}/{steps}: weighted l1 {logs['l1']:.4f} lr {logs['lr']:.2e}")
    bar.close()
    data = {"size": TORA_SIZE, "frames": TORA_FRAMES, "train_clips": 2048, "batch": 8,
            "flow": "mixed: dense (exact sprite motion) and sparse (1..N sprite paths, blurred)"}
    space = LatentSpace.fit(model, motion_pool(256, seed=SEED + 7).float())
    return model, {"data": data, "metrics": _score_motion_vae(model, {"data": data}), "latent_scale": space.scale}


def _score_motion_vae(model, card: dict) -> dict:
    from .tora import motion_pool, motion_vae_metrics

    size, frames = card["data"]["size"], card["data"]["frames"]
    return {"mixed": motion_vae_metrics(model, motion_pool(64, size, frames, split="test")),
            "sparse_one_object": motion_vae_metrics(model, motion_pool(64, size, frames, kind="sparse", split="test",
                                                                       num_sprites=1))}


TORA_LR = 2e-3  # the tora recipe's peak learning rate, every stage (1e-3 before stop 33; measurements.md)
# what the recipe's fuser stages train: every parameter, not only T8's extractor, fusers and temporal blocks
# (probe, concat only: sprite check 86% against 77%, 0.40 px against 0.45; measurements.md, stop 35)
TORA_FUSER_TRAINABLE = "all"


def _tora(steps, progress, log):
    from .tora import TORA_BLUR, TORA_FRAMES, TORA_SIZE, tora_recipe

    # first_frame_channels: sprite check 61% with concat against 34% without (measurements.md, stop 29); TORA_LR 2e-3:
    # concat 77% against 61% at 1e-3 (stop 33); TORA_FUSER_TRAINABLE "all": 86% against 77% (stop 35)
    model, fields = tora_recipe(zoo_latent_space("vae2d"), zoo_latent_space("motion-vae"), steps, progress=progress,
                                log=log, first_frame_channels=True, lr=TORA_LR,
                                fuser_trainable=TORA_FUSER_TRAINABLE)
    data = {"size": TORA_SIZE, "frames": TORA_FRAMES, "train_clips": 4096, "batch": 32, "num_sprites": [1, 2],
            "blur": list(TORA_BLUR), "test": "64 held-out one-sprite clips: first frame + the sprite's own path"}
    return model, {"data": data, "latent_scale": read_card("vae2d")["latent_scale"],
                   "motion_latent_scale": read_card("motion-vae")["latent_scale"], "metrics": fields}


def _score_tora(model, card: dict) -> dict:
    from .tora import tora_data, tora_scores

    space = zoo_latent_space("vae2d", card["latent_scale"])
    motion = zoo_latent_space("motion-vae", card["motion_latent_scale"])
    test = tora_data(space, motion, 64, split="test", num_sprites=1)
    metrics = dict(card.get("metrics") or {})
    metrics.setdefault("table", {})[card["metrics"]["fuser"]] = tora_scores(model, space, test)
    return metrics


PVDM_SIZE, PVDM_FRAMES, PVDM_CLIPS = 32, 8, 4
PVDM_SPRITES = (1, 3)  # sprites per training video (one sprite: 9% vs 6% pass, not shipped; see measurements.md)
# The planes are diffused as they are, as in the release (tanh-bounded; std ~0.35 here). True: scaled to unit std
# (LDM's scale factor, x2.5, in the card as latent_scale): 2 of 32 pass either way, not adopted (measurements.md).
PVDM_UNIT_STD = False
PVDM_LATENT_NOISE = 0.0  # PVDMAutoencoderConfig.latent_noise of the recipe's autoencoder
# > 0: the plane U-Net is class-conditional (PlaneUNetConfig.num_classes, minivid's addition) on the colour x
# motion classes of one-sprite videos (as the zoo's Latte and latent U-Net), sampled with classifier-free guidance.
# Unconditional (PVDM's own setting, 0): 6% of first clips pass the sprite check, their colours change within a
# clip; class-conditional, 9000 steps, guidance 3: 89% of 64 (measurements.md)
COLOR_MOTION_CLASSES = 32  # 8 palette colours x 4 motions (one-sprite clips: color_motion_pool)
PVDM_CLASSES = COLOR_MOTION_CLASSES
PVDM_GUIDANCE = 3.0


def _pvdm_ae(steps, progress, log):
    model = PVDMAutoencoder(PVDMAutoencoderConfig(patch_size=4, latent_channels=4, dim=64, encoder_depth=1,
                                                  decoder_depth=1, projector_depth=1, heads=4, projector_heads=4,
                                                  mlp_ratio=2.0, latent_noise=PVDM_LATENT_NOISE))
    pool = clip_pool(2048, PVDM_SIZE, PVDM_FRAMES, dtype=torch.float16)
    # MSE only: L1's gradient treats the small sprites like the background, and PVDM's transformer autoencoder then
    # sits at the average frame for longer (P6's release uses 4 L1 + 4 LPIPS + GAN at 256 px)
    train_autoencoder(model, pool, steps, batch=8, lr=2e-3, warmup=min(100, steps // 10), l1_weight=0.0,
                      kl_weight=0.0, progress=progress, log=log)
    data = {"size": PVDM_SIZE, "frames": PVDM_FRAMES, "train_clips": 2048, "batch": 8, "loss": "MSE"}
    return model, {"data": data, "metrics": _score_ae(model, {"data": data})}


def _pvdm_unet(steps, progress, log):
    from einops import rearrange

    ae = load_pretrained("pvdm-ae")
    n_videos = 512
    sprites, labels = PVDM_SPRITES, None
    if PVDM_CLASSES:  # one-sprite videos with their colour x motion labels
        long, labels = color_motion_pool(n_videos, PVDM_SIZE, PVDM_CLIPS * PVDM_FRAMES)
        sprites = 1
    else:
        long = clip_pool(n_videos, PVDM_SIZE, PVDM_CLIPS * PVDM_FRAMES, num_sprites=sprites)  # PVDM_CLIPS clips each
    clips = rearrange(long, "b c (l s) h w -> (b l) c s h w", s=PVDM_FRAMES)
    with torch.no_grad():
        enc = [ae.encode(clips[i:i + 64]).value for i in range(0, len(clips), 64)]
    Z = [rearrange(torch.cat(p), "(b l) c i j -> b l c i j", l=PVDM_CLIPS) for p in zip(*enc)]
    scale = round(1.0 / float(torch.cat([z.flatten() for z in Z]).std()), 4) if PVDM_UNIT_STD else 1.0
    Z = [z * scale for z in Z]
    schedule = NoiseSchedule.linear(1000)
    unet = PlaneUNet(PlaneUNetConfig(in_channels=ae.latent_channels, channels=32, channel_mult=(1, 2),
                                     num_res_blocks=1, heads=4, num_classes=PVDM_CLASSES))
    trainer = JointTrainer(unet, schedule, lam=0.3, lr=1e-3, warmup_steps=min(100, steps // 10), ema_decay=0.999,
                           seed=SEED, total_steps=steps)
    g = torch.Generator().manual_seed(SEED)
    bar = _bar(steps, "PlaneUNet", progress)
    for step in range(steps):
        idx = torch.randint(n_videos, (32,), generator=g)
        l = torch.randint(1, PVDM_CLIPS, (32,), generator=g)
        logs = trainer.step(tuple(z[idx, l] for z in Z), tuple(z[idx, l - 1] for z in Z),
                            y=labels[idx] if labels is not None else None)
        bar.update(1)
        if (step + 1) % max(1, steps // 10) == 0:
            log(f"  step {step + 1}/{steps}: loss {logs['loss']:.4f}")
    bar.close()
    model = trainer.ema.eval()
    data = {"size": PVDM_SIZE, "frames": PVDM_FRAMES, "long_video_clips": PVDM_CLIPS, "train_videos": n_videos,
            "batch": 32, "num_sprites": sprites}
    if PVDM_CLASSES:
        data.update(labels="colour x motion (32 classes)", label_dropout=0.1)
    card = {"data": data, "autoencoder": "pvdm-ae", "schedule": "linear(1000)", "lam": 0.3, "latent_scale": scale}
    return model, {**card, "metrics": _score_pvdm_unet(model, card)}


def pvdm_labels(model, n: int) -> torch.Tensor | None:
    """The labels the zoo samples a class-conditional plane U-Net with (each class in turn), None for PVDM's own
    unconditional one."""
    k = getattr(model.config, "num_classes", 0)
    return torch.arange(n) % k if k else None


def pvdm_long_videos(model, ae, n: int = 32, num_clips: int = 2, seed: int = SEED,
                     latent_scale: float = 1.0, guidance: float = PVDM_GUIDANCE) -> torch.Tensor:
    """P9 with the zoo's PVDM: ``n`` videos of ``num_clips`` clips, DDIM eta = 1, 100 steps (the release's setting);
    ``latent_scale``: the card's (planes multiplied by it in training; 1.0 for entries made before it existed).
    A class-conditional U-Net gets the labels of :func:`pvdm_labels`, guided with scale ``guidance``."""
    p = ae.config.patch_size
    out = generate_long_video(model, ae, NoiseSchedule.linear(1000), num_clips=num_clips,
                              shape=(PVDM_FRAMES, PVDM_SIZE // p, PVDM_SIZE // p), batch_size=n,
                              generator=torch.Generator().manual_seed(seed), latent_scale=latent_scale,
                              y=pvdm_labels(model, n), guidance=guidance)
    return out["video"].clamp(-1, 1)


def _score_pvdm_unet(model, card: dict) -> dict:
    """Held-out scores of a plane U-Net: the first clips and the 16-frame videos of 32 long videos (64 for a
    class-conditional one: each of its 32 classes twice)."""
    n = 64 if getattr(model.config, "num_classes", 0) else 32
    video = pvdm_long_videos(model, load_pretrained("pvdm-ae"), n=n, latent_scale=card.get("latent_scale", 1.0))
    sprites = card.get("data", {}).get("num_sprites", (1, 3))  # entries made before the one-sprite recipe: 1-3
    out = {"samples": sprite_scores(video[:, :, :PVDM_FRAMES]), "long_videos_16_frames": sprite_scores(video),
           "baselines": sprite_baselines(PVDM_SIZE, PVDM_FRAMES, 64, num_sprites=sprites),
           "sampler": "DDIM eta=1, 100 steps per clip (the release's evaluation setting)"}
    labels = pvdm_labels(model, len(video))
    if labels is not None:
        out["samples"]["color_accuracy"] = color_accuracy(video[:, :, :PVDM_FRAMES], labels)
        out["long_videos_16_frames"]["color_accuracy"] = color_accuracy(video, labels)
        out["guidance"] = PVDM_GUIDANCE
    return out


LATTE_SIZE, LATTE_FRAMES = 32, 8


def latte_config(latent_channels: int = 4, latent_size: int = 8, frames: int = LATTE_FRAMES, dim: int = 96,
                 depth: int = 8, num_classes: int = COLOR_MOTION_CLASSES) -> LatteConfig:
    """The zoo's Latte: variant 1, depth 8 (four spatial and four temporal blocks; at depth 4 its samples passed the
    sprite check 58% against 84%, measurements.md), patch 2 on 8 x 8 latents (4 x 4 x 8 = 128 tokens),
    v-prediction with a plain MSE (no learned variance), class-conditional with the null label: by default on the 32 colour x motion classes of
    one-sprite clips (``color_motion_pool``, as the latent U-Net), ``num_classes=MiniSprites.num_classes`` for the 16
    shape x motion classes of 1-3 sprite clips."""
    return LatteConfig(variant=1, in_channels=latent_channels, num_frames=frames, size=latent_size, patch_size=2,
                       dim=dim, depth=depth, heads=4, num_classes=num_classes, class_dropout=0.1,
                       learn_sigma=False)


def latte_schedule(num_steps: int = 1000) -> NoiseSchedule:
    """The zoo's Latte (and latent U-Net): the cosine schedule (D1), v-prediction."""
    return NoiseSchedule.cosine(num_steps)


@torch.no_grad()
def sample_latte(model: Latte, space: LatentSpace, labels: torch.Tensor, guidance: float = 2.0, steps: int = 25,
                 seed: int = SEED, batch: int = 32, device: torch.device | str = "cpu",
                 num_train_timesteps: int = 1000) -> torch.Tensor:
    """Clips (N, 3, T, H, W) in [-1, 1] for class ``labels`` (N,): DPM-Solver++ (D8, log-SNR steps) with
    classifier-free guidance on the latents, then the autoencoder's decoder."""
    c = model.config
    s = latte_schedule(num_train_timesteps)
    g = torch.Generator().manual_seed(seed)
    out = []
    model.eval()
    for i in range(0, len(labels), batch):
        y = labels[i:i + batch].to(device)
        x_T = torch.randn((len(y), c.in_channels, c.num_frames, c.size, c.size), generator=g).to(device)
        fn = classifier_free_guidance(model, {"y": y}, {"y": torch.full_like(y, c.num_classes)}, guidance)
        z = dpm_solver_pp_sample(fn, x_T, s, make_timesteps(s, steps, "logsnr"), prediction="v")
        out.append(space.decode(z).cpu())
    return torch.cat(out)


def train_latte(space: LatentSpace, steps: int, batch: int = 32, lr: float = 1e-3, num_clips: int = 4096,
                progress: bool = True, log: Callable[[str], None] = print, config: LatteConfig | None = None):
    """Latte (``latte_config``) trained with v-prediction (D10) on the scaled latents of ``num_clips`` clips: one-sprite
    clips with colour x motion labels when the config has 32 classes (the zoo's), else 1-3 sprite clips with shape x
    motion labels; returns (EMA model, trainer)."""
    f = space.autoencoder.downsample[1]
    cfg = config or latte_config(space.autoencoder.latent_channels, LATTE_SIZE // f)
    if cfg.num_classes == COLOR_MOTION_CLASSES:
        videos, labels = color_motion_pool(num_clips)
    else:
        videos, labels = labelled_pool(num_clips, LATTE_SIZE, LATTE_FRAMES)
    latents = space.encode(videos)
    del videos
    torch.manual_seed(SEED)  # label dropout draws from the global generator
    model = Latte(cfg)
    trainer = DiffusionTrainer(model, latte_schedule(), prediction="v", lr=lr, warmup_steps=min(200, steps // 10),
                               ema_decay=0.999 if steps >= 2000 else 0.99, seed=SEED, total_steps=steps,
                               grad_clip=1.0)
    g = torch.Generator().manual_seed(SEED)
    bar = _bar(steps, "Latte", progress)
    for step in range(steps):
        idx = torch.randint(len(latents), (batch,), generator=g)
        trainer.step(latents[idx], y=labels[idx])
        bar.update(1)
        if (step + 1) % max(1, steps // 10) == 0:
            log(f"  step {step + 1}/{steps}: loss {sum(trainer.losses[-50:]) / len(trainer.losses[-50:]):.4f}")
    bar.close()
    return trainer.ema.eval(), trainer


def latte_metrics(model: Latte, space: LatentSpace, n: int = 64, guidance: float = 4.0) -> dict:
    k = model.config.num_classes
    labels = torch.arange(n) % k
    videos = sample_latte(model, space, labels, guidance=guidance)
    if k != COLOR_MOTION_CLASSES:
        return {"samples": sprite_scores(videos), "guidance": guidance, "sample_steps": 25,
                "baselines": sprite_baselines(LATTE_SIZE, LATTE_FRAMES, n)}
    real, real_labels = color_motion_pool(n, split="test")
    return {"samples": {**sprite_scores(videos), "color_accuracy": color_accuracy(videos, labels)},
            "guidance": guidance, "sample_steps": 25,
            "baselines": {"real clips": {**sprite_scores(real), "color_accuracy": color_accuracy(real, real_labels)},
                          "uniform noise": sprite_baselines(LATTE_SIZE, LATTE_FRAMES, n)["uniform noise"]}}


def _latte(steps, progress, log):
    space = zoo_latent_space("vae2d")
    model, _ = train_latte(space, steps, progress=progress, log=log)
    return model, {"data": {"size": LATTE_SIZE, "frames": LATTE_FRAMES, "train_clips": 4096, "batch": 32,
                            "num_sprites": 1, "labels": "colour x motion (32 classes)", "label_dropout": 0.1},
                   "autoencoder": "vae2d", "latent_scale": space.scale, "prediction": "v",
                   "schedule": "cosine(1000)", "metrics": latte_metrics(model, space)}


def _score_latte(model, card: dict) -> dict:
    space = zoo_latent_space(card["autoencoder"], card["latent_scale"])
    return latte_metrics(model, space)


# ---------------------------------------------------------------------------------------------- latent U-Net
def color_motion_pool(n: int, size: int = LATTE_SIZE, frames: int = LATTE_FRAMES, split: str = "train",
                      seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` one-sprite clips (n, 3, T, H, W) and their class labels colour * 4 + motion (32 classes, named by
    :func:`color_motion_name`): the label fixes the sprite's colour, so guidance pins it in every frame."""
    from ..data.minisprites import MOTIONS

    data = MiniSprites(num_videos=n, size=size, num_frames=frames, split=split, seed=seed, num_sprites=1)
    items = [data[i] for i in range(n)]
    labels = [int(it["labels"]["color"][0]) * len(MOTIONS) + int(it["labels"]["motion"][0]) for it in items]
    return torch.stack([it["video"] for it in items]), torch.tensor(labels)




def color_motion_name(label: int) -> str:
    from ..data.minisprites import COLOR_NAMES, MOTIONS

    return f"{COLOR_NAMES[label // len(MOTIONS)]} {MOTIONS[label % len(MOTIONS)]}"


def latent_unet_config(latent_channels: int = 4, channels: int = 32) -> VideoUNetConfig:
    """The zoo's latent U-Net: (2+1)-D residual blocks (a 3-frame temporal convolution at every level) at widths
    32-64-64 on 8 x 8 latents, space-time attention at 2 x 2, class-conditional on the 32 colour x motion classes."""
    return VideoUNetConfig(in_channels=latent_channels, channels=channels, channel_mult=(1, 2, 2), num_res_blocks=1,
                           num_classes=COLOR_MOTION_CLASSES)


def train_latent_unet(space: LatentSpace, steps: int, batch: int = 32, lr: float = 1e-3, num_clips: int = 4096,
                      label_dropout: float = 0.1, progress: bool = True, log: Callable[[str], None] = print):
    """The latent U-Net (``latent_unet_config``) trained with v-prediction on the cosine schedule on the scaled
    latents of ``num_clips`` one-sprite clips, labels replaced by the null class with probability
    ``label_dropout`` (classifier-free guidance); returns (EMA model, trainer)."""
    videos, labels = color_motion_pool(num_clips)
    latents = space.encode(videos)
    del videos
    torch.manual_seed(SEED)
    model = VideoUNet(latent_unet_config(space.autoencoder.latent_channels))
    trainer = DiffusionTrainer(model, latte_schedule(), prediction="v", lr=lr, warmup_steps=min(200, steps // 10),
                               ema_decay=0.999 if steps >= 2000 else 0.99, seed=SEED, total_steps=steps,
                               grad_clip=1.0)
    g = torch.Generator().manual_seed(SEED)
    bar = _bar(steps, "VideoUNet", progress)
    for step in range(steps):
        idx = torch.randint(len(latents), (batch,), generator=g)
        y = torch.where(torch.rand(batch, generator=g) < label_dropout, COLOR_MOTION_CLASSES, labels[idx])
        trainer.step(latents[idx], y=y)
        bar.update(1)
        if (step + 1) % max(1, steps // 10) == 0:
            log(f"  step {step + 1}/{steps}: loss {sum(trainer.losses[-50:]) / len(trainer.losses[-50:]):.4f}")
    bar.close()
    return trainer.ema.eval(), trainer


@torch.no_grad()
def sample_latent_unet(model: VideoUNet, space: LatentSpace, labels: torch.Tensor, guidance: float = 4.0,
                       steps: int = 25, seed: int = SEED, batch: int = 32, frames: int = LATTE_FRAMES,
                       latent_size: int = LATTE_SIZE // 4, device: torch.device | str = "cpu",
                       num_train_timesteps: int = 1000) -> torch.Tensor:
    """Clips (N, 3, T, H, W) in [-1, 1] for colour x motion ``labels`` (N,): DPM-Solver++ (D8, log-SNR steps)
    with classifier-free guidance against the null class, then the autoencoder's decoder."""
    s = latte_schedule(num_train_timesteps)
    g = torch.Generator().manual_seed(seed)
    c = model.config
    out = []
    model.eval()
    for i in range(0, len(labels), batch):
        y = labels[i:i + batch].to(device)
        x_T = torch.randn((len(y), c.in_channels, frames, latent_size, latent_size), generator=g).to(device)
        fn = classifier_free_guidance(model, {"y": y}, {"y": torch.full_like(y, c.num_classes)}, guidance)
        z = dpm_solver_pp_sample(fn, x_T, s, make_timesteps(s, steps, "logsnr"), prediction="v")
        out.append(space.decode(z).cpu())
    return torch.cat(out)


def color_accuracy(videos: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of clips in which the label's colour is tracked in every frame."""
    from ..data.minisprites import MOTIONS

    ok = [bool(torch.isfinite(track_sprites(v, [int(y) // len(MOTIONS)])[0]).all()) for v, y in zip(videos, labels)]
    return sum(ok) / len(ok)


def latent_unet_metrics(model: VideoUNet, space: LatentSpace, n: int = 64, guidance: float = 4.0) -> dict:
    labels = torch.arange(n) % COLOR_MOTION_CLASSES
    videos = sample_latent_unet(model, space, labels, guidance=guidance)
    real, real_labels = color_motion_pool(n, split="test")
    return {"samples": {**sprite_scores(videos), "color_accuracy": color_accuracy(videos, labels),
                        "color_accuracy_shuffled_labels": color_accuracy(videos, (labels + 4) % COLOR_MOTION_CLASSES)},
            "guidance": guidance, "sample_steps": 25,
            "baselines": {"real clips": {**sprite_scores(real), "color_accuracy": color_accuracy(real, real_labels)},
                          "uniform noise": sprite_baselines(LATTE_SIZE, LATTE_FRAMES, n)["uniform noise"]}}


def _latent_unet(steps, progress, log):
    space = zoo_latent_space("vae2d")
    model, _ = train_latent_unet(space, steps, progress=progress, log=log)
    return model, {"data": {"size": LATTE_SIZE, "frames": LATTE_FRAMES, "train_clips": 4096, "batch": 32,
                            "num_sprites": 1, "labels": "colour x motion (32 classes)", "label_dropout": 0.1},
                   "autoencoder": "vae2d", "latent_scale": space.scale, "prediction": "v",
                   "schedule": "cosine(1000)", "metrics": latent_unet_metrics(model, space)}


def _score_latent_unet(model, card: dict) -> dict:
    space = zoo_latent_space(card["autoencoder"], card["latent_scale"])
    return latent_unet_metrics(model, space)


def t2v_metrics(model, space: LatentSpace, n: int = 64, guidance: float = 4.0) -> dict:
    """Held-out scores of a text-to-video model: ``n`` captions of one-sprite test clips, the sprite check and the
    caption accuracy of its samples, next to real clips and to the same samples scored against shuffled captions."""
    from .text2video import caption_accuracy, caption_pool, sample_text_to_video

    real, captions = caption_pool(n, LATTE_SIZE, LATTE_FRAMES, split="test")
    videos = sample_text_to_video(model, space, captions, guidance=guidance)
    shuffled = captions[1:] + captions[:1]
    return {"samples": {**sprite_scores(videos), "caption_accuracy": caption_accuracy(videos, captions),
                        "caption_accuracy_shuffled_captions": caption_accuracy(videos, shuffled)},
            "guidance": guidance, "sample_steps": 25, "sampler": "DPM-Solver++(2M), trailing timesteps from SNR 0",
            "baselines": {"real clips": {**sprite_scores(real), "caption_accuracy": caption_accuracy(real, captions)},
                          "uniform noise": sprite_baselines(LATTE_SIZE, LATTE_FRAMES, n)["uniform noise"]}}


def t5_metrics(text, n: int = 64) -> dict:
    """What a caption's T5 embedding (masked mean of the encoder's output) hears, next to the same T5 randomly
    initialised: for ``n`` held-out one-sprite captions, how far the embedding moves when one word group is replaced
    (the colour by the next palette colour, the shape by the next shape, the motion phrase by another caption's), in
    units of the mean distance between two captions of the set. A T5 learnt through a video model moves most for
    what shows in the video."""
    from ..conditioning.text import TextEncoder
    from ..data.minisprites import COLOR_NAMES, SHAPES
    from .text2video import caption_pool

    _, captions = caption_pool(n, LATTE_SIZE, LATTE_FRAMES, split="test")
    parts = []
    for c in captions:
        words = c.split()
        if words[1] not in COLOR_NAMES or words[2] not in SHAPES:
            raise ValueError(f"caption {c!r} is not 'a COLOUR SHAPE MOTION'")
        parts.append((words[1], words[2], " ".join(words[3:])))

    def caption(color, shape, motion):
        return f"{'an' if color[0] in 'aeiou' else 'a'} {color} {shape} {motion}"

    def nxt(seq, x):
        return seq[(seq.index(x) + 1) % len(seq)]

    motions = [m for _, _, m in parts]
    swaps = {"colour": [caption(nxt(COLOR_NAMES, c), s, m) for c, s, m in parts],
             "shape": [caption(c, nxt(SHAPES, s), m) for c, s, m in parts],
             "motion": [caption(c, s, next(o for o in motions[i + 1:] + motions[:i] if o != m))
                        for i, (c, s, m) in enumerate(parts)]}

    @torch.no_grad()
    def embed(model, caps):
        h, mask = model(caps)
        m = mask.to(h.dtype)[..., None]
        return (h * m).sum(1) / m.sum(1)

    def moves(model):
        model = model.float().eval()
        base = embed(model, captions)
        typical = torch.cdist(base, base).sum() / (len(base) * (len(base) - 1))
        if typical == 0:
            raise ValueError(f"{type(model).__name__} embeds every caption alike: nothing to measure moves against")
        return {k: round(float((embed(model, v) - base).norm(dim=-1).mean() / typical), 3) for k, v in swaps.items()}

    torch.manual_seed(SEED)
    random_init = TextEncoder(text.config)
    return {"captions": len(captions), "moves": moves(text), "moves_random_init": moves(random_init),
            "unit": "mean distance between two held-out captions' embeddings"}


T5_RUN = {"lr": 1e-3, "text_from": None, "model.text.trainable": True, "model.transformer.rope_theta": 1e4,
          "dropout.trajectory_dropout": 0.1}  # the cpu preset before stop 39, where the T5 was learnt from scratch


def _t5(steps, progress, log):
    """The full system's cpu preset as it was before it took a frozen T5 (:data:`T5_RUN`: the T5 learnt from scratch
    with the rest), trained as the system recipe trains; the entry keeps the text encoder (its EMA weights)."""
    model, fields = _system(steps, progress, log, name="t5", overrides=T5_RUN)
    fields["system_run"], fields["system_metrics"] = fields.pop("run"), fields.pop("metrics")
    text = model.text
    return text, {**fields, "metrics": t5_metrics(text)}


def _score_t5(model, card: dict) -> dict:
    return t5_metrics(model)


T2V_LR = 2e-3  # the t2v recipe's peak learning rate (at 1500 steps: 5e-4 11%, 1e-3 28%, 2e-3 47%, 4e-3 48%; measurements.md)


def t2v_zoo_config():
    """The zoo's text-to-video model: the default config with a frozen T5 (CogVideoX keeps its pretrained T5 frozen),
    which the recipe starts from the zoo's ``t5`` (``train_text_to_video(text_encoder=...)``): ByT5 bytes learnt from
    scratch give the caption's colour in 31% of samples, that T5 in 88%; and the caption's pooled embedding in
    the transformer's modulation (``pooled_text``, minivid's option): sprite check 36% against 27% without it
    (bench/results/measurements.md)."""
    import dataclasses

    from .text2video import TextToVideoConfig

    config = TextToVideoConfig()
    return dataclasses.replace(config, text=dataclasses.replace(config.text, trainable=False),
                               transformer=dataclasses.replace(config.transformer, pooled_text=True, rope_theta=10.0))


def _t2v(steps, progress, log):
    from .. import pretrained
    from .text2video import train_text_to_video

    space = zoo_latent_space("vae2d")
    model, _ = train_text_to_video(space, steps, lr=T2V_LR, config=t2v_zoo_config(),
                                   text_encoder=pretrained.load("t5"), progress=progress,
                                   log=log)  # depth 4: depth 8 measured worse (T5 from scratch)
    return model, {"data": {"size": LATTE_SIZE, "frames": LATTE_FRAMES, "train_clips": 4096, "batch": 32,
                            "num_sprites": 1, "caption_dropout": 0.1},
                   "text_encoder": "the zoo's t5, frozen",
                   "autoencoder": "vae2d", "latent_scale": space.scale, "prediction": "v",
                   "schedule": "cogvideox(1000, snr_shift_scale=1): zero terminal SNR",
                   "metrics": t2v_metrics(model, space)}


def _score_t2v(model, card: dict) -> dict:
    space = zoo_latent_space(card["autoencoder"], card["latent_scale"])
    return t2v_metrics(model, space)


def i2v_metrics(model, space: LatentSpace, n: int = 64, guidance: float = 2.0) -> dict:
    """Held-out scores of an image-to-video model: the first frames of ``n`` one-sprite test clips, the sprite check
    of its samples and whether they start from their frame (:func:`~minivid.pipeline.image2video.image_to_video_scores`),
    next to real clips and to the same samples scored against shuffled frames."""
    from .image2video import conditioning_frames, image_to_video_scores, sample_image_to_video
    from .text2video import caption_pool

    real, _ = caption_pool(n, LATTE_SIZE, LATTE_FRAMES, split="test")
    images = conditioning_frames(real)
    videos = sample_image_to_video(model, space, images, guidance=guidance)
    shuffled = torch.roll(images, 1, dims=0)
    return {"samples": {**sprite_scores(videos), **image_to_video_scores(videos, images),
                        "shuffled_frames": image_to_video_scores(videos, shuffled)},
            "guidance": guidance, "sample_steps": 25, "sampler": "DPM-Solver++(2M), trailing timesteps from SNR 0",
            "baselines": {"real clips": {**sprite_scores(real), **image_to_video_scores(real, images)},
                          "uniform noise": sprite_baselines(LATTE_SIZE, LATTE_FRAMES, n)["uniform noise"]}}


def i2v_zoo_config():
    """The zoo's image-to-video model: :class:`~minivid.pipeline.image2video.ImageToVideoConfig`'s defaults with a
    Reducio-DiT of depth 8 (at depth 4 its samples passed the sprite check 75%: measurements.md, the section
    "`t2v` stays at depth 4")."""
    from dataclasses import replace

    from .image2video import ImageToVideoConfig, _default_dit

    return ImageToVideoConfig(dit=replace(_default_dit(), depth=8))


def _i2v(steps, progress, log):
    from .image2video import train_image_to_video

    space = zoo_latent_space("vae2d")
    model, _ = train_image_to_video(space, steps, config=i2v_zoo_config(), progress=progress, log=log)
    return model, {"data": {"size": LATTE_SIZE, "frames": LATTE_FRAMES, "train_clips": 4096, "batch": 32,
                            "num_sprites": 1, "conditioning_frame": 0, "image_dropout": 0.1},
                   "autoencoder": "vae2d", "latent_scale": space.scale, "prediction": "v",
                   "schedule": "cogvideox(1000, snr_shift_scale=1): zero terminal SNR",
                   "metrics": i2v_metrics(model, space)}


def _score_i2v(model, card: dict) -> dict:
    space = zoo_latent_space(card["autoencoder"], card["latent_scale"])
    return i2v_metrics(model, space)


def _system(steps, progress, log, preset: str = "cpu", name: str = "system", overrides: dict | None = None):
    """The full system's ``preset`` (minivid.pipeline.run) with ``overrides`` trained as a run in
    ``outputs/runs/zoo-<name>-<steps>`` (checkpoints every 500 steps and a log; an interrupted recipe resumes there,
    to the same weights), its EMA model kept; the card records the run's config."""
    from ..diffusion.training import latest_checkpoint
    from .run import preset_config, run_spaces, system_data, system_metrics, train_system

    cfg = preset_config(preset, {**(overrides or {}), "steps": steps})
    space, motion_space = run_spaces(cfg)
    log(f"  encoding {cfg.num_clips} training clips, their captions and sprite paths")
    data = system_data(space, motion_space, cfg.num_clips, cfg.size, cfg.frames, seed=cfg.seed)
    run = Path("outputs/runs") / f"zoo-{name}-{steps}"
    trainer = train_system(cfg, run, data, resume=latest_checkpoint(run / "checkpoints") is not None,
                           progress=progress, log=log)
    model = trainer.ema.eval()
    return model, {"run": cfg.to_dict(), "autoencoder": cfg.latent, "motion_autoencoder": cfg.motion_latent,
                   "latent_scale": space.scale, "prediction": "v", "schedule": "cogvideox(1000, shift 1): zero terminal SNR",
                   "data": {"size": cfg.size, "frames": cfg.frames, "train_clips": cfg.num_clips,
                            "batch": cfg.global_batch, "num_sprites": 1},
                   "metrics": system_metrics(model, cfg, space, motion_space)}


def _system_causal(steps, progress, log):
    return _system(steps, progress, log, preset="cpu-causal", name="system-causal")


def _system_reducio(steps, progress, log):
    return _system(steps, progress, log, preset="cpu-reducio", name="system-reducio")


def _score_system(model, card: dict) -> dict:
    from .run import SystemRunConfig, run_spaces, system_metrics

    cfg = SystemRunConfig.from_dict(card["run"])
    space, motion_space = run_spaces(cfg)
    return system_metrics(model, cfg, space, motion_space)


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("vae2d", "per-frame 2D VAE (R2 baseline), f_s=4, |z|=4, 32 px", 3000, _vae2d, _score_ae),
    Recipe("causal-vae", "CogVideoX causal 3D VAE (C1), 4x8x8, |z|=16, 64 px x 9 frames", 2500, _causal_vae,
           _score_ae, storage="float16"),
    Recipe("reducio-vae", "Reducio VAE (R1-R2), 4x32x32, |z|=16, content frame, 64 px x 8 frames", 3000,
           _reducio_vae, _score_ae, storage="float16"),
    Recipe("pvdm-ae", "PVDM triplane autoencoder (P1-P4), 32 px x 8 frames", 4000, _pvdm_ae, _score_ae),
    Recipe("pvdm-unet", "PVDM plane U-Net (P7-P9) on pvdm-ae's planes, class-conditional on colour x motion "
           "(minivid's addition), guided", 9000, _pvdm_unet, _score_pvdm_unet,
           ("pvdm-ae",)),
    Recipe("latte", "Latte variant 1, v-prediction, on vae2d latents of one-sprite clips, class = colour x motion", 5000, _latte,
           _score_latte, ("vae2d",)),
    Recipe("latent-unet", "latent video U-Net, v-prediction, on vae2d latents of one-sprite clips, class = colour x "
           "motion", 6000, _latent_unet, _score_latent_unet, ("vae2d",), storage="float16"),
    Recipe("t5", "the T5 text encoder (C4's text side) that t2v, the system and the demo hold frozen, as CogVideoX "
           "holds its pretrained T5: learnt from scratch inside the full system's cpu preset as first set (T5 "
           "trainable, lr 1e-3, RoPE theta 1e4)", 3000, _t5, _score_t5, ("vae2d", "motion-vae"), storage="float16"),
    Recipe("t2v", "text-to-video: T5 + CogVideoX expert transformer (C2-C5), v-prediction at zero terminal SNR "
           "(D10), on vae2d latents of one-sprite clips; the T5 is the zoo's t5, frozen", 3000, _t2v, _score_t2v,
           ("vae2d", "t5"), storage="float16"),
    Recipe("i2v", "image-to-video: OpenCLIP + Reducio-DiT (R4-R5) cross-attending to the first frame, v-prediction "
           "at zero terminal SNR (D10), on vae2d latents of one-sprite clips", 5000, _i2v, _score_i2v, ("vae2d",),
           storage="float16"),
    Recipe("motion-vae", "Tora's motion VAE (T5): the causal 3D VAE (C1 blocks), 1x4x4, |z|=4, trained on flow videos "
           "g_vis of MiniSprites (dense and sparse trajectories), 32 px x 8 frames", 3000, _motion_vae,
           _score_motion_vae, storage="float16"),
    Recipe("tora", "Tora (T1-T8): ST-DiT on vae2d latents, first frame given (un-noised, and its latent on every "
           "frame's channels), trajectories through the motion VAE, extractor and the best of three fusers; the fuser "
           "stages fine-tune every parameter", 3000, _tora, _score_tora, ("vae2d", "motion-vae"),
           storage="float16"),
    Recipe("system", "the full system (minivid.pipeline.system): T5 (the zoo's t5, frozen) + expert transformer "
           "with given frames (image, previous clip) and Tora's trajectory guidance, on vae2d latents of one-sprite "
           "clips; the cpu preset trained 6000 steps", 6000, _system, _score_system, ("vae2d", "motion-vae", "t5"),
           storage="float16"),
    Recipe("system-causal", "the full system on the causal 3D VAE's latents (C1: 64 px x 9 frames -> 16 x 3 x 8 x 8), "
           "trajectories' motion latents regrouped to that grid, continuation from each clip's last frame; the "
           "cpu-causal preset", 5000, _system_causal, _score_system, ("causal-vae", "motion-vae", "t5"),
           storage="float16"),
    Recipe("system-reducio", "the full system on the Reducio VAE's latents (R1-R2: 64 px x 8 frames -> 16 x 2 x 2 x 2), "
           "conditioned on each clip's content frame (OpenCLIP tokens and channels on the latent grid, R4; the "
           "decoder's content frame, R2) and its caption, continuation through the last frame; the cpu-reducio preset", 5000, _system_reducio,
           _score_system, ("reducio-vae",), storage="float16"),
]}


EVAL_KINDS = ("autoencoder", "denoiser")


@torch.no_grad()
def zoo_eval_set(name: str, n: int = 64, root: str | Path | None = None) -> dict:
    """What ``python -m minivid eval --checkpoint NAME`` scores: ``{"videos", "reference", "paired", "captions",
    "paths", "colors", "from_frame", "what"}`` for zoo entry ``name``. Autoencoders: reconstructions (posterior mode)
    of ``n`` MiniSprites test clips at their card's size, paired with those clips. Denoisers: ``n`` samples made as the
    card's metrics make them (same seeds, labels, captions, first frames or paths), against ``n`` held-out real clips
    of the same kind (one-sprite clips where the model was trained on them)."""
    if name not in RECIPES:
        raise ValueError(f"name={name!r} is not a zoo recipe; allowed: {sorted(RECIPES)}")
    if name == "motion-vae":
        raise ValueError("motion-vae reconstructs flow videos (T5), not MiniSprites clips: evaluate it with "
                         "`python -m minivid train motion-vae --rescore` (its card's metrics)")
    if name == "t5":
        raise ValueError("t5 is a text encoder and makes no videos: its card's metrics score its caption embeddings "
                         "(`python -m minivid train t5 --rescore`); the videos made with it are t2v's and system's")
    n = check_int("n", n, 2)
    card = read_card(name, root)
    model = load_pretrained(name, root=root).eval()
    out = {"captions": None, "paths": None, "colors": None, "from_frame": 0, "paired": False}
    torch.manual_seed(SEED)
    if name in ("vae2d", "causal-vae", "reducio-vae", "pvdm-ae"):
        test = clip_pool(n, card["data"]["size"], card["data"]["frames"], split="test")
        rec = []
        for i in range(0, n, 8):
            x = test[i:i + 8]
            rec.append(model.decode(model.encode(x).mode(), **model.conditions(x)).clamp(-1, 1))
        out.update(videos=torch.cat(rec), reference=test, paired=True,
                   what=f"reconstructions of {n} MiniSprites test clips (posterior mode)")
        return out
    from .text2video import caption_pool

    if name == "latte":
        k = model.config.num_classes
        out.update(videos=sample_latte(model, zoo_latent_space(card["autoencoder"], card["latent_scale"]),
                                       torch.arange(n) % k, guidance=4.0),
                   reference=(color_motion_pool(n, split="test")[0] if k == COLOR_MOTION_CLASSES
                              else clip_pool(n, LATTE_SIZE, LATTE_FRAMES, split="test")),
                   what=f"{n} class-conditional samples (guidance 4, 25 steps) vs {n} test clips")
    elif name == "latent-unet":
        space = zoo_latent_space(card["autoencoder"], card["latent_scale"])
        out.update(videos=sample_latent_unet(model, space, torch.arange(n) % COLOR_MOTION_CLASSES),
                   reference=color_motion_pool(n, split="test")[0],
                   what=f"{n} colour x motion samples (guidance 4, 25 steps) vs {n} one-sprite test clips")
    elif name == "t2v":
        from .text2video import sample_text_to_video

        real, captions = caption_pool(n, LATTE_SIZE, LATTE_FRAMES, split="test")
        space = zoo_latent_space(card["autoencoder"], card["latent_scale"])
        out.update(videos=sample_text_to_video(model, space, captions), reference=real, captions=captions,
                   what=f"{n} samples for the captions of {n} one-sprite test clips (guidance 4) vs those clips")
    elif name == "i2v":
        from .image2video import conditioning_frames, sample_image_to_video

        real, _ = caption_pool(n, LATTE_SIZE, LATTE_FRAMES, split="test")
        space = zoo_latent_space(card["autoencoder"], card["latent_scale"])
        out.update(videos=sample_image_to_video(model, space, conditioning_frames(real)), reference=real,
                   what=f"{n} samples from the first frames of {n} one-sprite test clips (guidance 2) vs those clips")
    elif name == "pvdm-unet":
        out.update(videos=pvdm_long_videos(model, load_pretrained("pvdm-ae", root=root), n=n,
                                           latent_scale=card.get("latent_scale", 1.0))[:, :, :PVDM_FRAMES],
                   reference=clip_pool(n, PVDM_SIZE, PVDM_FRAMES, split="test",
                                       num_sprites=card["data"].get("num_sprites", (1, 3))),
                   what=f"first clips of {n} long videos (DDIM eta 1, 100 steps"
                        + (f"; colour x motion classes, guidance {PVDM_GUIDANCE:g}" if model.config.num_classes else "")
                        + f") vs {n} test clips")
    elif name == "tora":
        from .tora import TORA_FRAMES, TORA_SIZE, sample_tora, tora_data

        space = zoo_latent_space("vae2d", card["latent_scale"])
        motion = zoo_latent_space("motion-vae", card["motion_latent_scale"])
        test = tora_data(space, motion, n, split="test", num_sprites=1)
        real = MiniSprites(num_videos=n, size=TORA_SIZE, num_frames=TORA_FRAMES, split="test", seed=SEED,
                           num_sprites=1)
        out.update(videos=sample_tora(model, space, test.video[:, :, 0], test.sparse, test.null),
                   reference=torch.stack([real[i]["video"] for i in range(n)]),
                   paths=torch.stack([p[0] for p in test.paths]), colors=test.colors[:, 0], from_frame=1,
                   what=f"{n} samples from the first frames and sprite paths of {n} one-sprite test clips vs those "
                        "clips (trajectory error over frames 1..)")
    elif name in ("system", "system-causal", "system-reducio"):
        from .run import SystemRunConfig, run_spaces, system_eval_set

        cfg = SystemRunConfig.from_dict(card["run"])
        out.update(system_eval_set(model, cfg, *run_spaces(cfg), n))
    else:  # a recipe added later without an eval set
        raise ValueError(f"zoo entry {name!r} has no evaluation set yet")
    return out


def _commit() -> str | None:
    return versions().get("minivid_commit")


def train_zoo_model(name: str, out: str | Path | None = None, steps: int | None = None, progress: bool = True,
                    threads: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Run recipe ``name`` and write its zoo entry to ``out`` (default ``data/pretrained/<name>``); return the card.
    The entry is written to ``<out>.partial`` and renamed when complete."""
    if name not in RECIPES:
        raise ValueError(f"name={name!r} is not a zoo recipe; allowed: {sorted(RECIPES)}")
    recipe = RECIPES[name]
    steps = recipe.steps if steps is None else check_int("steps", steps, 1)
    if threads is not None:
        torch.set_num_threads(check_int("threads", threads, 1))
    out = Path(out) if out is not None else zoo_root() / name
    lines: list[str] = []

    def log_line(msg: str) -> None:
        lines.append(msg)
        log(msg)

    torch.manual_seed(SEED)
    t0 = time.monotonic()
    model, fields = recipe.run(steps, progress, log_line)
    seconds = time.monotonic() - t0
    command = "python -m minivid train " + name + ("" if steps == recipe.steps else f" --steps {steps}")
    card = {"name": name, "description": recipe.description, "model_class": type(model).__name__,
            "parameters": model.num_parameters(), "command": command, "steps": steps,
            "train_seconds": round(seconds, 1), "threads": torch.get_num_threads(), "machine": device_name("cpu"),
            "platform": platform.platform(), "torch": torch.__version__, "commit": _commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "requires": list(recipe.requires),
            **_round(fields)}
    if recipe.storage == "float16":
        model = _to_half_storage(model, card, recipe, log_line)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    save_model(model.eval(), partial, metadata={"zoo": name, "steps": steps})
    save_json(card, partial / CARD_FILE)
    (partial / "train.log").write_text("\n".join([f"$ {command}", *lines, ""]))
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    fsync_dir(out.parent)
    if out.parent == zoo_root():
        write_zoo_readme()
    return card


def _to_half_storage(model, card: dict, recipe: Recipe, log: Callable[[str], None]):
    """Round the weights to float16 for storage (the zoo stays near 40 MB), keep the float32 metrics in the card as
    ``metrics_float32`` and re-measure ``metrics`` on the rounded weights (what ``load`` gives back)."""
    card["metrics_float32"] = card.get("metrics")
    model = model.half().float().eval()
    torch.manual_seed(SEED)
    card["metrics"] = _round(recipe.score(model, card))
    card["storage_dtype"] = "float16"
    log("  stored in float16; metrics re-measured on the rounded weights")
    return model.half()


def store_half(name: str, root: str | Path | None = None) -> dict:
    """Convert an existing float32 zoo entry to float16 storage (what recipes with ``storage="float16"`` do at the
    end of training), re-measuring its metrics on the rounded weights; returns the card."""
    recipe = RECIPES[name]
    card = read_card(name, root)
    if card.get("storage_dtype") == "float16":
        return card
    model = load_pretrained(name, root=root)
    model = _to_half_storage(model, card, recipe, lambda msg: None)
    folder = zoo_root(root) / name
    save_model(model.eval(), folder, metadata={"zoo": name, "steps": card["steps"]})
    save_json(card, folder / CARD_FILE)
    write_zoo_readme(root)
    return card


def _summary(card: dict) -> str:
    m = card.get("metrics", {})
    if "psnr" in m:
        best = max(m["baselines_psnr"], key=m["baselines_psnr"].get)
        other = (f"; {m['psnr_without_content_frame']:.2f} dB on the frames other than the content frame, which "
                 "the decoder is given" if "psnr_without_content_frame" in m else "")
        return (f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}{other} (best latent-free baseline: {best}, "
                f"{m['best_baseline_psnr']:.2f} dB)")
    if "samples" in m:
        b = m["baselines"]
        return (f"sprite check {m['samples']['sprite_check']:.0%} of {m['samples']['clips']} samples (real clips "
                f"{b['real clips']['sprite_check']:.0%}, noise {b['uniform noise']['sprite_check']:.0%})")
    if "sparse_one_object" in m:
        s = m["sparse_one_object"]
        return (f"one-object flow videos: clip PSNR {s['clip_psnr']:.2f} dB (all-white output "
                f"{s['clip_psnr_all_white']:.2f} dB), the marks' centre moves {s['mark_centre_error_px']:.2f} px")
    if "table" in m:
        c, none = m["table"][m["fuser"]], m["table"]["no trajectory"]
        return (f"trajectory error {c['trajectory_error_px']:.2f} px with the {m['fuser']} fuser (no trajectory "
                f"{none['trajectory_error_px']:.2f} px), sprite lost in {c['lost']:.0%} of frames, sprite check "
                f"{c['sprite_check']:.0%}")
    if "moves_random_init" in m:  # the T5
        t, r = m["moves"], m["moves_random_init"]
        return (f"a held-out caption's embedding moves {t['colour']:.2f} / {t['motion']:.2f} / {t['shape']:.2f} of "
                f"the typical distance when its colour / motion / shape changes (random init: {r['colour']:.2f} / "
                f"{r['motion']:.2f} / {r['shape']:.2f})")
    if "text+trajectory" in m:  # the full system: caption + path, against the caption alone
        u, t = m["text+trajectory"], m["text"]
        return (f"caption + path: sprite check {u['sprite_check']:.0%}, caption colour "
                f"{u['caption_accuracy']['color']:.0%}, trajectory error {u['trajectory_error_px']:.2f} px (caption "
                f"alone: {t['sprite_check']:.0%}, {t['trajectory_error_px']:.2f} px)")
    if "content frame repeated" in m:  # the full system on the Reducio VAE: content frame + caption
        u, still = m["image+text"], m["content frame repeated"]
        return (f"content frame + caption: sprite check {u['sprite_check']:.0%}, caption colour "
                f"{u['caption_accuracy']['color']:.0%}, direction {u['caption_accuracy']['direction']:.0%} (the "
                f"content frame held still: {still['caption_accuracy']['direction']:.0%}), {u['trajectory_error_px']:.2f}"
                f" px from the clip's path (still: {still['trajectory_error_px']:.2f} px)")
    return "see card.json"


def zoo_readme(root: str | Path | None = None) -> str:
    """``data/pretrained/README.md``: one row per entry, rendered from the cards (so it cannot drift from them)."""
    from ..pretrained import available

    lines = ["# The model zoo", "",
             "Small trained checkpoints, loaded with `minivid.pretrained.load(name)`; each folder holds the weights",
             "(`minivid.save_model` format), `card.json` (the command, steps, time, machine, commit and held-out",
             "metrics) and `train.log`. Regenerate an entry with its command (2 CPU cores); this table is rendered",
             "from the cards by `minivid.pipeline.zoo.zoo_readme()` (a test checks it is current).", "",
             "| name | model | parameters | held-out result | steps | minutes | machine | command |",
             "|---|---|---|---|---|---|---|---|"]
    for name in available(root):
        c = read_card(name, root)
        desc = c["description"].replace("|", "\\|")  # |z| inside a markdown table
        lines.append(f"| `{name}` | {desc} | {c['parameters']:,} | {_summary(c)} | {c['steps']} | "
                     f"{c['train_seconds'] / 60:.0f} ({c['threads']} thread{'s' if c['threads'] > 1 else ''}) | "
                     f"{c['machine']} | `{c['command']}` |")
    return "\n".join(lines) + "\n"


def write_zoo_readme(root: str | Path | None = None) -> Path:
    path = zoo_root(root) / "README.md"
    path.write_text(zoo_readme(root))
    return path


def rescore_zoo_model(name: str, root: str | Path | None = None) -> dict:
    """Recompute the held-out ``metrics`` of zoo entry ``name`` from its saved weights (same test clips, same
    seeds as at training time) and rewrite its card; the training fields are kept. Returns the card."""
    if name not in RECIPES:
        raise ValueError(f"name={name!r} is not a zoo recipe; allowed: {sorted(RECIPES)}")
    card = read_card(name, root)
    model = load_pretrained(name, root=root)
    torch.manual_seed(SEED)
    card["metrics"] = _round(RECIPES[name].score(model, card))
    card["metrics_recomputed"] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                  "commit": _commit(), "machine": device_name("cpu")}
    save_json(card, zoo_root(root) / name / CARD_FILE)
    write_zoo_readme(root)
    return card


__all__ = ["RECIPES", "zoo_eval_set", "zoo_latent_space", "rescore_zoo_model", "zoo_readme", "write_zoo_readme", "Recipe", "train_zoo_model", "clip_pool", "sprite_scores", "sprite_baselines",
           "autoencoder_metrics", "latte_config", "train_latte", "sample_latte", "latte_metrics", "centre_jitter", "t2v_metrics", "i2v_metrics", "train_latent_unet", "sample_latent_unet",
           "latent_unet_metrics", "color_motion_pool", "color_accuracy"]
