r"""PVDM's projected (triplane) autoencoder, P1-P6 (Yu et al., CVPR 2023).

A video :math:`x \in \mathbb R^{3\times S\times H\times W}` is encoded into three 2D "planes" (P1)

.. math:: z = [z^s, z^h, z^w],\quad z^s \in \mathbb R^{C\times H'\times W'},\ z^h \in \mathbb R^{C\times S\times W'},
          \ z^w \in \mathbb R^{C\times S\times H'},\quad H' = H/d,\ W' = W/d,

in two steps. First a video transformer with divided space-time attention (TimeSformer) maps patches of
:math:`d\times d` pixels to a 3D grid of features (P2)
:math:`u = f^{shw}(x) \in \mathbb R^{D\times S\times H'\times W'}`
(the paper writes C for the width of u too; here it is the transformer width ``dim``). Then three small
transformers project u along one axis each (P3):

.. math:: z^s_{hw} = f^s(u_{1hw},\dots,u_{Shw}),\quad z^h_{sw} = f^h(u_{s1w},\dots,u_{sH'w}),\quad
          z^w_{sh} = f^w(u_{sh1},\dots,u_{shW'}).

**[code]** In the release each projector is a 4-layer transformer over the line plus a learnable class
token; the class token's output is the plane value, followed by a 1x1 conv to C channels and tanh (so the
planes lie in (-1, 1)). (The release appends the class token at the end of the line but reads output
position 0, i.e. the first element of the line; minivid reads the class token itself.) minivid's class
token starts from the line's average plus the learned token, so that at initialisation each projection is an
average pooling along its axis (z^s the time average of u) rather than a constant, which shortens the plateau
before the decoder starts using the planes at short CPU budgets (bench/results/measurements.md).

The decoder rebuilds a 3D grid (P4) :math:`v_{shw} = [z^s_{hw}, z^h_{sw}, z^w_{sh}] \in \mathbb R^{3C}` and a
second video transformer maps v back to pixels. ``grid="concat"`` builds v literally and embeds its 3C
channels with one linear layer; ``grid="sum"`` is the release's form: a 1x1 conv per plane, each plane
broadcast along its missing axis, and the three summed. The two are the same function class: a linear
map of a concatenation is the sum of linear maps of its parts, :math:`W[a;b;c] = W_a a + W_b b + W_c c`
(``tests/autoencoders/test_pvdm.py::test_concat_and_sum_grids_are_the_same_function``); "sum" is cheaper
because it embeds the :math:`H'W'+SW'+SH'` plane values before broadcasting rather than the
:math:`SH'W'` grid values after.

P5: the latent has :math:`C(H'W' + SW' + SH')` elements instead of a 3D latent's :math:`CSH'W'`
(:func:`latent_cost`). P6 (losses: L1 or MSE, LPIPS from weights on disk, hinge GAN with 2D and 3D PatchGANs)
lives in :mod:`minivid.autoencoders.training`; PVDM's encoder is deterministic, so ``encode`` returns a
:class:`~minivid.autoencoders.base.DiracLatent` and the KL term is zero.

Time positions. The divided space-time transformers here carry 2D sinusoidal positions in space but, by
default, none in time (``temporal_positions=False``; the release uses RoPE in both): frames are told
apart by their content and, in the decoder, by the rows :math:`z^h_s, z^w_s` of the planes. The encoder is
then equivariant to permuting frames, so a static video (all frames equal) gives planes :math:`z^h, z^w`
that are constant along s: the time-varying part of the code is exactly zero and everything the video
holds sits in :math:`z^s` and one row/column profile (checked in the tests, measured in notebook 02).

Noisy planes in training (``latent_noise``, minivid's option, off by default as in the release). Without a KL
term the decoder is fragile: planes of held-out clips with Gaussian noise of std 0.1 (a third of their std) decode
to clips whose sprites change colour (sprite check 81% -> 42%), as the plane U-Net's samples do. With
``latent_noise = s`` the training forward pass (``forward(sample=True)`` in train mode) decodes
:math:`z + \sigma\epsilon`, :math:`\sigma \sim U(0, s)` per clip, so the decoder learns to absorb such errors
(bench/results/measurements.md: with ``latent_noise=0.2`` the decoder keeps 66% at std 0.2, against 2%, at
0.8 dB less PSNR, but the zoo's plane U-Net on such planes did not measurably improve, so the zoo keeps 0);
encoding, ``reconstruct`` and evaluation are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from einops import rearrange, repeat
from torch import nn

from ..nn import BACKENDS, DiTBlock, ModelConfig, sincos_1d, sincos_2d
from ..nn.triplane import Planes, check_planes, pack_planes, plane_shapes, unpack_planes
from ..utils.validation import check_choice, check_number, check_positive_ints
from .base import DiracLatent, VideoAutoencoder

GRIDS = ("concat", "sum")
__all__ = ["GRIDS", "PVDMAutoencoder", "PVDMAutoencoderConfig", "latent_cost", "triplane_grid", "Planes",
           "check_planes", "pack_planes", "unpack_planes", "plane_shapes"]  # the triplane layout: minivid.nn.triplane


def latent_cost(frames: int, height: int, width: int, patch_size: int, channels: int) -> dict[str, int]:
    """P5 for a clip of S x H x W pixels: latent elements and attention cost (tokens squared) of the triplane
    latent against a 3D latent with the same downsampling d and channels C.

    triplane: C (H'W' + SW' + SH') elements, (H'W' + SW' + SH')^2 attention pairs;
    grid_3d:  C S H' W' elements, (S H' W')^2 attention pairs."""
    if height % patch_size or width % patch_size:
        raise ValueError(f"height={height} and width={width} must be divisible by patch_size={patch_size}")
    hp, wp = height // patch_size, width // patch_size
    n_tri, n_3d = hp * wp + frames * wp + frames * hp, frames * hp * wp
    return {"triplane_tokens": n_tri, "triplane_elements": channels * n_tri, "triplane_attention": n_tri**2,
            "grid_tokens": n_3d, "grid_elements": channels * n_3d, "grid_attention": n_3d**2}


def triplane_grid(planes) -> torch.Tensor:
    """P4 literally: v_{shw} = [z^s_{hw}, z^h_{sw}, z^w_{sh}], (B, 3C, S, H', W')."""
    s, hp, wp = check_planes(planes)
    z_s, z_h, z_w = planes
    return torch.cat([repeat(z_s, "b c h w -> b c s h w", s=s),     # z^s_{hw}: constant along s
                      repeat(z_h, "b c s w -> b c s h w", h=hp),    # z^h_{sw}: constant along h
                      repeat(z_w, "b c s h -> b c s h w", w=wp)],   # z^w_{sh}: constant along w
                     dim=1)


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


class VideoTransformer(nn.Module):
    """P2's TimeSformer: a stack of divided space-time blocks on a token grid (B, S, H', W', dim), with 2D sin-cos
    positions in space (and optionally 1D ones in time) added at the input, and a final LayerNorm. Each block
    (:class:`~minivid.nn.DiTBlock`, ``kind="factorised"``, ``temporal_first=True``, no condition) attends over the
    S frames at each patch position, then over the H'W' patches of each frame, then applies its MLP (pre-norm,
    residual each): only the temporal attention moves information between frames."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, backend: str, temporal_positions: bool):
        super().__init__()
        self.dim, self.temporal_positions = dim, temporal_positions
        self.blocks = nn.ModuleList(DiTBlock(dim, heads, "factorised", "none", mlp_ratio=mlp_ratio, backend=backend,
                                             temporal_first=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, hp, wp, d = x.shape
        x = rearrange(x, "b s h w d -> b s (h w) d") + sincos_2d(hp, wp, d).to(x)  # (B, S, H'W', dim)
        if self.temporal_positions:
            x = x + sincos_1d(s, d).to(x)[:, None]
        for block in self.blocks:
            x = block(x)
        return rearrange(self.norm(x), "b s (h w) d -> b s h w d", h=hp)


class AxisProjector(nn.Module):
    """P3's small transformer f^s, f^h or f^w: each line (u_1, ..., u_L) of D-dim features, with a class token
    in front (a learnable token plus the line's average) and sinusoidal positions, goes through ``depth``
    transformer layers; the class token's output is the line's projection (N, L, D) -> (N, D)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, backend: str):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(DiTBlock(dim, heads, "full", "none", mlp_ratio=mlp_ratio, backend=backend)
                                    for _ in range(depth))  # plain pre-norm transformer layers over the line
        self.norm = nn.LayerNorm(dim)

    def forward(self, lines: torch.Tensor) -> torch.Tensor:
        n, length, d = lines.shape
        cls = self.cls.to(lines.dtype) + lines.mean(dim=1, keepdim=True)  # (N, 1, D): starts as the line's average
        x = torch.cat([cls, lines], dim=1)  # (N, 1 + L, D), class token first
        x = (x + sincos_1d(length + 1, d).to(x))[:, None]  # (N, 1, 1 + L, D): one "frame" per line
        for block in self.blocks:
            x = block(x)
        return self.norm(x[:, 0, 0])  # (N, D): the class token's output


# --------------------------------------------------------------------------------------------------
# The autoencoder
# --------------------------------------------------------------------------------------------------


@dataclass
class PVDMAutoencoderConfig(ModelConfig):
    """Sizes of :class:`PVDMAutoencoder`. The release (256 px, 16 frames) uses patch_size 8, dim 384,
    latent_channels 4, 8 encoder and 8 decoder layers of width 384 with 8 heads, 4-layer projectors with
    4 heads, and ``grid="sum"``."""

    in_channels: int = 3
    patch_size: int = 4  # d of P1: H' = H / d, W' = W / d
    latent_channels: int = 4  # C of P1
    dim: int = 64  # transformer width (the channels of u, P2)
    encoder_depth: int = 2
    decoder_depth: int = 2
    projector_depth: int = 2  # release: 4
    heads: int = 4
    projector_heads: int = 4
    mlp_ratio: float = 4.0
    grid: str = "sum"  # "concat": P4 as written; "sum": the release's broadcast-and-sum
    temporal_positions: bool = False  # time positions in the video transformers (see module docstring)
    latent_noise: float = 0.0  # minivid's option: max std of the noise on the planes in training (module docstring)
    attention_backend: str = "sdpa"

    def __post_init__(self):
        check_positive_ints(self, ("in_channels", "patch_size", "latent_channels", "dim", "encoder_depth",
                                   "decoder_depth", "projector_depth", "heads", "projector_heads"))
        if self.patch_size < 2:
            raise ValueError(f"patch_size={self.patch_size} is invalid: P1 needs d > 1 (expected an int >= 2)")
        if self.dim % 4 or self.dim % self.heads or self.dim % self.projector_heads:
            raise ValueError(f"dim={self.dim} must be divisible by 4 (2D sin-cos positions) and by heads={self.heads} "
                             f"and projector_heads={self.projector_heads}")
        check_choice("grid", self.grid, GRIDS)
        check_choice("attention_backend", self.attention_backend, BACKENDS)
        check_number("mlp_ratio", self.mlp_ratio, 0.0, strict_minimum=True)
        check_number("latent_noise", self.latent_noise, 0.0)


class PVDMAutoencoder(VideoAutoencoder):
    """PVDM's projected autoencoder (P1-P4). ``encode(video)`` -> :class:`DiracLatent` of the planes
    (z_s, z_h, z_w); ``decode(planes)`` -> video (B, 3, S, H, W) in (-1, 1).

    Any S works, and any H, W divisible by ``patch_size`` (positions are sinusoidal, not learned tables).
    Train with :class:`~minivid.autoencoders.training.AutoencoderTrainer` (P6)."""

    config_class = PVDMAutoencoderConfig

    def __init__(self, config: PVDMAutoencoderConfig | None = None, **fields):
        super().__init__(config, **fields)
        cfg = self.config
        d, p, c = cfg.dim, cfg.patch_size, cfg.latent_channels
        self.downsample = (1, p, p)
        self.latent_channels = c
        # P2: f^{shw}
        self.patch_embed = nn.Linear(cfg.in_channels * p * p, d)
        self.encoder = VideoTransformer(d, cfg.encoder_depth, cfg.heads, cfg.mlp_ratio, cfg.attention_backend,
                                        cfg.temporal_positions)
        # P3: f^s, f^h, f^w, each followed by a 1x1 conv to C channels and tanh ([code])
        self.project_s, self.project_h, self.project_w = (
            AxisProjector(d, cfg.projector_depth, cfg.projector_heads, cfg.mlp_ratio, cfg.attention_backend)
            for _ in range(3))
        self.to_latent = nn.ModuleList(nn.Linear(d, c) for _ in range(3))
        # P4: the grid v and g_psi
        if cfg.grid == "concat":
            self.grid_embed = nn.Linear(3 * c, d)
        else:
            self.plane_embed = nn.ModuleList(nn.Linear(c, d) for _ in range(3))
        self.decoder = VideoTransformer(d, cfg.decoder_depth, cfg.heads, cfg.mlp_ratio, cfg.attention_backend,
                                        cfg.temporal_positions)
        self.to_pixels = nn.Linear(d, cfg.in_channels * p * p)  # per patch, = the release's ConvTranspose2d

    # ------------------------------------------------------------------ checks
    def _check_video(self, video: torch.Tensor) -> None:
        cfg = self.config
        if not isinstance(video, torch.Tensor) or video.ndim != 5:
            raise ValueError(f"video must be a tensor (B, C, S, H, W); got "
                             f"{tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__}")
        if video.shape[1] != cfg.in_channels:
            raise ValueError(f"video has {video.shape[1]} channels (shape {tuple(video.shape)}); "
                             f"expected in_channels={cfg.in_channels}")
        h, w = video.shape[-2:]
        if h % cfg.patch_size or w % cfg.patch_size:
            raise ValueError(f"video size (H, W) = {(h, w)} is not divisible by patch_size={cfg.patch_size}; "
                             f"allowed: multiples of {cfg.patch_size}")

    def latent_shape(self, input_shape: Sequence[int]) -> tuple[tuple[int, ...], ...]:
        """P1: shapes of (z_s, z_h, z_w) for a video of shape (B, C, S, H, W)."""
        if len(input_shape) != 5:
            raise ValueError(f"input_shape must be (B, C, S, H, W), got {tuple(input_shape)}")
        b, ch, s, h, w = input_shape
        p = self.config.patch_size
        if ch != self.config.in_channels:
            raise ValueError(f"input_shape has {ch} channels; expected in_channels={self.config.in_channels}")
        if h % p or w % p:
            raise ValueError(f"input size (H, W) = {(h, w)} is not divisible by patch_size={p}")
        return plane_shapes(b, self.latent_channels, (s, h // p, w // p))

    # ------------------------------------------------------------------ encoder
    def features(self, video: torch.Tensor) -> torch.Tensor:
        """P2: u = f^{shw}(x), (B, dim, S, H', W')."""
        self._check_video(video)
        p = self.config.patch_size
        tokens = rearrange(video, "b c s (h p1) (w p2) -> b s h w (p1 p2 c)", p1=p, p2=p)
        u = self.encoder(self.patch_embed(tokens))  # (B, S, H', W', dim)
        return rearrange(u, "b s h w d -> b d s h w")

    def project(self, u: torch.Tensor) -> Planes:
        """P3: the three axis projections of u (B, D, S, H', W') -> (z_s, z_h, z_w), each in (-1, 1)."""
        if u.ndim != 5 or u.shape[1] != self.config.dim:
            raise ValueError(f"u must be (B, dim={self.config.dim}, S, H', W'); got {tuple(u.shape)}")
        b, _, s, hp, wp = u.shape
        # z^s_{hw} = f^s(u_{1hw}, ..., u_{Shw}): one line over time per (h, w)
        z_s = self.project_s(rearrange(u, "b d s h w -> (b h w) s d"))
        z_s = rearrange(torch.tanh(self.to_latent[0](z_s)), "(b h w) c -> b c h w", b=b, h=hp)
        # z^h_{sw} = f^h(u_{s1w}, ..., u_{sH'w}): one line over height per (s, w)
        z_h = self.project_h(rearrange(u, "b d s h w -> (b s w) h d"))
        z_h = rearrange(torch.tanh(self.to_latent[1](z_h)), "(b s w) c -> b c s w", b=b, s=s)
        # z^w_{sh} = f^w(u_{sh1}, ..., u_{shW'}): one line over width per (s, h)
        z_w = self.project_w(rearrange(u, "b d s h w -> (b s h) w d"))
        z_w = rearrange(torch.tanh(self.to_latent[2](z_w)), "(b s h) c -> b c s h", b=b, s=s)
        return z_s, z_h, z_w

    def encode(self, video: torch.Tensor) -> DiracLatent:
        """x -> DiracLatent((z_s, z_h, z_w)) (PVDM's encoder is deterministic)."""
        return DiracLatent(self.project(self.features(video)))

    def forward(self, video: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None):
        """Reconstruction and posterior (:meth:`VideoAutoencoder.forward`); in train mode with ``sample=True`` and
        ``latent_noise > 0`` the decoder gets the planes plus noise (module docstring), drawn from ``generator``."""
        posterior = self.encode(video)
        z = posterior.value
        if sample and self.training and self.config.latent_noise > 0:
            z = noisy_planes(z, self.config.latent_noise, generator)
        return self.decode(z), posterior

    # ------------------------------------------------------------------ decoder
    def grid(self, planes) -> torch.Tensor:
        """P4: the decoder's input grid, embedded to width ``dim``: (B, S, H', W', dim).

        "concat": Linear(v) with v = [z^s_{hw}, z^h_{sw}, z^w_{sh}] (:func:`triplane_grid`).
        "sum" ([code]): Linear_s(z^s)_{hw} + Linear_h(z^h)_{sw} + Linear_w(z^w)_{sh}, each broadcast."""
        check_planes(planes, self.latent_channels)  # P1 shapes, consistent S, H', W'
        if self.config.grid == "concat":
            return self.grid_embed(rearrange(triplane_grid(planes), "b c s h w -> b s h w c"))
        z_s, z_h, z_w = (rearrange(z, "b c i j -> b i j c") for z in planes)
        e_s, e_h, e_w = (emb(z) for emb, z in zip(self.plane_embed, (z_s, z_h, z_w)))
        # broadcast-and-sum: e_s (b, h, w, d) along s, e_h (b, s, w, d) along h, e_w (b, s, h, d) along w
        return e_s[:, None, :, :] + e_h[:, :, None, :] + e_w[:, :, :, None]

    def decode(self, z, **conditions) -> torch.Tensor:
        """Planes (z_s, z_h, z_w) -> video (B, 3, S, H'd, W'd) in (-1, 1) (the release's 2 sigmoid - 1)."""
        if conditions:
            raise ValueError(f"PVDMAutoencoder.decode takes no conditions; got {sorted(conditions)}")
        p = self.config.patch_size
        h = self.decoder(self.grid(z))  # (B, S, H', W', dim)
        patches = self.to_pixels(h)  # (B, S, H', W', p*p*3)
        video = rearrange(patches, "b s h w (p1 p2 c) -> b c s (h p1) (w p2)", p1=p, p2=p)
        return 2 * torch.sigmoid(video) - 1

    @property
    def last_layer(self) -> torch.Tensor:
        return self.to_pixels.weight


def noisy_planes(planes: Planes, max_std: float, generator: torch.Generator | None = None) -> Planes:
    """Planes plus Gaussian noise of std sigma ~ U(0, ``max_std``), one sigma per clip shared by its three planes;
    drawn on the CPU from ``generator`` (reproducible on any device)."""
    b = planes[0].shape[0]
    sigma = torch.rand(b, generator=generator) * max_std
    return tuple(z + (sigma.view(-1, 1, 1, 1) * torch.randn(z.shape, generator=generator)).to(z)
                 for z in planes)
