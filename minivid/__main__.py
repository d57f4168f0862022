"""Command line: ``python -m minivid demo|train|sample|eval [options]``. Run with ``--help`` for the options."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _check_device(parser: argparse.ArgumentParser, device: str) -> None:
    from .utils.validation import check_device

    try:
        check_device("--device", device)
    except ValueError as err:
        parser.error(str(err))


class _Help(argparse.HelpFormatter):
    """argparse's help, wrapped without breaking names at their hyphens (``pvdm-unet``, ``cpu-causal``)."""

    def _split_lines(self, text, width):
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text, width, indent):
        import textwrap

        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minivid", formatter_class=_Help,
                                     description="minivid: latent video diffusion, small and readable.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", formatter_class=_Help, help="train the full system's cpu preset from scratch (under 10 minutes on 2 cores) and sample it from "
                     "captions and drawn paths; --pretrained samples the zoo's system",
        description="Train the full system (the cpu preset of `python -m minivid train`: T5 captions, the expert "
                    "transformer, Tora's motion guidance, given frames) on one-sprite MiniSprites clips for a short "
                    "budget (CPU: 700 steps, under 10 minutes on 2 cores with the data; CUDA: 6000, the zoo system's "
                    "budget), then sample it: held-out clips from their captions and paths (scored: sprite check, caption "
                    "colour and direction, trajectory error against the baseline without a path) and four drawn "
                    "paths as 16-frame videos. Writes to --out: run.json, checkpoints/, log.csv (a run folder: "
                    "--resume continues it; `python -m minivid sample --checkpoint OUT` samples it), showcase.mp4, "
                    "showcase.png, samples.png and metrics.json.")
    demo.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default: 700 on CPU, 6000 on CUDA)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the run and of the samples (default 0)")
    demo.add_argument("--samples", type=int, default=None,
                      help="held-out clips sampled and scored (default 16; 32 with --pretrained)")
    demo.add_argument("--guidance", type=float, default=4.0, help="text guidance scale (default 4)")
    demo.add_argument("--guidance-trajectory", type=float, default=2.0, help="trajectory guidance scale (default 2)")
    demo.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                      help="overrides of the run's config, as for `train cpu --set` (e.g. lr=2e-3)")
    demo.add_argument("--pretrained", action="store_true",
                      help="skip training: sample the zoo's full system (data/pretrained/system) in seconds")
    demo.add_argument("--resume", action="store_true",
                      help="continue the run in --out from its latest checkpoint (without it, a folder holding one is "
                           "refused)")
    demo.add_argument("--no-video", action="store_true",
                      help="write no showcase.mp4 (PNGs and metrics as usual): for a machine without ffmpeg")
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train = sub.add_parser(
        "train", formatter_class=_Help, help="train the full system from a preset (cpu, cpu-causal, cpu-reducio, gpu, gpu-multi), or one model "
             "of the zoo",
        description="With a preset (cpu, cpu-causal, cpu-reducio, gpu, gpu-multi): train the full system "
                    "(minivid.pipeline.system: the expert transformer with text, image / previous-clip and trajectory "
                    "conditions on the zoo's latents; cpu-causal on the causal 3D VAE's; cpu-reducio on the Reducio "
                    "VAE's, conditioned on each clip's content frame, without trajectories) as a run in --out (run.json, checkpoints/, log.csv), resumable with --resume; under torchrun "
                    "(torchrun --nproc_per_node N -m minivid train gpu-multi) with DistributedDataParallel. With a zoo "
                    "recipe name: train that model with its recipe (minivid.pipeline.zoo): fixed steps on MiniSprites, "
                    "held-out metrics against baselines, the folder and card.json written to --out (default "
                    "data/pretrained/NAME).")
    from .pipeline.zoo import RECIPES
    train.add_argument("name", help="a preset (cpu, cpu-causal, cpu-reducio, gpu, gpu-multi) or a zoo recipe: "
                                    + ", ".join(RECIPES))
    train.add_argument("--out", default=None, help="output folder (presets: default outputs/runs/NAME; zoo: "
                                                  "data/pretrained/NAME)")
    train.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's or recipe's)")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--rescore", action="store_true",
                       help="zoo only: do not train, recompute the held-out metrics of the entry and rewrite its card")
    train.add_argument("--resume", action="store_true", help="presets: continue the run in --out from its latest "
                                                             "checkpoint (without it, a folder holding one is refused)")
    train.add_argument("--config", default=None, help="presets: a YAML file of overrides (nested keys or dotted ones)")
    train.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                       help="presets: overrides after --config, e.g. --set lr=5e-4 model.transformer.depth=8")
    train.add_argument("--device", default=None, help="presets: cpu or cuda (default: cuda when available; under "
                                                      "torchrun each rank takes cuda:LOCAL_RANK)")
    sample = sub.add_parser(
        "sample", formatter_class=_Help, help="generate a video with the full system from a prompt, an image and a trajectory",
        description="Sample a trained full-system run (python -m minivid train cpu): a video from --prompt, optionally "
                    "starting from --image (resized to the run's size) and following --trajectory (a JSON or text file "
                    "of points, the format of minivid.conditioning.trajectory); --frames longer than one clip "
                    "continues it clip by clip. Writes --out (mp4) and a PNG frame grid beside it. The same seed and "
                    "inputs give the same video.")
    sample.add_argument("--checkpoint", required=True,
                        help="a run folder (its latest checkpoint), a checkpoint folder, or a full-system zoo "
                             "name ('system'; 'system-causal' on the causal VAE; 'system-reducio' on the Reducio "
                             "VAE)")
    sample.add_argument("--prompt", default="", help='the caption, e.g. "a red square moves right" (default: none)')
    sample.add_argument("--image", default=None, help="first frame: an image file (PNG, JPEG); on the Reducio VAE "
                                                      "(system-reducio) required, and the clip's content frame, "
                                                      "frame 3 of 8: the video runs through it")
    sample.add_argument("--trajectory", default=None, help="a .json or text file of points (x y per line; several "
                                                           "objects as JSON lists)")
    sample.add_argument("--frames", type=int, default=None, help="frames to make (default: one clip of the run)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--guidance", type=float, default=4.0, help="text guidance scale (default 4)")
    sample.add_argument("--guidance-trajectory", type=float, default=2.0, help="trajectory guidance scale (default 2)")
    sample.add_argument("--guidance-frames", type=float, default=1.0,
                        help="image / previous-clip guidance scale (default 1: none)")
    sample.add_argument("--steps", type=int, default=20, help="DPM-Solver++ steps (default 20)")
    sample.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    sample.add_argument("--out", default="outputs/sample.mp4", help="mp4 to write (default outputs/sample.mp4)")
    ev = sub.add_parser(
        "eval", formatter_class=_Help,
        help="metrics of a folder of videos or of the samples of a zoo checkpoint or a run, written as JSON",
        description="Compute the video metrics (minivid.metrics) for a folder of clips (.mp4/.gif/... or .npy) or for the "
                    "samples of a zoo checkpoint or a full-system run, against a reference: MiniSprites' test split "
                    "(default) or another folder. "
                    "Writes JSON: the sprite check, FVD (real Kinetics-400 I3D; protocol: bilinear resize to 224, "
                    "16 frames, logits) with the clip counts, the per-frame Frechet distance beside it, PSNR/SSIM for "
                    "paired clips, caption accuracy (--captions) and trajectory error (--trajectories).")
    ev.add_argument("folder", nargs="?", help="folder of clips to score (or use --checkpoint)")
    ev.add_argument("--checkpoint", help="a zoo name (data/pretrained/NAME): score its samples / reconstructions; or "
                                         "a run folder of the full system (python -m minivid train PRESET --out DIR) or "
                                         "one of its checkpoints: its EMA model's samples from the captions and sprite "
                                         "paths of held-out clips, made on --device")
    ev.add_argument("--reference", default="minisprites",
                    help="'minisprites' (its test split at the clips' size and frames; default) or a folder of real clips")
    ev.add_argument("--paired", action="store_true", help="clip i of the folder reconstructs clip i of --reference: "
                                                         "also PSNR and SSIM")
    ev.add_argument("--captions", help="JSON {clip name: caption}: caption attribute accuracy (colour, direction)")
    ev.add_argument("--trajectories", help="JSON {clip name: {\"color\": \"red\", \"trajectory\": [[x, y], ...]}}: "
                                           "trajectory error of that sprite (T9)")
    ev.add_argument("--first-frame-given", action="store_true",
                    help="leave frame 0 out of the trajectory error (image-conditioned models)")
    ev.add_argument("--clips", type=int, default=None,
                    help="clips to read / samples to make (default: 2048 with CUDA, as StyleGAN-V's fvd2048_16f; 64 on "
                         "a CPU, where I3D takes 1.5-2 s per clip, and for zoo entries other than the full system, "
                         "which sample on the CPU; the count is written next to every FVD)")
    ev.add_argument("--frames", type=int, default=None, help="keep the first N frames of every clip in the folder")
    ev.add_argument("--no-fvd", action="store_true", help="skip FVD and the per-frame distance (no I3D passes)")
    ev.add_argument("--resize", default="bilinear", help="FVD resize: bilinear (default) or center_crop")
    ev.add_argument("--fvd-frames", type=int, default=16, help="frames per clip for I3D (default 16; shorter clips "
                                                              "repeat frames)")
    ev.add_argument("--batch-size", type=int, default=8, help="clips per I3D batch (default 8)")
    ev.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ev.add_argument("--i3d-weights", default=None, help="path of i3d-kinetics-400.ckpt (default: $MINIVID_I3D_WEIGHTS "
                                                        "or data/weights/, made by `make weights`)")
    ev.add_argument("--out", default=None, help="JSON file to write (default outputs/eval/<folder or checkpoint>.json)")
    ev.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)

    if args.command == "sample":
        return _sample(parser, args)

    if args.command == "train":
        from .pipeline.run import presets
        from .pipeline.zoo import RECIPES, train_zoo_model

        if args.name in presets():
            return _train_system(parser, args)
        if args.resume or args.config or args.set or args.device:
            parser.error(f"train {args.name!r}: --resume, --config, --set and --device apply to the presets "
                         f"({', '.join(presets())})")
        if args.name not in RECIPES:
            from minivid.pipeline.run import _closest

            parser.error(f"train {args.name!r}: not a preset ({', '.join(presets())}) or a zoo recipe "
                         f"({', '.join(sorted(RECIPES))}){_closest(args.name, list(presets()) + list(RECIPES))}")
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

    if args.command == "eval":
        return _eval(parser, args)

    if args.command == "demo":
        return _demo(parser, args)
    return 0


