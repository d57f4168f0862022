r"""Classifier-free guidance, both halves: dropping the condition in training and combining the two predictions
in sampling (Ho & Salimans; PVDM's P8 is the same idea with the previous clip as the condition).

Training: :func:`drop_condition` keeps each sample's condition with probability λ and replaces it by the null
condition otherwise, so one network learns :math:`\epsilon_\theta(x_t, c, t)` and
:math:`\epsilon_\theta(x_t, \varnothing, t)`. Sampling: :func:`classifier_free_guidance` wraps the network as
:math:`\hat\epsilon = \hat\epsilon(x, \varnothing) + w\,(\hat\epsilon(x, c) - \hat\epsilon(x, \varnothing))`.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

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


def nested_guidance(branches: Sequence[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
                    scales: Sequence[float]) -> Model:
    r"""Classifier-free guidance with one scale per condition (the full system; InstructPix2Pix's form for two
    conditions, extended to K). ``branches[k](x, t)`` is the prediction with the first k conditions given and the
    others null (``branches[0]``: none, ``branches[K]``: all); ``scales[k-1]`` = :math:`s_k` guides condition k
    against the model that already has conditions 1..k-1:

    .. math:: \hat\epsilon = \hat\epsilon_0 + \sum_{k=1}^{K} s_k\,(\hat\epsilon_k - \hat\epsilon_{k-1})
              = (1 - s_1)\,\hat\epsilon_0 + \sum_{k=1}^{K-1} (s_k - s_{k+1})\,\hat\epsilon_k + s_K\,\hat\epsilon_K .

    Only branches with a non-zero coefficient in the second form are evaluated: all scales 1 is the fully
    conditional model in one pass, equal scales s cost two passes (plain guidance of all conditions together
    against none), and K = 1 is :func:`classifier_free_guidance`."""
    branches = list(branches)
    scales = [float(s) for s in scales]
    if len(branches) < 2 or len(scales) != len(branches) - 1:
        raise ValueError(f"nested_guidance needs K + 1 >= 2 branches and K scales, got {len(branches)} branches and "
                         f"{len(scales)} scales")
    for k, s in enumerate(scales):
        check_number(f"scales[{k}]", s)
    coeffs = [1.0 - scales[0]] + [scales[k - 1] - scales[k] for k in range(1, len(scales))] + [scales[-1]]

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = None
        for c, branch in zip(coeffs, branches):
            if c != 0.0:
                term = c * branch(x, t)
                out = term if out is None else out + term
        return out if out is not None else torch.zeros_like(x)

    guided.coefficients = coeffs  # which branches run, for tests and cost estimates
    return guided
