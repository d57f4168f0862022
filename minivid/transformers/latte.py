r"""Latte: a latent diffusion transformer for video, in its four variants (L1-L8).

A clip (B, C, F, H, W) — pixels (C = 3) or a VAE latent (C = latent channels, a config change) — goes
through:

1. **L1 / L4** :class:`~minivid.transformers.embeddings.PatchEmbed` to tokens
   :math:`\hat z \in \mathbb R^{n_f\times n_h\times n_w\times d}` (uniform frame patches, n_f = F, or
   tubelets of s frames, n_f = F/s), then :math:`z = \hat z + p` with p the fixed 2D sin-cos table of
   each frame (spatial position) plus, with ``temporal_pos="sincos"``, a 1D sin-cos table of the frame
   index (L6; with ``"rope"`` time is encoded by a 1D RoPE inside temporal attention instead). Latte's
   release adds the temporal table just before the first temporal block; here both tables are added at the
   input, as L1 writes it, so that the four variants treat time alike.
2. The blocks of ``variant`` (L3), on :math:`z` viewed as (B, n_f, t, d), t = n_h·n_w
   (:mod:`minivid.nn.blocks`):

   ====== =========================================================================================
   1      interleaved: spatial block, temporal block, spatial, temporal, ... (``depth`` blocks)
   2      late fusion: ``depth/2`` spatial blocks, then ``depth/2`` temporal blocks
   3      factorised attention: each of the ``depth`` blocks = spatial MHA, temporal MHA, MLP
   4      head split: each block's MHA has H/2 spatial and H/2 temporal heads, results added
   ====== =========================================================================================

3. **L5** the timestep (and class, with a null class for classifier-free guidance) condition every
   block by adaLN-Zero (default), AdaLN, S-AdaLN, adaLN-single, or travel as extra tokens.
4. **L8** a final (modulated) LayerNorm, a linear decoder and a reshape back to (B, C_out, F, H, W), with
   C_out = 2C for the learned covariance (D6: the first C channels are ε, the last C the raw variance
   interpolation v), trained by ``minivid.diffusion.training_losses(..., learned_variance=True)``; for
   tubelets a 3D transposed convolution also upsamples time (L4).

**L7**, learning strategies: :meth:`Latte.load_image_dit` initialises a Latte from an :class:`ImageDiT`
(a spatial-only DiT trained on frames): every weight whose name and shape match is copied, the image
model's blocks go to the Latte's spatial(-containing) blocks in order, the fixed spatial sin-cos table
is shared by every frame and the temporal position is new (so the position embedding is "extended in
time"), and the label embedding is dropped. Temporal branches keep their adaLN-Zero initialisation, so
a variant 1-3 Latte so initialised (with RoPE time) *is* the image model applied frame by frame. (Latte's
release matches parameters by name, so its temporal blocks receive image blocks too: DiT block i goes to
Latte block i whichever its kind.)
Image-video joint training: ``forward(..., num_images=k)`` treats the last k frames of the clip as
independent images, excluded from temporal attention and from the temporal position embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ..nn import (BACKENDS, MODULATIONS, AdaLN, AdaLNSingle, DiTBlock, Model, ModelConfig, TimestepEmbedding,
                  append_condition_tokens, block_flops, check_labels, modulate, rope_1d, sincos_1d, sincos_2d,
                  strip_condition_tokens)
from ..utils.validation import check_choice, check_int, check_positive_ints, is_int, is_number
from .embeddings import PatchDecoder, PatchEmbed, patch_grid

VARIANTS = (1, 2, 3, 4)
TEMPORAL_POSITIONS = ("sincos", "rope")


@dataclass
class LatteConfig(ModelConfig):
    """Configuration of a :class:`Latte` (and of the :class:`ImageDiT` it can be initialised from).

    ``in_channels``/``size``/``num_frames`` describe the input: 3 channels for pixel clips, the latent
    channels and latent size for a VAE latent. ``num_frames`` and ``size`` are the clip the model is
    built for (the cost model uses them); ``forward`` accepts any clip whose sides divide by the patch.
    ``num_classes = 0`` makes the model unconditional; otherwise label ``num_classes`` is the null class
    (classifier-free guidance), used with probability ``class_dropout`` in training.
    """

    variant: int = 1
    in_channels: int = 3
    num_frames: int = 8
    size: int | tuple[int, int] = 32
    patch_size: int = 4
    tubelet: int = 1  # temporal stride s of the compression patch embedding (L4); 1 = uniform
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 0
    class_dropout: float = 0.1
    learn_sigma: bool = True  # L8 / D6: 2x output channels
    modulation: str = "adaln-zero"  # L5
    temporal_pos: str = "sincos"  # L6: "sincos" | "rope"
    rope_theta: float = 10000.0
    qk_norm: bool = False
    attention_backend: str = "sdpa"
    freq_dim: int = 256

    def __post_init__(self):
        check_choice("variant", self.variant, VARIANTS)  # L3
        check_positive_ints(self, ("in_channels", "dim", "depth", "heads", "num_frames", "patch_size", "tubelet",
                                   "freq_dim"))
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        pair = (self.size, self.size) if is_int(self.size) else self.size
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(is_int(v) and v >= 1 for v in pair):
            raise ValueError(f"size={self.size!r} must be a positive int or an (H, W) pair of positive ints")
        if not is_number(self.mlp_ratio) or not int(self.dim * self.mlp_ratio) >= 1:
            raise ValueError(f"mlp_ratio={self.mlp_ratio!r} must be a positive number with int(dim * mlp_ratio) >= 1 "
                             f"(the MLP's hidden width; dim={self.dim})")
        check_int("num_classes", self.num_classes, 0, what="an int >= 0 (0 = unconditional)")
        if self.variant in (1, 2) and self.depth % 2:
            raise ValueError(f"depth={self.depth} must be even for variant={self.variant} (spatial and temporal "
                             f"blocks come in equal numbers); allowed: 2, 4, 6, ...")
        if self.variant == 4 and self.heads % 2:
            raise ValueError(f"heads={self.heads} must be even for variant=4 (half the heads attend spatially, "
                             f"half temporally); allowed: 2, 4, 6, ...")
        if self.dim % 4:
            raise ValueError(f"dim={self.dim} must be divisible by 4 (2D sin-cos position embedding)")
        if self.temporal_pos not in TEMPORAL_POSITIONS:
            raise ValueError(f"temporal_pos={self.temporal_pos!r} is not supported; allowed: {TEMPORAL_POSITIONS}")
        if self.temporal_pos == "rope" and self.head_dim % 2:
            raise ValueError(f"temporal_pos='rope' needs an even head_dim, got dim/heads = {self.head_dim}")
        check_choice("modulation", self.modulation, MODULATIONS)  # L5
        check_choice("attention_backend", self.attention_backend, BACKENDS)
        if not 0 <= self.class_dropout < 1:
            raise ValueError(f"class_dropout={self.class_dropout} must lie in [0, 1)")
        self.grid  # validates num_frames / size against tubelet / patch_size (L4)

    @property
    def height(self) -> int:
        return self.size if isinstance(self.size, int) else int(self.size[0])

    @property
    def width(self) -> int:
        return self.size if isinstance(self.size, int) else int(self.size[1])

    @property
    def grid(self) -> tuple[int, int, int]:
        """(n_f, n_h, n_w) of the configured clip (L4)."""
        return patch_grid(self.num_frames, self.height, self.width, self.patch_size, self.tubelet)

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels  # L8 / D6

    @property
    def block_kinds(self) -> list[str]:
        """The kind of each block (L3)."""
        half = self.depth // 2
        return {1: ["spatial", "temporal"] * half, 2: ["spatial"] * half + ["temporal"] * half,
                3: ["factorised"] * self.depth, 4: ["split"] * self.depth}[self.variant]

    @property
    def spatial_depth(self) -> int:
        """Number of blocks with spatial attention: the depth of the matching image DiT (L7)."""
        return sum(k != "temporal" for k in self.block_kinds)


class _DiTBackbone(Model):
    """What Latte and the image DiT share: patch embedding, condition embeddings, blocks, final layer."""

    config_class = LatteConfig

    def __init__(self, config: LatteConfig | None, kinds_of, **fields):
        super().__init__(config, **fields)
        cfg = self.config
        kinds = kinds_of(cfg)
        d = cfg.dim
        self.patch_embed = PatchEmbed(cfg.in_channels, d, cfg.patch_size, cfg.tubelet)  # L1 / L4
        self.t_embed = TimestepEmbedding(d, cfg.freq_dim)
        self.y_embed = nn.Embedding(cfg.num_classes + 1, d) if cfg.num_classes else None  # +1: null class
        branches = 3 if "factorised" in kinds else 2
        self.shared_modulation = AdaLNSingle(d, d, branches) if cfg.modulation == "adaln-single" else None
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.heads, kind, cfg.modulation, d, cfg.mlp_ratio, cfg.qk_norm,
                                             cfg.attention_backend) for kind in kinds)
        self.final_norm = nn.LayerNorm(d, elementwise_affine=cfg.modulation == "tokens", eps=1e-6)
        if cfg.modulation == "adaln-single":  # PixArt: final (shift, scale) = table + c
            self.final_table = nn.Parameter(torch.randn(2, d) / d**0.5)
        elif cfg.modulation != "tokens":
            self.final_modulation = AdaLN(d, d, branches=1, kind="adaln", zero_init=True)
        self.decoder = PatchDecoder(d, cfg.out_channels, cfg.patch_size, cfg.tubelet)  # L8
        self._init_weights()
        self._pos_cache: dict = {}

    def _init_weights(self) -> None:
        """DiT's initialisation: Xavier for linear layers, N(0, 0.02) for the timestep MLP and the label
        table, then zero for adaLN-Zero regressions and the decoder (so a new model outputs zeros)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        if self.y_embed is not None:
            nn.init.normal_(self.y_embed.weight, std=0.02)
        if self.shared_modulation is not None:
            nn.init.normal_(self.shared_modulation.linear.weight, std=0.02)
        for m in self.modules():
            if isinstance(m, AdaLN) and (m.kind == "adaln-zero" or m is getattr(self, "final_modulation", None)):
                nn.init.zeros_(m.linear.weight)  # L5 [code]: adaLN-Zero
                nn.init.zeros_(m.linear.bias)
        for p in self.decoder.parameters():
            nn.init.zeros_(p)

    @property
    def null_class(self) -> int:
        """The label of the unconditional branch for classifier-free guidance."""
        if not self.config.num_classes:
            raise ValueError("this model is unconditional (num_classes=0): it has no null class")
        return self.config.num_classes

    def _spatial_pos(self, n_h: int, n_w: int, like: torch.Tensor) -> torch.Tensor:
        key = ("s", n_h, n_w, like.device, like.dtype)
        if key not in self._pos_cache:
            self._pos_cache[key] = sincos_2d(n_h, n_w, self.config.dim).to(like)  # (t, d)
        return self._pos_cache[key]

    def _condition(self, t: torch.Tensor, y: torch.Tensor | None, batch: int):
        """-> (cond for the blocks, c for the final layer, condition tokens or None)."""
        cfg = self.config
        if t.ndim != 1 or t.shape[0] != batch:
            raise ValueError(f"t must have shape (B,) = ({batch},), got {tuple(t.shape)}")
        c = self.t_embed(t)  # (B, d)
        tokens = [c]
        if cfg.num_classes:
            if y is None:
                raise ValueError(f"this model is class-conditional (num_classes={cfg.num_classes}): pass labels y "
                                 f"(B,), with y = {cfg.num_classes} (the null class) for the unconditional branch")
            check_labels(y, batch, cfg.num_classes)
            y = y.to(c.device).long()
            if self.training and cfg.class_dropout > 0:  # drop labels for classifier-free guidance
                drop = torch.rand(y.shape, device=y.device) < cfg.class_dropout
                y = torch.where(drop, torch.full_like(y, cfg.num_classes), y)
            c_y = self.y_embed(y)
            tokens.append(c_y)
            c = c + c_y  # DiT / Latte: c = t_emb + y_emb
        elif y is not None:
            raise ValueError("this model is unconditional (num_classes=0) but labels y were given")
        if cfg.modulation == "tokens":
            return None, None, torch.stack(tokens, dim=1)  # L5: (B, k, d) extra tokens
        if cfg.modulation == "adaln-single":
            return self.shared_modulation(c), c, None  # one shared regression for all blocks
        return c, c, None

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """L1: x (B, C, F, H, W) -> z = ẑ + p_spatial, (B, n_f, t, d), and the grid (n_f, n_h, n_w)."""
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must be (B, C={cfg.in_channels}, F, H, W), got {tuple(x.shape)}")
        grid = self.patch_embed.grid(*x.shape[2:])  # L4: (n_f, n_h, n_w), clear errors
        z_hat = self.patch_embed(x)  # (B, n_f, n_h, n_w, d)
        z = rearrange(z_hat, "b n_f n_h n_w d -> b n_f (n_h n_w) d")
        return z + self._spatial_pos(grid[1], grid[2], z), grid  # L1: z = ẑ + p

    def _decode(self, z: torch.Tensor, c: torch.Tensor | None, n_h: int) -> torch.Tensor:
        """L8: final LayerNorm (modulated by c), linear decoder, reshape -> (B, C_out, F, H, W)."""
        h = self.final_norm(z)
        if self.config.modulation == "adaln-single":
            shift, scale = (self.final_table[None] + c[:, None]).unbind(1)
            h = modulate(h, shift, scale)
        elif self.config.modulation != "tokens":
            (m,) = self.final_modulation(c)
            h = modulate(h, m.shift, m.scale)
        h = rearrange(h, "b n_f (n_h n_w) d -> b n_f n_h n_w d", n_h=n_h)
        return self.decoder(h)