def _demo(parser: argparse.ArgumentParser, args) -> int:
    """``python -m minivid demo``: every check before any work (minivid.pipeline.demo)."""
    import torch

    from .pipeline.demo import OutDirError, demo_config, run_demo
    from .pipeline.run import parse_overrides

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    _check_device(parser, device)
    for flag, value in (("--steps", args.steps), ("--samples", args.samples), ("--threads", args.threads)):
        if value is not None and value < 1:
            parser.error(f"{flag} {value}: must be a positive integer")
    if args.seed < 0:
        parser.error(f"--seed {args.seed}: must be an integer >= 0")
    for flag, value in (("--guidance", args.guidance), ("--guidance-trajectory", args.guidance_trajectory)):
        if not value >= 0:
            parser.error(f"{flag} {value}: must be a number >= 0 (1: no guidance)")
    try:
        overrides = parse_overrides(args.set)
        if not args.pretrained:
            demo_config(device, args.steps, args.seed, overrides)  # unknown keys and bad values, before any work
    except ValueError as e:
        parser.error(str(e))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        metrics = run_demo(args.out, device=device, steps=args.steps, seed=args.seed, resume=args.resume,
                           pretrained_model=args.pretrained, num_samples=args.samples, guidance=args.guidance,
                           trajectory_guidance=args.guidance_trajectory, overrides=overrides,
                           progress=not args.no_progress, log=lambda m: print(m, file=sys.stderr),
                           video=not args.no_video)
    except OutDirError as e:  # raised before any work: the output folder cannot be used as asked
        parser.error(str(e))
    print(json.dumps(metrics, indent=2))
    return 0


