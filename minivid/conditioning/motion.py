r"""Tora's trajectory extractor (T6) and its three motion-guidance fusers (T7), handed to a transformer through its
fuser hook (ST-DiT's ``forward(..., fuser=, motion_features=)`` and the expert transformer's).

**T6: extractor.** The motion latents g_m (B, C_m, T, h, w) (the frozen motion VAE's latents of g_vis, T5) are
patchified like the video latents (a (1, p, p) convolution of stride (1, p, p), so motion token (t, i, j) sits on
video token (t, i, j)), then ``depth`` residual stages of 3D convolutions give one motion feature per transformer
block, :math:`f_i = \mathrm{Conv}^i(f_{i-1}) + f_{i-1}`, each (B, T, n_h, n_w, d_m).

**T7: fusers**, each called as ``fuser(h, f)`` on the block's normalised hidden tokens h (B, T, n_h, n_w, d) and that
block's motion feature f (B, T, n_h, n_w, d_m), returning h's shape; each is zero-initialised, so a new fuser is the
identity and the base model's output is unchanged at initialisation:

======================= =========================================================================================
``"concat"``            :math:`h \leftarrow h + \mathrm{Conv}([h, f])`: a 1 x 1 convolution (a per-token linear map)
                        of the channel concatenation; zero weights.
``"adanorm"``           :math:`h \leftarrow h + \mathrm{GroupNorm}(h)\,\gamma + \beta` (the release's adaptive norm,
                        the paper's best): :math:`\gamma, \beta` from f by a 3 x 3 spatial convolution, SiLU, then a
                        zero-initialised temporal convolution (kernel 3 over frames); GroupNorm per frame over
                        (d, n_h, n_w).
``"cross_attention"``   :math:`h \leftarrow h + \mathrm{CrossAttn}(\mathrm{LN}(h), \mathrm{LN}(f))` within each frame:
                        the frame's tokens are queries, its motion tokens keys and values; zero output projection.
======================= =========================================================================================

:class:`MotionGuidance` holds the extractor and one fuser per block: ``mg(g_m)`` gives the features and
``mg.fusers`` the fusers, i.e. ``model(x, t, text, fuser=mg.fusers, motion_features=mg(g_m))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ..nn import Attention, Model, ModelConfig
from ..utils.validation import check_choice, check_positive_ints

FUSERS = ("concat", "adanorm", "cross_attention")


def _check_pair(h: torch.Tensor, f: torch.Tensor, dim: int, motion_dim: int) -> None:
    if not isinstance(h, torch.Tensor) or h.ndim != 5 or h.shape[-1] != dim:
        got = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
        raise ValueError(f"h must be hidden tokens (B, T, n_h, n_w, dim={dim}), got {got}")
    if not isinstance(f, torch.Tensor) or f.shape[:-1] != h.shape[:-1] or f.shape[-1] != motion_dim:
        got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise ValueError(f"the motion feature must be (B, T, n_h, n_w, motion_dim) = "
                         f"{(*h.shape[:-1], motion_dim)} on the hidden tokens' grid, got {got}")


def _groups(channels: int, wanted: int = 32) -> int:
    g = min(wanted, channels)
    while channels % g:
        g -= 1
    return g


class ConcatFuser(nn.Module):
    """T7 channel concat: h + Conv1x1([h, f]), zero-initialised."""

    def __init__(self, dim: int, motion_dim: int):
        super().__init__()
        self.dim, self.motion_dim = dim, motion_dim
        self.proj = nn.Linear(dim + motion_dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        _check_pair(h, f, self.dim, self.motion_dim)
        return h + self.proj(torch.cat([h, f.to(h.dtype)], dim=-1))


class AdaNormFuser(nn.Module):
    """T7 adaptive norm (the release's): h + GroupNorm(h)·gamma + beta, (gamma, beta) = TemporalConv(SiLU(Conv3x3(f))),
    the temporal convolution zero-initialised."""

    def __init__(self, dim: int, motion_dim: int, groups: int = 32):
        super().__init__()
        self.dim, self.motion_dim = dim, motion_dim
        self.norm = nn.GroupNorm(_groups(dim, groups), dim, eps=1e-6)
        self.spatial = nn.Conv3d(motion_dim, motion_dim, (1, 3, 3), padding=(0, 1, 1))
        self.temporal = nn.Conv3d(motion_dim, 2 * dim, (3, 1, 1), padding=(1, 0, 0))
        nn.init.zeros_(self.temporal.weight)
        nn.init.zeros_(self.temporal.bias)

    def forward(self, h: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        _check_pair(h, f, self.dim, self.motion_dim)
        b, t = h.shape[:2]
        x = rearrange(f.to(h.dtype), "b t y x c -> b c t y x")
        gamma, beta = rearrange(self.temporal(torch.nn.functional.silu(self.spatial(x))),
                                "b c t y x -> b t y x c").chunk(2, dim=-1)
        normed = self.norm(rearrange(h, "b t y x d -> (b t) d y x"))  # per frame over (d, n_h, n_w)
        normed = rearrange(normed, "(b t) d y x -> b t y x d", b=b, t=t)
        return h + normed * gamma + beta


class CrossAttentionFuser(nn.Module):
    """T7 cross-attention: h + CrossAttn(LN(h), LN(f)) within each frame, the output projection zero-initialised."""

    def __init__(self, dim: int, motion_dim: int, heads: int = 4):
        super().__init__()
        self.dim, self.motion_dim = dim, motion_dim
        self.norm_h = nn.LayerNorm(dim, eps=1e-6)
        self.norm_f = nn.LayerNorm(motion_dim, eps=1e-6)
        self.attn = Attention(dim, heads, context_dim=motion_dim, zero_init_out=True)

    def forward(self, h: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        _check_pair(h, f, self.dim, self.motion_dim)
        b, t, n_h, n_w, _ = h.shape
        q = rearrange(self.norm_h(h), "b t y x d -> (b t) (y x) d")
        kv = rearrange(self.norm_f(f.to(h.dtype)), "b t y x c -> (b t) (y x) c")
        a = self.attn(q, context=kv)
        return h + rearrange(a, "(b t) (y x) d -> b t y x d", b=b, t=t, y=n_h)


def make_fuser(kind: str, dim: int, motion_dim: int, heads: int = 4) -> nn.Module:
    """A T7 fuser by name: ``"concat"``, ``"adanorm"`` or ``"cross_attention"``."""
    check_choice("fuser", kind, FUSERS)
    if kind == "concat":
        return ConcatFuser(dim, motion_dim)
    if kind == "adanorm":
        return AdaNormFuser(dim, motion_dim)
    return CrossAttentionFuser(dim, motion_dim, heads)


class TrajectoryExtractor(nn.Module):
    """T6: motion latents g_m (B, C_m, T, h, w) -> ``depth`` motion features f_i (B, T, h/p, w/p, motion_dim)."""

    def __init__(self, motion_channels: int, motion_dim: int, depth: int, patch_size: int):
        super().__init__()
        self.patch_size, self.motion_channels = patch_size, motion_channels
        self.patch = nn.Conv3d(motion_channels, motion_dim, (1, patch_size, patch_size), (1, patch_size, patch_size))
        g = _groups(motion_dim, 8)
        self.stages = nn.ModuleList(nn.Sequential(
            nn.GroupNorm(g, motion_dim), nn.SiLU(), nn.Conv3d(motion_dim, motion_dim, 3, padding=1),
            nn.GroupNorm(g, motion_dim), nn.SiLU(), nn.Conv3d(motion_dim, motion_dim, 3, padding=1))
            for _ in range(depth))

    def forward(self, g_m: torch.Tensor) -> list[torch.Tensor]:
        p = self.patch_size
        if not isinstance(g_m, torch.Tensor) or g_m.ndim != 5 or g_m.shape[1] != self.motion_channels \
                or g_m.shape[3] % p or g_m.shape[4] % p:
            got = tuple(g_m.shape) if isinstance(g_m, torch.Tensor) else type(g_m).__name__
            raise ValueError(f"motion latents must be (B, C_m={self.motion_channels}, T, h, w) with h and w divisible "
                             f"by patch_size={p}, got {got}")
        f = self.patch(g_m)
        out = []
        for stage in self.stages:
            f = stage(f) + f  # T6: f_i = Conv^i(f_{i-1}) + f_{i-1}
            out.append(rearrange(f, "b c t y x -> b t y x c"))
        return out


@dataclass
class MotionGuidanceConfig(ModelConfig):
    """The extractor (T6) and fusers (T7) of a transformer with ``depth`` blocks of width ``dim`` and patch size
    ``patch_size`` on motion latents of ``motion_channels`` channels."""

    motion_channels: int = 4
    dim: int = 64
    depth: int = 4
    patch_size: int = 1
    motion_dim: int = 64
    fuser: str = "adanorm"
    heads: int = 4

    def __post_init__(self):
        check_positive_ints(self, ("motion_channels", "dim", "depth", "patch_size", "motion_dim", "heads"))
        check_choice("fuser", self.fuser, FUSERS)


class MotionGuidance(Model):
    """Tora's motion guidance: ``self(g_m)`` -> the T6 features, ``self.fusers`` the T7 fusers (one per block)."""

    config_class = MotionGuidanceConfig

    def __init__(self, config: MotionGuidanceConfig | None = None, **fields):
        super().__init__(config, **fields)
        c = self.config
        self.extractor = TrajectoryExtractor(c.motion_channels, c.motion_dim, c.depth, c.patch_size)
        self.fusers = nn.ModuleList(make_fuser(c.fuser, c.dim, c.motion_dim, c.heads) for _ in range(c.depth))

    def forward(self, g_m: torch.Tensor) -> list[torch.Tensor]:
        return self.extractor(g_m)