class Latte(_DiTBackbone):
    """Latte (L1-L8), one class for the four variants. ``forward(x, t, y=None, num_images=0)``:

    x (B, C, F, H, W) noisy clip, t (B,) timestep indices, y (B,) labels (class-conditional models;
    ``null_class`` for the unconditional branch), ``num_images``: the last k frames of x are images for
    image-video joint training (L7). Returns (B, C_out, F, H, W), C_out = 2C with ``learn_sigma``.
    """

    def __init__(self, config: LatteConfig | None = None, **fields):
        super().__init__(config, lambda cfg: cfg.block_kinds, **fields)

    @property
    def variant(self) -> int:
        return self.config.variant

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                num_images: int = 0) -> torch.Tensor:
        cfg = self.config
        num_images = int(num_images)
        if num_images:
            if cfg.tubelet != 1:
                raise ValueError(f"num_images={num_images}: image-video joint training needs the uniform frame patch "
                                 f"embedding (tubelet=1), got tubelet={cfg.tubelet}")
            if not 0 < num_images < x.shape[2]:
                raise ValueError(f"num_images={num_images} must lie in 0..F-1 = 0..{x.shape[2] - 1}")
        z, (n_f, n_h, n_w) = self._embed(x)  # L1: (B, n_f, t, d)
        n_vid = n_f - num_images  # L7: video frames first, appended images last
        rope_t = None
        if cfg.temporal_pos == "sincos":  # L6: absolute temporal position, video frames only
            p_t = sincos_1d(n_vid, cfg.dim).to(z)  # (n_vid, d)
            z = torch.cat([z[:, :n_vid] + p_t[None, :, None], z[:, n_vid:]], dim=1)
        else:  # L6: relative temporal position, a 1D RoPE inside temporal attention
            key = ("rope_t", n_vid)  # one per clip length: its tables are cast once per device and dtype
            if key not in self._pos_cache:
                self._pos_cache[key] = rope_1d(n_vid, cfg.head_dim, cfg.rope_theta)
            rope_t = self._pos_cache[key]
        cond, c, cond_tokens = self._condition(t, y, x.shape[0])
        if cond_tokens is not None:  # L5: timestep / class as tokens
            z = append_condition_tokens(z, cond_tokens)  # (B, n_f, t + k, d)
        for block in self.blocks:  # L3: the variant's block sequence
            z = block(z, cond, num_video_frames=n_vid, rope_t=rope_t)
        if cond_tokens is not None:
            z = strip_condition_tokens(z, cond_tokens.shape[1])
        return self._decode(z, c, n_h)  # L8: (B, C_out, F, H, W)

    def flops(self, batch: int = 1, frames: int | None = None, height: int | None = None, width: int | None = None,
              num_images: int = 0) -> dict[str, float]:
        """Forward matmul FLOPs of one call: :func:`latte_flops` of this model's config."""
        return latte_flops(self.config, batch, frames, height, width, num_images)

    @torch.no_grad()
    def load_image_dit(self, image_model: "ImageDiT | dict") -> dict[str, list[str]]:
        """L7: initialise from an image DiT (an :class:`ImageDiT` or its state dict).

        Image block j goes to this model's j-th block with spatial attention (variant 1: blocks 0, 2, 4, ...;
        variant 2: the first half; variants 3-4: every block). Every tensor whose (mapped) name and shape
        match is copied; a modulation regression that is longer here (variant 3's 9·d: the extra rows are
        the temporal branch) gets the image rows and keeps its own temporal rows. The label embedding is
        dropped (the video model's classes are new). Returns the names ``loaded``, ``partial`` and ``skipped``.
        """
        src = image_model.state_dict() if isinstance(image_model, nn.Module) else dict(image_model)
        own = self.state_dict()
        spatial = [i for i, kind in enumerate(self.config.block_kinds) if kind != "temporal"]
        report: dict[str, list[str]] = {"loaded": [], "partial": [], "skipped": []}
        for name, value in src.items():
            if name.startswith("y_embed."):
                report["skipped"].append(name)  # L7: drop the label embedding
                continue
            target = name
            if name.startswith("blocks."):
                j, rest = name.split(".", 2)[1:]
                if int(j) >= len(spatial):
                    report["skipped"].append(name)
                    continue
                target = f"blocks.{spatial[int(j)]}.{rest}"
            if target not in own:
                report["skipped"].append(name)
            elif own[target].shape == value.shape:
                own[target].copy_(value)
                report["loaded"].append(name)
            elif ("modulation" in target and own[target].ndim == value.ndim and own[target].shape[0] > value.shape[0]
                  and own[target].shape[1:] == value.shape[1:]):
                own[target][: value.shape[0]].copy_(value)  # the image branches' (shift, scale, gate) rows
                report["partial"].append(name)
            else:
                report["skipped"].append(name)
        return report


