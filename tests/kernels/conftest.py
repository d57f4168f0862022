"""Kernel tests: on a machine without CUDA, ``tests/conftest.py`` has already set
``TRITON_INTERPRET=1`` before Triton was first imported, so the kernels run in Triton's CPU
interpreter. This file checks that this really happened, so that a wrong setup fails loudly
instead of testing compiled kernels that cannot run; and it poisons the kernels' output buffers
in every kernel test."""

import os

import pytest
import torch

import minivid.kernels as mk


@pytest.fixture(autouse=True, scope="session")
def _triton_mode():
    if not torch.cuda.is_available():
        # Triton reads the variable as a bool (1, true, on, ...): ask the kernels which mode they were built in.
        assert mk.interpreter_active(), (
            f"kernel tests on CPU need Triton's interpreter (TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')!r}); "
            "Triton was imported in compiled mode before tests/conftest.py could set it")
    yield


@pytest.fixture(autouse=True)
def _poison_kernel_outputs():
    """Every buffer the kernels write (O, lse, D, dQ, dK, dV) starts as NaN in every kernel test, so that an
    element a kernel forgets to write fails the comparison."""
    with mk.poisoned_outputs(float("nan")):
        yield
