r"""Building blocks shared by minivid's convolutional VAEs: the 2D per-frame VAE (``vae2d``), CogVideoX's
causal 3D VAE (``causal_vae``), Reducio's VAE (``reducio``), and later Tora's motion VAE and the full system.

Every block takes videos ``(B, C, T, H, W)`` and has ``forward(x, cache=None)``. ``cache`` is a plain dict
that only the causal (streaming) blocks use: a :class:`CausalConv3d` keeps the last frames it saw, a
causal :class:`Downsample`/:class:`Upsample` remembers that the first frame has gone by. Passing the same
dict to consecutive chunks of a clip gives exactly the result of the whole clip (C1's frame-chunked
encode/decode); ``cache=None`` is the ordinary whole-clip pass.

**C1: causal padding.** A temporal kernel of size :math:`k_t` (dilation :math:`d`) needs
:math:`(k_t-1)d` frames of context. A causal convolution puts all of them on the *past* side, so output
frame :math:`t` depends on input frames :math:`\le t` only. On the first chunk the missing past is the
first frame repeated (CogVideoX's choice, **[code]** ``fake_context_parallel_forward``); on later chunks it
is the cached tail of the previous chunk:

.. math::  \tilde x = [\underbrace{x_0,\dots,x_0}_{(k_t-1)d}, x_0, x_1, \dots, x_{T-1}],\qquad
           y_t = \sum_{j=0}^{k_t-1} W_j\,\tilde x_{t + jd}.

**C1: 4k+1 frames.** A causal temporal downsampler keeps the first frame on its own and averages the
following pairs, :math:`1 + 2k \to 1 + k`; two of them map :math:`4k+1` frames to :math:`k+1` latent
frames, and an image (one frame) to one latent frame. The upsampler mirrors it (:math:`1 + k \to 1 + 2k`).

**Normalisation.** GroupNorm statistics over the time axis would let future frames change past outputs
(and make chunks differ from the whole clip), so the causal blocks normalise every frame on its own
(``per_frame_norm=True``). CogVideoX's released VAE pools GroupNorm over (T, H, W) within a chunk; ours is
the strictly causal variant. Reducio (not causal) may pool over time as its code does.

Layout of :class:`Encoder`/:class:`Decoder` (SD-VAE / CogVideoX style): ``conv_in``, levels of residual
blocks at widths ``channels * channel_mult[i]`` separated by down/up-sampling *transitions* (each one
halves/doubles space and/or time), two residual blocks in the middle, GroupNorm-SiLU-``conv_out``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch import nn

Cache = dict  # {module: state} for streaming (chunked) passes; see the module docstring


def _triple(k: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(k, int):
        return (k, k, k)
    k = tuple(int(v) for v in k)
    if len(k) != 3:
        raise ValueError(f"kernel_size must be an int or 3 ints (t, h, w), got {k}")
    return k


def log2_exact(n: int, name: str) -> int:
    """log2 of a power of two, with a clear error for anything else (R1/C1: f_t and f_s are powers of two,
    one halving per resolution change)."""
    if not isinstance(n, int) or n < 1 or n & (n - 1):
        raise ValueError(f"{name}={n!r} must be a power of two (1, 2, 4, 8, ...)")
    return n.bit_length() - 1


def check_video_shape(shape: Sequence[int], in_channels: int, f_s: int, frames_error=None) -> None:
    """R1/C1 input checks shared by the VAEs, in this order, each a ValueError raised before any work: a
    video (B, C, T, H, W); C = ``in_channels``; ``frames_error(T)`` (the model's frame rule: a message, or None
    when T is fine); H and W divisible by ``f_s``."""
    if len(shape) != 5:
        raise ValueError(f"expected a video (B, C, T, H, W), got shape {tuple(shape)}")
    _, ch, t, h, w = shape
    if ch != in_channels:
        hint = ": if it is (B, T, C, H, W), permute it: video.permute(0, 2, 1, 3, 4)" if shape[2] == in_channels else ""
        raise ValueError(f"expected {in_channels} channels: video must be (B, C={in_channels}, T, H, W); got "
                         f"{tuple(shape)}{hint}")
    message = frames_error(t) if frames_error is not None else None
    if message:
        raise ValueError(message)
    if h % f_s or w % f_s:
        raise ValueError(f"height and width must be divisible by f_s={f_s}, got {h}x{w}"
                         + (f" (f_s={f_s} needs frames of at least {f_s}x{f_s}; the latent is then 1x1)"
                            if min(h, w) < f_s else ""))


# ----------------------------------------------------------------------------------------------------
# Normalisation and convolutions
# ----------------------------------------------------------------------------------------------------


class GroupNorm3d(nn.GroupNorm):
    """GroupNorm for videos (B, C, T, H, W): per frame (statistics over (C/G, H, W) of each frame, causal as
    C1 needs) or over the whole clip ((C/G, T, H, W), ``per_frame=False``, Reducio R2 **[code]**). Images
    (B, C, H, W) pass as usual. ``groups`` is reduced to gcd(channels, groups) so tiny test widths work."""

    def __init__(self, channels: int, groups: int = 32, per_frame: bool = True, eps: float = 1e-6):
        super().__init__(math.gcd(channels, groups), channels, eps=eps)
        self.per_frame = per_frame

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or not self.per_frame:
            return super().forward(x)
        b = x.shape[0]
        y = super().forward(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(y, "(b t) c h w -> b c t h w", b=b)


class CausalConv3d(nn.Module):
    r"""C1: a 3D convolution whose temporal padding lies on the past side only.

    ``(k_t - 1) * dilation`` frames are prepended: copies of the first frame (whole clip, or the first
    chunk of a stream) or the cached last frames of the previous chunk (``cache`` dict). Space is
    zero-padded symmetrically ("same" size for odd kernels); ``stride`` is spatial only (time is
    resampled by :class:`Downsample`/:class:`Upsample`). (B, C, T, H, W) -> (B, C', T, H/stride, W/stride).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3,
                 stride: int = 1, dilation: int = 1, bias: bool = True):
        super().__init__()
        kt, kh, kw = _triple(kernel_size)
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"spatial kernel sizes must be odd for 'same' padding, got {(kh, kw)}")
        if kt < 1 or dilation < 1:
            raise ValueError(f"kernel_size and dilation must be >= 1, got {kt} and {dilation}")
        self.kernel_size, self.dilation = (kt, kh, kw), dilation
        self.time_pad = (kt - 1) * dilation  # C1: all of the temporal context comes from the past
        self.conv = nn.Conv3d(in_channels, out_channels, (kt, kh, kw), stride=(1, stride, stride),
                              dilation=(dilation, 1, 1), padding=(0, kh // 2, kw // 2), bias=bias)

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"CausalConv3d takes videos (B, C, T, H, W), got shape {tuple(x.shape)}")
        if self.time_pad:
            past = cache.get(self) if cache is not None else None
            if past is None:  # C1 [code]: the missing past is the first frame repeated
                past = repeat(x[:, :, :1], "b c 1 h w -> b c p h w", p=self.time_pad)
                if x.shape[2] == 1:  # an image: every tap sees the same frame, so one 2D conv with the taps summed
                    if cache is not None:
                        cache[self] = past
                    c = self.conv
                    y = F.conv2d(x[:, :, 0], c.weight.sum(2), c.bias, stride=c.stride[1:], padding=c.padding[1:])
                    return y[:, :, None]  # (B, C', 1, H', W'), 1/k_t of the 3D conv's work
            x = torch.cat([past, x], dim=2)  # (B, C, time_pad + T, H, W)
            if cache is not None:
                cache[self] = x[:, :, -self.time_pad:]  # the context the next chunk needs
        return self.conv(_fast_layout(x))  # (B, C', T, H', W')


def _fast_layout(x: torch.Tensor) -> torch.Tensor:
    """On the CPU, oneDNN's 3D convolutions (forward and backward) run faster on narrow, large activations in
    channels-last layout (bench/results/measurements.md); the values are unchanged."""
    return x if x.is_cuda else x.contiguous(memory_format=torch.channels_last_3d)


class FrameConv2d(nn.Conv2d):
    """A 2D convolution applied to every frame of a video on its own (temporal kernel 1): the 2D VAE's (R2,
    f_t = 1) and Reducio's content encoder's (R2) convolution. (B, C, T, H, W) -> (B, C', T, H', W');
    images pass as usual."""

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        if x.ndim == 4:
            return super().forward(x)
        b = x.shape[0]
        y = super().forward(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(y, "(b t) c h w -> b c t h w", b=b)


class Conv3dSame(nn.Conv3d):
    """A non-causal 3D convolution, zero-padded symmetrically in time and space ("same" size); Reducio's
    3D encoder and decoder (R2) use it, unlike C1's causal one. It cannot stream (its output frame t looks at
    frame t + 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3):
        k = _triple(kernel_size)
        if any(v % 2 == 0 for v in k):
            raise ValueError(f"kernel sizes must be odd for 'same' padding, got {k}")
        super().__init__(in_channels, out_channels, k, padding=tuple(v // 2 for v in k))

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        if cache is not None:
            raise ValueError("a non-causal convolution cannot be run chunk by chunk (cache given)")
        return super().forward(_fast_layout(x))


def make_conv(in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3,
              causal: bool = False) -> nn.Module:
    """The convolution for a kernel (k_t, k, k): temporal kernel 1 -> :class:`FrameConv2d`; causal ->
    :class:`CausalConv3d` (C1); otherwise :class:`Conv3dSame`. All take ``(x, cache=None)``."""
    kt, kh, kw = _triple(kernel_size)
    if kt == 1:
        return FrameConv2d(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2))
    if causal:
        return CausalConv3d(in_channels, out_channels, (kt, kh, kw))
    return Conv3dSame(in_channels, out_channels, (kt, kh, kw))


# ----------------------------------------------------------------------------------------------------
# Residual block and resampling
# ----------------------------------------------------------------------------------------------------


class ResBlock3D(nn.Module):
    """Pre-activation residual block: GroupNorm, SiLU, conv (k_t x 3 x 3), GroupNorm, SiLU, conv, plus a
    1x1x1 projection of the input when the width changes. ``temporal_kernel=1`` makes it a per-frame 2D
    block; ``causal=True`` uses :class:`CausalConv3d` (C1). (B, C, T, H, W) -> (B, C', T, H, W)."""

    def __init__(self, in_channels: int, out_channels: int | None = None, causal: bool = False,
                 temporal_kernel: int = 3, norm_groups: int = 32, per_frame_norm: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        out_channels = out_channels or in_channels
        k = (temporal_kernel, 3, 3)
        self.norm1 = GroupNorm3d(in_channels, norm_groups, per_frame_norm)
        self.conv1 = make_conv(in_channels, out_channels, k, causal)
        self.norm2 = GroupNorm3d(out_channels, norm_groups, per_frame_norm)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = make_conv(out_channels, out_channels, k, causal)
        self.skip = (FrameConv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))), cache)
        return self.skip(x) + h


def _first_call(module: nn.Module, causal: bool, cache: Cache | None) -> bool:
    """Whether this causal resampler sees the clip's first frame now (whole clip or first chunk)."""
    first = causal and (cache is None or module not in cache)
    if cache is not None:
        cache[module] = True
    return first


class Downsample(nn.Module):
    r"""Halve space and/or time. (B, C, T, H, W) -> (B, C', T', H', W').

    - time (``temporal``): the mean of consecutive frame pairs; if ``causal``, the first frame of the clip
      is kept on its own (C1), so :math:`1 + 2k \to 1 + k` frames (CogVideoX **[code]**); otherwise
      :math:`2k \to k`.
    - space (``spatial``): pad one zero row/column at the bottom/right, then a 3x3 stride-2 convolution per
      frame (SD-VAE, CogVideoX), :math:`H \to H/2`; without ``spatial`` a 3x3 stride-1 convolution.
    - ``shortcut`` (not in the papers; DC-AE's residual autoencoding, Chen et al. 2024): add the parameter-free
      path, each 2x2 block's mean (after the time pairing), to the convolution's output, so that an untrained
      encoder already passes block means down and training learns only the residual. Off by default.
    """

    def __init__(self, channels: int, spatial: bool = True, temporal: bool = False, causal: bool = False,
                 out_channels: int | None = None, shortcut: bool = False):
        super().__init__()
        if not (spatial or temporal):
            raise ValueError("a Downsample must halve space, time or both")
        if shortcut and out_channels not in (None, channels):
            raise ValueError(f"shortcut=True needs out_channels == channels ({channels}), got {out_channels}")
        self.spatial, self.temporal, self.causal, self.shortcut = spatial, temporal, causal, shortcut
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, stride=2 if spatial else 1,
                              padding=0 if spatial else 1)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        b = x.shape[0]
        if self.temporal:
            first = _first_call(self, self.causal, cache)
            head, rest = (x[:, :, :1], x[:, :, 1:]) if first else (x[:, :, :0], x)
            if rest.shape[2] % 2:
                expect = "1 + an even number of" if first else "an even number of"
                raise ValueError(f"temporal downsampling needs {expect} frames here, got {x.shape[2]}")
            rest = reduce(rest, "b c (t two) h w -> b c t h w", "mean", two=2)  # pairs -> their mean
            x = torch.cat([head, rest], dim=2)  # (B, C, T', H, W)
        y = rearrange(x, "b c t h w -> (b t) c h w")
        skip = (F.avg_pool2d(y, 2) if self.spatial else y) if self.shortcut else None
        if self.spatial:
            y = F.pad(y, (0, 1, 0, 1))  # bottom/right, so a 3x3 stride-2 kernel gives exactly H/2
        y = self.conv(y)
        if skip is not None:
            y = y + skip  # DC-AE residual: block means + the learned part
        return rearrange(y, "(b t) c h w -> b c t h w", b=b)


