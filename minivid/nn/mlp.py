"""The transformer feed-forward network, one copy for every model in minivid."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Linear -> GELU -> Linear, (..., dim) -> (..., dim). ``approximate="tanh"`` is DiT's and Latte's GELU (the
    default everywhere in minivid); ``"none"`` is the exact erf form."""

    def __init__(self, dim: int, hidden: int, approximate: str = "tanh"):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(approximate=approximate), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
