"""Where a benchmark ran: the names the result files are keyed by."""

import os

import torch

from minivid.utils.machine import device_name, slug, versions


def test_slug_keeps_only_lower_case_letters_and_digits():
    assert slug("CPU AMD EPYC (2 cores)") == "cpu-amd-epyc-2-cores"
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert slug("  --Intel(R) Xeon(R)--  ") == "intel-r-xeon-r"


def test_cpu_device_name_and_versions():
    name = device_name("cpu")
    assert name.startswith("CPU ") and name.endswith(f"({os.cpu_count()} cores)")
    if not torch.cuda.is_available():
        assert device_name() == name
    v = versions()
    assert v["torch"] == torch.__version__ and v["python"].count(".") == 2
    assert set(v) >= {"cuda", "cudnn", "triton", "minivid_commit"}
    assert v["minivid_commit"] is None or len(v["minivid_commit"]) == 40
