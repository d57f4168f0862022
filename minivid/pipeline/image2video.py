r"""Image-to-video with Reducio-DiT (R4-R5) at MiniSprites scale: a clip generated from one given frame.

- :class:`ImageToVideo` is one :class:`~minivid.nn.Model`: an OpenCLIP vision tower (``semantic``, a small random
  ViT trained with the model, R4's e_s), R4's projections :class:`~minivid.conditioning.ImageCondition`
  (e_img = MLP(e_s) ⊕ MLP(e_c)) and a :class:`~minivid.transformers.ReducioDiT` (3D full attention, R5) that
  cross-attends to e_img in every block (R4). Its call ``model(z, t, image, content, null=None)`` takes the
  conditioning frame (B, 3, H, W) in [-1, 1] for the semantic tower and its content tokens e_c (B, h·w, |z|), the
  frozen VAE's posterior mean of that frame (:class:`~minivid.conditioning.ContentImageEncoder`), precomputed
  because the VAE is frozen. ``null`` (B,) bool replaces e_img by R4's null condition (zero tokens) for those
  items: classifier-free guidance and condition dropout use it.
- **minivid's reading, stated:** Reducio's VAE decoder also sees the content frame, so its DiT only needs what
  the frame looks like; here the latent space is the zoo's per-frame ``vae2d`` (the full system's
  ``cpu-reducio`` preset is the one on the zoo's ``reducio-vae``), whose decoder sees nothing but the latent,
  so the DiT must also learn *where* the sprite is. Attention over condition tokens ignores their order, so a
  fixed 2D sin-cos table of the content grid is added to e_img (``content_positions=True``); without it the model
  sees a bag of tokens.
- The conditioning frame is the clip's first frame (``frame=0``, image-to-video) by default; R4's content frame
  is the middle one, V_{T/2} (``frame=None``).
- Training is v-prediction on CogVideoX's zero-terminal-SNR schedule (D10) with explicit uniform timesteps (D9),
  as :mod:`~minivid.pipeline.text2video`; sampling is DPM-Solver++ with classifier-free guidance on the null image.
- :func:`image_to_video_scores` measures whether a generated clip starts from its frame: the frame's sprite colour
  tracked in every generated frame, the distance (pixels) between the sprite's centre in the frame and in the
  generated clip's conditioning frame, and that frame's PSNR; the same clips scored against shuffled frames
  give the chance level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm import tqdm

from ..autoencoders import LatentSpace
from ..conditioning import ContentImageEncoder, ImageCondition, SemanticImageEncoder, SemanticImageEncoderConfig
from ..data import track_sprites
from ..diffusion import DiffusionTrainer, classifier_free_guidance, dpm_solver_pp_sample, make_timesteps
from ..nn import Model, ModelConfig
from ..nn.embeddings import sincos_2d
from ..transformers import ReducioDiT, ReducioDiTConfig
from ..utils.validation import check_device, check_int, is_number
from .text2video import SEED, caption_pool, t2v_schedule


def _default_semantic() -> SemanticImageEncoderConfig:
    return SemanticImageEncoderConfig(image_size=32, patch_size=8, width=64, layers=2, heads=4, embed_dim=32)


def _default_dit() -> ReducioDiTConfig:
    # vae2d latents of 32 px x 8 frames: (4, 8, 8, 8); patch 2 -> 8 x 4 x 4 = 128 tokens, 3D full attention (R5)
    return ReducioDiTConfig(in_channels=4, patch_size=2, tubelet=1, dim=96, depth=4, heads=4, cond_dim=64,
                            attention="full")


@dataclass
class ImageToVideoConfig(ModelConfig):
    """The semantic tower's and the Reducio-DiT's configs; ``content_channels``: |z| of the content VAE;
    ``content_grid``: its latent grid (h, w) of one frame; ``content_positions``: add a 2D sin-cos table to e_img."""

    semantic: SemanticImageEncoderConfig = field(default_factory=_default_semantic)
    dit: ReducioDiTConfig = field(default_factory=_default_dit)
    content_channels: int = 4
    content_grid: tuple = (8, 8)
    content_positions: bool = True

    def __post_init__(self):
        if not isinstance(self.semantic, SemanticImageEncoderConfig):
            raise ValueError(f"semantic={self.semantic!r} must be a SemanticImageEncoderConfig")
        if not isinstance(self.dit, ReducioDiTConfig):
            raise ValueError(f"dit={self.dit!r} must be a ReducioDiTConfig")
        check_int("content_channels", self.content_channels, 1)
        self.content_grid = tuple(self.content_grid)
        if len(self.content_grid) != 2 or not all(isinstance(g, int) and g >= 1 for g in self.content_grid):
            raise ValueError(f"content_grid={self.content_grid!r} is invalid: expected (rows, cols) >= 1")
        if not isinstance(self.content_positions, bool):
            raise ValueError(f"content_positions={self.content_positions!r} is invalid: expected True or False")
        if self.semantic.pooled_only:
            raise ValueError("semantic.pooled_only=True is invalid here: R4 uses the tower's patch tokens")


class ImageToVideo(Model):
    """OpenCLIP tower + R4 projections + Reducio-DiT: ``model(z, t, image, content, null=None)`` -> the
    v-prediction (B, C, T, H, W); see the module docstring."""

    config_class = ImageToVideoConfig

    def __init__(self, config: ImageToVideoConfig | None = None, **fields):
        super().__init__(config, **fields)
        c = self.config
        self.semantic = SemanticImageEncoder(c.semantic)
        self.image_cond = ImageCondition(self.semantic.width, c.content_channels, c.dit.cond_dim, align="content")
        self.dit = ReducioDiT(c.dit)
        pos = sincos_2d(*c.content_grid, c.dit.cond_dim).float() if c.content_positions else \
            torch.zeros(c.content_grid[0] * c.content_grid[1], c.dit.cond_dim)
        self.register_buffer("content_pos", pos, persistent=False)

    def image_tokens(self, image: torch.Tensor, content: torch.Tensor, null: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """R4: e_img (B, h·w, cond_dim) = MLP(e_s) ⊕ MLP(e_c) (+ the content grid's positions); zero where null."""
        c = self.config
        n = c.content_grid[0] * c.content_grid[1]
        if not isinstance(content, torch.Tensor) or content.ndim != 3 or content.shape[1:] != (n, c.content_channels):
            got = tuple(content.shape) if isinstance(content, torch.Tensor) else type(content).__name__
            raise ValueError(f"content must be the frame's VAE tokens (B, h*w={n}, |z|={c.content_channels}), "
                             f"got {got}")
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] != content.shape[0]:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image must be frames (B={content.shape[0]}, 3, H, W) in [-1, 1], got {got}")
        e_s, _ = self.semantic(image)
        e_img, _ = self.image_cond(e_s, content, self.semantic.grid_size, c.content_grid)
        e_img = e_img + self.content_pos.to(e_img)
        if null is not None:
            null = torch.as_tensor(null, dtype=torch.bool, device=e_img.device).reshape(-1)
            if null.shape != (e_img.shape[0],):
                raise ValueError(f"null must be a (B,) = ({e_img.shape[0]},) bool tensor, got {tuple(null.shape)}")
            e_img = torch.where(null[:, None, None], torch.zeros_like(e_img), e_img)  # R4's null condition
        return e_img

    def forward(self, z: torch.Tensor, t: torch.Tensor, image: torch.Tensor, content: torch.Tensor,
                null: torch.Tensor | None = None) -> torch.Tensor:
        return self.dit(z, t, self.image_tokens(image, content, null))  # R4: z = CAttn(z, e_img) in every block


