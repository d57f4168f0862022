"""minivid: a notebook-first reference implementation of modern latent video diffusion.

Families (one sub-package each): ``diffusion`` (schedules, losses, samplers: D1-D10),
``data`` (MiniSprites, tracker, real-video folders), ``nn`` (small layers shared by every model),
``utils`` (video I/O, checkpoints, devices). Equation IDs refer to ``docs/equations.md``.
"""

__version__ = "0.1.0"
