"""Benchmark: the model zoo's held-out results, in one table and one JSON.

    python bench/zoo.py              # collect the cards of data/pretrained/ (fast)
    python bench/zoo.py --rescore    # first recompute every entry's metrics from its weights (minutes on a CPU)

For each zoo entry (``minivid.pretrained``): what it is, its parameters, the command that made it, its steps and
training time, and its held-out metric next to its baselines: PSNR/SSIM against the best latent-free baseline for
the autoencoders; the sprite-check pass rate (``minivid.metrics.sprite_check``) and the centre jitter of the tracked
sprites for the denoisers, against real clips (the ceiling) and uniform noise (the floor). Writes
``bench/results/zoo-<machine>.json`` (the machine that trained the entries is on each card).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minivid import pretrained  # noqa: E402
from minivid.pipeline.zoo import RECIPES, rescore_zoo_model  # noqa: E402
from minivid.utils.machine import device_name, slug, versions  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rescore", action="store_true", help="recompute each entry's metrics before collecting them")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/zoo-<machine>.json)")
    args = ap.parse_args(argv)
    rows = []
    for name in pretrained.available():
        card = rescore_zoo_model(name) if args.rescore and name in RECIPES else pretrained.card(name)
        m = card["metrics"]
        row = {k: card[k] for k in ("name", "description", "model_class", "parameters", "command", "steps",
                                    "train_seconds", "threads", "machine", "commit")}
        if "psnr" in m:
            row.update(kind="autoencoder", psnr=m["psnr"], ssim=m["ssim"], best_baseline_psnr=m["best_baseline_psnr"],
                       margin_db=m["margin_db"], margin_on=m.get("margin_on", "psnr"), baselines_psnr=m["baselines_psnr"], latent_shape=m["latent_shape"],
                       input_shape=m["input_shape"])
            other = f" ({m['psnr_without_content_frame']:.2f} without the content frame)" \
                if "psnr_without_content_frame" in m else ""
            print(f"{name:12s} PSNR {m['psnr']:6.2f} dB{other}  SSIM {m['ssim']:.3f}  best baseline "
                  f"{m['best_baseline_psnr']:6.2f} dB  ({m['margin_db']:+.2f} dB)")
        elif "sparse_one_object" in m:  # Tora's motion VAE: flow videos, white except for the marks
            s = m["sparse_one_object"]
            row.update(kind="motion autoencoder", mixed=m["mixed"], sparse_one_object=s)
            print(f"{name:12s} clip PSNR {s['clip_psnr']:6.2f} dB (all white {s['clip_psnr_all_white']:.2f}); marked-pixel "
                  f"L1 {s['marked_l1']:.3f} (white {s['marked_l1_all_white']:.3f}); mark centre moves "
                  f"{s['mark_centre_error_px']:.2f} px")
        elif "table" in m:  # Tora: trajectory error per fuser
            row.update(kind="trajectory-controlled denoiser", fuser=m["fuser"], table=m["table"],
                       real_clips=m["real_clips"])
            chosen = m["table"][m["fuser"]]
            print(f"{name:12s} trajectory error {chosen['trajectory_error_px']:.2f} px ({m['fuser']}; no trajectory "
                  f"{m['table']['no trajectory']['trajectory_error_px']:.2f} px), sprite check "
                  f"{chosen['sprite_check']:.0%}")
        elif "moves_random_init" in m:  # the T5: how far one word moves a caption's embedding
            row.update(kind="text encoder", moves=m["moves"], moves_random_init=m["moves_random_init"],
                       captions=m["captions"])
            t, r = m["moves"], m["moves_random_init"]
            print(f"{name:12s} one word changed moves a caption's embedding: colour {t['colour']:.2f} (random init "
                  f"{r['colour']:.2f}), motion {t['motion']:.2f} ({r['motion']:.2f}), shape {t['shape']:.2f} "
                  f"({r['shape']:.2f})")
        elif "text+trajectory" in m:  # the full system: three uses
            row.update(kind="full system", uses={k: v for k, v in m.items() if isinstance(v, dict)})
            u = m["text+trajectory"]
            print(f"{name:12s} caption + path: sprite check {u['sprite_check']:.0%}, colour "
                  f"{u['caption_accuracy']['color']:.0%}, trajectory error {u['trajectory_error_px']:.2f} px (caption "
                  f"alone: {m['text']['sprite_check']:.0%}, {m['text']['trajectory_error_px']:.2f} px)")
        elif "content frame repeated" in m:  # the full system on the Reducio VAE: one use, image + caption
            row.update(kind="full system", uses={k: v for k, v in m.items() if isinstance(v, dict)})
            u, still = m["image+text"], m["content frame repeated"]
            print(f"{name:12s} content frame + caption: sprite check {u['sprite_check']:.0%}, colour "
                  f"{u['caption_accuracy']['color']:.0%}, direction {u['caption_accuracy']['direction']:.0%}, "
                  f"trajectory error {u['trajectory_error_px']:.2f} px (still frame: "
                  f"{still['trajectory_error_px']:.2f} px)")
        else:
            s, b = m["samples"], m["baselines"]
            row.update(kind="denoiser", sprite_check=s["sprite_check"], centre_jitter_px=s["centre_jitter_px"],
                       failures=s["failures"], clips=s["clips"], real_clips=b["real clips"],
                       uniform_noise=b["uniform noise"])
            print(f"{name:12s} sprite check {s['sprite_check']:5.0%} of {s['clips']}  (real {b['real clips']['sprite_check']:.0%}, "
                  f"noise {b['uniform noise']['sprite_check']:.0%}); centre jitter {s['centre_jitter_px']} px "
                  f"(real {b['real clips']['centre_jitter_px']} px)")
        rows.append(row)
    name = device_name("cpu")
    out = args.out or RESULTS / f"zoo-{slug(name)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": name, "versions": versions(), "date": _dt.datetime.now().isoformat(),
                               "rescored": args.rescore, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