def conditioning_frames(videos: torch.Tensor, frame: int | None = 0) -> torch.Tensor:
    """The conditioning frame of each clip (B, 3, T, H, W) -> (B, 3, H, W): frame ``frame``, or R4's middle
    frame (T - 1) // 2 when None."""
    if not isinstance(videos, torch.Tensor) or videos.ndim != 5:
        got = tuple(videos.shape) if isinstance(videos, torch.Tensor) else type(videos).__name__
        raise ValueError(f"videos must be clips (B, 3, T, H, W), got {got}")
    t = videos.shape[2]
    k = (t - 1) // 2 if frame is None else check_int("frame", frame, 0, t - 1)
    return videos[:, :, k]


@torch.no_grad()
def content_tokens(space: LatentSpace, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """e_c of frames (B, 3, H, W): the frozen VAE's posterior mean, (B, h·w, |z|), encoded on the VAE's device and
    returned on the frames' device."""
    enc = ContentImageEncoder(space.autoencoder)
    dev = next(space.autoencoder.parameters()).device
    return torch.cat([enc(images[i:i + batch].to(dev))[0].to(images.device) for i in range(0, len(images), batch)])


def train_image_to_video(space: LatentSpace, steps: int, batch: int = 32, lr: float = 1e-3, num_clips: int = 4096,
                         image_dropout: float = 0.1, frame: int | None = 0, config: ImageToVideoConfig | None = None,
                         progress: bool = True, log: Callable[[str], None] = print,
                         device: torch.device | str = "cpu") -> tuple[ImageToVideo, DiffusionTrainer]:
    """Train :class:`ImageToVideo` on the scaled latents of ``num_clips`` one-sprite clips conditioned on their
    frame ``frame``: v-prediction on the zero-terminal-SNR schedule (D10), explicit uniform timesteps (D9), the
    image replaced by the null condition with probability ``image_dropout``. Returns (EMA model, trainer).
    ``device``: where the model trains; the data stays on the CPU and the random draws are the CPU's."""
    steps = check_int("steps", steps, 1)
    device = check_device("device", device)
    if not is_number(image_dropout) or not 0 <= image_dropout < 1:
        raise ValueError(f"image_dropout={image_dropout!r} must lie in [0, 1)")
    videos, _ = caption_pool(num_clips)
    images = conditioning_frames(videos, frame)
    latents = space.encode(videos).cpu()  # kept on the CPU, wherever the VAE runs
    content = content_tokens(space, images)
    del videos
    torch.manual_seed(SEED)
    model = ImageToVideo(config or ImageToVideoConfig(content_grid=tuple(latents.shape[-2:]))).to(device)
    trainer = DiffusionTrainer(model, t2v_schedule(), prediction="v", lr=lr, warmup_steps=min(200, steps // 10),
                               ema_decay=0.999 if steps >= 2000 else 0.99, seed=SEED, total_steps=steps,
                               grad_clip=1.0)
    g = torch.Generator().manual_seed(SEED)
    bar = tqdm(total=steps, desc="ImageToVideo", disable=not progress, dynamic_ncols=True, mininterval=5.0)
    for step in range(steps):
        idx = torch.randint(len(latents), (batch,), generator=g)
        null = torch.rand(batch, generator=g) < image_dropout
        trainer.step(latents[idx].to(device), image=images[idx].to(device), content=content[idx].to(device),
                     null=null.to(device))
        bar.update(1)
        if (step + 1) % max(1, steps // 10) == 0:
            recent = trainer.losses[-50:]
            log(f"  step {step + 1}/{steps}: loss {sum(recent) / len(recent):.4f}")
    bar.close()
    return trainer.ema.eval(), trainer


@torch.no_grad()
def sample_image_to_video(model: ImageToVideo, space: LatentSpace, images: torch.Tensor, guidance: float = 2.0,
                          steps: int = 25, seed: int = SEED, batch: int = 32, frames: int = 8,
                          device: torch.device | str = "cpu") -> torch.Tensor:
    """Clips (N, 3, T, H, W) in [-1, 1] from frames ``images`` (N, 3, H, W) in [-1, 1]: DPM-Solver++ (D8) from
    pure noise at SNR = 0 over ``steps`` trailing timesteps, classifier-free guidance against the null image.
    ``device``: where the model is."""
    device = check_device("device", device)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be frames (N, 3, H, W) in [-1, 1], got {got}")
    s = t2v_schedule()
    g = torch.Generator().manual_seed(seed)
    model.eval()
    content = content_tokens(space, images)
    h, w = model.config.content_grid
    out = []
    for i in range(0, len(images), batch):
        img, con = images[i:i + batch].to(device), content[i:i + batch].to(device)
        n = len(img)
        x_T = torch.randn((n, model.config.dit.in_channels, frames, h, w), generator=g).to(device)
        fn = classifier_free_guidance(model, {"image": img, "content": con, "null": torch.zeros(n, dtype=torch.bool)},
                                      {"image": img, "content": con, "null": torch.ones(n, dtype=torch.bool)},
                                      guidance)
        z = dpm_solver_pp_sample(fn, x_T, s, make_timesteps(s, steps, "trailing"), prediction="v")
        out.append(space.decode(z).cpu())
    return torch.cat(out)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) / 2).pow(2).mean())  # [-1, 1] -> [0, 1] units
    return 10 * math.log10(1 / max(mse, 1e-10))


