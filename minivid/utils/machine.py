"""Where a measurement was made: the device's name, a file-name slug of it and the software versions. Every
script in ``bench/`` stores these beside its results (``bench/results/<name>-<slug(device)>.json``), and the
notebooks print them when they show stored results."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[2]


def device_name(device: str | torch.device | None = None) -> str:
    """The GPU's name for a CUDA device (default: CUDA when available), else ``"CPU <model name> (<n> cores)"``."""
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        return torch.cuda.get_device_name(device if device is not None and torch.device(device).index is not None
                                          else None)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {name} ({os.cpu_count()} cores)"


def slug(name: str) -> str:
    """``"CPU AMD EPYC (2 cores)"`` -> ``"cpu-amd-epyc-2-cores"``: lower case, runs of other characters as ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def versions() -> dict:
    """Python, torch, CUDA, cuDNN and Triton versions, and the minivid commit (None outside a git checkout)."""
    v = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
         "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    try:
        import triton

        v["triton"] = triton.__version__
    except ImportError:
        v["triton"] = None
    try:
        v["minivid_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True,
                                             text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        v["minivid_commit"] = None
    return v
