r"""Text-to-video with CogVideoX's recipe at MiniSprites scale: a T5 text encoder and the expert transformer (C2-C5)
on the per-frame VAE's latents, trained with v-prediction on the zero-terminal-SNR schedule (D10) and explicit
uniform timesteps (D9), sampled with DPM-Solver++ (D8) and classifier-free guidance on the empty caption.

- :class:`TextToVideo` is one :class:`~minivid.nn.Model` holding both networks (``text``: a
  :class:`~minivid.conditioning.TextEncoder`, trained with the denoiser from a random init; ``transformer``: an
  :class:`~minivid.transformers.ExpertTransformer`). Its call ``model(x, t, ids, mask)`` takes the caption's
  token ids, so classifier-free guidance batches the conditional and the empty caption as tensors.
- :func:`t2v_schedule`: CogVideoX's schedule (scaled-linear betas, SNR shift, rescaled to SNR_T = 0; D10). With
  SNR_T = 0 the last training step sees pure noise, so the sampler starts where training did (with ε-prediction
  x̂_0 would be undefined there: v-prediction is required, and :func:`train_text_to_video` uses it).
- :func:`caption_accuracy`: does a generated clip show what its caption asked? The caption's colour must be
  tracked in every frame (MiniSprites' tracker), and for "moves <direction>" captions the sprite's displacement
  from the first to the last frame must point within 45 degrees of the asked compass direction; "circles
  clockwise / counterclockwise" is scored by the sign of the turning. Shuffled captions give the chance level.

The zoo entry ``t2v`` (``python -m minivid train t2v``) is made by :func:`train_text_to_video` on one-sprite clips
(the caption then describes the whole clip).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm import tqdm

from ..autoencoders import LatentSpace
from ..conditioning import TextEncoder, TextEncoderConfig
from ..conditioning.text import copy_text_encoder
from ..data import MiniSprites, ProgressiveStages, Stage, pack_clips
from ..diffusion import DiffusionTrainer, NoiseSchedule, classifier_free_guidance, dpm_solver_pp_sample, make_timesteps
from ..metrics.captions import caption_accuracy, caption_scores, parse_caption
from ..nn import Model, ModelConfig
from ..transformers import ExpertTransformer, ExpertTransformerConfig
from ..utils.validation import check_device, check_int, is_number

SEED = 0
SCHEDULES = ("cogvideox", "cosine")


def _default_text() -> TextEncoderConfig:
    # MiniSprites' longest one-sprite caption ("a yellow diamond moves down and to the right along a wavy path")
    # is 62 bytes + </s>: 72 tokens leave room; every batch is padded to the same length
    return TextEncoderConfig(max_length=72, pad_to_max_length=True, d_model=64, d_kv=16, d_ff=128, num_layers=2,
                             num_heads=4)


def _default_transformer() -> ExpertTransformerConfig:
    # vae2d latents of 32 px x 8 frames: (4, 8, 8, 8); patch 2 -> 8 x 4 x 4 = 128 video tokens + 72 text tokens
    return ExpertTransformerConfig(in_channels=4, patch_size=2, patch_size_t=1, heads=6, head_dim=16, depth=4,
                                   time_embed_dim=128, text_dim=64, max_text_len=72, positional="rope",
                                   rope_grid="slice", base_size=(8, 8))


@dataclass
class TextToVideoConfig(ModelConfig):
    """The text encoder's and the expert transformer's configs; ``transformer.text_dim`` must be the encoder's
    width and ``transformer.max_text_len`` at least its ``max_length``. ``schedule``: the noise schedule the model
    is trained and sampled with (:func:`text_to_video_schedule`): ``"cogvideox"`` (D10, zero terminal SNR, trailing
    timesteps; CogVideoX's) or ``"cosine"`` (D1, log-SNR timesteps; the zoo's Latte and latent U-Net's)."""

    text: TextEncoderConfig = field(default_factory=_default_text)
    transformer: ExpertTransformerConfig = field(default_factory=_default_transformer)
    schedule: str = "cogvideox"

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} is not supported; allowed: {SCHEDULES}")
        if not isinstance(self.text, TextEncoderConfig):
            raise ValueError(f"text={self.text!r} must be a TextEncoderConfig")
        if not isinstance(self.transformer, ExpertTransformerConfig):
            raise ValueError(f"transformer={self.transformer!r} must be an ExpertTransformerConfig")
        if self.text.name_or_path is None and self.transformer.text_dim != self.text.d_model:
            raise ValueError(f"transformer.text_dim={self.transformer.text_dim} must equal the text encoder's width "
                             f"text.d_model={self.text.d_model}")
        if self.transformer.max_text_len < self.text.max_length:
            raise ValueError(f"transformer.max_text_len={self.transformer.max_text_len} must be at least "
                             f"text.max_length={self.text.max_length}")


