"""Fixtures shared by the full system's tests: spies on what ``minivid.pipeline.run.generate`` calls."""

from __future__ import annotations

import pytest

from minivid.pipeline import run as run_mod


@pytest.fixture
def seen(monkeypatch) -> list:
    """The keyword arguments of every sample_system call generate makes, in order."""
    calls, real = [], run_mod.sample_system

    def spy(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)
    monkeypatch.setattr(run_mod, "sample_system", spy)
    return calls


@pytest.fixture
def decoded(monkeypatch) -> list:
    """The images (content frames, or None) of every decode_latents call generate makes, in order."""
    images, real = [], run_mod.decode_latents

    def spy(space, z, imgs=None):
        images.append(imgs)
        return real(space, z, imgs)
    monkeypatch.setattr(run_mod, "decode_latents", spy)
    return images