class ImageDiT(_DiTBackbone):
    """The image model of L7: a DiT on single frames, built from the same parts as the Latte of ``config``
    (same patch size, width, heads, modulation; ``config.spatial_depth`` spatial blocks; its own classes).

    ``forward(x, t, y=None)``: x (B, C, H, W) -> (B, C_out, H, W). Train it on video frames
    (``rearrange(video, "b c f h w -> (b f) c h w")``), then :meth:`Latte.load_image_dit`.
    """

    def __init__(self, config: LatteConfig | None = None, **fields):
        super().__init__(config, self._kinds, **fields)

    @staticmethod
    def _kinds(config: LatteConfig) -> list[str]:
        if config.tubelet != 1:
            raise ValueError(f"an image DiT needs tubelet=1, got tubelet={config.tubelet}")
        return ["spatial"] * config.spatial_depth

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"x must be an image batch (B, C, H, W), got {tuple(x.shape)}")
        z, (_, n_h, _) = self._embed(x[:, :, None])  # one frame: (B, 1, t, d)
        cond, c, cond_tokens = self._condition(t, y, x.shape[0])
        if cond_tokens is not None:
            z = append_condition_tokens(z, cond_tokens)
        for block in self.blocks:
            z = block(z, cond)
        if cond_tokens is not None:
            z = strip_condition_tokens(z, cond_tokens.shape[1])
        return self._decode(z, c, n_h)[:, :, 0]


