r"""The full system: one denoiser with every condition (text, image, trajectory, previous clip) on a VAE's latents.

**The model** (:class:`System`). CogVideoX's expert transformer (C2-C5) on video latents x (B, C, T, h, w), with

- *text*: T5 tokens (:class:`~minivid.conditioning.TextEncoder`) concatenated with the video tokens (C2, C5);
- *given frames*: latent frames the sampler keeps fixed, un-noised in x (T8's image conditioning) and marked by an
  extra input channel that is 1 at those frames, so the model knows which frames are data and which noise. The
  first frame given is image-to-video; the first k frames given are the end of the previous clip (continuation, as
  PVDM's P8-P9 condition the next clip on the last one, here inside one clip); none given is text-to-video;
- *trajectory*: Tora's motion guidance (T6-T7) on the motion VAE's latents of the requested paths, fused in every
  block through the expert transformer's fuser hook; the null trajectory is the latent of an all-white flow video
  (no motion anywhere), as in :func:`~minivid.pipeline.tora.null_motion`;
- *image semantics* (optional, ``SystemConfig.image``): when the first frame is given as an image, its OpenCLIP
  tokens (R4's e_s, :class:`~minivid.conditioning.SemanticImageEncoder`) through an MLP join the text tokens, as
  Reducio-DiT adds e_s to its condition; the given latent frame is the content side (R4's e_c). Masked out when no
  image is given.

**Training** (:func:`condition_batch` + :class:`~minivid.diffusion.DiffusionTrainer`): v-prediction on the
zero-terminal-SNR schedule (D10), explicit uniform timesteps over the global batch (D9); each clip's caption is
replaced by "" with probability ``text_dropout``, its trajectory by the null one with ``trajectory_dropout``, and
it is given no frame, its first frame, or its first ``previous_frames`` frames with the probabilities of
``given_modes``; given frames leave the loss. The coins are drawn for the whole global batch from one generator
and sliced per rank, so data-parallel runs draw what one process would.

**Sampling** (:func:`sample_system`): DPM-Solver++ (D8) over trailing timesteps from SNR 0 (D10), the given frames
re-inserted at every step, and classifier-free guidance with one scale per condition, nested in the order
image/previous clip, text, trajectory (:func:`~minivid.diffusion.nested_guidance`): the text is guided against the
model that already has the frames, the trajectory against the one that has frames and text. Without frames the
"no frames" branch sees the given frames noised to the current step (the input it was trained on for "no frames").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..conditioning.image import SemanticImageEncoder, SemanticImageEncoderConfig
from ..conditioning.motion import MotionGuidance, MotionGuidanceConfig
from ..conditioning.text import TextEncoder, TextEncoderConfig
from ..diffusion import NoiseSchedule, dpm_solver_pp_sample, make_timesteps, nested_guidance
from ..nn import Model, ModelConfig
from ..transformers import ExpertTransformer, ExpertTransformerConfig
from ..utils.validation import check_int, check_number

GIVEN_MODES = ("none", "first", "previous")


def _default_text() -> TextEncoderConfig:
    return TextEncoderConfig(max_length=72, pad_to_max_length=True, d_model=64, d_kv=16, d_ff=128, num_layers=2,
                             num_heads=4)


def _default_transformer() -> ExpertTransformerConfig:
    # vae2d latents of 32 px x 8 frames: (4, 8, 8, 8) + the given-frames channel; patch 2 -> 128 video tokens
    return ExpertTransformerConfig(in_channels=5, out_channels=4, patch_size=2, patch_size_t=1, heads=6, head_dim=16,
                                   depth=4, time_embed_dim=128, text_dim=64, max_text_len=72, positional="rope",
                                   rope_grid="slice", base_size=(8, 8))


def _default_motion() -> MotionGuidanceConfig | None:
    return MotionGuidanceConfig(motion_channels=4, dim=96, depth=4, patch_size=2, motion_dim=32, fuser="adanorm")


@dataclass
class SystemConfig(ModelConfig):
    """The text encoder, the expert transformer (``in_channels`` = latent channels + 1, the given-frames channel;
    ``out_channels`` = latent channels), the motion guidance (None: no trajectory condition; its ``dim``,
    ``depth`` and ``patch_size`` are set to the transformer's, whatever they were) and the semantic image encoder
    (None: an image enters only as the given first frame; else its tokens follow the text's in the transformer's
    condition sequence).

    ``image_grid_channels`` > 0 also puts the image on the latent grid (R4's content side e_c, in minivid's form): the
    image cut into ``image_grid_patch`` px squares (the VAE's f_s: one per latent cell), each mapped linearly to
    ``image_grid_channels`` values (a strided convolution), repeated over the latent frames and concatenated to x's
    channels after the given-frames channel, zero where no image is given; ``transformer.in_channels`` counts them.
    Tokens in the condition sequence carry no position the video tokens can match; channels on the grid do."""

    text: TextEncoderConfig = field(default_factory=_default_text)
    transformer: ExpertTransformerConfig = field(default_factory=_default_transformer)
    motion: MotionGuidanceConfig | None = field(default_factory=_default_motion)
    image: SemanticImageEncoderConfig | None = None
    image_grid_channels: int = 0
    image_grid_patch: int = 8

    def __post_init__(self):
        if not isinstance(self.text, TextEncoderConfig):
            raise ValueError(f"text={self.text!r} must be a TextEncoderConfig")
        tr = self.transformer
        if not isinstance(tr, ExpertTransformerConfig):
            raise ValueError(f"transformer={tr!r} must be an ExpertTransformerConfig")
        check_int("image_grid_channels", self.image_grid_channels, 0)
        check_int("image_grid_patch", self.image_grid_patch, 1)
        want = tr.out_channels + 1 + self.image_grid_channels
        if tr.in_channels != want:
            raise ValueError(f"transformer.in_channels={tr.in_channels} must be out_channels + 1 + image_grid_channels "
                             f"= {want} (the latent channels, the given-frames channel and the image's channels)")
        if self.text.name_or_path is None and tr.text_dim != self.text.d_model:
            raise ValueError(f"transformer.text_dim={tr.text_dim} must equal the text encoder's width "
                             f"text.d_model={self.text.d_model}")
        if tr.max_text_len < self.text.max_length:
            raise ValueError(f"transformer.max_text_len={tr.max_text_len} must be at least "
                             f"text.max_length={self.text.max_length}")
        if self.image is not None:
            if not isinstance(self.image, SemanticImageEncoderConfig):
                raise ValueError(f"image={self.image!r} must be a SemanticImageEncoderConfig or None")
        if self.motion is not None:
            if not isinstance(self.motion, MotionGuidanceConfig):
                raise ValueError(f"motion={self.motion!r} must be a MotionGuidanceConfig or None")
            # one fuser per block, on the transformer's token grid: the motion guidance follows the transformer
            for k, v in (("dim", tr.dim), ("depth", tr.depth), ("patch_size", tr.patch_size)):
                setattr(self.motion, k, v)

    @property
    def latent_channels(self) -> int:
        return self.transformer.out_channels

    @property
    def takes_image(self) -> bool:
        """Whether the model reads an image besides given frames: semantic tokens or the image on the latent grid."""
        return self.image is not None or self.image_grid_channels > 0

    @property
    def image_tokens(self) -> int:
        """Tokens the semantic image encoder adds (0 without one): the patch grid, or 1 with ``pooled_only``."""
        if self.image is None:
            return 0
        return 1 if self.image.pooled_only else (self.image.image_size // self.image.patch_size) ** 2


class System(Model):
    """``model(x, t, ids, mask, given_frames=None, motion=None, image=None, image_given=None)`` -> the v-prediction
    (B, C, T, h, w) for noisy latents x (B, C, T, h, w), caption token ids and mask (B, L) from :meth:`tokenize`, a
    (B, T) bool mask of the frames that are given (clean in x; None: none), motion latents (B, C_m, T, h, w) of the
    trajectories (None: the condition is absent; the model needs ``config.motion`` for it) and images (B, 3, H, W) in
    [-1, 1] for the semantic image tokens with ``image_given`` (B,) bool saying whose are used (None: all; no
    images: none; the model needs ``config.image`` for them)."""

    config_class = SystemConfig

    def __init__(self, config: SystemConfig | None = None, **fields):
        super().__init__(config, **fields)
        c = self.config
        self.text = TextEncoder(c.text)
        self.transformer = ExpertTransformer(c.transformer)
        self.motion = MotionGuidance(c.motion) if c.motion is not None else None
        self.semantic = self.image_proj = None
        if c.image is not None:
            d = c.transformer.text_dim
            self.semantic = SemanticImageEncoder(c.image)
            self.image_proj = torch.nn.Sequential(torch.nn.Linear(self.semantic.width, d), torch.nn.GELU(),
                                                  torch.nn.Linear(d, d))  # R4's MLP(e_s), to the text tokens' width
        self.image_grid = None
        if c.image_grid_channels:  # R4's e_c on the latent grid: one linear map per image_grid_patch x patch square
            self.image_grid = torch.nn.Conv2d(3, c.image_grid_channels, c.image_grid_patch, stride=c.image_grid_patch)
        if self.text.width != c.transformer.text_dim:
            raise ValueError(f"transformer.text_dim={c.transformer.text_dim} must equal the text encoder's width "
                             f"{self.text.width}")

    @property
    def takes_image(self) -> bool:
        return self.config.takes_image

    def tokenize(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B, L), mask (B, L) bool), padded to the text encoder's ``max_length``."""
        return self.text.tokenize(captions)

    def encode_image(self, image: torch.Tensor | None, image_given: torch.Tensor | None, batch: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The semantic image tokens (B, N, text_dim) and their mask (B, N): R4's MLP(e_s) of ``image``, masked where
        ``image_given`` is False; without an image, the tokens of a zero image, all masked (the same shapes, so every
        batch runs the same graph)."""
        if image is None:
            h, w = self.semantic.image_size
            image = torch.zeros(batch, 3, h, w, device=device)
            image_given = torch.zeros(batch, dtype=torch.bool, device=device)
        image_given = _check_image(image, image_given, batch, device)
        e_s, m = self.semantic(image.float())
        return self.image_proj(e_s), m & image_given[:, None]

    def image_on_grid(self, image: torch.Tensor | None, image_given: torch.Tensor | None, frames: int, h: int,
                      w: int, like: torch.Tensor) -> torch.Tensor:
        """The image's channels on the latent grid (B, image_grid_channels, T, h, w) (``SystemConfig``), zero where
        ``image_given`` is False or without an image."""
        b = like.shape[0]
        if image is None:
            return like.new_zeros(b, self.config.image_grid_channels, frames, h, w)
        image_given = _check_image(image, image_given, b, like.device)
        grid = self.image_grid(image.float())
        if tuple(grid.shape[-2:]) != (h, w):
            raise ValueError(f"an image of {tuple(image.shape[-2:])} px cut into image_grid_patch="
                             f"{self.config.image_grid_patch} px squares is a {tuple(grid.shape[-2:])} grid; the "
                             f"latents' grid is ({h}, {w}): the image must be the clip's size and image_grid_patch "
                             "the VAE's spatial factor")
        grid = grid * image_given[:, None, None, None].to(grid.dtype)
        return grid.to(like.dtype)[:, :, None].expand(-1, -1, frames, -1, -1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                given_frames: torch.Tensor | None = None, motion: torch.Tensor | None = None,
                image: torch.Tensor | None = None, image_given: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config.latent_channels
        if x.ndim != 5 or x.shape[1] != c:
            raise ValueError(f"x must be latents (B, C={c}, T, h, w), got shape {tuple(x.shape)}")
        b, _, frames, h, w = x.shape
        if given_frames is None:
            given_frames = torch.zeros(b, frames, dtype=torch.bool, device=x.device)
        if not isinstance(given_frames, torch.Tensor) or tuple(given_frames.shape) != (b, frames) \
                or given_frames.dtype.is_floating_point:
            got = tuple(given_frames.shape) if isinstance(given_frames, torch.Tensor) else type(given_frames).__name__
            raise ValueError(f"given_frames must be a bool (B, T) = ({b}, {frames}) mask, got {got}")
        fuse = {}
        if motion is not None:
            if self.motion is None:
                raise ValueError("this System has no trajectory condition (config.motion=None): call it without motion")
            if not isinstance(motion, torch.Tensor) or motion.ndim != 5 or motion.shape[0] != b \
                    or motion.shape[2:] != x.shape[2:]:
                got = tuple(motion.shape) if isinstance(motion, torch.Tensor) else type(motion).__name__
                raise ValueError(f"motion must be motion latents (B={b}, C_m, T={frames}, {h}, {w}), got {got}")
            fuse = {"fuser": self.motion.fusers, "motion_features": self.motion(motion)}
        flag = given_frames.to(x.dtype)[:, None, :, None, None].expand(b, 1, frames, h, w)
        tokens = self.text.encode_ids(ids, mask)
        if image is not None and not self.takes_image:
            raise ValueError("this System reads no image (config.image=None, image_grid_channels=0): an image enters "
                             "as the given first frame; call it without image")
        if self.semantic is not None:
            e_img, m_img = self.encode_image(image, image_given, b, x.device)
            tokens, mask = torch.cat([tokens, e_img.to(tokens.dtype)], 1), torch.cat([mask, m_img], 1)
        parts = [x, flag]
        if self.image_grid is not None:
            parts.append(self.image_on_grid(image, image_given, frames, h, w, x))
        return self.transformer(torch.cat(parts, dim=1), t, tokens, text_mask=mask, **fuse)


def _check_image(image, image_given, batch: int, device) -> torch.Tensor:
    """``image_given`` as a bool (B,) mask (all True when None), after checking ``image`` is (B, 3, H, W)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[:2] != (batch, 3):
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be images (B={batch}, 3, H, W) in [-1, 1], got {got}")
    if image_given is None:
        image_given = torch.ones(batch, dtype=torch.bool, device=device)
    if tuple(image_given.shape) != (batch,) or image_given.dtype != torch.bool:
        raise ValueError(f"image_given must be a bool (B,) = ({batch},) mask, got {tuple(image_given.shape)}")
    return image_given


def system_schedule(num_steps: int = 1000) -> NoiseSchedule:
    """D10: CogVideoX's zero-terminal-SNR schedule (shift 1, as the zoo's t2v, i2v and Tora models)."""
    return NoiseSchedule.cogvideox(num_steps, 1.0)


# ---------------------------------------------------------------------------------------------- training batches
@dataclass
class ConditionDropout:
    """Training-time condition sampling (for classifier-free guidance and the three uses of given frames):
    probabilities of the empty caption and of the null trajectory, the probabilities of giving no frame / the
    first frame / the first ``previous_frames`` frames (``given_modes``, summing to 1). The semantic image tokens
    (``SystemConfig.image``) are those of the first frame given as an image (mode "first") when ``image_dropout``
    is None; a number makes the image a condition of its own, given with probability 1 - ``image_dropout`` whatever
    the given frames (on the Reducio VAE, whose decoder always takes the clip's content frame, R2: the image is that
    frame, not a latent frame)."""

    text_dropout: float = 0.1
    trajectory_dropout: float = 0.1
    given_modes: tuple[float, float, float] = (0.4, 0.4, 0.2)
    previous_frames: int = 2
    image_dropout: float | None = None

    def __post_init__(self):
        check_number("text_dropout", self.text_dropout, 0.0, 1.0)
        check_number("trajectory_dropout", self.trajectory_dropout, 0.0, 1.0)
        if self.image_dropout is not None:
            check_number("image_dropout", self.image_dropout, 0.0, 1.0)
        self.given_modes = tuple(float(p) for p in self.given_modes)
        if len(self.given_modes) != 3 or min(self.given_modes) < 0 or abs(sum(self.given_modes) - 1) > 1e-6:
            raise ValueError(f"given_modes={self.given_modes} must be three probabilities (none, first, previous) "
                             "summing to 1")
        check_int("previous_frames", self.previous_frames, 1)


def condition_batch(dropout: ConditionDropout, global_batch: int, frames: int, generator: torch.Generator,
                    part: slice | None = None) -> dict[str, torch.Tensor]:
    """The coins of one global batch, drawn in a fixed order from ``generator`` and sliced to ``part`` (this rank's
    clips): ``keep_text`` (B,) bool, ``keep_trajectory`` (B,) bool, ``given_frames`` (B, T) bool and ``image_given``
    (B,) bool (the first frame given as an image: the mode "first", not a previous clip's end; with
    ``dropout.image_dropout`` set, a coin of its own, drawn after the others so the other coins do not change)."""
    global_batch = check_int("global_batch", global_batch, 1)
    frames = check_int("frames", frames, 2)
    if dropout.previous_frames >= frames:
        raise ValueError(f"previous_frames={dropout.previous_frames} must leave a frame to generate in clips of "
                         f"{frames} latent frames")
    keep_text = torch.rand(global_batch, generator=generator) >= dropout.text_dropout
    keep_traj = torch.rand(global_batch, generator=generator) >= dropout.trajectory_dropout
    mode = torch.multinomial(torch.tensor(dropout.given_modes, dtype=torch.float64), global_batch, replacement=True,
                             generator=generator)
    n_given = torch.where(mode == 1, 1, torch.where(mode == 2, dropout.previous_frames, 0))
    given = torch.arange(frames)[None] < n_given[:, None]
    if dropout.image_dropout is None:
        image_given = mode == 1
    else:
        image_given = torch.rand(global_batch, generator=generator) >= dropout.image_dropout
    part = part if part is not None else slice(0, global_batch)
    return {"keep_text": keep_text[part], "keep_trajectory": keep_traj[part], "given_frames": given[part],
            "image_given": image_given[part]}


def training_kwargs(model: System, coins: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor,
                    null_ids: torch.Tensor, null_mask: torch.Tensor, motion: torch.Tensor | None = None,
                    null_motion: torch.Tensor | None = None, images: torch.Tensor | None = None
                    ) -> dict[str, torch.Tensor]:
    """The keyword arguments of ``DiffusionTrainer.step(x0, **kwargs)`` for one batch: captions dropped to the empty
    one, trajectories dropped to the null one (always passed, so every parameter is used under DDP), the given frames
    both as the model's flag (``given_frames``) and left clean and out of the loss (``clean_frames``, T8), and, for a
    model that reads images (semantic tokens or the image on the latent grid), the clips' ``images`` (B, 3, H, W) (their first frames; on the Reducio VAE
    their content frames), used where the coins give the image. The coins (drawn on the CPU) follow each tensor they
    select: the token ids sit on the text encoder's device (a GPU's in a CUDA run)."""
    keep = coins["keep_text"][:, None].to(ids.device)
    kw = {"ids": torch.where(keep, ids, null_ids), "mask": torch.where(keep, mask, null_mask),
          "given_frames": coins["given_frames"], "clean_frames": coins["given_frames"]}
    if model.motion is not None:
        if motion is None or null_motion is None:
            raise ValueError("this System has a trajectory condition: pass motion and null_motion latents")
        kw["motion"] = torch.where(coins["keep_trajectory"][:, None, None, None, None].to(motion.device), motion,
                                   null_motion.expand_as(motion))
    if model.takes_image:
        if images is None:
            raise ValueError("this System reads images: pass the clips' images (first or content frames)")
        kw["image"], kw["image_given"] = images, coins["image_given"]
    return kw


# ---------------------------------------------------------------------------------------------- motion latents
def motion_on_latent_grid(motion: torch.Tensor, temporal_factor: int) -> torch.Tensor:
    """Per-frame motion latents (B, C_m, F, h, w) (the motion VAE's, f_t = 1) on the time grid of a causal video
    latent with f_t = ``temporal_factor`` (C1: latent frame 0 holds frame 0, latent frame i > 0 frames
    f_t (i - 1) + 1 .. f_t i): (B, f_t C_m, 1 + (F - 1) / f_t, h, w), each latent frame's f_t motion frames stacked
    along channels in time order, frame 0 repeated f_t times (as the causal VAE pads the past with frame 0). The
    identity for f_t = 1.

    Tora compresses the flow video with a 3D VAE of the video VAE's compression (T5), so that motion and video latents
    share one grid for the extractor (T6); minivid's motion VAE is per-frame, and this lossless rearrangement puts its
    latents on the causal video latent's grid (minivid's choice; the spatial grid is matched by drawing the flow video
    at the size that makes both latents equally large, :func:`~minivid.pipeline.run.system_geometry`)."""
    f_t = check_int("temporal_factor", temporal_factor, 1)
    if not isinstance(motion, torch.Tensor) or motion.ndim != 5:
        got = tuple(motion.shape) if isinstance(motion, torch.Tensor) else type(motion).__name__
        raise ValueError(f"motion must be per-frame motion latents (B, C_m, F, h, w), got {got}")
    if f_t == 1:
        return motion
    b, c, frames, h, w = motion.shape
    if (frames - 1) % f_t:
        raise ValueError(f"motion latents of F={frames} frames do not fill a causal latent with f_t={f_t}: F must be "
                         f"1 + {f_t}k (1, {1 + f_t}, {1 + 2 * f_t}, ...)")
    padded = torch.cat([motion[:, :, :1].expand(b, c, f_t - 1, h, w), motion], dim=2)  # (B, C, f_t (1 + k), h, w)
    grouped = padded.reshape(b, c, padded.shape[2] // f_t, f_t, h, w)  # [latent frame, frame within it]
    return grouped.permute(0, 3, 1, 2, 4, 5).reshape(b, f_t * c, padded.shape[2] // f_t, h, w)


# ---------------------------------------------------------------------------------------------- sampling
@torch.no_grad()
def sample_system(model: System, captions: Sequence[str], shape: tuple[int, int, int, int], *,
                  given: torch.Tensor | None = None, given_frames: torch.Tensor | None = None,
                  motion: torch.Tensor | None = None, null_motion: torch.Tensor | None = None,
                  image: torch.Tensor | None = None, guidance: dict[str, float] | None = None, steps: int = 20,
                  seed: int = 0, schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """Latents (N, C, T, h, w) for ``captions`` (N strings; "" for none) of latent ``shape`` (C, T, h, w).

    ``given`` (N, C, T, h, w) latents with ``given_frames`` (N, T) bool: the frames kept (the first for an image,
    the first k for a previous clip's end); ``motion`` (N, C_m, T, h, w): the trajectories' motion latents, with
    ``null_motion`` (1, C_m, T, h, w) for guidance; ``image`` (N, 3, H, W) in [-1, 1]: the first frames as images for
    the semantic image tokens (a model with ``config.image``; guided with the given frames, as "frames").
    ``guidance``: scales {"frames", "text", "trajectory"} (default 1, 4, 2; 1 means no guidance for that condition);
    conditions that are absent take no branch. The same seed and inputs give the same latents."""
    n = len(captions)
    if n == 0 or isinstance(captions, str):
        raise ValueError("captions must be a non-empty list of strings (\"\" for no caption)")
    shape = tuple(int(v) for v in shape)
    c = model.config.latent_channels
    if len(shape) != 4 or shape[0] != c:
        raise ValueError(f"shape must be the latent (C={c}, T, h, w), got {shape}")
    frames = shape[1]
    scales = {"frames": 1.0, "text": 4.0, "trajectory": 2.0}
    for k, v in (guidance or {}).items():
        if k not in scales:
            raise ValueError(f"guidance key {k!r}: allowed {sorted(scales)}")
        scales[k] = check_number(f"guidance[{k!r}]", v)
    if (given is None) != (given_frames is None):
        raise ValueError("pass given latents and given_frames together (or neither)")
    if given is not None:
        if tuple(given.shape) != (n, *shape):
            raise ValueError(f"given must be latents (N={n}, {', '.join(map(str, shape))}), got {tuple(given.shape)}")
        if tuple(given_frames.shape) != (n, frames) or given_frames.dtype.is_floating_point:
            raise ValueError(f"given_frames must be a bool (N, T) = ({n}, {frames}) mask, got "
                             f"{tuple(given_frames.shape)}")
        if bool(given_frames.all(1).any()):
            raise ValueError("given_frames gives every frame of a clip: leave at least one frame to generate")
        if not bool(given_frames.any()):
            given, given_frames = None, None
    if motion is not None:
        if model.motion is None:
            raise ValueError("this System has no trajectory condition (config.motion=None): pass motion=None")
        if motion.ndim != 5 or motion.shape[0] != n or tuple(motion.shape[2:]) != shape[1:]:
            raise ValueError(f"motion must be motion latents (N={n}, C_m, {frames}, {shape[2]}, {shape[3]}), got "
                             f"{tuple(motion.shape)}")
    if image is not None:
        if not model.takes_image:
            raise ValueError("this System reads no image (no semantic image encoder, config.image=None, and "
                             "image_grid_channels=0): give the image as the first frame (given, given_frames) and "
                             "pass image=None")
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[:2] != (n, 3):
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image must be images (N={n}, 3, H, W) in [-1, 1], got {got}")
    if model.motion is not None and null_motion is None:
        raise ValueError("this System has a trajectory condition: pass null_motion, the motion latent of no trajectory "
                         "(pipeline.tora.null_motion), which it was trained with for 'no trajectory'")
    steps = check_int("steps", steps, 1)
    s = schedule or system_schedule()
    model.eval()
    dev = next(model.parameters()).device  # the inputs follow the model (noise is drawn on the CPU: the same anywhere)
    given, given_frames, motion, null_motion, image = (v.to(dev) if isinstance(v, torch.Tensor) else v for v in
                                                       (given, given_frames, motion, null_motion, image))
    ids, mask = model.tokenize(list(captions))
    null_ids, null_mask = model.tokenize([""] * n)
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn((n, *shape), generator=g).to(dev)
    renoise = torch.randn((n, *shape), generator=g).to(dev)  # the no-frames branch's view of the given frames

    # conditions in nesting order, each with its null and its kwargs when on
    levels = []
    if given is not None or image is not None:
        levels.append("frames")
    has_text = any(cap for cap in captions)
    if has_text:
        levels.append("text")
    if motion is not None:
        levels.append("trajectory")
    null_m = None if null_motion is None else null_motion.expand(n, *null_motion.shape[1:])

    def branch(k: int):
        on = set(levels[:k])

        def fn(x, t):
            kw = {"ids": ids if "text" in on else null_ids, "mask": mask if "text" in on else null_mask}
            if given is not None:
                keep = given_frames[:, None, :, None, None]
                if "frames" in on:
                    x = torch.where(keep, given, x)
                    kw["given_frames"] = given_frames
                else:
                    x = torch.where(keep, s.q_sample(given, t, renoise), x)
            if model.motion is not None:
                kw["motion"] = motion if "trajectory" in on else null_m
            if image is not None and "frames" in on:
                kw["image"] = image
            return model(x, t, **kw)
        return fn

    if levels:
        fn = nested_guidance([branch(k) for k in range(len(levels) + 1)], [scales[name] for name in levels])
    else:
        fn = branch(0)
    z = dpm_solver_pp_sample(fn, x_T, s, make_timesteps(s, steps, "trailing"), prediction="v")
    if given is not None:
        z = torch.where(given_frames[:, None, :, None, None], given, z)
    return z


__all__ = ["SystemConfig", "System", "system_schedule", "ConditionDropout", "condition_batch", "training_kwargs",
           "motion_on_latent_grid", "sample_system", "GIVEN_MODES"]
