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
weights), and, inside the cross-plane attention, fixed sinusoidal positions of every token's coordinates on
the axes its plane has (s, h, w; one third of the channels per axis), so that attention can line up
:math:`z^s_{hw}` with the column w of :math:`z^h` and the row h of :math:`z^w`.

Inputs and outputs: a tuple of planes ``(z_s, z_h, z_w)``, or the packed tensor (B, C, H'W' + SW' + SH') of
:func:`minivid.autoencoders.pvdm.pack_planes` together with ``shape=(S, H', W')`` (what the samplers of
minivid.diffusion work on); the output has the input's form.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..autoencoders.pvdm import Planes, check_planes, pack_planes, unpack_planes
from ..nn import TimestepEmbedding, timestep_embedding
from ..transformers.attention import BACKENDS, Attention

PLANE_AXES = (("h", "w"), ("s", "w"), ("s", "h"))  # the axes of z^s, z^h, z^w (rows, columns)


@dataclass
class PlaneUNetConfig:
    latent_channels: int = 4  # C of the planes
    conditional: bool = True  # P8: previous clip's planes concatenated on channels (input 2C channels)
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    heads: int = 4
    cross_plane_attention: bool = True  # P7
    plane_embedding: bool = True  # minivid addition (see module docstring)
    axis_positions: bool = True  # minivid addition (see module docstring)
    groups: int = 8
    dropout: float = 0.0
    attention_backend: str = "sdpa"

    def __post_init__(self):
        self.channel_mults = tuple(self.channel_mults)
        for name in ("latent_channels", "base_channels", "num_res_blocks", "heads", "groups"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} is invalid: expected a positive int")
        if not self.channel_mults or any(isinstance(m, bool) or not isinstance(m, int) or m < 1
                                         for m in self.channel_mults):
            raise ValueError(f"channel_mults={self.channel_mults!r} is invalid: "
                             "expected a non-empty tuple of positive ints")
        for m in self.channel_mults:
            c = self.base_channels * m
            if c % self.groups or c % self.heads:
                raise ValueError(f"base_channels * mult = {c} must be divisible by groups={self.groups} "
                                 f"and heads={self.heads}")
        if self.attention_backend not in BACKENDS:
            raise ValueError(f"attention_backend={self.attention_backend!r} is invalid: expected one of {BACKENDS}")

    def to_dict(self) -> dict:
        return asdict(self)