class TextToVideo(Model):
    """T5 + expert transformer: ``model(x, t, ids, mask)`` -> the v-prediction (B, C, T, H, W) for latents x and
    caption token ids (B, L) with their mask (B, L) from :meth:`tokenize`."""

    config_class = TextToVideoConfig

    def __init__(self, config: TextToVideoConfig | None = None, **fields):
        super().__init__(config, **fields)
        self.text = TextEncoder(self.config.text)
        self.transformer = ExpertTransformer(self.config.transformer)
        if self.text.width != self.config.transformer.text_dim:
            raise ValueError(f"transformer.text_dim={self.config.transformer.text_dim} must equal the text "
                             f"encoder's width {self.text.width}")

    def tokenize(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B, L), mask (B, L) bool), padded to the encoder's ``max_length``."""
        return self.text.tokenize(captions)

    def forward(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.text.encode_ids(ids, mask)  # (B, L, text_dim)
        return self.transformer(x, t, tokens, text_mask=mask, frame_mask=frame_mask)  # C2-C5 (C6: padded frames)


def t2v_schedule(num_steps: int = 1000, snr_shift_scale: float = 1.0) -> NoiseSchedule:
    """D10: CogVideoX's schedule (the 5B model's shift of 1 by default: our 8 x 8 latents need no extra noise)."""
    return NoiseSchedule.cogvideox(num_steps, snr_shift_scale)


def text_to_video_schedule(config: TextToVideoConfig, num_steps: int = 1000) -> tuple[NoiseSchedule, str]:
    """The noise schedule a :class:`TextToVideo` with ``config`` trains on and the timestep spacing its sampler
    uses: ``"cogvideox"``: :func:`t2v_schedule` (D10) with ``"trailing"`` steps from SNR 0; ``"cosine"``: Improved
    DDPM's cosine schedule (D1) with ``"logsnr"`` steps (DPM-Solver++'s, D8)."""
    if config.schedule == "cosine":
        return NoiseSchedule.cosine(num_steps), "logsnr"
    return t2v_schedule(num_steps), "trailing"


def caption_pool(n: int, size: int = 32, frames: int = 8, split: str = "train", seed: int = SEED,
                 num_sprites=1) -> tuple[torch.Tensor, list[str]]:
    """``n`` MiniSprites clips (n, 3, T, H, W) and their captions."""
    data = MiniSprites(num_videos=n, size=size, num_frames=frames, split=split, seed=seed, num_sprites=num_sprites)
    items = [data[i] for i in range(n)]
    return torch.stack([it["video"] for it in items]), [it["caption"] for it in items]


def image_caption(caption: str) -> str:
    """The caption of one frame of a one-sprite clip (C6's images): the sprite without its motion, "a red square"."""
    parse_caption(caption)  # a clear error when it names no palette colour
    m = re.match(r"(an? \S+ \S+)", caption)
    if m is None:
        raise ValueError(f"caption={caption!r} is not a one-sprite MiniSprites caption ('a <colour> <shape> ...')")
    return m.group(1)


def train_text_to_video(space: LatentSpace, steps: int, batch: int = 32, lr: float = 1e-3, num_clips: int = 4096,
                        caption_dropout: float = 0.1, config: TextToVideoConfig | None = None, progress: bool = True,
                        log: Callable[[str], None] = print, stages: Sequence[Stage] | None = None,
                        image_ratio: float = 0.0, text_encoder: TextEncoder | None = None,
                        device: torch.device | str = "cpu") -> tuple[TextToVideo, DiffusionTrainer]:
    """Train :class:`TextToVideo` on the scaled latents of ``num_clips`` one-sprite clips: v-prediction on
    :func:`t2v_schedule` (D10), explicit uniform timesteps (D9), the caption replaced by "" with probability
    ``caption_dropout`` (for classifier-free guidance). Returns (EMA model in eval mode, trainer).

    C6: ``stages`` (a list of :class:`~minivid.data.Stage`, sizes not decreasing; their steps must add up to
    ``steps``) trains progressively, each stage on its own pool of ``num_clips`` clips of its size and length
    (default: one stage of 32 px x 8 frames); ``image_ratio`` makes that fraction of every batch images (one
    latent frame of a clip, captioned without the motion by :func:`image_caption`), padded to the clip length
    with a frame mask (:func:`~minivid.data.pack_clips`) that the attention and the loss respect.

    ``text_encoder`` (a trained :class:`~minivid.conditioning.TextEncoder`, e.g. the zoo's ``t5``) starts
    the T5 from its weights, as CogVideoX starts from a pretrained T5 (frozen when ``config.text.trainable`` is
    False); its shape must equal ``config.text``'s (:func:`~minivid.conditioning.text.copy_text_encoder`).

    ``device``: where the model trains (its weights, EMA and optimiser state, and each batch). The latents are kept
    on the CPU and the random draws are the CPU's, so a CUDA run sees the same batches, timesteps and noise."""
    steps = check_int("steps", steps, 1)
    device = check_device("device", device)
    if text_encoder is not None and not isinstance(text_encoder, TextEncoder):
        raise ValueError(f"text_encoder must be a TextEncoder, got {type(text_encoder).__name__}")
    if not 0 <= caption_dropout < 1:
        raise ValueError(f"caption_dropout={caption_dropout!r} must lie in [0, 1)")
    if not is_number(image_ratio) or not 0 <= image_ratio < 1:
        raise ValueError(f"image_ratio={image_ratio!r} must lie in [0, 1)")
    plan = ProgressiveStages(list(stages) if stages is not None else [Stage(steps, 32, 8)])
    if plan.total_steps != steps:
        raise ValueError(f"stages={[tuple(vars(st).values()) for st in plan]} add up to {plan.total_steps} steps, "
                         f"but steps={steps}")
    n_img = int(round(batch * image_ratio))
    pools = []
    for stage in plan:  # encoded before the model is seeded and built, as the zoo's t2v was
        videos, captions = caption_pool(num_clips, size=stage.size, frames=stage.frames)
        pools.append((space.encode(videos).cpu(), captions))  # kept on the CPU, wherever the VAE runs
        del videos
    torch.manual_seed(SEED)
    model = TextToVideo(config or TextToVideoConfig())
    if text_encoder is not None:
        copy_text_encoder(model.text, text_encoder, "text_encoder")
    model.to(device)
    null_ids, null_mask = model.tokenize([""])
    trainer = DiffusionTrainer(model, text_to_video_schedule(model.config)[0], prediction="v", lr=lr,
                               warmup_steps=min(200, steps // 10),
                               ema_decay=0.999 if steps >= 2000 else 0.99, seed=SEED, total_steps=steps,
                               grad_clip=1.0)
    g = torch.Generator().manual_seed(SEED)
    bar = tqdm(total=steps, desc="TextToVideo", disable=not progress, dynamic_ncols=True, mininterval=5.0)
    step = 0
    for k, (stage, (latents, captions)) in enumerate(zip(plan, pools)):
        ids, mask = model.tokenize(captions)
        img_ids, img_mask = model.tokenize([image_caption(c) for c in captions]) if n_img else (ids, mask)
        if len(plan) > 1:
            log(f"  stage {k + 1}/{len(plan)}: {stage.steps} steps on {stage.size} px x {stage.frames} frames "
                f"(latents {tuple(latents.shape[1:])})")
        for _ in range(stage.steps):
            idx = torch.randint(len(latents), (batch,), generator=g)
            drop = torch.rand(batch, generator=g) < caption_dropout
            b_ids, b_mask, x0, kwargs = ids[idx], mask[idx], latents[idx], {}
            if n_img:  # C6: the first n_img items become one latent frame of their clip, padded to the clip length
                frame = torch.randint(latents.shape[2], (n_img,), generator=g)
                clips = [x0[i, :, frame[i]] for i in range(n_img)] + list(x0[n_img:])
                x0, kwargs["frame_mask"] = pack_clips(clips, num_frames=latents.shape[2])
                b_ids = torch.cat([img_ids[idx[:n_img]], b_ids[n_img:]])
                b_mask = torch.cat([img_mask[idx[:n_img]], b_mask[n_img:]])
            b_ids = torch.where(drop[:, None], null_ids, b_ids)
            b_mask = torch.where(drop[:, None], null_mask, b_mask)
            trainer.step(x0.to(device), ids=b_ids.to(device), mask=b_mask.to(device),
                         **{k: v.to(device) for k, v in kwargs.items()})
            bar.update(1)
            step += 1
            if step % max(1, steps // 10) == 0:
                recent = trainer.losses[-50:]
                log(f"  step {step}/{steps}: loss {sum(recent) / len(recent):.4f}")
    bar.close()
    return trainer.ema.eval(), trainer


@torch.no_grad()
def sample_text_to_video(model: TextToVideo, space: LatentSpace, captions: Sequence[str], guidance: float = 4.0,
                         steps: int = 25, seed: int = SEED, batch: int = 32, frames: int = 8, latent_size: int = 8,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """Clips (N, 3, T, H, W) in [-1, 1] for ``captions``: DPM-Solver++ (D8) from pure noise at SNR = 0 over
    ``steps`` trailing timesteps (D10; log-SNR steps for a model with ``schedule="cosine"``), classifier-free
    guidance against the empty caption, then the decoder. ``device``: where the model is."""
    device = check_device("device", device)
    s, spacing = text_to_video_schedule(model.config)
    g = torch.Generator().manual_seed(seed)
    model.eval()
    out = []
    for i in range(0, len(captions), batch):
        caps = list(captions[i:i + batch])
        ids, mask = model.tokenize(caps)
        null_ids, null_mask = model.tokenize([""] * len(caps))
        c = model.config.transformer.in_channels
        x_T = torch.randn((len(caps), c, frames, latent_size, latent_size), generator=g).to(device)
        fn = classifier_free_guidance(model, {"ids": ids.to(device), "mask": mask.to(device)},
                                      {"ids": null_ids.to(device), "mask": null_mask.to(device)}, guidance)
        z = dpm_solver_pp_sample(fn, x_T, s, make_timesteps(s, steps, spacing), prediction="v")
        out.append(space.decode(z).cpu())
    return torch.cat(out)


__all__ = ["TextToVideoConfig", "TextToVideo", "t2v_schedule", "text_to_video_schedule", "caption_pool",
           "train_text_to_video", "sample_text_to_video", "parse_caption", "caption_scores", "caption_accuracy"]
