r"""Reducio-DiT's image condition (R4): the content frame :math:`V_{T/2}` seen twice, by OpenCLIP (what is in it) and
by the VAE's encoder (what it looks like), projected to the condition width and summed.

.. math::
    e_s = \mathrm{OpenCLIP}(V_{T/2}), \quad e_c = \mathrm{VAE}(V_{T/2}), \quad
    e_{img} = \mathrm{MLP}(e_s) \oplus \mathrm{MLP}(e_c), \quad e = [e_{img}, e_p]  \qquad \text{(R4)}

(⊕ an element-wise sum, [·] the concatenation of token sequences; :math:`e_p = \mathrm{MLP}(\mathrm{T5}(prompt))`
comes from :mod:`minivid.conditioning.text`). The middle frame is frame ``(T - 1) // 2``, the index of Reducio's
code (R2 [code]); for an even T that is the earlier of the two middle frames.

- :class:`SemanticImageEncoder` (``e_s``): an ``open_clip`` vision tower. **Offline by default**: with
  ``name_or_path=None`` it is a small randomly initialised ``VisionTransformer`` built by open_clip's own
  ``_build_vision_tower`` from a ``CLIPVisionCfg`` (32 px, 8 px patches, width 64, 2 layers, 4 heads), trained with
  the video model. Given a local folder in open_clip's Hugging Face layout (``open_clip_config.json`` + weights,
  i.e. a downloaded ``hf-hub:`` snapshot) or an open_clip architecture name with ``pretrained`` a local checkpoint
  file, it loads that model with ``open_clip.create_model`` and keeps its ``.visual``; minivid never downloads, so a
  missing file is a clear error. ``encoder(images)`` -> ``(tokens (B, N, width), mask (B, N))``: the per-patch
  tokens after the tower's final LayerNorm (open_clip's ``output_tokens=True``; the class token is dropped), N =
  ``grid_size[0] * grid_size[1]``; ``pooled_only=True`` gives the projected pooled embedding (B, 1, embed_dim).
- :class:`ContentImageEncoder` (``e_c``): any minivid autoencoder's encoder (the zoo's 2D VAE,
  :class:`minivid.autoencoders.VAE2D`), handed over as an instance; returns the posterior mean of the middle
  frame's latent as tokens (B, h·w, |z|). Frozen by default.
- :class:`ImageCondition`: the two MLPs and the sum, the null condition for classifier-free guidance, and
  :func:`condition_tokens` for ``e = [e_img, e_p]``.

**Preprocessing (minivid's choice).** Images are minivid's (B, 3, H, W) in [-1, 1]: mapped to [0, 1], resized to
the tower's image size (bilinear with antialiasing, the whole frame: no centre crop, so a non-square frame is
stretched), then normalised with the checkpoint's mean and std (OpenAI CLIP's for the random default and for most
OpenCLIP checkpoints). open_clip's own PIL pipeline resizes the shorter side (bicubic) and centre-crops instead, so a
pretrained tower sees slightly different pixels here than in its training.

**The ⊕ of R4, as minivid reads it.** The paper sums MLP(e_s) and MLP(e_c) element-wise but the two have different
token counts: N_s = (image_size / patch_size)² patches against h·w latent pixels (e.g. 16×16 for OpenCLIP ViT-H/14
at 224 px against 32×32 for SD-VAE at 256 px). :class:`ImageCondition` projects each sequence with its own MLP on its
own grid, then resamples the projected *content* tokens onto the *semantic* grid (``align="semantic"``, the
default: e_img has N_s tokens) by bilinear interpolation of the 2D token grid (with antialiasing when it shrinks),
and sums. ``align="content"`` resamples the semantic tokens onto the content grid instead (with ``pooled_only``
the single pooled token is then added to every content token). This alignment is minivid's reading, not a
detail taken from Reducio's paper or code.

**Null condition.** ``ImageCondition.null(batch, num_tokens)`` is zero tokens with an all-True mask: an all-False
key-padding mask would give a softmax over no keys (NaN); zero tokens that are attended to give every query the
same context (the attention's key/value biases), which carries no image.

``trainable=False`` freezes an encoder's weights (no gradients, eval mode kept through ``.train()``, encoded under
``torch.no_grad``): an option of :class:`SemanticImageEncoder` (trainable by default, like the random T5 of
:mod:`~minivid.conditioning.text`), the default of :class:`ContentImageEncoder` (it holds a trained autoencoder).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..nn import Model, ModelConfig
from ..utils.validation import check_choice, check_number, check_positive_ints

if TYPE_CHECKING:  # an instance is handed over; conditioning never builds an autoencoder
    from ..autoencoders import VideoAutoencoder

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip.constants.OPENAI_DATASET_MEAN
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)  # open_clip.constants.OPENAI_DATASET_STD
ALIGNS = ("semantic", "content")


def middle_frame_index(num_frames: int) -> int:
    """R2 [code], R4: the index of the content frame V_{T/2} of a T-frame clip, ``(T - 1) // 2``."""
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
        raise ValueError(f"num_frames={num_frames!r} is invalid: expected an integer >= 1")
    return (num_frames - 1) // 2


