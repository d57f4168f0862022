r"""Tora at MiniSprites scale (T1-T9): trajectory-controlled video generation, trained and measured.

- **Motion VAE** (T5): the causal 3D VAE (:class:`~minivid.autoencoders.CausalVAE`, C1's blocks) trained on flow
  videos g_vis only (reconstruction, :func:`motion_pool`), frozen afterwards. Its latent grid must be the video
  latent's: Tora's video VAE is the 4 x 8 x 8 CogVideoX VAE and so is its motion VAE; minivid's video latents are the
  zoo's per-frame ``vae2d`` (1 x 4 x 4, the latent space on which the zoo's denoisers make sprites; the zoo's
  4 x 8 x 8 ``causal-vae`` is still below its trivial baselines, issue 14), so the motion VAE is the same causal
  3D VAE class configured 1 x 4 x 4 (``temporal_factor=1``; its convolutions still see the past frames).
- **Flow videos** (T4-T5, T8): dense ones from MiniSprites' exact per-pixel motion (stage 1's "optical flow") and
  sparse ones from the centre paths of 1..N sprites (stage 2), blurred by a Gaussian and coloured by the Middlebury
  wheel (:mod:`minivid.conditioning.trajectory`). The release's blur (sigma 10 at 480p) scaled to 32 px is sigma
  0.67 px, smaller than a sprite; the recipes use ``TORA_BLUR`` = (9, 1.5), about half a sprite's radius.
"""

from __future__ import annotations

import torch

from ..conditioning.trajectory import maps_to_video, sample_sparse, sprite_flow, trajectory_maps
from ..data import MiniSprites
from ..utils.validation import check_choice, check_int

SEED = 0
TORA_SIZE, TORA_FRAMES = 32, 8
TORA_BLUR = (9, 1.5)  # (kernel size, sigma) in pixels at 32 px; see the module docstring
FLOW_KINDS = ("dense", "sparse", "mixed")


def scene_flow_maps(data: MiniSprites, i: int, kind: str, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Item ``i`` of ``data``: (displacement maps (L, 2, H, W), the per-frame centre paths (k, L, 2) they describe).
    ``kind="dense"``: every sprite pixel's exact motion (all sprites' paths); ``"sparse"``: the centre paths of 1..N
    randomly chosen sprites (T8 stage 2)."""
    check_choice("kind", kind, ("dense", "sparse"))
    item = data[i]
    mask = item["sprite_mask"]
    if kind == "dense":
        return sprite_flow(data.scene(i)), item["centers"][mask]
    paths = sample_sparse(item["centers"], mask, generator)
    return trajectory_maps(paths, data.height, data.width), paths


def motion_pool(n: int, size: int = TORA_SIZE, frames: int = TORA_FRAMES, kind: str = "mixed", split: str = "train",
                seed: int = SEED, blur: tuple[int, float] = TORA_BLUR, num_sprites=(1, 3)) -> torch.Tensor:
    """``n`` flow videos g_vis (n, 3, T, H, W) in [-1, 1] of MiniSprites clips (float16): dense, sparse, or both
    alternately (``"mixed"``: even items dense, odd sparse). Dense maps are not blurred (they already cover the
    sprite), sparse ones are (T5)."""
    n = check_int("n", n, 1)
    check_choice("kind", kind, FLOW_KINDS)
    data = MiniSprites(num_videos=n, size=size, num_frames=frames, split=split, seed=seed, num_sprites=num_sprites)
    g = torch.Generator().manual_seed(seed + 1)
    out = torch.empty(n, 3, frames, size, size, dtype=torch.float16)
    for i in range(n):
        k = kind if kind != "mixed" else ("dense", "sparse")[i % 2]
        maps, _ = scene_flow_maps(data, i, k, g)
        out[i] = maps_to_video(maps, (1, 1.0) if k == "dense" else blur).half()
    return out


def flow_weight(video: torch.Tensor, weight: float = 20.0) -> torch.Tensor:
    """Per-pixel loss weights of flow videos (B, 3, T, H, W): 1 + ``weight`` on marked (non-white) pixels. A flow
    video is white except for the marks, so an unweighted reconstruction loss is minimised by a white frame first
    (measured: 200 steps of the unweighted recipe stay at the all-white output's 23.0 dB)."""
    return 1 + weight * (video < 0.99).any(1, keepdim=True).to(video.dtype)


def mark_centres(videos: torch.Tensor) -> torch.Tensor:
    """The centre (x, y) of the colour mass (1 - g_vis, summed over channels) of every frame of flow videos
    (B, 3, T, H, W) -> (B, T, 2); NaN for a white frame."""
    mass = (1 - videos.float().clamp(-1, 1)).sum(1) / 2  # (B, T, H, W)
    h, w = mass.shape[-2:]
    ys, xs = torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32)
    total = mass.sum((-2, -1))
    x = (mass.sum(-2) * xs).sum(-1) / total
    y = (mass.sum(-1) * ys).sum(-1) / total
    out = torch.stack([x, y], -1)
    out[total < 1e-3] = float("nan")
    return out


@torch.no_grad()
def motion_vae_metrics(model, test: torch.Tensor) -> dict:
    """Held-out scores of a motion VAE on flow videos ``test`` (B, 3, T, H, W): PSNR over each whole clip (a per-frame
    mean would count the white first frame as infinitely good) beside the all-white output; the mean absolute error on
    the marked pixels (where the information is) beside white's; and the distance in pixels between the centre of the
    marks in the reconstruction and in the input, frames 1.. of one-object (sparse) clips."""
    from ..metrics.trajectory import trajectory_error

    model.eval()
    rec = torch.cat([model.reconstruct(test[i:i + 16].float()).clamp(-1, 1) for i in range(0, len(test), 16)])
    x = test.float()

    def clip_psnr(a):
        return float((10 * torch.log10(4 / (a - x).pow(2).mean((1, 2, 3, 4)))).mean())

    marked = (x < 0.99).any(1, keepdim=True).expand_as(x)
    white = torch.ones_like(x)
    return {"clip_psnr": clip_psnr(rec), "clip_psnr_all_white": clip_psnr(white),
            "marked_l1": float((rec - x).abs()[marked].mean()), "marked_l1_all_white": float((white - x)[marked].mean()),
            "mark_centre_error_px": trajectory_error(mark_centres(rec)[:, 1:], mark_centres(x)[:, 1:]),
            "test_clips": len(test), "input_shape": list(test.shape[1:]),
            "latent_shape": list(model.latent_shape(tuple(test[:1].shape))[1:])}


def motion_vae_config():
    from ..autoencoders import CausalVAEConfig
    return CausalVAEConfig(spatial_factor=4, temporal_factor=1, latent_channels=4, channels=16, channel_mult=(1, 2, 2),
                           num_res_blocks=1, norm_groups=8, init_logvar=-6.0)