def _train_system(parser: argparse.ArgumentParser, args) -> int:
    """``python -m minivid train cpu|cpu-causal|cpu-reducio|gpu|gpu-multi``: every check before any work; under
    torchrun, data parallel."""
    import torch

    from .pipeline.run import (load_overrides_file, parse_overrides, preset_config, previous_run, run_spaces,
                               system_data, train_system, training_memory)
    from .utils.distributed import cleanup, init_distributed

    if args.rescore:
        parser.error("--rescore applies to zoo recipes, not to presets")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads {args.threads}: must be a positive integer")
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    _check_device(parser, device)
    try:
        overrides = load_overrides_file(args.config) if args.config else {}
        overrides.update(parse_overrides(args.set))
        if args.steps is not None:
            overrides["steps"] = args.steps
        cfg = preset_config(args.name, overrides)
        out = Path(args.out or f"outputs/runs/{args.name}")
        previous_run(out, cfg, args.resume)
        space, motion_space = run_spaces(cfg)
    except ValueError as e:
        parser.error(str(e))
    info = init_distributed(device=device)
    if info.distributed and device.startswith("cuda"):
        device = f"cuda:{info.local_rank}"
    try:
        part = info.shard(cfg.global_batch)
    except ValueError as e:
        parser.error(f"global_batch={cfg.global_batch}: {e}")
    n_params = _system_parameters(cfg)
    if info.is_main:
        print(f"preset {args.name}: {n_params / 1e6:.2f}M parameters, global batch {cfg.global_batch} on "
              f"{info.world_size} process(es), {cfg.steps} steps, {device}", file=sys.stderr)
    if device != "cpu":  # the clips are encoded on the GPU (minutes on a CPU for the gpu preset), kept on the CPU
        space, motion_space = run_spaces(cfg, device)
    data = system_data(space, motion_space, cfg.num_clips, cfg.size, cfg.frames, seed=cfg.seed)
    if info.is_main:
        mem = training_memory(cfg, data, part.stop - part.start)
        mib = {k: v / 2**20 for k, v in mem.items()}
        print(f"memory per process: {mib['total']:.0f} MiB = weights, gradients, EMA and AdamW states "
              f"{mib['weights']:.0f} MiB + activations {mib['activations']:.0f} MiB ({mib['activations_per_clip']:.1f}"
              f" MiB per clip x {part.stop - part.start}, measured in float32 on the CPU; under bf16 autocast "
              f"on CUDA the matmuls save bf16 inputs, so less), plus the largest temporary of one operation", file=sys.stderr)
    trainer = train_system(cfg, out, data, resume=args.resume, progress=not args.no_progress, device=device,
                           log=lambda m: print(m, file=sys.stderr) if info.is_main else None)
    if info.is_main:
        print(json.dumps({"out": str(out), "steps": trainer.num_updates, "loss": trainer.losses[-1]}, indent=2))
    cleanup()
    return 0


