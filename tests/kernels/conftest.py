"""Kernel tests: on a machine without CUDA, ``tests/conftest.py`` has already set
``TRITON_INTERPRET=1`` before Triton was first imported, so the kernels run in Triton's CPU
interpreter. This file only checks that this really happened, so that a wrong setup fails loudly
instead of testing compiled kernels that cannot run."""

import importlib
import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _triton_mode():
    if not torch.cuda.is_available():
        flash_attention = importlib.import_module("minivid.kernels.flash_attention")  # the package re-exports a function of that name

        # Triton reads the variable as a bool (1, true, on, ...): ask the kernels which mode they were built in.
        assert flash_attention.interpreter_active(), (
            f"kernel tests on CPU need Triton's interpreter (TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')!r}); "
            "Triton was imported in compiled mode before tests/conftest.py could set it")
    yield
