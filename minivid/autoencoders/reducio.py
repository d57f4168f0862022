r"""Reducio's VAE (R1-R3): a video squeezed 4096x into *motion latents*, decoded with the help of one
content frame.

**R1.** :math:`V \in \mathbb R^{3\times T\times H\times W} \to z_V \in \mathbb R^{|z|\times T/f_t\times H/f_s\times W/f_s}`.

**R2.** A 3D convolutional encoder with f_t = 4 and f_s = 16 (video only, ``use_content=False``) or
f_s = 32 (image-conditioned, ``use_content=True``), |z| = 16 **[code]**: f_t·f_s² = 4096 pixels of every
channel per latent position. Image-conditioned, the decoder also sees the content frame
:math:`V_{(T-1)//2}` **[code]** through a 2D encoder whose feature pyramid is injected by cross-attention at
:math:`H/8\times W/8` and :math:`H/4\times W/4` (:class:`ContentFusion`):

.. math::  x = \mathrm{flatten}_{(t,h,w)}(h) + \mathrm{PE}_{\sin\cos}(t),\qquad
           h' = x + \mathrm{CrossAttn}\big(\mathrm{LN}(x),\ \mathrm{flatten}_{(h,w)}(c_\ell)\big)

(**[code]** ``BasicTransformerBlock``: the temporal sin-cos embedding is added to the queries, which are
LayerNorm-ed over channels, and the residual carries it). The sampled latent is layer-normalised over
all of its (|z|, T', H', W') values before decoding **[code]** (``F.layer_norm(motion, motion.shape[1:])``).
Loss: L1 + 0.1 LPIPS + 1e-6 KL (+ a 3D PatchGAN later) with
:class:`~minivid.autoencoders.training.AutoencoderTrainer`.

**R3** (ablations) are configurations of :class:`ReducioConfig`: f_t·f_s² constant (``temporal_factor``,
``spatial_factor``), |z| in {16, 8, 4} (``latent_channels``), and the fusion (``use_content``,
``fusion_factors``).

Layout as in the official code: the encoder halves time at its two coarsest transitions, the decoder
doubles it at its two coarsest (so the fusion levels see every frame); the content encoder is a per-frame
2D encoder. Simplifications: no self-attention in the middle blocks, no tiling.

**Where minivid's decoder differs from the release** (Reducio-VAE's code, read for this port; none of these
change R1's shapes or what the decoder is given, so the compression results compare like with like):

- *The middle block.* The release also fuses the content frame at the decoder's middle block (queries at
  H/32 attending to the content features at H/8); minivid fuses only at the ``fusion_factors`` levels
  (H/8, H/4 by default). At the zoo's 64 px the middle block is 2 x 2 positions, where one more
  cross-attention adds little.
- *Resampling.* The release downsamples with a 3x3x3 stride-2 convolution in space and time and upsamples
  with 3D nearest-neighbour interpolation and a 3x3x3 convolution; minivid uses the shared blocks of
  :mod:`minivid.autoencoders.blocks` (a per-frame 3x3 stride-2 convolution for space, an average over frame
  pairs for time; nearest-neighbour and a per-frame 3x3 convolution up), so that the four VAEs of notebook 03
  differ only in their factors and the content pathway.
- *Where the fusion sits.* The release fuses after 2 of a level's 4 residual blocks; minivid fuses before the
  level's first residual block (it uses 1-2 blocks per level at CPU scale, where "after half of them" would be
  after the last one at 1 block).
- *The temporal position table.* The release adds a sin-cos table whose channels interleave sin and cos;
  minivid adds the shared :func:`~minivid.nn.timestep_embedding` table (the same frequencies, all cosines then
  all sines). Trained from scratch the order is a layout choice; weights ported from the release would need the
  interleaved table.
- *Options the release does not have* (off by default): ``fusion_spatial_pe`` (a 2D sin-cos position code on
  the fusion's queries and content tokens) and ``fusion_skip`` (a zero-initialised 1x1 convolution adding the
  content features in place, :class:`ContentFusion`). At CPU scale the official fusion has to learn attention
  that finds the content before the decoder can copy anything; both options are measured in
  ``bench/results/measurements.md``.
- ``fusion_points`` (off by default, minivid's option, with ``fusion_skip``): the skip samples the content features
  at K offsets and weights that each query predicts (Deformable DETR's sampling, :meth:`ContentFusion.sample_content`),
  so a decoder can fetch a sprite from where it stands in the content frame instead of copying in place.
- ``latent_skip`` (off by default, minivid's option): a zero-initialised linear map of the normalised latent to RGB,
  upsampled to the clip (trilinear) and added to the decoder's output. Every GroupNorm of the decoder removes a
  per-clip constant from its group, so at 2 x 2 latent positions the decoder has no easy path from z to the output;
  trained from scratch at width 16 it learns to ignore z (the zoo's entry before this option decodes another clip's
  latent exactly as well as its own: ``evaluate``'s ``psnr_wrong_latent``), and with Adam even the 1e-6 KL then pulls
  the posterior to the prior. With the skip the latent carries the clip's coarse colours from the first updates.
- ``content_residual`` (off by default, another option the release does not have): the decoder predicts the clip
  *minus* its content frame, :math:`\hat V = D(z, c) + V_{(T-1)//2}` repeated over the frames. A clip whose
  background is still is then right from the first update wherever nothing moves. Measured on the zoo's recipe
  (measurements.md): it learns to copy the content frame and leaves the sprites standing still (20.60 dB on the
  frames other than the content frame, against 20.12 for that frame repeated), so the zoo does not use it; the
  frames other than the content frame are what ``evaluate``'s ``psnr_without_content_frame`` scores.
- ``content_warp`` = K and ``warp_latent`` (off by default, minivid's options): the decoder's last convolution also
  predicts, for every output pixel, K sampling offsets with softmax weights and a mask, and the output is
  m·(the content frame sampled at those offsets) + (1 - m)·the decoder's colours (:meth:`ReducioVAE.warp`; K = 1 is
  a backward optical-flow warp). ``warp_latent`` adds a zero-initialised linear map of the latent to the offsets:
  each latent frame gives a (dx, dy) for each of its f_t frames at the latent's grid, upsampled bilinearly. A
  sprite that moves is then a displacement of pixels the decoder already has, which a 2 x 2 latent can carry;
  painting the moved sprite from the latent through GroupNorm-ed features at width 16 is what the plain decoder
  failed to learn (it ignored z). Warping the content frame with the true motion of each sprite and filling the
  uncovered background exactly scores 33.65 dB on the other frames of 32 held-out clips (without the fill
  23.00; the content frame repeated 20.12): the ceiling of the idea at this scale. The zoo's entry uses K = 5 with
  ``warp_latent``: 26.02 dB on those frames (21.23 without the warp; the causal VAE 26.35 at 16x less compression);
  the warp without ``warp_latent`` copies the content frame and ignores z (measurements.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..nn import BACKENDS, Attention, ModelConfig, sincos_2d, timestep_embedding
from ..utils.validation import check_choice
from .base import DiagonalGaussian, VideoAutoencoder
from .blocks import Decoder, Encoder, check_video_shape, log2_exact, make_transitions


@dataclass
class ReducioConfig(ModelConfig):
    """R2 defaults: f_t = 4, f_s = 32 with the content frame, |z| = 16; fusion at H/8 and H/4.

    ``channel_mult`` has log2(max(f_s, f_t)) + 1 entries (None: (1, 2, 2, 4, 4, ...)); the content
    encoder has log2(max(fusion_factors)) + 1 levels (``content_channel_mult``, None: (1, 2, 4, 4, ...)).
    ``per_frame_norm=False`` pools GroupNorm over the clip, as the official (non-causal) model does.
    """

    in_channels: int = 3
    latent_channels: int = 16
    spatial_factor: int = 32
    temporal_factor: int = 4
    use_content: bool = True
    channels: int = 64
    channel_mult: tuple[int, ...] | None = None
    num_res_blocks: int = 2
    norm_groups: int = 32
    per_frame_norm: bool = False
    content_channels: int = 64
    content_channel_mult: tuple[int, ...] | None = None
    content_num_res_blocks: int = 2
    fusion_factors: tuple[int, ...] = (8, 4)
    fusion_head_dim: int = 64
    fusion_spatial_pe: bool = False
    fusion_skip: bool = False  # minivid's option: ContentFusion(skip=True), a zero-initialised in-place content path
    fusion_points: int = 0  # minivid's option: ContentFusion(points=K), the skip samples K offsets the query predicts
    content_residual: bool = False  # minivid's option: decode(z, c) = decoder(z, c) + c repeated over the frames
    latent_skip: bool = False  # minivid's option: + a zero-initialised linear map of the latent, upsampled (trilinear)
    content_warp: int = 0  # minivid's option: K > 0 -> the decoder also predicts K sampling offsets per pixel (ReducioVAE.warp)
    warp_radius: float = 2.0  # pixels: where points 1..K-1 of content_warp start, on a ring around point 0
    warp_scale: float = 4.0  # pixels per unit of the decoder's offset channels
    warp_latent: bool = False  # minivid's option, with content_warp: + a zero-initialised linear map of z to offsets
    normalize_latent: bool = True
    attention_backend: str = "sdpa"  # of the content fusion's cross-attention
    init_logvar: float | None = None  # posterior's initial log-variance (VideoAutoencoder.init_posterior)

    def __post_init__(self):
        s = log2_exact(self.spatial_factor, "spatial_factor")
        t = log2_exact(self.temporal_factor, "temporal_factor")
        if self.channel_mult is None:
            self.channel_mult = ((1, 2, 2) + (4,) * 16)[: max(s, t) + 1]
        self.channel_mult = tuple(self.channel_mult)
        self.fusion_factors = tuple(self.fusion_factors)
        if self.use_content:
            if not self.fusion_factors:
                raise ValueError("use_content=True needs at least one fusion factor (R2: (8, 4))")
            for f in self.fusion_factors:
                if log2_exact(f, "fusion factor") > s:
                    raise ValueError(f"fusion at H/{f} needs spatial_factor >= {f}, got {self.spatial_factor}")
            c = log2_exact(max(self.fusion_factors), "fusion factor")
            if self.content_channel_mult is None:
                self.content_channel_mult = ((1, 2) + (4,) * 16)[: c + 1]
            self.content_channel_mult = tuple(self.content_channel_mult)
            if len(self.content_channel_mult) != c + 1:
                raise ValueError(f"content_channel_mult needs {c + 1} levels to reach H/{max(self.fusion_factors)}, "
                                 f"got {self.content_channel_mult}")
        check_choice("attention_backend", self.attention_backend, BACKENDS)
        if self.fusion_points < 0 or (self.fusion_points and not self.fusion_skip):
            raise ValueError(f"fusion_points={self.fusion_points} must be 0, or >= 1 with fusion_skip=True (the "
                             "skip then samples the content at offsets the query predicts)")
        if self.content_residual and not self.use_content:
            raise ValueError("content_residual=True adds the content frame to the decoder's output: it needs "
                             "use_content=True")
        if isinstance(self.content_warp, bool) or not isinstance(self.content_warp, int) or self.content_warp < 0:
            raise ValueError(f"content_warp={self.content_warp!r} must be an int >= 0 (0: off; K: sampling points "
                             "per pixel)")
        if self.content_warp and not self.use_content:
            raise ValueError(f"content_warp={self.content_warp} samples the content frame: it needs use_content=True")
        if self.content_warp and self.content_residual:
            raise ValueError(f"content_warp={self.content_warp} and content_residual=True are two ways of using the "
                             "content frame at the output: choose one")
        if self.warp_latent and not self.content_warp:
            raise ValueError("warp_latent=True adds a map of the latent to content_warp's offsets: it needs "
                             "content_warp >= 1")
        if not self.warp_radius >= 0 or not self.warp_scale > 0:
            raise ValueError(f"warp_radius={self.warp_radius} must be >= 0 and warp_scale={self.warp_scale} > 0 "
                             "(pixels)")
        if self.latent_channels < 1 or self.num_res_blocks < 1:
            raise ValueError(f"latent_channels={self.latent_channels} and num_res_blocks={self.num_res_blocks} "
                             "must be >= 1")


def spatial_sincos(n_h: int, n_w: int, dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """minivid's optional R2 extension (``fusion_spatial_pe``): the 2D sin-cos table (n_h·n_w, dim) of
    :func:`minivid.nn.sincos_2d` at pixel-centre positions measured on a common ``grid`` (rows, cols), so that a
    query map and a content map of different sizes get matching codes where they overlap."""
    rows = (torch.arange(n_h, dtype=torch.float64) + 0.5) * grid[0] / n_h  # row centres in grid units
    cols = (torch.arange(n_w, dtype=torch.float64) + 0.5) * grid[1] / n_w
    return sincos_2d(rows, cols, dim)


class ContentFusion(nn.Module):
    r"""R2 **[code]**: inject content features into motion features by cross-attention.

    h (B, C, T, H, W), content (B, C_c, H_c, W_c) -> (B, C, T, H, W):
    x = flatten_(t,h,w)(h) + PE(t);  out = x + CrossAttn(LayerNorm(x), flatten_(h,w)(content)).

    ``spatial_pe=True`` (minivid's option, not in the official model, which locates content through
    the convolutions' zero padding alone) also adds a 2D sin-cos code of the (h, w) position, measured
    on the content grid, to the normalised queries and to the content tokens, so that attention can
    match positions from the start.

    ``skip=True`` (minivid's option, not in the official model): also add a zero-initialised 1x1 convolution
    of the content features at the same (h, w) position to every frame, out = x + CrossAttn(...) +
    W·content(h, w). At initialisation the output is the official fusion's; the decoder can copy the content
    frame's appearance in place from the first update instead of first learning attention that finds it.
    """

    def __init__(self, dim: int, context_dim: int, head_dim: int = 64, spatial_pe: bool = False,
                 backend: str = "sdpa", skip: bool = False, points: int = 0):
        super().__init__()
        if points < 0 or (points and not skip):
            raise ValueError(f"points={points} must be 0 (the skip copies in place) or >= 1 with skip=True "
                             "(the skip samples the content at offsets the query predicts)")
        if spatial_pe and (dim % 4 or context_dim % 4):
            raise ValueError(f"spatial_pe=True needs widths divisible by 4 (2D sin-cos code); got dim={dim}, "
                             f"context_dim={context_dim}")
        heads = max(1, dim // head_dim)
        self.spatial_pe = spatial_pe
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads=heads, head_dim=min(head_dim, dim), context_dim=context_dim, qkv_bias=False,
                              backend=backend)
        self.skip = None
        self.points = points
        if skip:
            self.skip = nn.Conv2d(context_dim, dim, 1)
            nn.init.zeros_(self.skip.weight)
            nn.init.zeros_(self.skip.bias)
        if points:
            # per query: `points` (dx, dy) offsets in cells of the content grid and a weight logit each
            self.offsets = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 3 * points))
            nn.init.zeros_(self.offsets[2].weight)
            with torch.no_grad():  # Deformable DETR's start: point 0 in place (weighted up), the others on a ring
                bias = torch.zeros(points, 3)
                bias[0, 2] = 2.0  # weight of the in-place point: 0.65 of 5 at the start
                angle = 2 * torch.pi * torch.arange(points - 1) / max(points - 1, 1)
                bias[1:, 0], bias[1:, 1] = angle.cos(), angle.sin()
                self.offsets[2].bias.copy_(bias.flatten())

    def forward(self, h: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        out = self._fuse(h, content)
        if self.skip is not None:
            if content.shape[-2:] != h.shape[-2:]:
                raise ValueError(f"skip=True needs the content grid {tuple(content.shape[-2:])} to equal the "
                                 f"motion grid {tuple(h.shape[-2:])}")
            if self.points:
                out = out + self.sample_content(h, self.skip(content))
            else:
                out = out + self.skip(content)[:, :, None]  # the same (h, w) position, every frame
        return out

    @staticmethod
    def _with_time(h: torch.Tensor) -> torch.Tensor:
        """h (B, C, T, H, W) -> (B, T, H, W, C) plus the temporal sin-cos embedding PE(t) (R2 [code])."""
        pe = timestep_embedding(torch.arange(h.shape[2], device=h.device), h.shape[1]).to(h.dtype)  # (T, C)
        return rearrange(h, "b c t h w -> b t h w c") + pe[None, :, None, None, :]

    def sample_content(self, h: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        r"""The deformable skip (``points`` > 0; Deformable DETR's sampling, Zhu et al. 2021, as a fusion): each query
        at frame t, cell p predicts K offsets :math:`\Delta_k` (cells) and weights :math:`a_k` (softmax) from
        LN(h + PE(t)), and receives :math:`\sum_k a_k\, v(p + \Delta_k)`, v bilinearly sampled (edges repeated).
        h (B, C, T, H, W), value (B, C, H, W) -> (B, C, T, H, W)."""
        b, c, t, hh, ww = h.shape
        x = self._with_time(h)  # (B, T, H, W, C)
        o = rearrange(self.offsets(self.norm(x)), "b t h w (k three) -> b t h w k three", three=3)
        ys = (torch.arange(hh, device=h.device, dtype=h.dtype) + 0.5) * 2 / hh - 1  # cell centres in [-1, 1]
        xs = (torch.arange(ww, device=h.device, dtype=h.dtype) + 0.5) * 2 / ww - 1
        base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
        cell = torch.tensor([2 / ww, 2 / hh], device=h.device, dtype=h.dtype)
        grid = base[None, None, :, :, None] + o[..., :2] * cell  # (B, T, H, W, K, 2)
        sampled = F.grid_sample(value, rearrange(grid, "b t h w k two -> b (t h w) k two"), mode="bilinear",
                                padding_mode="border", align_corners=False)  # (B, C, T·H·W, K)
        weights = rearrange(o[..., 2].softmax(dim=-1), "b t h w k -> b (t h w) k")[:, None]  # (B, 1, T·H·W, K)
        return rearrange((sampled * weights).sum(-1), "b c (t h w) -> b c t h w", t=t, h=hh, w=ww)

    def _fuse(self, h: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        b, c, t, hh, ww = h.shape
        x = rearrange(self._with_time(h), "b t h w c -> b (t h w) c")  # (B, T·H·W, C) motion queries
        ctx = rearrange(content, "b c h w -> b (h w) c")  # (B, H_c·W_c, C_c) content tokens
        if self.spatial_pe:
            grid = tuple(content.shape[-2:])
            q_pe = spatial_sincos(hh, ww, c, grid).to(h)  # (H·W, C)
            k_pe = spatial_sincos(*grid, ctx.shape[-1], grid).to(h)  # (H_c·W_c, C_c)
            q = rearrange(rearrange(self.norm(x), "b (t n) c -> b t n c", t=t) + q_pe, "b t n c -> b (t n) c")
            return rearrange(x + self.attn(q, context=ctx + k_pe), "b (t h w) c -> b c t h w", t=t, h=hh, w=ww)
        x = x + self.attn(self.norm(x), context=ctx)  # LayerNorm, cross-attention, residual
        return rearrange(x, "b (t h w) c -> b c t h w", t=t, h=hh, w=ww)


class ReducioVAE(VideoAutoencoder):
    """Reducio's VAE (R1-R3). ``encode(video)`` -> q(z) over (B, |z|, T/f_t, H/f_s, W/f_s);
    ``decode(z, content=V[:, :, (T-1)//2])`` -> (B, 3, T, H, W); ``conditions(video)`` gives the content
    frame when ``use_content`` (required by ``decode`` then)."""

    config_class = ReducioConfig

    def __init__(self, config: ReducioConfig | None = None, **fields):
        super().__init__(config, **fields)
        c = self.config
        self.downsample = (c.temporal_factor, c.spatial_factor, c.spatial_factor)
        self.latent_channels = c.latent_channels
        common = dict(channels=c.channels, channel_mult=c.channel_mult, num_res_blocks=c.num_res_blocks,
                      causal=False, temporal_kernel=3, norm_groups=c.norm_groups, per_frame_norm=c.per_frame_norm)
        self.encoder = Encoder(c.in_channels, 2 * c.latent_channels,
                               transitions=make_transitions(c.spatial_factor, c.temporal_factor, False), **common)
        dec_transitions = make_transitions(c.spatial_factor, c.temporal_factor, False)
        fusions: dict[int, nn.Module] = {}
        self.fusion_levels: dict[int, int] = {}  # decoder level -> content encoder level
        if c.use_content:
            n_content = len(c.content_channel_mult)
            self.content_encoder = Encoder(c.in_channels, None, c.content_channels, c.content_channel_mult,
                                           c.content_num_res_blocks, make_transitions(2 ** (n_content - 1), 1, True),
                                           causal=False, temporal_kernel=1, norm_groups=c.norm_groups)
            widths = [c.channels * m for m in c.channel_mult]
            for f in c.fusion_factors:
                level = _level_of_factor(dec_transitions, f)
                content_level = log2_exact(f, "fusion factor")
                self.fusion_levels[level] = content_level
                fusions[level] = ContentFusion(widths[level], c.content_channels * c.content_channel_mult[content_level],
                                               c.fusion_head_dim, c.fusion_spatial_pe, c.attention_backend,
                                               skip=c.fusion_skip, points=c.fusion_points)
        warp_channels = 3 * c.content_warp + 1 if c.content_warp else 0  # per point (dx, dy, logit), one mask
        self.decoder = Decoder(c.in_channels + warp_channels, c.latent_channels, transitions=dec_transitions,
                               fusions=fusions, **common)
        if c.content_warp:
            with torch.no_grad():  # at the start: point 0 in place (weighted up), the others on a ring; mask 0.88
                w, b = self.decoder.conv_out.weight, self.decoder.conv_out.bias
                w[c.in_channels:].zero_()
                bias = torch.zeros(c.content_warp, 3)
                bias[0, 2] = 2.0
                angle = 2 * torch.pi * torch.arange(c.content_warp - 1) / max(c.content_warp - 1, 1)
                bias[1:, 0] = angle.cos() * c.warp_radius / c.warp_scale
                bias[1:, 1] = angle.sin() * c.warp_radius / c.warp_scale
                b[c.in_channels:-1] = bias.flatten()
                b[-1] = 2.0
        self.warp_latent = None
        if c.warp_latent:  # per latent frame: a (dx, dy) for each of its f_t frames, at the latent's grid
            self.warp_latent = nn.Conv3d(c.latent_channels, 2 * c.temporal_factor, 1)
            nn.init.zeros_(self.warp_latent.weight)
            nn.init.zeros_(self.warp_latent.bias)
        self.latent_skip = None
        if c.latent_skip:
            self.latent_skip = nn.Conv3d(c.latent_channels, c.in_channels, 1)
            nn.init.zeros_(self.latent_skip.weight)
            nn.init.zeros_(self.latent_skip.bias)
        self.init_posterior(c.init_logvar)

    # ------------------------------------------------------------------ shapes (R1)
    def check_input(self, shape: tuple[int, ...]) -> None:
        """R1: raise a ValueError (before any work) for a shape the VAE cannot take: T not a multiple of f_t
        (the message lists valid counts), or H, W not divisible by f_s."""
        f_t, f_s, _ = self.downsample

        def frames_error(t: int) -> str | None:
            if t < f_t or t % f_t:
                return (f"Reducio (f_t={f_t}) takes a multiple of {f_t} frames "
                        f"({', '.join(str(f_t * k) for k in range(1, 6))}, ...), got {t}")
            return None

        check_video_shape(shape, self.config.in_channels, f_s, frames_error)

    def latent_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """R1: (B, 3, T, H, W) -> (B, |z|, T/f_t, H/f_s, W/f_s)."""
        self.check_input(tuple(input_shape))
        b, _, t, h, w = input_shape
        f_t, f_s, _ = self.downsample
        return (b, self.latent_channels, t // f_t, h // f_s, w // f_s)

    @staticmethod
    def content_index(num_frames: int) -> int:
        """R2 [code]: the content frame is V_{(T-1)//2}."""
        return (num_frames - 1) // 2

    def conditions(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """R2: ``{"content": V[:, :, (T-1)//2]}`` when ``use_content``, else ``{}``."""
        if not self.config.use_content:
            return {}
        return {"content": video[:, :, self.content_index(video.shape[2])]}  # (B, 3, H, W)

    # ------------------------------------------------------------------ encode / decode
    def encode(self, video: torch.Tensor) -> DiagonalGaussian:
        """R1: (B, 3, T, H, W) -> q(z_V | V) over (B, |z|, T/f_t, H/f_s, W/f_s) (3D encoder, R2)."""
        self.check_input(tuple(video.shape))
        return DiagonalGaussian.from_moments(self.encoder(video))  # (B, 2|z|, T/f_t, H/f_s, W/f_s)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """R2 [code]: LayerNorm over every (|z|, T', H', W') value of each latent, no affine (idempotent)."""
        return F.layer_norm(z, z.shape[1:]) if self.config.normalize_latent else z

    def content_features(self, content: torch.Tensor) -> dict[int, torch.Tensor]:
        """R2: the content frame's feature pyramid (2D encoder), keyed by decoder level: {level: (B, C_l, H/f, W/f)}
        for each fusion factor f (8 and 4 by default)."""
        feats = self.content_encoder(content[:, :, None])  # per level: (B, C_l, 1, H_l, W_l)
        return {lvl: feats[c_lvl][:, :, 0] for lvl, c_lvl in self.fusion_levels.items()}

    def decode(self, z: torch.Tensor, content: torch.Tensor | None = None) -> torch.Tensor:
        """R1/R2: (B, |z|, T', h, w) [+ content (B, 3, h f_s, w f_s)] -> (B, 3, T' f_t, h f_s, w f_s): the latent is
        layer-normalised, then decoded with the content fused at H/8 and H/4 (required when ``use_content``);
        with ``content_residual`` the content frame is added to every decoded frame."""
        if z.ndim != 5 or z.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents (B, {self.latent_channels}, T', h, w), got {tuple(z.shape)}")
        f_t, f_s, _ = self.downsample
        context = None
        if self.config.use_content:
            if content is None:
                raise ValueError("this Reducio VAE (use_content=True) decodes with the content frame: pass "
                                 "content=video[:, :, (T-1)//2] (see .conditions(video))")
            want = (z.shape[0], self.config.in_channels, z.shape[3] * f_s, z.shape[4] * f_s)
            if tuple(content.shape) != want:
                raise ValueError(f"content frame must have shape {want} for latents {tuple(z.shape)}, "
                                 f"got {tuple(content.shape)}")
            context = self.content_features(content)
        elif content is not None:
            raise ValueError("this Reducio VAE has no content pathway (use_content=False); do not pass content")
        z = self.normalize(z)
        out = self.decoder(z, context=context)
        out, warp = out[:, : self.config.in_channels], out[:, self.config.in_channels:]
        if self.latent_skip is not None:  # a path from z to the output that no GroupNorm can erase
            out = out + F.interpolate(self.latent_skip(z), size=out.shape[2:], mode="trilinear", align_corners=False)
        if self.config.content_warp:
            if self.warp_latent is not None:  # (B, 2 f_t, T', h, w) -> (B, 2, T, H, W), added to every point's offset
                shift = rearrange(self.warp_latent(z), "b (two f) t h w -> b two (t f) h w", two=2)
                shift = F.interpolate(shift, size=out.shape[2:], mode="trilinear", align_corners=False)
                warp = warp + torch.cat([shift, torch.zeros_like(shift[:, :1])] * self.config.content_warp
                                        + [torch.zeros_like(shift[:, :1])], dim=1)
            out = self.warp(out, warp, content)
        if self.config.content_residual:
            out = out + content[:, :, None]  # (B, 3, T, H, W): the decoder predicts V - V_content
        return out

    def warp(self, rgb: torch.Tensor, warp: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        r"""``content_warp`` = K (minivid's option, not in the release): every output pixel p of frame t samples the
        content frame at K points the decoder predicts and blends them with its own colour,

        .. math::  \hat V_t(p) = m\,\sum_k a_k\, V_c(p + \Delta_k) + (1 - m)\,D(z, c)_t(p),

        :math:`a = \mathrm{softmax}` of K logits, :math:`m = \sigma(\cdot)`, :math:`\Delta_k` in pixels
        (``warp_scale`` per unit), :math:`V_c` bilinearly sampled (edges repeated). For K = 1 it is a backward
        optical-flow warp of the content frame (as in frame-interpolation models). A sprite that moves is then a
        displacement of pixels the decoder already has, not a shape it must paint from a 2 x 2 latent.
        rgb (B, 3, T, H, W), warp (B, 3K + 1, T, H, W), content (B, 3, H, W) -> (B, 3, T, H, W)."""
        t, h, w = rgb.shape[2:]
        o = rearrange(warp[:, :-1], "b (k three) t h w -> b t h w k three", three=3)
        ys = (torch.arange(h, device=rgb.device, dtype=rgb.dtype) + 0.5) * 2 / h - 1  # pixel centres in [-1, 1]
        xs = (torch.arange(w, device=rgb.device, dtype=rgb.dtype) + 0.5) * 2 / w - 1
        base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
        pixel = torch.tensor([2 / w, 2 / h], device=rgb.device, dtype=rgb.dtype) * self.config.warp_scale
        grid = base[None, None, :, :, None] + o[..., :2] * pixel  # (B, T, H, W, K, 2)
        sampled = F.grid_sample(content.to(rgb.dtype), rearrange(grid, "b t h w k two -> b (t h w) k two"),
                                mode="bilinear", padding_mode="border", align_corners=False)  # (B, 3, T·H·W, K)
        a = rearrange(o[..., 2].softmax(dim=-1), "b t h w k -> b (t h w) k")[:, None]
        sampled = rearrange((sampled * a).sum(-1), "b c (t h w) -> b c t h w", t=t, h=h, w=w)
        m = torch.sigmoid(warp[:, -1:])
        return m * sampled + (1 - m) * rgb

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.last_layer


def _level_of_factor(transitions: list[tuple[bool, bool]], factor: int) -> int:
    """R2: the finest decoder level whose spatial size is H/factor (where a fusion goes)."""
    f = 1
    for level in range(len(transitions) + 1):
        if f == factor:
            return level
        if level < len(transitions) and transitions[level][0]:
            f *= 2
    raise ValueError(f"no level at H/{factor}")
