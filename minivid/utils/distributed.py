"""Data-parallel training under ``torchrun`` (or any launcher that sets torch.distributed's environment).

``torchrun --nproc_per_node N -m minivid ...`` starts N processes and gives each ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. :func:`init_distributed` reads them and joins the process
group: NCCL when the process drives a GPU, gloo on a CPU (the test suite runs two gloo processes). Without
those variables it returns a single-process :class:`DistInfo` and nothing else changes, so every script runs the
same way with ``python`` and with ``torchrun``.

The convention every minivid trainer follows under data parallelism (see
:class:`minivid.diffusion.DiffusionTrainer`): the *global* batch of B·N clips is the unit. Every rank draws the
random numbers of the whole global batch from the same seeded generator (timesteps by explicit uniform
stratification over the global batch, D9, and the noise) and keeps its own slice of B, and every rank reads its
slice of the same global data order (:class:`GlobalBatches`). Gradients are averaged by DistributedDataParallel.
A run on N processes therefore takes the same steps, to numerics, as one process fed the global batch, and a run
can resume on a different number of processes (the random and data state do not depend on N).

Multi-node (the same command on every machine, one rendezvous)::

    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 --rdzv_id RUN \\
        -m minivid train ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .validation import check_int

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` in 0..world_size-1, ``local_rank`` on its machine, the backend
    (None for a single process that joined no group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, samples and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, global_batch: int) -> slice:
        """This rank's slice of a global batch of ``global_batch`` items (which ``world_size`` must divide)."""
        global_batch = check_int("global_batch", global_batch, 1)
        if global_batch % self.world_size:
            raise ValueError(f"global batch {global_batch} does not split evenly over world_size={self.world_size} "
                             f"processes; allowed: a multiple of {self.world_size}")
        b = global_batch // self.world_size
        return slice(self.rank * b, (self.rank + 1) * b)


def env_info() -> DistInfo:
    """The rank, world size and local rank a launcher set in the environment (a single process when unset).
    A clear error for values that do not parse or do not fit together."""
    present = [k for k in _ENV if k in os.environ]
    if not present:
        return DistInfo()
    if len(present) != len(_ENV):
        missing = sorted(set(_ENV) - set(present))
        raise ValueError(f"torch.distributed environment incomplete: {present} set but {missing} missing (launch with "
                         "torchrun, which sets RANK, WORLD_SIZE and LOCAL_RANK)")
    values = {}
    for k in _ENV:
        try:
            values[k] = int(os.environ[k])
        except ValueError:
            raise ValueError(f"environment variable {k}={os.environ[k]!r} must be an integer") from None
    rank, world, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}: need WORLD_SIZE >= 1, "
                         f"0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0")
    return DistInfo(rank, world, local)


def init_distributed(backend: str | None = None, device: str | torch.device | None = None) -> DistInfo:
    """Join the process group the environment describes (idempotent) and return this process's :class:`DistInfo`.

    ``backend``: None picks NCCL when ``device`` is CUDA (or, with no device given, when CUDA is available) and
    gloo otherwise. On CUDA the process's device is set to ``cuda:LOCAL_RANK``. A single process (no launcher
    variables) joins nothing."""
    info = env_info()
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), info.local_rank, dist.get_backend())
    if not info.distributed:
        return info
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    cuda = (torch.device(device).type == "cuda") if device is not None else torch.cuda.is_available()
    if backend is None:
        backend = "nccl" if cuda else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend={backend!r}: allowed 'nccl' (GPUs) or 'gloo' (CPU)")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("backend='nccl' needs CUDA; use backend='gloo' on CPU")
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend)
    return DistInfo(info.rank, info.world_size, info.local_rank, backend)


def current() -> DistInfo:
    """The :class:`DistInfo` of the joined process group, or a single process when none was joined."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), env_info().local_rank, dist.get_backend())
    return DistInfo()


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_mean(value: float) -> float:
    """The mean of a Python float over ranks (itself for a single process): the loss rank 0 logs."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    backend = dist.get_backend()
    t = torch.tensor([value], dtype=torch.float64, device="cuda" if backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def cleanup() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class GlobalBatches:
    """The data order of a run: for every step, the indices of its global batch of ``global_batch`` items drawn
    from ``num_items`` (epochs of seeded permutations, no item repeated within an epoch), the same on every rank;
    :meth:`next` returns this rank's slice. Its state (:meth:`state_dict`: the epoch, the position and the seed,
    plain integers) makes resumed runs read the same clips as uninterrupted ones, on any number of ranks."""

    def __init__(self, num_items: int, global_batch: int, seed: int = 0, info: DistInfo | None = None):
        self.num_items = check_int("num_items", num_items, 1)
        self.global_batch = check_int("global_batch", global_batch, 1)
        self.seed = check_int("seed", seed, 0)
        self.info = info or current()
        self.info.shard(global_batch)  # a clear error now when the batch does not split over the ranks
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))

    def next_global(self) -> torch.Tensor:
        """The indices (global_batch,) of the next step's global batch (continuing into the next epoch's
        permutation when this one runs out)."""
        out = []
        need = self.global_batch
        while need:
            take = min(need, self.num_items - self.position)
            out.append(self._order[self.position:self.position + take])
            self.position += take
            need -= take
            if self.position == self.num_items:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
        return torch.cat(out)

    def next(self) -> torch.Tensor:
        """This rank's indices of the next global batch (global_batch / world_size of them)."""
        return self.next_global()[self.info.shard(self.global_batch)]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_items": self.num_items,
                "global_batch": self.global_batch}

    def load_state_dict(self, state: dict) -> None:
        for k in ("seed", "num_items", "global_batch"):
            if int(state[k]) != getattr(self, k):
                raise ValueError(f"the saved data order has {k}={int(state[k])}, this run has {k}={getattr(self, k)}; "
                                 "resume with the same data and global batch")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)
