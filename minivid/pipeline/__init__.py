"""Pipelines: what composes models, data and the training core into runs. The full system (``system``: one model with
every condition; ``run``: its training runs, presets, sampling and scores), the demo behind ``python -m minivid demo``
(``demo``: the system's cpu preset from scratch), the zoo's recipes (``zoo``) and the papers' pipelines: PVDM's joint
training and long-video sampling (``pvdm``, P8-P9), text-to-video, image-to-video and Tora. The command line itself is
``minivid/__main__.py``."""

from .demo import demo_config, run_demo
from .pvdm import JointTrainer, generate_long_video, joint_loss, sample_planes

__all__ = ["demo_config", "run_demo", "JointTrainer", "joint_loss", "sample_planes", "generate_long_video"]
