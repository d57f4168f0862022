r"""Which timesteps to visit when sampling (D7, D8, D10), and which to draw when training (D9).

Sampling: :func:`make_timesteps` returns a descending LongTensor of schedule indices for a sampler with
``n`` model evaluations. The spacings follow the conventions of diffusers' schedulers:

- ``"linspace"``: ``round(linspace(0, T-1, n))`` (starts at T-1, ends at 0);
- ``"leading"``: ``k * (T // n)`` for k = 0..n-1 (DDIM's original spacing, D7; never visits T-1);
- ``"trailing"``: ``round(arange(T, 0, -T/n)) - 1`` (starts at T-1; CogVideoX's choice, D10, because with a
  zero-terminal-SNR schedule it starts sampling from pure noise);
- ``"logsnr"``: uniform in log-SNR between the first and last step (DPM-Solver's choice, D8).

Training: :func:`uniform_timesteps` draws i.i.d. uniform t; :func:`explicit_uniform_timesteps` (D9) splits
[0, T) into one interval per sample of the global batch and draws each sample's t inside its own interval,
so a batch (and, under DDP, the union of all ranks' batches) always covers the whole range.
"""

from __future__ import annotations

import numpy as np
import torch

from ..utils.validation import check_int, is_int
from .schedule import NoiseSchedule

SPACINGS = ("linspace", "leading", "trailing", "logsnr")


def make_timesteps(schedule: NoiseSchedule, n: int, spacing: str = "linspace") -> torch.Tensor:
    """``n`` distinct timesteps of ``schedule`` in descending order (a LongTensor), for a sampler that
    evaluates the model ``n`` times (``n``: any integer, NumPy's included, in 1..T). See the module docstring
    for the spacings. The timesteps the samplers visit: DDIM (D7, any spacing), DPM-Solver++ (D8,
    ``"logsnr"``) and zero-terminal-SNR sampling (D10, ``"trailing"``); see docs/equations.md."""
    T = schedule.num_steps
    if not is_int(n) or not 1 <= n <= T:
        raise ValueError(f"n={n!r} must be an integer in 1..{T} (the schedule's num_steps)")
    n = int(n)
    if spacing not in SPACINGS:
        raise ValueError(f"spacing={spacing!r} is not supported; allowed: {SPACINGS}")
    if spacing == "linspace":
        ts = np.round(np.linspace(0, T - 1, n)).astype(np.int64)
    elif spacing == "leading":
        ts = np.arange(n, dtype=np.int64) * (T // n)
    elif spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / n)).astype(np.int64)[:n] - 1
    else:
        ts = _logsnr_timesteps(schedule, n)
    ts = np.unique(ts)[::-1].copy()
    if len(ts) != n:  # cannot happen for the first three spacings with n <= T
        raise ValueError(f"spacing={spacing!r} gives only {len(ts)} distinct timesteps for n={n}; use a smaller n")
    return torch.from_numpy(ts)


def _logsnr_timesteps(schedule: NoiseSchedule, n: int) -> np.ndarray:
    """Greedy uniform-in-log-SNR spacing on the integer grid. From T-1, each next step aims at an equal
    share of the log-SNR still to cover (to t = 0) with the steps still to place, then rounds to the nearest
    free index. Where the grid is coarser than the ideal step (near t = 0, or a schedule's clipped tail near
    T - 1) the remaining steps are re-spaced over what is left instead of being wasted."""
    lam = schedule.log_snr().numpy()  # decreasing in t; -inf at a zero-terminal-SNR end
    T = len(lam)
    finite = np.isfinite(lam)
    lam_f = np.where(finite, lam, lam[finite].min())
    grid_lam, grid_t = lam_f[::-1], np.arange(T)[::-1].astype(np.float64)  # increasing lambda for interp
    ts = [T - 1]
    for k in range(1, n):
        remaining = n - k  # steps still to place; the last of them is t = 0
        cur = lam_f[ts[-1]]
        target = cur + (lam_f[0] - cur) / remaining
        t = int(np.round(np.interp(target, grid_lam, grid_t)))
        ts.append(min(max(t, remaining - 1), ts[-1] - 1))
    return np.array(ts, dtype=np.int64)


def uniform_timesteps(
    batch_size: int, num_steps: int, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """i.i.d. t ~ U{0, ..., num_steps - 1}, the standard training draw for D4."""
    batch_size = check_int("batch_size", batch_size, 1)
    num_steps = check_int("num_steps", num_steps, 1)
    gen_device = generator.device if generator is not None else "cpu"
    t = torch.randint(0, num_steps, (batch_size,), generator=generator, device=gen_device)
    return t.to(device) if device is not None else t


def explicit_uniform_timesteps(
    batch_size: int,
    num_steps: int,
    rank: int = 0,
    world_size: int = 1,
    generator: torch.Generator | None = None,
    device=None,
) -> torch.Tensor:
    r"""D9, explicit uniform sampling (CogVideoX): split [0, T) into ``n = batch_size * world_size`` equal
    intervals and let global sample ``i = rank * batch_size + j`` draw t uniformly inside interval ``i``:
    :math:`t_i = \lfloor (i + u_i)\, T / n \rfloor`, :math:`u_i \sim U[0, 1)`.

    Each t is still marginally uniform over the interval it may fall in, the union over ranks is a
    stratified sample of [0, T), and the mean training loss of a batch has lower variance than with
    i.i.d. draws. Each rank may use its own generator: strata are fixed by the rank, only the offsets
    inside them are random. (The official code gives whole groups of ranks one interval and only does
    this above 8 GPUs; at small scale we stratify within the batch, as the issue asks.)

    Returns a LongTensor of shape (batch_size,) in stratum order; shuffle data, not timesteps.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    num_steps = check_int("num_steps", num_steps, 1)
    world_size = check_int("world_size", world_size, 1)
    if not is_int(rank) or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank!r} must be an integer in 0..{world_size - 1} (world_size={world_size})")
    rank = int(rank)
    n = batch_size * world_size
    gen_device = generator.device if generator is not None else "cpu"
    u = torch.rand(batch_size, generator=generator, device=gen_device, dtype=torch.float64).cpu()
    i = torch.arange(rank * batch_size, (rank + 1) * batch_size, dtype=torch.float64)
    t = torch.floor((i + u) * num_steps / n).long().clamp_(0, num_steps - 1)
    return t.to(device) if device is not None else t