def latte_flops(config: LatteConfig, batch: int = 1, frames: int | None = None, height: int | None = None,
                width: int | None = None, num_images: int = 0) -> dict[str, float]:
    """Forward matmul FLOPs of a :class:`Latte` (without building it) on a (batch, C, frames, height, width)
    clip (default: the configured clip; the last ``num_images`` frames are images, L7): ``attention``
    (QKᵀ and PV, K4), ``linear`` (patch embedding, condition MLPs, projections, MLPs, decoder) and
    ``total``. A training step costs about 3x the forward. Equals ``torch.utils.flop_counter`` counts
    (tests/transformers/test_latte.py)."""
    cfg, d = config, config.dim
    n_f, n_h, n_w = patch_grid(frames or cfg.num_frames, height or cfg.height, width or cfg.width,
                               cfg.patch_size, cfg.tubelet)
    k = (2 if cfg.num_classes else 1) if cfg.modulation == "tokens" else 0  # L5 condition tokens per frame
    patch = cfg.tubelet * cfg.patch_size**2
    lin = 2.0 * batch * n_f * n_h * n_w * d * patch * (cfg.in_channels + cfg.out_channels)  # embed + decoder
    lin += 2.0 * batch * (cfg.freq_dim * d + d * d)  # timestep MLP
    if cfg.modulation == "adaln-single":
        lin += 2.0 * batch * d * 3 * (3 if cfg.variant == 3 else 2) * d  # the one shared regression
    elif cfg.modulation != "tokens":
        lin += 2.0 * batch * d * 2 * d  # final AdaLN
    att = 0.0
    for kind in cfg.block_kinds:
        f = block_flops(kind, d, cfg.heads, batch, n_f, n_h * n_w + k, n_f - num_images,
                        int(d * cfg.mlp_ratio), cfg.modulation, d)
        lin, att = lin + f["linear"], att + f["attention"]
    return {"linear": lin, "attention": att, "total": lin + att}