class Upsample(nn.Module):
    r"""Double space and/or time, mirror of :class:`Downsample`. Time: every frame repeated twice; if
    ``causal`` the clip's first frame stays single (:math:`1 + k \to 1 + 2k`, C1). Space: nearest-neighbour
    x2. Then a 3x3 convolution per frame (CogVideoX **[code]**). ``shortcut``: the repeated input is added to the
    convolution's output (DC-AE's residual path, see :class:`Downsample`). (B, C, T, H, W) -> (B, C', T', H', W')."""

    def __init__(self, channels: int, spatial: bool = True, temporal: bool = False, causal: bool = False,
                 out_channels: int | None = None, shortcut: bool = False):
        super().__init__()
        if not (spatial or temporal):
            raise ValueError("an Upsample must double space, time or both")
        if shortcut and out_channels not in (None, channels):
            raise ValueError(f"shortcut=True needs out_channels == channels ({channels}), got {out_channels}")
        self.spatial, self.temporal, self.causal, self.shortcut = spatial, temporal, causal, shortcut
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        b = x.shape[0]
        if self.temporal:
            first = _first_call(self, self.causal, cache)
            head, rest = (x[:, :, :1], x[:, :, 1:]) if first else (x[:, :, :0], x)
            rest = repeat(rest, "b c t h w -> b c (t two) h w", two=2)
            x = torch.cat([head, rest], dim=2)  # (B, C, T', H, W)
        y = rearrange(x, "b c t h w -> (b t) c h w")
        if self.spatial:
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        y = self.conv(y) + y if self.shortcut else self.conv(y)
        return rearrange(y, "(b t) c h w -> b c t h w", b=b)


