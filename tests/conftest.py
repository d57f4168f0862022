"""Shared test setup.

- Unit tests use tiny configs: one intra-op thread per test process is faster (no thread-pool
  overhead on small ops) and more reproducible; `make test` runs two processes with pytest-xdist to
  use both cores of the CI machine.
- Without a CUDA GPU, Triton kernels run in Triton's CPU interpreter. Triton reads
  ``TRITON_INTERPRET`` when it is first imported (and when a kernel is defined), so the variable is set
  here, before any test module (or a library such as torchvision) imports Triton. ``import torch``
  alone does not import Triton. An explicit ``TRITON_INTERPRET`` from the caller wins.
"""

import os
import sys

import torch

torch.set_num_threads(1)

if not torch.cuda.is_available():
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") is None:
        raise RuntimeError("triton was imported before tests/conftest.py could set TRITON_INTERPRET=1; "
                           "run pytest from the repository root so that this file loads first")
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_addoption(parser):
    parser.addoption("--recipes", action="store_true", default=False,
                     help="also run the tests marked `recipes`: every zoo recipe for 2 steps with its held-out scoring "
                          "(about 25 min of one core; `make recipes`)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--recipes"):
        return
    import pytest

    skip = pytest.mark.skip(reason="a zoo recipe's 2-step run with its scoring (minutes); run with --recipes "
                                   "(`make recipes`)")
    for item in items:
        if "recipes" in item.keywords:
            item.add_marker(skip)