def image_to_video_scores(videos: torch.Tensor, images: Sequence[torch.Tensor] | torch.Tensor,
                          frame: int | None = 0) -> dict:
    """Does each clip (N, 3, T, H, W) start from its frame (N, 3, H, W)? ``color_kept``: the share of clips in which
    the frame's sprite colour is tracked in every generated frame; ``start_found``: the share in which it is tracked
    in the clip's frame ``frame``; ``start_error_px``: over those, the mean distance between the sprite's centre
    there and in the given frame (None when none is found); ``frame_psnr``: the mean PSNR of that frame against the
    given one."""
    if not isinstance(videos, torch.Tensor) or videos.ndim != 5 or len(videos) != len(images):
        raise ValueError(f"videos must be clips (N, 3, T, H, W), one per image; got {len(videos)} clips and "
                         f"{len(images)} images")
    kept, found, errors, psnrs = [], [], [], []
    for v, img in zip(videos, images):
        centers, colors = track_sprites(img[:, None])  # the sprite(s) of the given frame
        gen = conditioning_frames(v[None], frame)[0]
        psnrs.append(_psnr(gen, img))
        if len(colors) == 0:
            kept.append(False)
            found.append(False)
            continue
        track, _ = track_sprites(v, [int(colors[0])])  # (1, T, 2)
        kept.append(bool(torch.isfinite(track).all()))
        p = track[0, (v.shape[1] - 1) // 2 if frame is None else frame]
        found.append(bool(torch.isfinite(p).all()))
        if found[-1]:
            errors.append(float((p - centers[0, 0]).norm()))
    n = len(kept)
    return {"color_kept": sum(kept) / n, "start_found": sum(found) / n,
            "start_error_px": sum(errors) / len(errors) if errors else None, "frame_psnr": sum(psnrs) / n,
            "clips": n}
