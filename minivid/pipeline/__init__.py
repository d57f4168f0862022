"""Pipelines and the command line: ``python -m minivid demo`` (train/sample/eval arrive with notebook 08)."""

from .demo import DemoConfig, load_demo_model, run_demo

__all__ = ["DemoConfig", "run_demo", "load_demo_model"]