def middle_frame(video: torch.Tensor) -> torch.Tensor:
    """R4: the content frame V_{T/2} = frame ``(T - 1) // 2`` of videos (B, C, T, H, W), as images (B, C, H, W)."""
    if not isinstance(video, torch.Tensor) or video.ndim != 5:
        got = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"video must be a tensor (B, C, T, H, W), got {got}")
    return video[:, :, middle_frame_index(video.shape[2])]


def _check_images(images, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a tensor (B, 3, H, W), got {got}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be floating point in [-1, 1], got dtype {images.dtype}")
    lo, hi = images.min().item(), images.max().item()
    if lo < -1.001 or hi > 1.001:
        raise ValueError(f"{name} must be in [-1, 1] (minivid's convention), got values in [{lo:.4g}, {hi:.4g}]; "
                         "map images in [0, 1] with 2 * x - 1")


# ------------------------------------------------------------------------------------------------ e_s: OpenCLIP


@dataclass
class SemanticImageEncoderConfig(ModelConfig):
    """``name_or_path`` None: a random open_clip ViT of the given shape; else a local open_clip model: a folder
    (``open_clip_config.json`` + weights) or an architecture name with ``pretrained`` a local checkpoint file.
    ``pooled_only``: return the projected pooled embedding (B, 1, embed_dim) instead of the patch tokens."""

    name_or_path: str | None = None
    pretrained: str | None = None
    trainable: bool = True
    pooled_only: bool = False
    image_size: int = 32
    patch_size: int = 8
    width: int = 64
    layers: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    embed_dim: int = 32

    def __post_init__(self):
        check_positive_ints(self, ("image_size", "patch_size", "width", "layers", "heads", "embed_dim"))
        check_number("mlp_ratio", self.mlp_ratio, 0.0, strict_minimum=True)
        if self.width % self.heads:
            raise ValueError(f"width={self.width} is invalid: expected a multiple of heads={self.heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is invalid: expected a multiple of "
                             f"patch_size={self.patch_size}")
        for name in ("name_or_path", "pretrained"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name}={value!r} is invalid: expected a string or None")
        if self.pretrained is not None and self.name_or_path is None:
            raise ValueError(f"pretrained={self.pretrained!r} needs name_or_path (the open_clip architecture name "
                             "the checkpoint belongs to, e.g. 'ViT-H-14')")


def _load_open_clip_visual(name_or_path: str, pretrained: str | None) -> nn.Module:
    """The ``.visual`` of ``open_clip.create_model`` on local files only (R4's OpenCLIP); a ValueError otherwise."""
    import open_clip

    never = "minivid never downloads"
    if name_or_path.startswith("hf-hub:"):
        raise ValueError(f"name_or_path={name_or_path!r} is a Hugging Face Hub name and {never}: pass the folder of "
                         "a local snapshot (it holds open_clip_config.json and the weights) instead")
    folder = Path(name_or_path.removeprefix("local-dir:"))
    is_folder = name_or_path.startswith("local-dir:") or folder.exists() or (
        os.sep in name_or_path and open_clip.get_model_config(name_or_path) is None)
    if is_folder:
        if pretrained is not None:
            raise ValueError(f"pretrained={pretrained!r} is only for an open_clip architecture name; the folder "
                             f"name_or_path={name_or_path!r} holds its own weights")
        if not (folder / "open_clip_config.json").is_file():
            raise ValueError(f"name_or_path={name_or_path!r}: no open_clip_config.json found in that folder (an "
                             f"open_clip model folder holds open_clip_config.json and its weights; {never})")
        if not any(any(folder.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.pth")):
            raise ValueError(f"name_or_path={name_or_path!r}: no weights (*.safetensors, *.bin, *.pth) found in "
                             f"that folder ({never})")
        model_name, model_cfg, kwargs = f"local-dir:{folder}", open_clip.get_model_config(f"local-dir:{folder}"), {}
    else:
        model_name, model_cfg = name_or_path, open_clip.get_model_config(name_or_path)
        if model_cfg is None:
            raise ValueError(f"name_or_path={name_or_path!r} is neither a folder nor an open_clip architecture (known: "
                             f"{len(open_clip.list_models())} names such as 'ViT-B-32', 'ViT-H-14', and any "
                             "registered with open_clip.add_model_config)")
        if pretrained is None or not os.path.isfile(pretrained):
            raise ValueError(f"pretrained={pretrained!r} is invalid: name_or_path={name_or_path!r} needs a local "
                             f"checkpoint file (not a tag such as 'openai' or 'laion2b_s32b_b79k': {never})")
        kwargs = dict(pretrained=os.path.abspath(pretrained))  # an absolute path is never taken for a tag
    text_cfg = model_cfg.get("text_cfg", {}) if model_cfg else {}
    if "hf_model_name" in text_cfg:  # building it would fetch a Hugging Face text model's config
        raise ValueError(f"name_or_path={name_or_path!r}: its text tower is the Hugging Face model "
                         f"{text_cfg['hf_model_name']!r}, which open_clip would fetch to build it ({never})")
    try:
        model = open_clip.create_model(model_name, pretrained_image=False, pretrained_text=False, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:
        raise ValueError(f"name_or_path={name_or_path!r}, pretrained={pretrained!r}: open_clip could not load the "
                         f"model from local files: {e}") from e
    return model.visual


class SemanticImageEncoder(Model):
    """R4's e_s = OpenCLIP(V_{T/2}): ``encoder(images) -> (tokens (B, N, width), mask (B, N))``, images (B, 3, H, W)
    in [-1, 1]; see the module docstring."""

    config_class = SemanticImageEncoderConfig

    def __init__(self, config: SemanticImageEncoderConfig | None = None, **fields):
        super().__init__(config, **fields)
        c = self.config
        if c.name_or_path is None:
            from open_clip.model import CLIPVisionCfg, _build_vision_tower

            vision_cfg = CLIPVisionCfg(layers=c.layers, width=c.width, head_width=c.width // c.heads,
                                       mlp_ratio=c.mlp_ratio, patch_size=c.patch_size, image_size=c.image_size)
            self.visual = _build_vision_tower(c.embed_dim, vision_cfg)
            mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
        else:
            self.visual = _load_open_clip_visual(c.name_or_path, c.pretrained)
            pp = getattr(self.visual, "preprocess_cfg", {}) or {}
            mean, std = pp.get("mean", OPENAI_CLIP_MEAN), pp.get("std", OPENAI_CLIP_STD)
        from open_clip.transformer import VisionTransformer

        if not c.pooled_only:
            if not isinstance(self.visual, VisionTransformer):
                raise ValueError(f"name_or_path={c.name_or_path!r}: its vision tower is a "
                                 f"{type(self.visual).__name__}, which has no patch tokens; use pooled_only=True")
            self.visual.output_tokens = True  # forward returns (pooled, tokens)
            if getattr(self.visual, "proj", None) is not None:  # projects the pooled output only, which the
                self.visual.proj.requires_grad_(False)  # tokens skip: no gradient ever (DDP refuses such a parameter)
        else:
            self.visual.output_tokens = False
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        if not c.trainable:
            self.visual.requires_grad_(False)
            self.visual.eval()

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) the tower takes."""
        size = self.visual.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def grid_size(self) -> tuple[int, int]:
        """The token grid (rows, columns): the patch grid, or (1, 1) with ``pooled_only``."""
        return (1, 1) if self.config.pooled_only else tuple(self.visual.grid_size)

    @property
    def width(self) -> int:
        """The width of the tokens: the transformer's width, or the pooled embedding's with ``pooled_only``."""
        return self.visual.output_dim if self.config.pooled_only else self.visual.conv1.out_channels

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.config.trainable:
            self.visual.eval()  # a frozen encoder stays in eval mode
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> the tower's input: [0, 1], resized (bilinear, antialias) to
        ``image_size``, normalised with the checkpoint's mean and std."""
        _check_images(images)
        x = (images + 1) / 2  # [-1, 1] -> [0, 1]
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """R4: e_s = OpenCLIP(images): (tokens (B, N, width), all-True mask (B, N))."""
        x = self.preprocess(images).to(self.visual.conv1.weight.dtype if hasattr(self.visual, "conv1")
                                       else images.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.trainable):
            if self.config.pooled_only:
                tokens = self.visual(x)[:, None]  # (B, 1, embed_dim)
            else:
                _, tokens = self.visual(x)  # (B, N, width): patch tokens after ln_post, class token dropped
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return tokens, mask


# ------------------------------------------------------------------------------------------------ e_c: the VAE


class ContentImageEncoder(nn.Module):
    """R4's e_c = VAE(V_{T/2}): ``encoder(video) -> (tokens (B, h·w, |z|), mask (B, h·w))``, the posterior mean of
    the middle frame ``(T - 1) // 2`` of videos (B, 3, T, H, W) in [-1, 1], or of images (B, 3, H, W) as given.

    ``autoencoder``: a minivid autoencoder (``encode(video) -> DiagonalGaussian``; the zoo's
    :class:`~minivid.autoencoders.VAE2D`), whose encoder runs on the frame as a one-frame video. Its latent is
    used unscaled (the MLP of R4 learns the scale). ``trainable=False`` (the default) freezes it."""

    def __init__(self, autoencoder: "VideoAutoencoder", trainable: bool = False):
        super().__init__()
        if not isinstance(autoencoder, nn.Module) or not callable(getattr(autoencoder, "encode", None)) \
                or not hasattr(autoencoder, "downsample"):
            raise ValueError(f"autoencoder must be a minivid autoencoder (encode(video), downsample), got "
                             f"{type(autoencoder).__name__}")
        if not isinstance(trainable, bool):
            raise ValueError(f"trainable={trainable!r} is invalid: expected True or False")
        self.autoencoder, self.trainable = autoencoder, trainable
        if not trainable:
            self.autoencoder.requires_grad_(False)
            self.autoencoder.eval()

    @property
    def width(self) -> int:
        """|z|, the latent channels."""
        return int(self.autoencoder.latent_channels)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """The token grid (h, w) = (H / f_s, W / f_s) of frames H × W."""
        f_h, f_w = self.autoencoder.downsample[1:]
        return height // f_h, width // f_w

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.trainable:
            self.autoencoder.eval()  # a frozen encoder stays in eval mode
        return self

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """R4: e_c = VAE encoder(V_{T/2}), the posterior mean (B, h·w, |z|), and an all-True mask (B, h·w)."""
        frame = video if isinstance(video, torch.Tensor) and video.ndim == 4 else middle_frame(video)
        _check_images(frame, "video" if video.ndim == 5 else "images")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable):
            z = self.autoencoder.encode(frame[:, :, None]).mode()  # the mean of q(z | V_{T/2}): (B, |z|, 1, h, w)
        if not isinstance(z, torch.Tensor) or z.ndim != 5 or z.shape[2] != 1:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"autoencoder={type(self.autoencoder).__name__} must encode a one-frame video into one "
                             f"latent frame (B, |z|, 1, h, w), got {got}")
        tokens = rearrange(z[:, :, 0], "b c h w -> b (h w) c")
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)


