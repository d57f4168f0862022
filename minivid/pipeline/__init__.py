"""Pipelines: the diffusion trainer (``trainer``) and the demo behind ``python -m minivid demo`` (``demo``).
The command line itself is ``minivid/__main__.py``; train/sample/eval are planned for notebook 08."""

from .demo import DemoConfig, load_demo_model, run_demo

__all__ = ["DemoConfig", "run_demo", "load_demo_model"]
