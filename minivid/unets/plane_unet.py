r"""PVDM's denoiser on the triplane latent (P7), conditional on the previous clip (P8).

P7: one 2D U-Net is shared by the three planes :math:`z^s \in \mathbb R^{C\times H'\times W'}`,
:math:`z^h \in \mathbb R^{C\times S\times W'}`, :math:`z^w \in \mathbb R^{C\times S\times H'}` (shapes
differ: every convolution, normalisation and resampling layer is applied to each plane on its own, with the
same weights). The planes depend on each other (z^h and z^w say where the content of z^s is at each frame),
so after every stage of the U-Net the three planes' features are flattened, concatenated into one sequence
of :math:`H'W' + SW' + SH'` tokens (at that stage's resolution) and passed through one self-attention layer
(**[code]** the release's ``AttentionBlock1D`` after each input block, the middle block and each output
block). That attention is the only place where the planes meet: with ``cross_plane_attention=False`` the
output for one plane depends on that plane alone (``tests/diffusion/test_plane_unet.py``).

P8: the previous clip's planes :math:`z^1_0` are concatenated on channels with the noisy planes
:math:`z^2_t` (plane by plane); ``cond=None`` means the null condition, zeros (unconditional generation).
The network predicts :math:`\epsilon` for each plane.

minivid additions, both switchable (the release has neither): a learned embedding of which plane a
feature map is (added to the timestep embedding: the three planes have different statistics and share the
weights), and, inside the cross-plane attention, fixed sin-cos positions (:func:`minivid.nn.sincos_axes`) of
every token's coordinates on the axes its plane has (s, h, w; one third of the channels per axis), so that
attention can line up :math:`z^s_{hw}` with the column w of :math:`z^h` and the row h of :math:`z^w`.

A third minivid addition, off by default (PVDM generates unconditionally): ``num_classes > 0`` adds a learned
class embedding to the timestep embedding, as ADM's class-conditional U-Net does, with one more row for the null
class (``y=None``), so that classifier-free guidance can pin what the class names (the zoo: a sprite's colour and
motion) in every frame of a clip.

Inputs and outputs: a tuple of planes ``(z_s, z_h, z_w)``, or the packed tensor (B, C, H'W' + SW' + SH') of
:func:`minivid.nn.triplane.pack_planes` together with ``shape=(S, H', W')`` (what the samplers of
minivid.diffusion work on); the output has the input's form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..nn import BACKENDS, AdaGNResBlock, Attention, Model, ModelConfig, TimestepEmbedding, sincos_axes
from ..nn.triplane import Planes, check_planes, pack_planes, unpack_planes
from ..utils.validation import check_choice, check_int_tuple, check_number, check_positive_ints

PLANE_AXES = (("h", "w"), ("s", "w"), ("s", "h"))  # the axes of z^s, z^h, z^w (rows, columns)


@dataclass
class PlaneUNetConfig(ModelConfig):
    in_channels: int = 4  # C of the planes (the autoencoder's latent_channels)
    conditional: bool = True  # P8: previous clip's planes concatenated on channels (input 2C channels)
    channels: int = 64  # width of the first level; level i has channels * channel_mult[i]
    channel_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    heads: int = 4
    cross_plane_attention: bool = True  # P7
    plane_embedding: bool = True  # minivid addition (see module docstring)
    axis_positions: bool = True  # minivid addition (see module docstring)
    norm_groups: int = 8
    dropout: float = 0.0
    attention_backend: str = "sdpa"
    num_classes: int = 0  # minivid addition: > 0 adds a class embedding (index num_classes = the null class)

    def __post_init__(self):
        self.channel_mult = check_int_tuple("channel_mult", self.channel_mult)
        if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) or self.num_classes < 0:
            raise ValueError(f"num_classes={self.num_classes!r} must be an int >= 0 (0: unconditional on classes)")
        check_positive_ints(self, ("in_channels", "channels", "num_res_blocks", "heads", "norm_groups"))
        check_number("dropout", self.dropout, 0.0, 1.0)
        for m in self.channel_mult:
            c = self.channels * m
            if c % self.norm_groups or c % self.heads:
                raise ValueError(f"channels * mult = {c} must be divisible by norm_groups={self.norm_groups} "
                                 f"and heads={self.heads}")
        check_choice("attention_backend", self.attention_backend, BACKENDS)


def axis_position_embedding(axes: tuple[str, str], rows: int, cols: int, dim: int, stride: int,
                            device=None) -> torch.Tensor:
    """Sin-cos positions (rows*cols, dim) of a plane's tokens on the shared (s, h, w) axes
    (:func:`minivid.nn.sincos_axes`): channels split in three equal even chunks for s, h, w; the chunk of the axis
    the plane lacks is zero. Coordinates are in units of the full-resolution latent (index * stride), so the same
    token position means the same place at every stage."""
    k = 2 * (dim // 6)  # channels per axis, even
    if k == 0:
        return torch.zeros(rows * cols, dim, device=device)
    i, j = torch.meshgrid(torch.arange(rows) * stride, torch.arange(cols) * stride, indexing="ij")
    coords = dict(zip(axes, (i.flatten(), j.flatten())))  # the plane's two axes
    table = sincos_axes([coords[a] for a in axes], (k, k))  # (rows*cols, 2k)
    chunks = {a: table[:, n * k:(n + 1) * k] for n, a in enumerate(axes)}
    zero = torch.zeros(rows * cols, k)
    out = torch.cat([chunks.get(a, zero) for a in "shw"] + [torch.zeros(rows * cols, dim - 3 * k)], dim=1)
    return out.to(device)


class CrossPlaneAttention(nn.Module):
    """P7: the three planes' features (B, c, ., .) flattened, concatenated into one sequence
    (B, N_s + N_h + N_w, c), one pre-norm self-attention with a residual, split back. The output projection
    starts at zero, so the block starts as the identity (as the release's zero_module(proj_out))."""

    def __init__(self, channels: int, heads: int, axis_positions: bool, backend: str):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attn = Attention(channels, heads, backend=backend, zero_init_out=True)
        self.axis_positions = axis_positions
        self.plane_tokens = nn.Parameter(torch.zeros(3, channels)) if axis_positions else None

    def forward(self, planes: list[torch.Tensor], stride: int) -> list[torch.Tensor]:
        sizes = [p.shape[2] * p.shape[3] for p in planes]
        x = torch.cat([rearrange(p, "b c i j -> b (i j) c") for p in planes], dim=1)  # (B, N_s+N_h+N_w, c)
        h = self.norm(x)
        if self.axis_positions:
            pos = torch.cat([axis_position_embedding(ax, p.shape[2], p.shape[3], p.shape[1], stride, x.device)
                             + self.plane_tokens[k] for k, (ax, p) in enumerate(zip(PLANE_AXES, planes))])
            h = h + pos.to(h.dtype)
        x = x + self.attn(h)
        return [rearrange(t, "b (i j) c -> b c i j", i=p.shape[2]) for t, p in zip(x.split(sizes, dim=1), planes)]


class PlaneUNet(Model):
    """``model(z_t, t, cond=None, shape=None, y=None) -> eps`` on triplanes (P7, P8; ``y``: class labels (B,)
    when ``num_classes > 0``); see the module docstring.

    Every side of every plane (S, H', W') must be divisible by 2 ** (len(channel_mult) - 1)."""

    config_class = PlaneUNetConfig

    def __init__(self, config: PlaneUNetConfig | None = None, **fields):
        super().__init__(config, **fields)
        cfg = self.config
        c0, groups, drop = cfg.channels, cfg.norm_groups, cfg.dropout
        emb_dim = 4 * c0
        self.time_embed = TimestepEmbedding(emb_dim, freq_dim=c0)
        self.plane_embed = nn.Embedding(3, emb_dim) if cfg.plane_embedding else None
        # class label -> added to the timestep embedding (ADM's class conditioning); the extra row is the null class
        self.class_embed = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes else None
        in_ch = cfg.in_channels * (2 if cfg.conditional else 1)  # P8: [z_t, z^1_0] on channels
        self.stem = nn.Conv2d(in_ch, c0, 3, padding=1)

        def xattn(c):
            return (CrossPlaneAttention(c, cfg.heads, cfg.axis_positions, cfg.attention_backend)
                    if cfg.cross_plane_attention else None)

        # Each entry: (kind, module, cross-plane attention or None). Attention follows every res block.
        self.down, skips, c = nn.ModuleList(), [c0], c0
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(nn.ModuleDict({"res": AdaGNResBlock(c, c0 * mult, emb_dim, groups, drop)}))
                c = c0 * mult
                if cfg.cross_plane_attention:
                    self.down[-1]["attn"] = xattn(c)
                skips.append(c)
            if level < len(cfg.channel_mult) - 1:
                self.down.append(nn.ModuleDict({"downsample": nn.Conv2d(c, c, 3, stride=2, padding=1)}))
                skips.append(c)
        self.mid = nn.ModuleDict({"res1": AdaGNResBlock(c, c, emb_dim, groups, drop),
                                  "res2": AdaGNResBlock(c, c, emb_dim, groups, drop)})
        if cfg.cross_plane_attention:
            self.mid["attn"] = xattn(c)
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(nn.ModuleDict({"res": AdaGNResBlock(c + skips.pop(), c0 * mult, emb_dim, groups, drop)}))
                c = c0 * mult
                if cfg.cross_plane_attention:
                    self.up[-1]["attn"] = xattn(c)
            if level > 0:
                self.up.append(nn.ModuleDict({"upsample": nn.Conv2d(c, c, 3, padding=1)}))
        self.head = nn.Sequential(nn.GroupNorm(groups, c), nn.SiLU(), nn.Conv2d(c, cfg.in_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    @property
    def downsample_factor(self) -> int:
        """How much the U-Net halves every plane side in all: 2 ** (len(channel_mult) - 1)."""
        return 2 ** (len(self.config.channel_mult) - 1)

    @staticmethod
    def _shared(fn, hs: list[torch.Tensor], *per_plane: list[torch.Tensor]) -> list[torch.Tensor]:
        """Apply one module to each plane (P7's weight sharing). Planes of equal shape go through it as one
        batch (fewer, larger kernel calls; every layer here acts on each batch item alone, so the result is
        the same as plane by plane)."""
        if len({h.shape[1:] for h in hs}) == 1:
            b = hs[0].shape[0]
            return list(fn(torch.cat(hs), *(torch.cat(a) for a in per_plane)).split(b))
        return [fn(h, *a) for h, *a in zip(hs, *per_plane)]

    def _planes(self, z, shape, name: str) -> tuple[Planes, bool]:
        if isinstance(z, torch.Tensor):
            if shape is None:
                raise ValueError(f"{name} is a packed tensor {tuple(z.shape)}: pass shape=(S, H', W') to unpack it")
            return unpack_planes(z, shape), True
        return tuple(z), False

    def forward(self, z, t: torch.Tensor, cond=None, shape=None, y: torch.Tensor | None = None):
        cfg = self.config
        planes, packed = self._planes(z, shape, "z")
        s, hp, wp = check_planes(planes, cfg.in_channels, name="z")
        b = planes[0].shape[0]
        if any(n % self.downsample_factor for n in (s, hp, wp)):
            raise ValueError(f"plane sides (S, H', W') = {(s, hp, wp)} must be divisible by "
                             f"{self.downsample_factor} = 2 ** (len(channel_mult) - 1) for this config")
        if t.shape != (b,):
            raise ValueError(f"t must have shape ({b},), got {tuple(t.shape)}")
        if y is not None and not cfg.num_classes:
            raise ValueError("y was given but this PlaneUNet has no class embedding (num_classes=0)")
        if y is not None and (y.shape != (b,) or y.dtype.is_floating_point or int(y.min()) < 0
                              or int(y.max()) > cfg.num_classes):
            raise ValueError(f"y must be ({b},) integer labels in 0..{cfg.num_classes} ({cfg.num_classes}: the null "
                             f"class), got shape {tuple(y.shape)}")
        if cfg.conditional:
            if cond is None:  # P8's null condition: zeros
                cond = tuple(torch.zeros_like(p) for p in planes)
            else:
                cond, _ = self._planes(cond, shape, "cond")
                check_planes(cond, cfg.in_channels, name="cond")
                if any(c.shape != p.shape for c, p in zip(cond, planes)):
                    raise ValueError(f"cond planes {[tuple(c.shape) for c in cond]} must have the shapes of z "
                                     f"{[tuple(p.shape) for p in planes]}")
            hs = self._shared(self.stem, [torch.cat([p, c], dim=1) for p, c in zip(planes, cond)])  # P8: channel concat
        else:
            if cond is not None:
                raise ValueError("this PlaneUNet is unconditional (conditional=False) but cond was given")
            hs = self._shared(self.stem, list(planes))

        temb = self.time_embed(t)  # (B, emb)
        if self.class_embed is not None:  # no label: the null class
            temb = temb + self.class_embed(y if y is not None else torch.full_like(t, cfg.num_classes, dtype=torch.long))
        # (B, emb) per plane: timestep embedding (+ which plane it is)
        embs = [temb + self.plane_embed.weight[k] if self.plane_embed is not None else temb for k in range(3)]

        skips, stride = [hs], 1
        for block in self.down:
            if "downsample" in block:
                hs = self._shared(block["downsample"], hs)
                stride *= 2
            else:
                hs = self._shared(block["res"], hs, embs)  # shared weights, plane by plane
                if "attn" in block:
                    hs = block["attn"](hs, stride)  # P7: the planes meet here
            skips.append(hs)
        hs = self._shared(self.mid["res1"], hs, embs)
        hs = self._shared(self.mid["res2"], hs, embs)
        if "attn" in self.mid:  # [code] the release's AttentionBlock1D follows the whole middle block
            hs = self.mid["attn"](hs, stride)
        for block in self.up:
            if "upsample" in block:
                hs = self._shared(lambda h: block["upsample"](F.interpolate(h, scale_factor=2, mode="nearest")), hs)
                stride //= 2
            else:
                hs = self._shared(block["res"], [torch.cat([h, sk], dim=1) for h, sk in zip(hs, skips.pop())], embs)
                if "attn" in block:
                    hs = block["attn"](hs, stride)
        out = tuple(self._shared(self.head, hs))
        return pack_planes(out) if packed else out
