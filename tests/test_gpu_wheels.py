"""`make gpu-wheels` downloads what the lent GPU machines lack (bench/gpu_session.sh installs it there) at the
versions installed here, so the GPU session runs the code the tests ran; every package the session's steps import
that the machines' image does not hold is among them."""

import re
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _names() -> list[str]:
    text = ROOT.joinpath("Makefile").read_text().replace("\\\n", " ")
    return re.search(r"^GPU_WHEEL_NAMES\s*:=\s*(.+)$", text, re.M).group(1).split()


def test_gpu_wheels_name_installed_packages_with_what_the_machines_lack():
    names = {re.sub(r"[-_.]+", "-", n).lower() for n in _names()}
    # not in the image's package list (/work/.library/device/KINDS.md): the gpu preset's image tokens (open_clip and
    # its ftfy, whose wcwidth), the parity tests' diffusers (and its importlib_metadata, whose lazy-importer)
    assert {"open-clip-torch", "ftfy", "wcwidth", "diffusers", "importlib-metadata", "lazy-importer"} <= names
    for n in _names():
        assert version(n)  # installed here: the Makefile pins the wheels to these versions


def test_the_session_script_installs_the_carried_wheels_and_skips_the_video():
    script = ROOT.joinpath("bench", "gpu_session.sh").read_text()
    assert "--target /tmp/site .whl/*.whl" in script and 'PYTHONPATH="/tmp/site:' in script
    assert re.search(r"minivid demo .*--no-video", script)
