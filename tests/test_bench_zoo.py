"""bench/zoo.py collects every shipped zoo card into one JSON, whatever kind of model the entry is."""

import importlib.util
import json
from pathlib import Path

import minivid.pretrained as zoo

ROOT = Path(__file__).resolve().parents[1]


def test_bench_zoo_collects_every_entry(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_zoo", ROOT / "bench" / "zoo.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "zoo.json"
    assert bench.main(["--out", str(out)]) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert sorted(rows) == zoo.available()
    assert rows["t5"]["kind"] == "text encoder" and rows["t5"]["moves"] == zoo.card("t5")["metrics"]["moves"]
    assert rows["system"]["kind"] == "full system" and rows["vae2d"]["kind"] == "autoencoder"
    assert "t5" in capsys.readouterr().out
