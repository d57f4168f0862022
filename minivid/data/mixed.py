r"""C6, CogVideoX's data recipe: mixed image-video batches, multi-resolution batches and progressive resolution.

- **Mixed image-video training.** An image is a one-frame clip. :func:`pack_clips` pads clips of different lengths
  (images among them) at the end to one length and returns the (B, T) mask of real frames; the expert transformer
  (``frame_mask=``) removes the padded frames from the keys of its attention and the loss
  (:func:`minivid.diffusion.training_losses` with ``frame_mask``) averages over the real frames only, so each
  clip's loss is exactly the one it would have alone. (CogVideoX's "frame pack" puts several short clips in one row
  instead of padding; padding is the simple reading the review gives.)
- **Multi-resolution.** The expert transformer computes its positions from the token grid (C3), so any size whose
  sides divide by the patch size works; a batch must still hold one shape. :class:`ResolutionBuckets` is a batch
  sampler that groups the items of a mixed-size dataset by shape and yields batches of one shape, every item exactly
  once per epoch, in an order fixed by the seed and the epoch.
- **Progressive resolution.** :class:`ProgressiveStages` lists training stages (steps, size, frames) — CogVideoX
  trains at 256 px, then 512 and 768 px, then fine-tunes on high-quality clips — and answers which stage a global
  step is in. :func:`minivid.pipeline.train_text_to_video` takes them with ``stages=`` and ``image_ratio=``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Iterator, Sequence

import torch

from ..utils.validation import check_int


def pack_clips(clips: Sequence[torch.Tensor], num_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """C6: clips (C, T_i, H, W) or images (C, H, W) of one channel count and size -> a batch
    (B, C, T, H, W), zero-padded at the end to T = ``num_frames`` (default: the longest clip), and the mask
    (B, T) of real frames (True = real)."""
    if isinstance(clips, torch.Tensor) or not isinstance(clips, Sequence) or len(clips) == 0:
        raise ValueError(f"clips must be a non-empty list of (C, T, H, W) clips or (C, H, W) images, got "
                         f"{type(clips).__name__}")
    items = []
    for i, c in enumerate(clips):
        if not isinstance(c, torch.Tensor) or c.ndim not in (3, 4):
            got = tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
            raise ValueError(f"clips[{i}] must be a (C, T, H, W) clip or a (C, H, W) image, got {got}")
        items.append(c[:, None] if c.ndim == 3 else c)
    c0 = items[0]
    for i, c in enumerate(items):
        if (c.shape[0], *c.shape[2:]) != (c0.shape[0], *c0.shape[2:]) or c.dtype != c0.dtype:
            raise ValueError(f"clips[{i}] has channels x size {(c.shape[0], *c.shape[2:])} ({c.dtype}), clips[0] "
                             f"{(c0.shape[0], *c0.shape[2:])} ({c0.dtype}): one batch holds one shape "
                             "(use ResolutionBuckets for mixed sizes)")
    longest = max(c.shape[1] for c in items)
    t = longest if num_frames is None else check_int("num_frames", num_frames, longest,
                                                     what=f"an integer >= the longest clip ({longest} frames)")
    batch = c0.new_zeros((len(items), c0.shape[0], t, *c0.shape[2:]))
    mask = torch.zeros(len(items), t, dtype=torch.bool, device=c0.device)
    for i, c in enumerate(items):
        batch[i, :, :c.shape[1]] = c
        mask[i, :c.shape[1]] = True
    return batch, mask


class ResolutionBuckets:
    """C6 multi-resolution batches: ``ResolutionBuckets(keys, batch_size, seed=0, drop_last=False)`` over a dataset
    whose item i has shape key ``keys[i]`` (e.g. (T, H, W)); iterating yields lists of indices of one key, each
    index exactly once per epoch (the last batch of a bucket may be short unless ``drop_last``). The order of the
    items inside each bucket and of the batches is shuffled by ``seed`` and the epoch (:meth:`set_epoch`), so
    every rank of a distributed run can reproduce it."""

    def __init__(self, keys: Sequence[Hashable], batch_size: int, seed: int = 0, drop_last: bool = False):
        if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence) or len(keys) == 0:
            raise ValueError(f"keys must be a non-empty sequence of shape keys, one per item, got {type(keys).__name__}")
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last={drop_last!r} is invalid: expected True or False")
        self.drop_last, self.epoch = drop_last, 0
        self.buckets: dict[Hashable, list[int]] = {}
        for i, k in enumerate(keys):
            self.buckets.setdefault(k, []).append(i)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_int("epoch", epoch, 0)

    def batches(self) -> list[list[int]]:
        """This epoch's batches, in order."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        out = []
        for key in sorted(self.buckets, key=repr):  # a fixed order of the buckets before shuffling
            idx = self.buckets[key]
            perm = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
            for s in range(0, len(perm), self.batch_size):
                chunk = perm[s:s + self.batch_size]
                if len(chunk) == self.batch_size or not self.drop_last:
                    out.append(chunk)
        return [out[j] for j in torch.randperm(len(out), generator=g).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        n = 0
        for idx in self.buckets.values():
            n += len(idx) // self.batch_size if self.drop_last else -(-len(idx) // self.batch_size)
        return n


@dataclass(frozen=True)
class Stage:
    """One training stage of C6's progressive schedule: ``steps`` optimisation steps on clips of ``size`` pixels
    and ``frames`` frames."""

    steps: int
    size: int
    frames: int

    def __post_init__(self):
        for name in ("steps", "size", "frames"):
            check_int(name, getattr(self, name), 1, what="a positive integer")


class ProgressiveStages:
    """C6 progressive resolution: ``ProgressiveStages([Stage(steps, size, frames), ...])``; the sizes must not
    decrease (low resolution first, as CogVideoX's 256 -> 512 -> 768 px). :meth:`at` gives the stage index of a
    global step, :attr:`total_steps` the sum."""

    def __init__(self, stages: Sequence[Stage]):
        if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or len(stages) == 0 \
                or not all(isinstance(s, Stage) for s in stages):
            raise ValueError(f"stages={stages!r} is invalid: expected a non-empty list of Stage(steps, size, frames)")
        for a, b in zip(stages, stages[1:]):
            if b.size < a.size:
                raise ValueError(f"stages go from size {a.size} to {b.size}: progressive training never lowers the "
                                 "resolution")
        self.stages = list(stages)
        self.ends = torch.tensor([s.steps for s in self.stages]).cumsum(0).tolist()

    @property
    def total_steps(self) -> int:
        return int(self.ends[-1])

    def at(self, step: int) -> int:
        """The index of the stage global step ``step`` (0-based) belongs to."""
        step = check_int("step", step, 0, self.total_steps - 1)
        return next(i for i, end in enumerate(self.ends) if step < end)

    def __len__(self) -> int:
        return len(self.stages)

    def __iter__(self):
        return iter(self.stages)
