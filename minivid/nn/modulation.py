r"""Conditioning a transformer on the timestep and class (L5): adaptive layer norms and condition tokens.

Every residual branch of a DiT-style block (attention, MLP, ...) is computed on a normalised input
h = LayerNorm(x). The condition c (the timestep embedding plus the class embedding, shape (B, d_c))
enters in one of five ways, all in :data:`MODULATIONS`:

- ``"adaln"`` **AdaLN** (L5): :math:`\mathrm{AdaLN}(h, c) = \gamma_c\,\mathrm{LN}(h) + \beta_c`, with
  :math:`(\gamma_c, \beta_c)` regressed from c by one linear layer (after SiLU). As in DiT the scale is
  parameterised :math:`\gamma_c = 1 + \text{scale}_c`, so a zero regression gives the plain LayerNorm.
- ``"s-adaln"`` **S-AdaLN** (L5, Latte's "scalable" AdaLN): additionally regresses :math:`\alpha_c`
  and scales the branch before the residual, :math:`x + \alpha_c\, f(\mathrm{AdaLN}(x, c))`.
- ``"adaln-zero"`` **adaLN-Zero** (L5 [code], DiT and Latte's release): S-AdaLN whose regression layer
  (6·d outputs for a block with two branches: shift, scale, gate for each) is zero-initialised, so every
  :math:`\alpha_c = 0` and each block starts as the identity.
- ``"adaln-single"`` **adaLN-single** (PixArt-α, Reducio R5): one regression shared by all blocks,
  :math:`E = \mathrm{Linear}(\mathrm{SiLU}(c))` (B, 3k, d), plus a small learned table per block
  :math:`S_\ell` (3k, d): block ℓ uses :math:`E + S_\ell`. It saves (L-1)·6d² parameters over adaLN-Zero.
- ``"tokens"`` (L5): no modulation; the timestep and class embeddings are appended to the token
  sequence as extra tokens (:func:`append_condition_tokens`), and blocks use plain LayerNorms.

A block without any condition (PVDM's autoencoder transformers) uses ``"none"`` (:data:`BLOCK_MODULATIONS`):
plain LayerNorms and ungated residuals, like ``"tokens"`` but with nothing appended.

Per-block modules return one :class:`Modulation` (shift, scale, gate) per branch; ``None`` entries mean
"no shift / scale" or "gate 1".
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from einops import rearrange, repeat
from torch import nn

MODULATIONS = ("adaln", "s-adaln", "adaln-zero", "adaln-single", "tokens")  # how a condition enters (L5)
BLOCK_MODULATIONS = MODULATIONS + ("none",)  # "none": a block with no condition at all


def check_modulation(kind: str, allowed: tuple[str, ...] = MODULATIONS) -> str:
    if kind not in allowed:
        raise ValueError(f"modulation={kind!r} is not supported; allowed: {allowed}")
    return kind


class Modulation(NamedTuple):
    """The modulation of one residual branch, each (B, d) or None."""

    shift: torch.Tensor | None
    scale: torch.Tensor | None
    gate: torch.Tensor | None


def _broadcast(v: torch.Tensor, x: torch.Tensor, channels_first: bool = False) -> torch.Tensor:
    """(B, d) -> (B, 1, ..., 1, d) to broadcast over x's token axes, or (B, d, 1, ..., 1) over the spatial axes of a
    feature map (B, d, ...) when ``channels_first``."""
    if channels_first:
        return v.reshape(*v.shape, *([1] * (x.ndim - 2)))
    return v.reshape(v.shape[0], *([1] * (x.ndim - 2)), v.shape[-1])


def modulate(h: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None,
             channels_first: bool = False) -> torch.Tensor:
    r"""L5: :math:`\gamma_c \odot h + \beta_c` with :math:`\gamma_c = 1 + \text{scale}`, :math:`\beta_c =
    \text{shift}`; h (B, ..., d) (already normalised), shift / scale (B, d) or None. ``channels_first``: h is a
    feature map (B, d, ...) (AdaGN in the U-Nets' residual blocks)."""
    if scale is not None:
        h = h * (1 + _broadcast(scale, h, channels_first))  # L5: gamma_c = 1 + scale_c
    if shift is not None:
        h = h + _broadcast(shift, h, channels_first)  # L5: + beta_c
    return h


def gate(branch: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    r"""L5 (S-AdaLN, adaLN-Zero): :math:`\alpha_c \odot f(\cdot)` before the residual; g None means 1."""
    return branch if g is None else _broadcast(g, branch) * branch


class AdaLN(nn.Module):
    """Per-block AdaLN / S-AdaLN / adaLN-Zero: c (B, cond_dim) -> one :class:`Modulation` per branch.

    ``kind="adaln"`` regresses (shift, scale) per branch (2·branches·d outputs), the others also a gate
    (3·branches·d; 6·d for a block with attention and MLP). ``zero_init`` (default: ``kind ==
    "adaln-zero"``) zeroes the regression layer.
    """

    def __init__(self, dim: int, cond_dim: int | None = None, branches: int = 2, kind: str = "adaln-zero",
                 zero_init: bool | None = None):
        super().__init__()
        if check_modulation(kind) not in ("adaln", "s-adaln", "adaln-zero"):
            raise ValueError(f"AdaLN handles kind in ('adaln', 's-adaln', 'adaln-zero'), got {kind!r}")
        self.dim, self.branches, self.kind = dim, branches, kind
        self.per_branch = 2 if kind == "adaln" else 3  # (shift, scale[, gate])
        self.linear = nn.Linear(cond_dim or dim, self.per_branch * branches * dim)
        if kind == "adaln-zero" if zero_init is None else zero_init:
            nn.init.zeros_(self.linear.weight)  # L5 [code]: adaLN-Zero, zero-initialised
            nn.init.zeros_(self.linear.bias)

    def forward(self, c: torch.Tensor) -> list[Modulation]:
        if c is None or c.ndim != 2:
            got = None if c is None else tuple(c.shape)
            raise ValueError(f"AdaLN needs a condition of shape (B, cond_dim), got {got}")
        out = rearrange(self.linear(nn.functional.silu(c)), "b (k m d) -> k m b d", k=self.branches,
                        m=self.per_branch)  # DiT order: (shift, scale, gate) per branch
        return [Modulation(o[0], o[1], o[2] if self.per_branch == 3 else None) for o in out]


class AdaLNSingle(nn.Module):
    """adaLN-single, the shared part (one per model): c (B, cond_dim) -> E (B, 3·branches, d)."""

    def __init__(self, dim: int, cond_dim: int | None = None, branches: int = 2):
        super().__init__()
        self.dim, self.branches = dim, branches
        self.linear = nn.Linear(cond_dim or dim, 3 * branches * dim)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return rearrange(self.linear(nn.functional.silu(c)), "b (m d) -> b m d", d=self.dim)


class AdaLNSingleTable(nn.Module):
    """adaLN-single, the per-block part: a learned table S (3·branches, d), initialised N(0, 1/d) as in
    PixArt-α, added to the shared E (B, 3·branches, d); returns one :class:`Modulation` per branch."""

    def __init__(self, dim: int, branches: int = 2):
        super().__init__()
        self.branches = branches
        self.table = nn.Parameter(torch.randn(3 * branches, dim) / dim**0.5)

    def forward(self, shared: torch.Tensor) -> list[Modulation]:
        if shared is None or shared.ndim != 3 or shared.shape[1] < self.table.shape[0]:
            raise ValueError(f"adaLN-single blocks need the shared modulation (B, >= {self.table.shape[0]}, d) "
                             f"from AdaLNSingle, got {None if shared is None else tuple(shared.shape)}")
        out = shared[:, : self.table.shape[0]] + self.table[None]  # E + S_l
        out = rearrange(out, "b (k m) d -> k m b d", m=3)
        return [Modulation(o[0], o[1], o[2]) for o in out]


class NoModulation(nn.Module):
    """``"tokens"`` and ``"none"``: blocks with plain LayerNorms and ungated residuals (the condition travels as
    tokens, or there is none)."""

    def __init__(self, branches: int = 2):
        super().__init__()
        self.branches = branches

    def forward(self, c=None) -> list[Modulation]:
        return [Modulation(None, None, None)] * self.branches


def make_block_modulation(kind: str, dim: int, cond_dim: int | None = None, branches: int = 2) -> nn.Module:
    """The per-block modulation module for ``kind`` (one of :data:`BLOCK_MODULATIONS`)."""
    check_modulation(kind, BLOCK_MODULATIONS)
    if kind == "adaln-single":
        return AdaLNSingleTable(dim, branches)
    if kind in ("tokens", "none"):
        return NoModulation(branches)
    return AdaLN(dim, cond_dim, branches, kind)


def append_condition_tokens(z: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """L5 "as tokens": z (B, n_f, t, d) and condition tokens (B, k, d) -> (B, n_f, t + k, d).

    For factorised video attention the k tokens join every frame as k extra spatial positions, so each
    frame's spatial attention sees them (and temporal attention only mixes their per-frame copies)."""
    return torch.cat([z, repeat(tokens, "b k d -> b n_f k d", n_f=z.shape[1])], dim=2)


def strip_condition_tokens(z: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`append_condition_tokens`: drop the last k positions of every frame."""
    return z[:, :, : z.shape[2] - k] if k else z
