"""Command line: ``python -m minivid demo [options]``. Run with ``--help`` for the options."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minivid", description="minivid: latent video diffusion, small and readable.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small pixel-space video diffusion model on MiniSprites and sample it")
    demo.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    demo.add_argument("--steps", type=int, default=None, help="maximum training steps")
    demo.add_argument("--minutes", type=float, default=None, help="training time budget in minutes")
    demo.add_argument("--batch-size", type=int, default=None)
    demo.add_argument("--size", type=int, default=None, help="frame size in pixels")
    demo.add_argument("--frames", type=int, default=None, help="frames per clip")
    demo.add_argument("--seed", type=int, default=None)
    demo.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    if args.command == "demo":
        import torch

        from .pipeline.demo import DemoConfig, run_demo

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            parser.error(f"--device {device!r}: allowed values are 'cpu', 'cuda' or 'cuda:N'")
        overrides = {k: v for k, v in {"steps": args.steps, "max_minutes": args.minutes, "batch_size": args.batch_size,
                                        "size": args.size, "num_frames": args.frames, "seed": args.seed}.items() if v is not None}
        try:
            cfg = DemoConfig.for_device(device, **overrides)
        except ValueError as e:
            parser.error(str(e))
        metrics = run_demo(cfg, args.out, device=device, resume=args.resume, progress=not args.no_progress)
        print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