# ----------------------------------------------------------------------------------------------------
# Encoder and decoder
# ----------------------------------------------------------------------------------------------------


def make_transitions(spatial_factor: int, temporal_factor: int, temporal_first: bool) -> list[tuple[bool, bool]]:
    """R1/C1: the (spatial, temporal) flags of each resolution change, from the finest level to the coarsest:
    log2(f_s) spatial halvings and log2(f_t) temporal ones (so the latent is T/f_t x H/f_s x W/f_s), the
    temporal ones at the finest levels (``temporal_first``, CogVideoX's encoder) or at the coarsest (Reducio;
    every decoder here)."""
    s, t = log2_exact(spatial_factor, "spatial_factor"), log2_exact(temporal_factor, "temporal_factor")
    n = max(s, t)
    if temporal_first:
        return [(i < s, i < t) for i in range(n)]
    return [(i >= n - s, i >= n - t) for i in range(n)]


def _check_widths(channels: int, channel_mult: Sequence[int], transitions: Sequence[tuple[bool, bool]],
                  mid_blocks: int = 2) -> None:
    if mid_blocks < 0:
        raise ValueError(f"mid_blocks={mid_blocks} must be >= 0")
    if channels < 1 or any(m < 1 for m in channel_mult):
        raise ValueError(f"channels={channels} and channel_mult={tuple(channel_mult)} must be positive")
    if len(channel_mult) != len(transitions) + 1:
        raise ValueError(f"channel_mult has {len(channel_mult)} levels but {len(transitions)} resolution "
                         f"changes need {len(transitions) + 1}")