class ResBlock2D(nn.Module):
    """GN -> SiLU -> 3x3 conv -> AdaGN(emb) -> SiLU -> 3x3 conv (zero-initialised), plus a skip (ADM's block)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(groups, c_in), nn.GroupNorm(groups, c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, i, j)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


def axis_position_embedding(axes: tuple[str, str], rows: int, cols: int, dim: int, stride: int,
                            device=None) -> torch.Tensor:
    """Sinusoidal positions (rows*cols, dim) of a plane's tokens on the shared (s, h, w) axes: channels split
    in three equal even chunks for s, h, w; the chunk of the axis the plane lacks is zero. Coordinates are in
    units of the full-resolution latent (index * stride), so the same token position means the same place at
    every stage."""
    k = 2 * (dim // 6)  # channels per axis, even
    out = torch.zeros(rows, cols, dim, device=device)
    if k == 0:
        return out.flatten(0, 1)
    r = timestep_embedding(torch.arange(rows, device=device).float() * stride, k)  # (rows, k)
    c = timestep_embedding(torch.arange(cols, device=device).float() * stride, k)  # (cols, k)
    for axis, emb in zip(axes, (r[:, None, :].expand(rows, cols, k), c[None, :, :].expand(rows, cols, k))):
        i = "shw".index(axis)
        out[:, :, i * k:(i + 1) * k] = emb
    return rearrange(out, "i j d -> (i j) d")


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


class PlaneUNet(nn.Module):
    """``model(z_t, t, cond=None, shape=None) -> eps`` on triplanes (P7, P8); see the module docstring.

    Every side of every plane (S, H', W') must be divisible by 2 ** (len(channel_mults) - 1)."""

    def __init__(self, config: PlaneUNetConfig | None = None, **kwargs):
        super().__init__()
        self.config = cfg = config if config is not None else PlaneUNetConfig(**kwargs)
        c0, groups, drop = cfg.base_channels, cfg.groups, cfg.dropout
        emb_dim = 4 * c0
        self.time_embed = TimestepEmbedding(emb_dim, freq_dim=c0)
        self.plane_embed = nn.Embedding(3, emb_dim) if cfg.plane_embedding else None
        in_ch = cfg.latent_channels * (2 if cfg.conditional else 1)  # P8: [z_t, z^1_0] on channels
        self.stem = nn.Conv2d(in_ch, c0, 3, padding=1)

        def xattn(c):
            return (CrossPlaneAttention(c, cfg.heads, cfg.axis_positions, cfg.attention_backend)
                    if cfg.cross_plane_attention else None)

        # Each entry: (kind, module, cross-plane attention or None). Attention follows every res block.
        self.down, skips, c = nn.ModuleList(), [c0], c0
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                self.down.append(nn.ModuleDict({"res": ResBlock2D(c, c0 * mult, emb_dim, groups, drop)}))
                c = c0 * mult
                if cfg.cross_plane_attention:
                    self.down[-1]["attn"] = xattn(c)
                skips.append(c)
            if level < len(cfg.channel_mults) - 1:
                self.down.append(nn.ModuleDict({"downsample": nn.Conv2d(c, c, 3, stride=2, padding=1)}))
                skips.append(c)
        self.mid = nn.ModuleDict({"res1": ResBlock2D(c, c, emb_dim, groups, drop),
                                  "res2": ResBlock2D(c, c, emb_dim, groups, drop)})
        if cfg.cross_plane_attention:
            self.mid["attn"] = xattn(c)
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(nn.ModuleDict({"res": ResBlock2D(c + skips.pop(), c0 * mult, emb_dim, groups, drop)}))
                c = c0 * mult
                if cfg.cross_plane_attention:
                    self.up[-1]["attn"] = xattn(c)
            if level > 0:
                self.up.append(nn.ModuleDict({"upsample": nn.Conv2d(c, c, 3, padding=1)}))
        self.head = nn.Sequential(nn.GroupNorm(groups, c), nn.SiLU(), nn.Conv2d(c, cfg.latent_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.config.channel_mults) - 1)

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

    def forward(self, z, t: torch.Tensor, cond=None, shape=None):
        cfg = self.config
        planes, packed = self._planes(z, shape, "z")
        s, hp, wp = check_planes(planes, cfg.latent_channels, name="z")
        b = planes[0].shape[0]
        if any(n % self.factor for n in (s, hp, wp)):
            raise ValueError(f"plane sides (S, H', W') = {(s, hp, wp)} must be divisible by "
                             f"{self.factor} = 2 ** (len(channel_mults) - 1) for this config")
        if t.shape != (b,):
            raise ValueError(f"t must have shape ({b},), got {tuple(t.shape)}")
        if cfg.conditional:
            if cond is None:  # P8's null condition: zeros
                cond = tuple(torch.zeros_like(p) for p in planes)
            else:
                cond, _ = self._planes(cond, shape, "cond")
                check_planes(cond, cfg.latent_channels, name="cond")
                if any(c.shape != p.shape for c, p in zip(cond, planes)):
                    raise ValueError(f"cond planes {[tuple(c.shape) for c in cond]} must have the shapes of z "
                                     f"{[tuple(p.shape) for p in planes]}")
            hs = self._shared(self.stem, [torch.cat([p, c], dim=1) for p, c in zip(planes, cond)])  # P8: channel concat
        else:
            if cond is not None:
                raise ValueError("this PlaneUNet is unconditional (conditional=False) but cond was given")
            hs = self._shared(self.stem, list(planes))

        temb = self.time_embed(t)  # (B, emb)
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
        if "attn" in self.mid:
            hs = self.mid["attn"](hs, stride)
        hs = self._shared(self.mid["res2"], hs, embs)
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
