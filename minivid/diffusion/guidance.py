r"""Classifier-free guidance, both halves: dropping the condition in training and combining the two predictions
in sampling (Ho & Salimans; PVDM's P8 is the same idea with the previous clip as the condition).

Training: :func:`drop_condition` keeps each sample's condition with probability λ and replaces it by the null
condition otherwise, so one network learns :math:`\epsilon_\theta(x_t, c, t)` and
:math:`\epsilon_\theta(x_t, \varnothing, t)`. Sampling: :func:`classifier_free_guidance` wraps the network as
:math:`\hat\epsilon = \hat\epsilon(x, \varnothing) + w\,(\hat\epsilon(x, c) - \hat\epsilon(x, \varnothing))`.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from ..utils.validation import check_number

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def drop_condition(cond: torch.Tensor, keep_prob: float, generator: torch.Generator | None = None,
                   null: torch.Tensor | None = None) -> torch.Tensor:
    """Keep each sample's condition ``cond`` (B, ...) with probability ``keep_prob`` (P8's λ) and replace it by
    ``null`` otherwise (default: zeros, P8's null condition; a tensor broadcastable to one sample, e.g. a learned
    null embedding). The coins come from ``generator`` (one per sample, drawn on the generator's device)."""
    keep_prob = check_number("keep_prob", keep_prob, 0.0, 1.0)
    u = torch.rand(cond.shape[0], generator=generator, device=generator.device if generator else "cpu")
    keep = (u < keep_prob).to(cond.device).reshape(-1, *([1] * (cond.ndim - 1)))
    null = torch.zeros((), dtype=cond.dtype, device=cond.device) if null is None else null.to(cond)
    return torch.where(keep, cond, null)


def classifier_free_guidance(
    model: Callable[..., torch.Tensor],
    cond: torch.Tensor | Mapping[str, torch.Tensor],
    uncond: torch.Tensor | Mapping[str, torch.Tensor],
    guidance_scale: float,
    guided_channels: int | None = None,
) -> Model:
    r"""Wrap a conditional model as ``fn(x, t)`` for the samplers, with classifier-free guidance:
    :math:`\hat\epsilon = \hat\epsilon(x, \varnothing) + w\,(\hat\epsilon(x, c) - \hat\epsilon(x, \varnothing))`.

    The conditional and unconditional passes run as one batch of 2B. ``cond`` / ``uncond`` are tensors
    (called as ``model(x, t, cond)``) or dicts of tensors (``model(x, t, **cond)``), each with batch B.
    ``w = 1`` gives the conditional model, ``w = 0`` the unconditional one. Only the first
    ``guided_channels`` channels (default: x's) are guided; extra channels (a learned variance, D6) are
    taken from the conditional pass, as DiT and Latte do.
    """

    def cat(a, b):
        if isinstance(a, Mapping):
            if set(a) != set(b):
                raise ValueError(f"cond and uncond must have the same keys, got {sorted(a)} and {sorted(b)}")
            return {k: torch.cat([a[k], b[k]]) for k in a}
        return torch.cat([a, b])

    both = cat(cond, uncond)

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xx, tt = torch.cat([x, x]), torch.cat([t, t])
        out = model(xx, tt, **both) if isinstance(both, dict) else model(xx, tt, both)
        out_c, out_u = out.chunk(2)
        c = guided_channels or x.shape[1]
        g = out_u[:, :c] + guidance_scale * (out_c[:, :c] - out_u[:, :c])
        return torch.cat([g, out_c[:, c:]], dim=1) if out_c.shape[1] > c else g

    return guided