class Encoder(nn.Module):
    """R1/C1 encoder: conv_in -> levels of ``num_res_blocks`` residual blocks, a :class:`Downsample` between levels ->
    ``mid_blocks`` middle blocks (SD-VAE: 2) -> GroupNorm, SiLU, conv_out to ``out_channels`` (2|z| for a Gaussian
    latent).

    ``out_channels=None`` builds a feature extractor (Reducio's content encoder, R2): no middle, no head;
    ``forward`` then returns the feature map of every level (the feature pyramid).
    """

    def __init__(self, in_channels: int, out_channels: int | None, channels: int, channel_mult: Sequence[int],
                 num_res_blocks: int, transitions: Sequence[tuple[bool, bool]], causal: bool = False,
                 temporal_kernel: int = 3, norm_groups: int = 32, per_frame_norm: bool = True, mid_blocks: int = 2,
                 shortcuts: bool = False):
        super().__init__()
        _check_widths(channels, channel_mult, transitions, mid_blocks)
        self.shortcuts = shortcuts and out_channels is not None
        kw = dict(causal=causal, temporal_kernel=temporal_kernel, norm_groups=norm_groups,
                  per_frame_norm=per_frame_norm)
        self.widths = [channels * m for m in channel_mult]
        self.conv_in = make_conv(in_channels, self.widths[0], (temporal_kernel, 3, 3), causal)
        self.blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        c = self.widths[0]
        for i, w in enumerate(self.widths):
            level = nn.ModuleList()
            for _ in range(num_res_blocks):
                level.append(ResBlock3D(c, w, **kw))
                c = w
            self.blocks.append(level)
            if i < len(transitions):
                sp, tm = transitions[i]
                self.downs.append(Downsample(c, sp, tm, causal, shortcut=shortcuts))
        self.has_head = out_channels is not None
        if self.has_head:
            self.mid = nn.ModuleList([ResBlock3D(c, c, **kw) for _ in range(mid_blocks)])
            self.norm_out = GroupNorm3d(c, norm_groups, per_frame_norm)
            self.conv_out = make_conv(c, out_channels, (temporal_kernel, 3, 3), causal)
            if self.shortcuts and (out_channels % 2 or c % (out_channels // 2)):
                raise ValueError(f"shortcuts=True needs the top width ({c}) to be a multiple of the latent channels "
                                 f"({out_channels // 2})")

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor | list[torch.Tensor]:
        h = self.conv_in(x, cache)  # (B, C0, T, H, W)
        features = []
        for i, level in enumerate(self.blocks):
            for block in level:
                h = block(h, cache)
            features.append(h)  # level i: (B, C_i, T_i, H_i, W_i)
            if i < len(self.downs):
                h = self.downs[i](h, cache)
        if not self.has_head:
            return features
        for block in self.mid:
            h = block(h, cache)
        out = self.conv_out(F.silu(self.norm_out(h)), cache)  # (B, out_channels, T', H', W')
        if self.shortcuts:  # DC-AE: the latent mean also gets the group means of the top features' channels
            z = out.shape[1] // 2
            out = torch.cat([out[:, :z] + reduce(h, "b (z g) t h w -> b z t h w", "mean", z=z), out[:, z:]], dim=1)
        return out


class Decoder(nn.Module):
    """R1/C1 decoder: conv_in from the latent -> ``mid_blocks`` middle blocks (SD-VAE: 2) -> levels (coarsest first) of
    ``num_res_blocks + 1`` residual blocks, an :class:`Upsample` between levels -> GroupNorm, SiLU, conv_out.

    ``transitions`` uses the encoder's indexing (transition i joins level i and level i + 1). ``fusions``
    maps a level index to a module ``f(h, context) -> h`` applied after that level's first block when
    ``forward`` gets a context for the level (Reducio's content cross-attention, R2).
    """

    def __init__(self, out_channels: int, latent_channels: int, channels: int, channel_mult: Sequence[int],
                 num_res_blocks: int, transitions: Sequence[tuple[bool, bool]], causal: bool = False,
                 temporal_kernel: int = 3, norm_groups: int = 32, per_frame_norm: bool = True,
                 fusions: dict[int, nn.Module] | None = None, mid_blocks: int = 2, shortcuts: bool = False):
        super().__init__()
        _check_widths(channels, channel_mult, transitions, mid_blocks)
        self.shortcuts = shortcuts
        kw = dict(causal=causal, temporal_kernel=temporal_kernel, norm_groups=norm_groups,
                  per_frame_norm=per_frame_norm)
        self.widths = [channels * m for m in channel_mult]
        n = len(self.widths)
        c = self.widths[-1]
        self.conv_in = make_conv(latent_channels, c, (temporal_kernel, 3, 3), causal)
        if shortcuts and c % latent_channels:
            raise ValueError(f"shortcuts=True needs the top width ({c}) to be a multiple of latent_channels "
                             f"({latent_channels})")
        self.mid = nn.ModuleList([ResBlock3D(c, c, **kw) for _ in range(mid_blocks)])
        self.blocks = nn.ModuleList([nn.ModuleList() for _ in range(n)])  # indexed by level
        self.ups = nn.ModuleList([nn.Identity() for _ in range(n)])  # ups[i]: level i -> level i - 1
        for i in reversed(range(n)):
            for _ in range(num_res_blocks + 1):
                self.blocks[i].append(ResBlock3D(c, self.widths[i], **kw))
                c = self.widths[i]
            if i > 0:
                sp, tm = transitions[i - 1]
                self.ups[i] = Upsample(c, sp, tm, causal, shortcut=shortcuts)
        self.fusions = nn.ModuleDict({str(k): m for k, m in (fusions or {}).items()})
        for k in (fusions or {}):
            if not 0 <= k < n:
                raise ValueError(f"fusion level {k} does not exist (levels 0..{n - 1})")
        self.norm_out = GroupNorm3d(c, norm_groups, per_frame_norm)
        self.conv_out = make_conv(c, out_channels, (temporal_kernel, 3, 3), causal)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.conv_out.weight

    def forward(self, z: torch.Tensor, cache: Cache | None = None,
                context: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        h = self.conv_in(z, cache)  # (B, C_top, T', H', W')
        if self.shortcuts:  # DC-AE: each latent channel repeated over its group of feature channels
            h = h + z.repeat_interleave(h.shape[1] // z.shape[1], dim=1)
        for block in self.mid:
            h = block(h, cache)
        for i in reversed(range(len(self.blocks))):
            for j, block in enumerate(self.blocks[i]):
                h = block(h, cache)
                if j == 0 and context is not None and str(i) in self.fusions and i in context:
                    h = self.fusions[str(i)](h, context[i])  # R2: content injected at this level
            if i > 0:
                h = self.ups[i](h, cache)  # (B, C_i, T, H, W) at level i - 1's resolution
        return self.conv_out(F.silu(self.norm_out(h)), cache)  # (B, out_channels, T, H, W)


# ----------------------------------------------------------------------------------------------------
# Compression bookkeeping shared by the VAEs
# ----------------------------------------------------------------------------------------------------


def compression_stats(model: nn.Module, input_shape: Sequence[int]) -> dict[str, Any]:
    """R1/R2 bookkeeping for an autoencoder with ``downsample = (f_t, f_s, f_s)`` and ``latent_shape``:
    the factor f_t·f_s² (pixels per latent position) and the element ratio
    (3·T·H·W) / (|z|·T'·H'·W'), both computed from the shapes, plus the parameter count."""
    f_t, f_s, f_s2 = model.downsample
    latent = tuple(model.latent_shape(tuple(input_shape)))
    inp = math.prod(input_shape[1:])
    lat = math.prod(latent[1:])
    return {"downsample": f"{f_t}x{f_s}x{f_s2}", "factor": f_t * f_s * f_s2, "latent_channels": latent[1],
            "latent_shape": latent[1:], "latent_elements": lat, "input_elements": inp,
            "element_ratio": inp / lat, "parameters": sum(p.numel() for p in model.parameters())}
