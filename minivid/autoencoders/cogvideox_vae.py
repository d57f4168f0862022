r"""CogVideoX's released 3D causal VAE (C1), block for block the layout of diffusers' ``AutoencoderKLCogVideoX``, so
that the released weights run through minivid's code.

**C1.** :math:`V \in \mathbb R^{3\times(8N+1)\times H\times W} \to z \in \mathbb R^{16\times(2N+1)\times H/8\times W/8}`
for the released VAE: 8x spatial and 4x temporal compression, |z| = 16, padding on the past side only (the first frame
repeated, **[code]**).

**Layout** (module names are diffusers', except that a level's one resampler is ``resample`` rather than
``downsamplers.0`` / ``upsamplers.0``, so every weight maps one to one; see :func:`from_diffusers`):

- ``encoder``: ``conv_in`` (causal 3x3x3) -> ``down_blocks[i]``: ``num_res_blocks`` residual blocks at width
  ``channels * channel_mult[i]``, then (all but the last level) a :class:`~minivid.autoencoders.blocks.Downsample`
  that halves H and W, and time too at the first log2(f_t) (finest) levels -> ``mid_block``: two residual blocks ->
  GroupNorm, SiLU, ``conv_out`` to 2|z| channels (mean and log-variance).
- ``decoder``: ``conv_in`` -> ``mid_block`` -> ``up_blocks[i]`` at the reversed widths: ``num_res_blocks + 1``
  residual blocks, then (all but the last) an :class:`~minivid.autoencoders.blocks.Upsample` (nearest x2, conv),
  doubling time at the first log2(f_t) (coarsest) levels -> :class:`SpatialNorm3D`, SiLU, ``conv_out``.
- Every normalisation of the decoder is a :class:`SpatialNorm3D` conditioned on the latent :math:`z_q` (MoVQ):
  :math:`\mathrm{GN}(f)\cdot \mathrm{conv}_y(z_q\!\uparrow) + \mathrm{conv}_b(z_q\!\uparrow)`, where
  :math:`z_q\!\uparrow` is z resized (nearest) to f's (T, H, W) grid, the first latent frame on its own when f has an
  odd number T > 1 of frames.
- Optional 1x1x1 ``quant_conv`` (after the encoder) and ``post_quant_conv`` (before the decoder); the releases have
  neither. ``scaling_factor`` (and ``shift_factor``, ``invert_scale_latents``) are carried for the pipelines
  (``LatentSpace(vae, scale=vae.config.scaling_factor)``); encode and decode do not apply them, as in diffusers.

**Frame batches [code].** :meth:`CogVideoXVAE.encode` runs the encoder on 8 frames at a time (the first batch takes
8 + T mod 8, or all T when T < 8) and :meth:`~CogVideoXVAE.decode` runs the decoder on 2 latent frames at a time
(the first takes 2 + n mod 2); each batch continues from the previous one through the causal convolutions' cache
(the last k_t - 1 frames they saw) and the resamplers' memory that the first frame has gone by. GroupNorm pools its
statistics over (C/G, T, H, W) of a batch, so the output depends on the batching: minivid runs diffusers' batches.

**Which frame counts.** A temporal resampler keeps the first frame on its own in the first batch only (diffusers:
whenever a batch has an odd number T > 1 of frames, which is the first batch for the counts below). Encoding
f_t k + 1 frames gives k + 1 latent frames (C1), but decoding n latent frames gives f_t (n - 1) + 1 frames only for
odd n: an even n is decoded in batches of 2 with no frame on its own, to f_t n frames (diffusers decodes the 2
latent frames of a 5-frame clip to 8 frames). The length survives the round trip exactly for T = 2 f_t N + 1 frames:
**8N + 1** for the released f_t = 4 (EQUATIONS C1 **[code]**; 49 frames for CogVideoX 1.0, 81 for 1.5). This model
takes those counts (``encode``) and odd latent counts 2N + 1 (``decode``), and a ValueError names any other.

**Against minivid's** :class:`~minivid.autoencoders.causal_vae.CausalVAE` (which stays as it is: the zoo checkpoint
depends on it):

- GroupNorm: CausalVAE normalises each frame on its own (strictly causal; chunked = whole clip); the release pools
  over the frames of a batch, so frame t sees the later frames of its batch and the result depends on the batching.
- Decoder normalisation: CausalVAE uses GroupNorm; the release uses :class:`SpatialNorm3D` (conditioned on z).
- Shape fields: CausalVAE chooses its levels from ``spatial_factor``; here the levels are given (diffusers'
  ``block_out_channels`` = ``channels * channel_mult``) and f_s = 2^(levels - 1).
- Frames: CausalVAE takes any f_t k + 1 frames, whole or in ``chunk_frames`` chunks; here 2 f_t N + 1, in the
  release's fixed batches.
- Convolutions: the same :class:`~minivid.autoencoders.blocks.CausalConv3d` (first-frame padding, zero spatial
  padding), with diffusers' :class:`SafeConv3d` inside; the width-changing skip is a 1x1x1 Conv3d (``conv_shortcut``)
  rather than a per-frame 2D one; the same Downsample / Upsample blocks.

Not reproduced: diffusers' spatial tiling (``enable_tiling``: an approximation that saves memory on large frames;
off by default) and batch slicing (``enable_slicing``: exact, it only saves memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import ModelConfig
from ..utils.checkpoint import copy_mapped_state, diffusers_state
from ..utils.validation import check_int_tuple, check_number, check_positive_ints, is_int
from .base import DiagonalGaussian, VideoAutoencoder
from .blocks import CausalConv3d, Downsample, GroupNorm3d, Upsample, check_video_shape
from .causal_vae import CausalVAE

ENCODE_BATCH_FRAMES = 8  # diffusers' num_sample_frames_batch_size
DECODE_BATCH_LATENTS = 2  # diffusers' num_latent_frames_batch_size
TEMPORAL_FACTORS = (1, 2, 4, 8)  # f_t must divide the encoder's batch of 8 frames


def frame_batches(n: int, size: int) -> list[tuple[int, int]]:
    """C1 [code]: diffusers' frame batches of a clip of ``n`` frames: [0, size + n mod size), then ``size`` frames at
    a time; all ``n`` at once when n < size. E.g. (17, 8) -> [(0, 9), (9, 17)]; (5, 2) -> [(0, 3), (3, 5)]."""
    first = n if n < size else size + n % size
    bounds = [0, *range(first, n + 1, size)]
    return list(zip(bounds[:-1], bounds[1:]))


@dataclass
class CogVideoXVAEConfig(ModelConfig):
    """The released VAE's shape; the defaults are CogVideoX-2B's (:func:`config_from_diffusers` fills them from a
    release). Field names follow minivid's shared ones; diffusers' name is given where it differs.

    ``norm_eps`` is the epsilon of the encoder's residual blocks only: diffusers fixes 1e-6 for the encoder's output
    norm and for every decoder norm."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 16
    channels: int = 128  # block_out_channels = channels * channel_mult
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 3  # layers_per_block (the decoder has one more per level)
    norm_groups: int = 32  # norm_num_groups
    norm_eps: float = 1e-6
    temporal_factor: int = 4  # temporal_compression_ratio
    use_quant_conv: bool = False
    use_post_quant_conv: bool = False
    scaling_factor: float = 1.15258426  # the pipelines multiply the latents by it (CogVideoX-5B: 0.7)
    shift_factor: float | None = None
    invert_scale_latents: bool = False  # CogVideoX 1.5 image-to-video: the pipeline divides instead

    def __post_init__(self):
        check_positive_ints(self, ("in_channels", "out_channels", "latent_channels", "channels", "num_res_blocks",
                                   "norm_groups"))
        self.channel_mult = check_int_tuple("channel_mult", self.channel_mult)
        check_number("norm_eps", self.norm_eps, 0.0, strict_minimum=True)
        check_number("scaling_factor", self.scaling_factor, 0.0, strict_minimum=True)
        if self.shift_factor is not None:
            check_number("shift_factor", self.shift_factor)
        max_t = 2 ** (len(self.channel_mult) - 1)
        allowed = tuple(f for f in TEMPORAL_FACTORS if f <= max_t)
        if not is_int(self.temporal_factor) or self.temporal_factor not in allowed:
            raise ValueError(f"temporal_factor={self.temporal_factor!r} is invalid: expected one of {allowed} (a power "
                             f"of two dividing the encoder's {ENCODE_BATCH_FRAMES}-frame batches, at most one halving "
                             f"per downsampling level: {len(self.channel_mult)} levels have "
                             f"{len(self.channel_mult) - 1})")
        bad = [w for w in self.widths if w % self.norm_groups]
        if bad:
            raise ValueError(f"norm_groups={self.norm_groups} is invalid: it must divide every width "
                             f"channels * channel_mult = {self.widths} (GroupNorm), and does not divide {bad}")
        for name in ("use_quant_conv", "use_post_quant_conv", "invert_scale_latents"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: expected True or False")

    @property
    def widths(self) -> tuple[int, ...]:
        """diffusers' ``block_out_channels``: the width of each level, finest first."""
        return tuple(self.channels * m for m in self.channel_mult)

    @property
    def spatial_factor(self) -> int:
        """f_s: every level but the last halves H and W."""
        return 2 ** (len(self.channel_mult) - 1)


# ---------------------------------------------------------------------------------------------------
# Blocks (diffusers' CogVideoXSafeConv3d, CogVideoXCausalConv3d, CogVideoXSpatialNorm3D, CogVideoXResnetBlock3D,
# CogVideoX{Down,Mid,Up}Block3D)
# ---------------------------------------------------------------------------------------------------


class SafeConv3d(nn.Conv3d):
    """A Conv3d without temporal padding that runs an input larger than ``max_bytes`` (counted at 2 bytes a value, as
    diffusers' ``CogVideoXSafeConv3d`` does) in pieces along time. The pieces overlap by the kernel's temporal
    context, so the output equals the one-piece convolution: only the peak memory changes."""

    max_bytes: int = 2 * 1024**3

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding[0] != 0 or self.stride[0] != 1:
            raise ValueError(f"SafeConv3d splits along time: it needs temporal padding 0 and stride 1, got "
                             f"padding={self.padding} and stride={self.stride}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = math.ceil(x.numel() * 2 / self.max_bytes)
        context = (self.kernel_size[0] - 1) * self.dilation[0]  # input frames an output frame needs beyond its own
        n_out = x.shape[2] - context
        if parts <= 1 or n_out < 2:
            return super().forward(x)
        pieces = torch.arange(n_out).tensor_split(min(parts, n_out))  # output frames of each piece
        return torch.cat([self._conv_forward(x[:, :, int(p[0]):int(p[-1]) + 1 + context], self.weight, self.bias)
                          for p in pieces], dim=2)


class SafeCausalConv3d(CausalConv3d):
    """C1: minivid's :class:`~minivid.autoencoders.blocks.CausalConv3d` (the past padded with the first frame or the
    cached tail of the previous batch, zero spatial padding) over a :class:`SafeConv3d`: diffusers'
    ``CogVideoXCausalConv3d`` with its default ``pad_mode``. Kernel k (cubic), stride 1. (B, C, T, H, W) ->
    (B, C', T, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__(in_channels, out_channels, kernel_size)
        self.conv = SafeConv3d(in_channels, out_channels, kernel_size, padding=(0, kernel_size // 2, kernel_size // 2))


def resize_latent(zq: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """C1 [code]: the latent (B, C, n, h, w) resized (nearest) to a feature map's (T, H, W). When T > 1 is odd, the
    first latent frame makes f's first frame alone and the other latent frames the other T - 1 (the causal layout:
    the first frame on its own)."""
    t, h, w = size
    if t > 1 and t % 2 == 1:
        first = F.interpolate(zq[:, :, :1], size=(1, h, w))  # (B, C, 1, H, W)
        rest = F.interpolate(zq[:, :, 1:], size=(t - 1, h, w))  # (B, C, T - 1, H, W)
        return torch.cat([first, rest], dim=2)
    return F.interpolate(zq, size=(t, h, w))  # (B, C, T, H, W)


class SpatialNorm3D(nn.Module):
    r"""The decoder's normalisation conditioned on the latent z_q (MoVQ): :math:`\mathrm{GN}(f)\cdot
    \mathrm{conv}_y(z_q\!\uparrow) + \mathrm{conv}_b(z_q\!\uparrow)`, with :func:`resize_latent` and 1x1x1
    convolutions; GroupNorm pools over the frames of the batch (eps 1e-6). f (B, C, T, H, W), z_q (B, |z|, n, h, w)
    -> (B, C, T, H, W)."""

    def __init__(self, channels: int, latent_channels: int, groups: int):
        super().__init__()
        self.norm_layer = GroupNorm3d(channels, groups, per_frame=False, eps=1e-6)
        self.conv_y = SafeCausalConv3d(latent_channels, channels, kernel_size=1)
        self.conv_b = SafeCausalConv3d(latent_channels, channels, kernel_size=1)

    def forward(self, f: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        zq = resize_latent(zq, tuple(f.shape[-3:]))  # (B, |z|, T, H, W)
        return self.norm_layer(f) * self.conv_y(zq) + self.conv_b(zq)


class ResnetBlock3D(nn.Module):
    """Norm, SiLU, causal conv 3x3x3, norm, SiLU, causal conv, plus the input (through a 1x1x1 ``conv_shortcut`` when
    the width changes). The norms are GroupNorm pooled over the batch's frames (encoder, eps ``eps``) or
    :class:`SpatialNorm3D` (decoder: ``latent_channels`` given). (B, C, T, H, W) -> (B, C', T, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, eps: float = 1e-6,
                 latent_channels: int | None = None):
        super().__init__()
        self.spatial_norm = latent_channels is not None
        if self.spatial_norm:
            self.norm1 = SpatialNorm3D(in_channels, latent_channels, groups)
            self.norm2 = SpatialNorm3D(out_channels, latent_channels, groups)
        else:
            self.norm1 = GroupNorm3d(in_channels, groups, per_frame=False, eps=eps)
            self.norm2 = GroupNorm3d(out_channels, groups, per_frame=False, eps=eps)
        self.conv1 = SafeCausalConv3d(in_channels, out_channels)
        self.conv2 = SafeCausalConv3d(out_channels, out_channels)
        self.conv_shortcut = SafeConv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def _norm(self, norm: nn.Module, x: torch.Tensor, zq: torch.Tensor | None) -> torch.Tensor:
        return norm(x, zq) if self.spatial_norm else norm(x)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None, cache: dict | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self._norm(self.norm1, x, zq)), cache)  # (B, C', T, H, W)
        h = self.conv2(F.silu(self._norm(self.norm2, h, zq)), cache)
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return h + skip


class Stage(nn.Module):
    """One level: ``resnets`` (residual blocks, the first one changing the width) then an optional ``resample``
    (a Downsample or an Upsample). diffusers' CogVideoXDownBlock3D / CogVideoXUpBlock3D (and, without
    ``resample``, CogVideoXMidBlock3D)."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, groups: int, eps: float = 1e-6,
                 latent_channels: int | None = None, resample: nn.Module | None = None):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, groups, eps, latent_channels)
            for i in range(num_blocks))
        self.resample = resample

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None, cache: dict | None = None) -> torch.Tensor:
        for block in self.resnets:
            x = block(x, zq, cache)
        return x if self.resample is None else self.resample(x, cache)


class CogVideoXEncoder(nn.Module):
    """C1 encoder: video (B, 3, T, H, W) -> moments (B, 2|z|, T', H/f_s, W/f_s); one batch of frames per call, the
    ``cache`` carrying the causal context from the previous batch."""

    def __init__(self, c: CogVideoXVAEConfig):
        super().__init__()
        widths, levels_t = c.widths, int(math.log2(c.temporal_factor))
        self.conv_in = SafeCausalConv3d(c.in_channels, widths[0])
        self.down_blocks = nn.ModuleList()
        for i, width in enumerate(widths):
            last = i == len(widths) - 1
            resample = None if last else Downsample(width, spatial=True, temporal=i < levels_t, causal=True)
            self.down_blocks.append(Stage(widths[max(i - 1, 0)], width, c.num_res_blocks, c.norm_groups, c.norm_eps,
                                          resample=resample))
        self.mid_block = Stage(widths[-1], widths[-1], 2, c.norm_groups, c.norm_eps)
        self.norm_out = GroupNorm3d(widths[-1], c.norm_groups, per_frame=False, eps=1e-6)
        self.conv_out = SafeCausalConv3d(widths[-1], 2 * c.latent_channels)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        h = self.conv_in(x, cache)  # (B, widths[0], T, H, W)
        for stage in self.down_blocks:
            h = stage(h, cache=cache)  # halves H, W (and T at the first log2 f_t levels: 1 + 2k -> 1 + k)
        h = self.mid_block(h, cache=cache)  # (B, widths[-1], T', h, w)
        return self.conv_out(F.silu(self.norm_out(h)), cache)  # (B, 2|z|, T', h, w)


class CogVideoXDecoder(nn.Module):
    """C1 decoder: latents z (B, |z|, n, h, w) -> video (B, 3, T, h f_s, w f_s); every norm is conditioned on z."""

    def __init__(self, c: CogVideoXVAEConfig):
        super().__init__()
        widths, levels_t, z_ch = c.widths[::-1], int(math.log2(c.temporal_factor)), c.latent_channels
        self.conv_in = SafeCausalConv3d(z_ch, widths[0])
        self.mid_block = Stage(widths[0], widths[0], 2, c.norm_groups, latent_channels=z_ch)
        self.up_blocks = nn.ModuleList()
        for i, width in enumerate(widths):
            last = i == len(widths) - 1
            resample = None if last else Upsample(width, spatial=True, temporal=i < levels_t, causal=True)
            self.up_blocks.append(Stage(widths[max(i - 1, 0)], width, c.num_res_blocks + 1, c.norm_groups,
                                        latent_channels=z_ch, resample=resample))
        self.norm_out = SpatialNorm3D(widths[-1], z_ch, c.norm_groups)
        self.conv_out = SafeCausalConv3d(widths[-1], c.out_channels)

    def forward(self, z: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        h = self.conv_in(z, cache)  # (B, widths[-1], n, h, w)
        h = self.mid_block(h, z, cache)
        for stage in self.up_blocks:
            h = stage(h, z, cache)  # doubles H, W (and T at the first log2 f_t levels: 1 + k -> 1 + 2k)
        return self.conv_out(F.silu(self.norm_out(h, z)), cache)  # (B, 3, T, H, W)


# ---------------------------------------------------------------------------------------------------
# The VAE
# ---------------------------------------------------------------------------------------------------


class CogVideoXVAE(VideoAutoencoder):
    """CogVideoX's released causal 3D VAE (C1): ``encode(video)`` -> :class:`DiagonalGaussian` over
    (B, |z|, 2N + 1, H/f_s, W/f_s) for 2 f_t N + 1 frames; ``decode(z)`` -> (B, 3, f_t (n - 1) + 1, H, W) for odd n.
    See the module docstring (frame batches, frame counts, differences from :class:`CausalVAE`)."""

    config_class = CogVideoXVAEConfig

    def __init__(self, config: CogVideoXVAEConfig | None = None, **fields):
        super().__init__(config, **fields)
        c = self.config
        self.downsample = (c.temporal_factor, c.spatial_factor, c.spatial_factor)
        self.latent_channels = c.latent_channels
        self.encoder = CogVideoXEncoder(c)
        self.decoder = CogVideoXDecoder(c)
        z2 = 2 * c.latent_channels
        self.quant_conv = SafeConv3d(z2, z2, 1) if c.use_quant_conv else None
        self.post_quant_conv = SafeConv3d(c.latent_channels, c.latent_channels, 1) if c.use_post_quant_conv else None

    # ------------------------------------------------------------------ shapes (C1)
    @property
    def frame_step(self) -> int:
        """2 f_t: the valid frame counts are 1, 1 + 2 f_t, 1 + 4 f_t, ... (8N + 1 for the release)."""
        return 2 * self.downsample[0]

    def valid_frames(self, n: int = 5) -> list[int]:
        """C1 [code]: the first ``n`` frame counts this VAE takes: 1, 1 + 2 f_t, 1 + 4 f_t, ..."""
        return [1 + self.frame_step * k for k in range(n)]

    def check_input(self, shape: tuple[int, ...]) -> None:
        """A ValueError, before any work, for a shape ``encode`` cannot take: not (B, C, T, H, W) with C =
        ``in_channels``, T other than 2 f_t N + 1, or H, W not divisible by f_s."""
        step = self.frame_step

        def frames_error(t: int) -> str | None:
            if t >= 1 and (t - 1) % step == 0:
                return None
            below = 1 + step * max((t - 1) // step, 0)
            return (f"video has T={t} frames; the CogVideoX VAE takes {step}N + 1 frames "
                    f"({', '.join(map(str, self.valid_frames()))}, ...), the counts whose length survives diffusers' "
                    f"frame batching (2 f_t N + 1, f_t={self.downsample[0]}); use {below} or {below + step}")

        check_video_shape(shape, self.config.in_channels, self.downsample[1], frames_error)

    def check_latent(self, shape: tuple[int, ...]) -> None:
        """A ValueError, before any work, for latents ``decode`` cannot take: not (B, |z|, n, h, w) with n odd."""
        if len(shape) != 5 or shape[1] != self.latent_channels:
            raise ValueError(f"z must be latents (B, |z|={self.latent_channels}, n, h, w), got shape {tuple(shape)}")
        n = shape[2]
        if n < 1 or n % 2 == 0:
            raise ValueError(f"z has n={n} latent frames; the decoder takes an odd number 2N + 1 (1, 3, 5, ...): an "
                             f"even count decodes, as in diffusers, to f_t*n frames rather than f_t*(n - 1) + 1")

    # C1's frame arithmetic is the causal VAE's: (B, 3, f_t k + 1, H, W) -> (B, |z|, k + 1, H/f_s, W/f_s) after this
    # VAE's own check_input, and n latent frames (odd, here) decode to f_t (n - 1) + 1 frames
    latent_shape = CausalVAE.latent_shape
    num_frames = CausalVAE.num_frames

    # ------------------------------------------------------------------ encode / decode
    def encode(self, video: torch.Tensor) -> DiagonalGaussian:
        """C1: (B, 3, 2 f_t N + 1, H, W) in [-1, 1] -> q(z | V) over (B, |z|, 2N + 1, H/f_s, W/f_s), in diffusers'
        batches of 8 frames."""
        self.check_input(tuple(video.shape))
        cache: dict = {}  # causal context, carried from batch to batch
        moments = []
        for lo, hi in frame_batches(video.shape[2], ENCODE_BATCH_FRAMES):
            m = self.encoder(video[:, :, lo:hi], cache)  # (B, 2|z|, latent frames of the batch, h, w)
            moments.append(m if self.quant_conv is None else self.quant_conv(m))
        return DiagonalGaussian.from_moments(torch.cat(moments, dim=2))

    def decode(self, z: torch.Tensor, **conditions) -> torch.Tensor:
        """C1: (B, |z|, 2N + 1, h, w) -> (B, 3, 2 f_t N + 1, h f_s, w f_s), in diffusers' batches of 2 latent
        frames."""
        if conditions:
            raise ValueError(f"the CogVideoX VAE takes no decoding conditions, got {sorted(conditions)}")
        self.check_latent(tuple(z.shape))
        cache: dict = {}
        frames = []
        for lo, hi in frame_batches(z.shape[2], DECODE_BATCH_LATENTS):
            zb = z[:, :, lo:hi] if self.post_quant_conv is None else self.post_quant_conv(z[:, :, lo:hi])
            frames.append(self.decoder(zb, cache))  # (B, 3, frames of the batch, H, W)
        return torch.cat(frames, dim=2)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


# ---------------------------------------------------------------------------------------------------
# Released weights (diffusers' AutoencoderKLCogVideoX)
# ---------------------------------------------------------------------------------------------------

_DOWN, _UP = "CogVideoXDownBlock3D", "CogVideoXUpBlock3D"
_DEFAULTS = {"in_channels": 3, "out_channels": 3, "down_block_types": (_DOWN,) * 4, "up_block_types": (_UP,) * 4,
             "block_out_channels": (128, 256, 256, 512), "latent_channels": 16, "layers_per_block": 3,
             "act_fn": "silu", "norm_eps": 1e-6, "norm_num_groups": 32, "temporal_compression_ratio": 4,
             "scaling_factor": 1.15258426, "shift_factor": None, "latents_mean": None, "latents_std": None,
             "use_quant_conv": False, "use_post_quant_conv": False, "invert_scale_latents": False}
_IGNORED = ("sample_height", "sample_width", "force_upcast")  # tiling's tile size, the pipelines' dtype policy


def config_from_diffusers(cfg: dict) -> CogVideoXVAEConfig:
    """A :class:`CogVideoXVAEConfig` from a diffusers ``AutoencoderKLCogVideoX`` config dict (missing fields take
    diffusers' defaults); a ValueError naming the field when it holds something minivid does not represent."""
    unknown = sorted(k for k in cfg if not k.startswith("_") and k not in _DEFAULTS and k not in _IGNORED)
    if unknown:
        raise ValueError(f"diffusers config field(s) {unknown} are not known to minivid's CogVideoXVAE (it reads "
                         f"{sorted(_DEFAULTS)} and ignores {list(_IGNORED)})")
    c = {**_DEFAULTS, **{k: v for k, v in cfg.items() if k in _DEFAULTS}}

    def unsupported(key: str, allowed: str) -> ValueError:
        return ValueError(f"diffusers config field {key}={c[key]!r} is not supported by minivid's CogVideoXVAE "
                          f"(allowed: {allowed})")

    widths = tuple(c["block_out_channels"])
    if not widths or any(not isinstance(w, int) or w < 1 or w % widths[0] for w in widths):
        raise unsupported("block_out_channels", "positive widths, each a multiple of the first (channels * "
                                                "channel_mult)")
    for key, kind in (("down_block_types", _DOWN), ("up_block_types", _UP)):
        if tuple(c[key]) != (kind,) * len(widths):
            raise unsupported(key, f"{(kind,) * len(widths)}, one per entry of block_out_channels")
    if c["act_fn"] not in ("silu", "swish"):
        raise unsupported("act_fn", "'silu'")
    for key in ("latents_mean", "latents_std"):
        if c[key] is not None:
            raise unsupported(key, "None, as in every CogVideoX release")
    ratio = c["temporal_compression_ratio"]
    if not (isinstance(ratio, (int, float)) and float(ratio).is_integer()
            and int(ratio) in TEMPORAL_FACTORS and int(ratio) <= 2 ** (len(widths) - 1)):
        raise unsupported("temporal_compression_ratio", f"a power of two in {TEMPORAL_FACTORS}, at most "
                                                        f"2^(len(block_out_channels) - 1) = {2 ** (len(widths) - 1)}")
    for key in ("use_quant_conv", "use_post_quant_conv"):
        if c[key] and c["out_channels"] != c["latent_channels"]:  # diffusers sizes them by out_channels
            raise unsupported(key, f"False, or True with out_channels == latent_channels (diffusers builds the "
                                   f"{key[4:]} with out_channels channels, which only runs when the two agree)")
    return CogVideoXVAEConfig(
        in_channels=c["in_channels"], out_channels=c["out_channels"], latent_channels=c["latent_channels"],
        channels=widths[0], channel_mult=tuple(w // widths[0] for w in widths), num_res_blocks=c["layers_per_block"],
        norm_groups=c["norm_num_groups"], norm_eps=float(c["norm_eps"]), temporal_factor=int(ratio),
        use_quant_conv=bool(c["use_quant_conv"]), use_post_quant_conv=bool(c["use_post_quant_conv"]),
        scaling_factor=float(c["scaling_factor"]),
        shift_factor=None if c["shift_factor"] is None else float(c["shift_factor"]),
        invert_scale_latents=bool(c["invert_scale_latents"]))


def _diffusers_state(source) -> tuple[dict, dict]:
    """(config dict, state dict) of a diffusers ``AutoencoderKLCogVideoX`` instance or ``save_pretrained`` folder."""
    return diffusers_state(source, "AutoencoderKLCogVideoX")


def map_diffusers_key(key: str) -> str:
    """diffusers' parameter name -> minivid's: the same except a level's one resampler, ``downsamplers.0`` /
    ``upsamplers.0`` -> ``resample``."""
    return key.replace(".downsamplers.0.", ".resample.").replace(".upsamplers.0.", ".resample.")


@torch.no_grad()
def from_diffusers(source) -> CogVideoXVAE:
    """Build a :class:`CogVideoXVAE` from a diffusers ``AutoencoderKLCogVideoX`` (an instance, or a folder written by
    its ``save_pretrained``) with every weight copied exactly once; a ValueError names any config field or weight
    minivid cannot represent, and any weight missing on either side. The result runs in float32 on the CPU (move it
    with ``.to``), in eval mode."""
    cfg, src = _diffusers_state(source)
    model = CogVideoXVAE(config_from_diffusers(cfg))
    new = {map_diffusers_key(k): v for k, v in src.items()}
    if len(new) != len(src):  # the map is one to one, so no weight can be copied twice
        raise ValueError("two diffusers weights map to one minivid weight")
    return copy_mapped_state(model, new, "CogVideoXVAE", strict=True)


__all__ = ["CogVideoXVAEConfig", "CogVideoXVAE", "CogVideoXEncoder", "CogVideoXDecoder", "SpatialNorm3D",
           "ResnetBlock3D", "SafeConv3d", "SafeCausalConv3d", "Stage", "resize_latent", "frame_batches",
           "config_from_diffusers", "from_diffusers", "map_diffusers_key", "ENCODE_BATCH_FRAMES",
           "DECODE_BATCH_LATENTS"]
