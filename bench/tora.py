"""Benchmark: Tora's trajectory error by fuser (T9), from the zoo's ``tora`` entry, in one table and one JSON.

    python bench/tora.py              # the table of data/pretrained/tora/card.json (fast)
    python bench/tora.py --rescore    # first re-sample the stored (chosen-fuser) model's row from its weights

The zoo recipe (``python -m minivid train tora``, ``minivid.pipeline.tora.tora_recipe``) trains the base ST-DiT with
the first frame given, then one copy per fuser (concat, adaptive norm, cross-attention) through the dense and
sparse stages of T8, and scores every model on 64 held-out one-sprite clips at 32 px x 8 frames: the mean distance in
pixels between the tracked generated sprite and the requested path over frames 1.. (``trajectory_error_px``), the
share of frames where the tracker loses the sprite (``lost``), and the sprite-check pass rate of the same samples. Real
clips give the floor (their own paths) and the chance level (another clip's path). Writes
``bench/results/tora-<machine>.json`` (the machine that trained the entry is on its card).
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
from minivid.pipeline.zoo import rescore_zoo_model  # noqa: E402
from minivid.utils.machine import device_name, slug, versions  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rescore", action="store_true", help="re-sample the stored model's row before collecting")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/tora-<machine>.json)")
    args = ap.parse_args(argv)
    card = rescore_zoo_model("tora") if args.rescore else pretrained.card("tora")
    m = card["metrics"]
    print(f"Tora, {card['parameters']:,} parameters, chosen fuser: {m['fuser']}; trained by `{card['command']}` in "
          f"{card['train_seconds'] / 60:.0f} min on {card['machine']} ({card['threads']} threads)")
    print(f"{'':22s} {'error (px)':>10s} {'lost':>6s} {'sprite check':>13s}")
    for name, row in m["real_clips"].items():
        print(f"{'real clips, ' + name.replace('_', ' '):22s} {row['trajectory_error_px']:10.2f} {row['lost']:6.2f}")
    for name in ["no trajectory"] + [k for k in ("concat", "adanorm", "cross_attention") if k in m["table"]]:
        row = m["table"][name]
        print(f"{name:22s} {row['trajectory_error_px']:10.2f} {row['lost']:6.2f} {row['sprite_check']:13.0%}")
    name = device_name("cpu")
    out = args.out or RESULTS / f"tora-{slug(name)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": name, "versions": versions(), "date": _dt.datetime.now().isoformat(),
                               "trained_on": card["machine"], "command": card["command"],
                               "train_seconds": card["train_seconds"], "stages": m["stages"], "fuser": m["fuser"],
                               "table": m["table"], "real_clips": m["real_clips"], "data": card["data"]}, indent=1))
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
