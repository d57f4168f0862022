"""Pipelines: what composes models, data and the training core into runs. The demo behind ``python -m minivid demo``
(``demo``) and PVDM's joint conditional/unconditional training and long-video sampling on the triplane latent
(``pvdm``, P8-P9). The command line itself is ``minivid/__main__.py``; train/sample/eval come with notebook 08."""

from .demo import DemoConfig, load_demo_model, run_demo
from .pvdm import JointTrainer, generate_long_video, joint_loss, sample_planes

__all__ = ["DemoConfig", "run_demo", "load_demo_model", "JointTrainer", "joint_loss", "sample_planes",
           "generate_long_video"]
