"""Run by tests/diffusion/test_distributed.py under torchrun (2 gloo processes) and in-process (1 process):
a tiny Latte trained with DiffusionTrainer on a fixed pool of latents, reading the global data order of
GlobalBatches. Not a test module itself (no test_ prefix)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from minivid.diffusion import DiffusionTrainer, NoiseSchedule
from minivid.transformers import Latte, LatteConfig
from minivid.utils.distributed import GlobalBatches, current, init_distributed

GLOBAL_BATCH = 8
POOL = 24


def pool() -> torch.Tensor:
    return torch.randn(POOL, 4, 4, 8, 8, generator=torch.Generator().manual_seed(5))


def build(seed: int) -> DiffusionTrainer:
    torch.manual_seed(seed)
    model = Latte(LatteConfig(variant=1, in_channels=4, num_frames=4, size=8, patch_size=2, dim=32, depth=2, heads=2,
                              num_classes=0, learn_sigma=False))
    return DiffusionTrainer(model, NoiseSchedule.cosine(1000), prediction="v", lr=3e-3, warmup_steps=2,
                            ema_decay=0.9, seed=0, total_steps=8)


def train(trainer: DiffusionTrainer, order: GlobalBatches, data: torch.Tensor, steps: int) -> None:
    for _ in range(steps):
        trainer.step(data[order.next()])


def main(out: str) -> None:
    """2 steps, a checkpoint (with the data order beside it), 2 more steps; rank r writes rank{r}.pt."""
    info = init_distributed(backend="gloo")
    torch.set_num_threads(1)
    # a different initialisation per rank on purpose: DistributedDataParallel must broadcast rank 0's
    trainer = build(seed=100 + info.rank)
    order = GlobalBatches(POOL, GLOBAL_BATCH, seed=1, info=current())
    data = pool()
    train(trainer, order, data, 2)
    folder = trainer.save_checkpoint(Path(out) / "ckpt")
    if info.is_main:
        (folder / "data_order.json").write_text(json.dumps(order.state_dict()))
    train(trainer, order, data, 2)
    torch.save({"model": trainer.model.state_dict(), "ema": trainer.ema.state_dict(),
                "losses": trainer.losses, "world_size": info.world_size}, Path(out) / f"rank{info.rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