def _system_parameters(cfg) -> int:
    import torch

    from .pipeline.system import System

    with torch.device("meta"):
        return sum(p.numel() for p in System(cfg.model).parameters())


def _sample(parser: argparse.ArgumentParser, args) -> int:
    """``python -m minivid sample``: inputs checked before any work, then one video (mp4 + PNG frame grid)."""
    import torch

    from .pipeline.run import generate, load_run, run_spaces
    from .utils.video import save_frame_grid, write_video

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    _check_device(parser, device)
    if args.frames is not None and args.frames < 1:
        parser.error(f"--frames {args.frames}: must be a positive integer")
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: must be a positive integer")
    if not args.out.endswith(".mp4"):
        parser.error(f"--out {args.out!r}: must end with .mp4")
    try:
        model, cfg, folder = load_run(args.checkpoint, device=device)
    except ValueError as e:
        parser.error(f"--checkpoint: {e}")
    image = None
    if args.image is not None:
        image = _read_image(parser, args.image)
    trajectory = None
    if args.trajectory is not None:
        from .conditioning.trajectory import load_trajectories

        try:
            trajectory = load_trajectories(args.trajectory)
        except (ValueError, FileNotFoundError) as e:
            parser.error(f"--trajectory {args.trajectory!r}: {e}")
    space, motion_space = run_spaces(cfg, device)
    try:
        video = generate(model, cfg, space, motion_space, prompt=args.prompt, image=image, trajectory=trajectory,
                         frames=args.frames, seed=args.seed, steps=args.steps,
                         guidance={"text": args.guidance, "trajectory": args.guidance_trajectory,
                                   "frames": args.guidance_frames}).cpu()
    except ValueError as e:
        parser.error(str(e))
    out = Path(args.out)
    write_video(out, video, fps=8)
    grid = save_frame_grid(out.with_suffix(".png"), video[None], scale=max(1, 128 // video.shape[-1]))
    print(json.dumps({"video": str(out), "frames_png": str(grid), "checkpoint": str(folder),
                      "frames": int(video.shape[1])}, indent=2))
    return 0


def _read_image(parser: argparse.ArgumentParser, path: str):
    """An image file as a (3, H, W) tensor in [-1, 1] (alpha dropped, grey expanded); a usage error when unreadable."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    except (FileNotFoundError, IsADirectoryError):
        parser.error(f"--image {path!r}: no such file")
    except (UnidentifiedImageError, OSError) as e:
        parser.error(f"--image {path!r}: not a readable image ({e})")
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1


def _zoo_samples_on_cpu(checkpoint: str | None) -> bool:
    """Whether ``eval --checkpoint`` makes its clips on the CPU: a zoo entry that is not a full system."""
    from .pipeline.zoo import RECIPES, read_card

    if checkpoint not in RECIPES:
        return False
    try:
        return "run" not in read_card(checkpoint)
    except FileNotFoundError:  # an entry not trained here: the error comes later, with its message
        return True


def _eval(parser: argparse.ArgumentParser, args) -> int:
    """``python -m minivid eval``: every check on the arguments comes before any work."""
    import torch

    from .conditioning.trajectory import load_sprite_paths
    from .metrics.evaluate import evaluate_videos, load_captions, load_clips, round_metrics, write_json
    from .metrics.fvd import RESIZES
    from .metrics.i3d import resolve_weights

    if (args.folder is None) == (args.checkpoint is None):
        parser.error("eval: give either a FOLDER of clips or --checkpoint NAME (not both)")
    if args.clips is not None and args.clips < 2:
        parser.error(f"--clips {args.clips}: must be an integer >= 2 (FVD needs two clips per side)")
    if args.frames is not None and args.frames < 1:
        parser.error(f"--frames {args.frames}: must be a positive integer")
    if args.fvd_frames < 9:
        parser.error(f"--fvd-frames {args.fvd_frames}: must be >= 9 (I3D's minimum)")
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: must be a positive integer")
    if args.resize not in RESIZES:
        parser.error(f"--resize {args.resize!r}: allowed values are {', '.join(RESIZES)}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    _check_device(parser, device)
    if args.clips is None:  # the zoo's entries other than the full system (no run config) sample on the CPU: 64
        args.clips = 2048 if device.startswith("cuda") and not _zoo_samples_on_cpu(args.checkpoint) else 64
    if not args.no_fvd:
        try:
            resolve_weights(args.i3d_weights)
        except FileNotFoundError as e:
            parser.error(f"{e} (or pass --no-fvd)")
    for flag, value in (("--captions", args.captions), ("--trajectories", args.trajectories)):
        if value is not None and not Path(value).is_file():
            parser.error(f"{flag} {value!r}: no such file")
    fvd_kw = dict(fvd=not args.no_fvd, frame_fd=not args.no_fvd, resize=args.resize, num_frames=args.fvd_frames,
                  batch_size=args.batch_size, device=device, weights=args.i3d_weights,
                  progress=None if not args.no_progress else False)
    if args.checkpoint is not None:
        from .pipeline.run import load_run, run_spaces, system_eval_set
        from .pipeline.zoo import RECIPES, zoo_eval_set

        if args.checkpoint not in RECIPES and not Path(args.checkpoint).is_dir():
            parser.error(f"--checkpoint {args.checkpoint!r}: not a zoo name ({', '.join(sorted(RECIPES))}) nor a run "
                         "folder of the full system (run.json + checkpoints/step-*) or one of its checkpoints")
        for flag, given in (("--captions", args.captions is not None),
                            ("--trajectories", args.trajectories is not None), ("--frames", args.frames is not None),
                            ("--reference", args.reference != "minisprites"), ("--paired", args.paired)):
            if given:  # each would be ignored: the checkpoint's eval set brings its clips, reference and conditions
                parser.error(f"--checkpoint makes its own clips and their reference; {flag} does not apply")
        try:  # the full system (a run, or a zoo entry trained from a preset) samples on --device
            if not _zoo_samples_on_cpu(args.checkpoint):
                model, cfg, folder = load_run(args.checkpoint, device=device)
                s = system_eval_set(model, cfg, *run_spaces(cfg, device), args.clips)
            else:
                folder, s = args.checkpoint, zoo_eval_set(args.checkpoint, args.clips)
        except (ValueError, FileNotFoundError) as e:
            parser.error(str(e))
        metrics = {"source": {"checkpoint": args.checkpoint, "folder": str(folder), "what": s["what"]},
                   **evaluate_videos(s["videos"], s["reference"], paired=s["paired"], captions=s["captions"],
                                     paths=s["paths"], colors=s["colors"], from_frame=s["from_frame"], **fvd_kw)}
        # a run's checkpoint folder is RUN/checkpoints/step-N: outputs/eval/RUN-step-N.json
        name = args.checkpoint if args.checkpoint in RECIPES else f"{folder.parent.parent.name}-{folder.name}"
        out = args.out or f"outputs/eval/{name}.json"
    else:
        folder = Path(args.folder)
        if not folder.is_dir():
            parser.error(f"FOLDER {args.folder!r}: no such folder")
        ref_folder = None if args.reference == "minisprites" else Path(args.reference)
        if ref_folder is not None and not ref_folder.is_dir():
            parser.error(f"--reference {args.reference!r}: not 'minisprites' and no such folder")
        if args.paired and ref_folder is None:
            parser.error("--paired needs --reference DIR (the clips the folder's clips reconstruct)")
        try:
            videos, names = load_clips(folder, args.clips, args.frames)
            if ref_folder is not None:
                reference, _ = load_clips(ref_folder, args.clips, args.frames)
            else:
                _, t, h, w = videos.shape[1:]
                if h != w:
                    parser.error(f"clips are {h}x{w}: the MiniSprites reference is square; pass --reference DIR")
                from .pipeline.zoo import clip_pool

                reference = clip_pool(len(videos), h, t, split="test")
            captions = load_captions(args.captions, names) if args.captions else None
            paths = colors = None
            if args.trajectories:
                paths, colors = load_sprite_paths(args.trajectories, names, *videos.shape[2:])
        except (ValueError, RuntimeError, FileNotFoundError) as e:
            parser.error(str(e))
        metrics = {"source": {"folder": str(folder), "reference": args.reference, "names": names},
                   **evaluate_videos(videos, reference, paired=args.paired, captions=captions, paths=paths,
                                     colors=colors, from_frame=1 if args.first_frame_given else 0, **fvd_kw)}
        out = args.out or f"outputs/eval/{folder.resolve().name}.json"
    path = write_json(metrics, out)
    print(json.dumps(round_metrics({k: v for k, v in metrics.items() if k != "source"}), indent=2, default=str))
    print(f"written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
