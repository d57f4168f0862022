"""`make gpu-wheels` pins what the lent GPU machines lack (bench/gpu_session.sh installs them there) to the versions
the tests run with here, so the GPU session runs the code CI ran; and every package bench/gpu_session.sh's steps
import that the machines' image does not hold is among them."""

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    text = ROOT.joinpath("Makefile").read_text().replace("\\\n", " ")
    line = re.search(r"^GPU_WHEELS\s*:=\s*(.+)$", text, re.M).group(1)
    return dict(item.split("==") for item in line.split())


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_gpu_wheels_are_pinned_to_the_versions_installed_here():
    pins = _pins()
    assert {"open_clip_torch", "diffusers"} <= set(pins)  # the gpu preset's image tokens; the parity tests
    for name, pinned in pins.items():
        try:
            here = version(name)
        except PackageNotFoundError:
            raise AssertionError(f"{name} is pinned in GPU_WHEELS but not installed here") from None
        assert here == pinned, f"GPU_WHEELS pins {name}=={pinned}; the tests run with {here}: update the Makefile"


def test_the_session_script_installs_the_carried_wheels_and_skips_the_video():
    script = ROOT.joinpath("bench", "gpu_session.sh").read_text()
    assert "--target /tmp/site .whl/*.whl" in script and 'PYTHONPATH="/tmp/site:' in script
    assert re.search(r"minivid demo .*--no-video", script)
    # the image's packages (/work/.library/device/KINDS.md) hold none of these: they must travel
    lacking = {"open-clip-torch", "ftfy", "diffusers"}
    assert lacking <= {_norm(n) for n in _pins()}