# ------------------------------------------------------------------------------------------------ e_img


def _grid(name: str, num_tokens: int, grid) -> tuple[int, int]:
    if grid is None:
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f"{name}=None is invalid for {num_tokens} tokens (not a square grid): pass (rows, cols)")
        return side, side
    if (not isinstance(grid, (tuple, list)) or len(grid) != 2 or not all(isinstance(g, int) and g >= 1 for g in grid)
            or grid[0] * grid[1] != num_tokens):
        raise ValueError(f"{name}={grid!r} is invalid: expected (rows, cols) with rows * cols = {num_tokens} tokens")
    return int(grid[0]), int(grid[1])


def resample_tokens(tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Tokens (B, h·w, D) on a grid (h, w) -> (B, size[0]·size[1], D): bilinear interpolation of the 2D grid
    (antialiased when it shrinks; the identity when the sizes agree)."""
    if tuple(grid) == tuple(size):
        return tokens
    x = rearrange(tokens, "b (h w) d -> b d h w", h=grid[0], w=grid[1])
    x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return rearrange(x, "b d h w -> b (h w) d")


def token_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Tokens (B, h·w, D) -> a token grid (B, h, w, D), the form of ``ReducioDiT``'s ``content`` (R7)."""
    h, w = _grid("grid", tokens.shape[1], grid)
    return rearrange(tokens, "b (h w) d -> b h w d", h=h, w=w)


def _projection(in_dim: int, dim: int) -> nn.Sequential:
    """R4's MLP: Linear(in_dim, dim) -> GELU (tanh) -> Linear(dim, dim), PixArt-α's caption projection."""
    return nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))


