"""Command line: ``python -m minivid demo [options]``. Run with ``--help`` for the options."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

PRETRAINED_SAMPLES = 64  # demo --pretrained: clips sampled (the zoo card scores 64 too)


# DemoConfig field -> the command-line flag that sets it, so errors name what the user typed.
_FLAGS = {"steps": "--steps", "batch_size": "--batch-size", "size": "--size", "num_frames": "--frames",
          "seed": "--seed", "guidance": "--guidance"}


def _with_flags(message: str) -> str:
    """Rewrite ``field=value`` in a DemoConfig error as ``--flag value``."""
    for field, flag in _FLAGS.items():
        message = re.sub(rf"\b{field}=", f"{flag} ", message)
    return message


def _check_device(parser: argparse.ArgumentParser, device: str, torch) -> None:
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        parser.error(f"--device {device!r}: allowed values are 'cpu', 'cuda' or 'cuda:N'")
    if device == "cpu":
        return
    if not torch.cuda.is_available():
        parser.error(f"--device {device!r}: CUDA is not available here (torch.cuda.is_available() is False); "
                     "use --device cpu")
    n = torch.cuda.device_count()
    index = device[len("cuda:"):] if device.startswith("cuda:") else "0"
    if not (index.isdigit() and int(index) < n):
        parser.error(f"--device {device!r}: this machine has {n} CUDA device(s), allowed: 'cuda' or "
                     f"cuda:0..cuda:{n - 1}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minivid", description="minivid: latent video diffusion, small and readable.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a latent video diffusion model (a U-Net on the zoo's VAE) on MiniSprites "
                                       "and sample it; --pretrained samples the zoo's model",
                          description="Train a latent video U-Net, conditioned on the sprite's colour and motion, on the "
                                      "latents of the zoo's 2D VAE (one sprite per clip) for a fixed "
                                      "number of steps (CPU: 1500, about 8 minutes on 2 cores), sample it with "
                                      "classifier-free guidance, and write samples.mp4, frames.png and metrics.json "
                                      "(with the sprite-check pass rate) to --out.")
    demo.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    demo.add_argument("--steps", type=int, default=None, help="training steps (CPU default 1500)")
    demo.add_argument("--batch-size", type=int, default=None)
    demo.add_argument("--size", type=int, default=None, help="frame size in pixels (default 32)")
    demo.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default 4)")
    demo.add_argument("--pretrained", action="store_true",
                      help="skip training: sample the zoo's trained U-Net (data/pretrained/latent-unet) in seconds, "
                           f"{PRETRAINED_SAMPLES} clips")
    demo.add_argument("--frames", type=int, default=None, help="frames per clip")
    demo.add_argument("--seed", type=int, default=None)
    demo.add_argument("--resume", action="store_true",
                      help="continue from OUT/train_state.pt (without it, an OUT that holds one is refused)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train = sub.add_parser("train", help="train one model of the zoo (data/pretrained/NAME) with its recipe",
                           description="Train one model of the zoo with its recipe (minivid.pipeline.zoo): fixed steps "
                                       "on MiniSprites, held-out metrics against baselines, the folder and card.json "
                                       "written to --out (default data/pretrained/NAME).")
    from .pipeline.zoo import RECIPES
    train.add_argument("name", help="recipe name: " + ", ".join(RECIPES))
    train.add_argument("--out", default=None, help="output folder (default: data/pretrained/NAME)")
    train.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--rescore", action="store_true",
                       help="do not train: recompute the held-out metrics of the existing entry and rewrite its card")
    args = parser.parse_args(argv)

    if args.command == "train":
        from .pipeline.zoo import RECIPES, train_zoo_model

        if args.name not in RECIPES:
            parser.error(f"train {args.name!r}: not a zoo recipe; allowed: {', '.join(sorted(RECIPES))}")
        if args.steps is not None and args.steps < 1:
            parser.error(f"--steps {args.steps}: must be a positive integer")
        if args.threads is not None and args.threads < 1:
            parser.error(f"--threads {args.threads}: must be a positive integer")
        if args.rescore:
            from .pipeline.zoo import rescore_zoo_model

            card = rescore_zoo_model(args.name, Path(args.out).parent if args.out else None)
        else:
            card = train_zoo_model(args.name, args.out, steps=args.steps, progress=not args.no_progress,
                                   threads=args.threads)
        print(json.dumps(card, indent=2))
        return 0

    if args.command == "demo":
        import torch

        from .pipeline.demo import DemoConfig, OutDirError, run_demo

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        _check_device(parser, device, torch)
        overrides = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size, "size": args.size,
                                        "num_frames": args.frames, "seed": args.seed,
                                        "guidance": args.guidance}.items() if v is not None}
        if args.pretrained:
            overrides["num_samples"] = PRETRAINED_SAMPLES  # sampling is cheap: measure the rate on as many as the card
        try:
            cfg = DemoConfig.for_device(device, **overrides)
        except ValueError as e:
            parser.error(_with_flags(str(e)))
        try:
            metrics = run_demo(cfg, args.out, device=device, resume=args.resume, progress=not args.no_progress,
                               pretrained_model=args.pretrained)
        except OutDirError as e:  # raised before any work: the output folder cannot be used as asked
            parser.error(str(e))
        print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