class ImageCondition(nn.Module):
    """R4: e_img = MLP(e_s) ⊕ MLP(e_c). ``cond(e_s, e_c, semantic_grid, content_grid) -> (e_img (B, N, dim), mask)``
    with N the semantic grid's tokens (``align="semantic"``) or the content grid's (``align="content"``); a grid
    left None is taken as square. ``mlp_s``: semantic_dim -> dim; ``mlp_c``: content_dim -> dim."""

    def __init__(self, semantic_dim: int, content_dim: int, dim: int, align: str = "semantic"):
        super().__init__()
        for name, value in (("semantic_dim", semantic_dim), ("content_dim", content_dim), ("dim", dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: expected a positive integer")
        self.semantic_dim, self.content_dim, self.dim = semantic_dim, content_dim, dim
        self.align = check_choice("align", align, ALIGNS)
        self.mlp_s = _projection(semantic_dim, dim)
        self.mlp_c = _projection(content_dim, dim)

    def output_grid(self, semantic_grid: tuple[int, int], content_grid: tuple[int, int]) -> tuple[int, int]:
        """The grid of e_img: the semantic grid (``align="semantic"``) or the content grid."""
        return tuple(semantic_grid) if self.align == "semantic" else tuple(content_grid)

    def forward(self, e_s: torch.Tensor, e_c: torch.Tensor, semantic_grid: tuple[int, int] | None = None,
                content_grid: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        for name, x, d in (("e_s", e_s, self.semantic_dim), ("e_c", e_c, self.content_dim)):
            if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != d:
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"{name} must be tokens (B, N, {d}), got {got}")
        if e_s.shape[0] != e_c.shape[0]:
            raise ValueError(f"e_s {tuple(e_s.shape)} and e_c {tuple(e_c.shape)} must have the same batch size")
        gs = _grid("semantic_grid", e_s.shape[1], semantic_grid)
        gc = _grid("content_grid", e_c.shape[1], content_grid)
        out = self.output_grid(gs, gc)
        s = resample_tokens(self.mlp_s(e_s), gs, out)  # MLP(e_s), (B, N, dim)
        c = resample_tokens(self.mlp_c(e_c), gc, out)  # MLP(e_c), on the same grid
        e_img = s + c  # R4: ⊕, the element-wise sum
        return e_img, torch.ones(e_img.shape[:2], dtype=torch.bool, device=e_img.device)

    def null(self, batch: int, num_tokens: int, device=None, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional e_img of classifier-free guidance: zero tokens (batch, num_tokens, dim) with an
        all-True mask (an all-False mask would make the attention's softmax NaN; see the module docstring)."""
        for name, value in (("batch", batch), ("num_tokens", num_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: expected a positive integer")
        if device is None:
            device = self.mlp_s[0].weight.device
        tokens = torch.zeros(batch, num_tokens, self.dim, device=device,
                             dtype=dtype or self.mlp_s[0].weight.dtype)
        return tokens, torch.ones(batch, num_tokens, dtype=torch.bool, device=device)


def condition_tokens(e_img: torch.Tensor, e_img_mask: torch.Tensor, e_p: torch.Tensor,
                     e_p_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """R4: e = [e_img, e_p], the image tokens then the prompt's, with their key-padding masks concatenated the same
    way: ((B, N + L, D), (B, N + L) bool)."""
    for name, x, m, m_name in (("e_img", e_img, e_img_mask, "e_img_mask"), ("e_p", e_p, e_p_mask, "e_p_mask")):
        if not isinstance(x, torch.Tensor) or x.ndim != 3:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be tokens (B, N, D), got {got}")
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or tuple(m.shape) != tuple(x.shape[:2]):
            got = f"{tuple(m.shape)} {m.dtype}" if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"{m_name} must be a bool mask {tuple(x.shape[:2])} (True = a real token), got {got}")
    if e_img.shape[0] != e_p.shape[0] or e_img.shape[2] != e_p.shape[2]:
        raise ValueError(f"e_img {tuple(e_img.shape)} and e_p {tuple(e_p.shape)} must have the same batch size and "
                         "width (project both to the condition width first)")
    return torch.cat([e_img, e_p], dim=1), torch.cat([e_img_mask, e_p_mask], dim=1)


__all__ = ["SemanticImageEncoderConfig", "SemanticImageEncoder", "ContentImageEncoder", "ImageCondition",
           "condition_tokens", "middle_frame", "middle_frame_index", "resample_tokens", "token_grid"]
