"""minivid: a notebook-first reference implementation of modern latent video diffusion.

Families (one sub-package each), in floors: a package imports only from the floors below it (the floors are
``minivid.utils.imports.FLOORS``; ``tests/test_layout.py`` enforces them).

- ``utils`` (floor 0): video I/O, atomic files, checkpoints, config JSON round trip, argument checks, the import
  graph. ``kernels`` (floor 1): FlashAttention-2 in Triton and its PyTorch reference (K1-K4). ``nn`` (floor 2): the
  layers every model shares (attention with its backend switch, sinusoids and RoPE, modulation, the MLP, the DiT
  block family, the AdaGN residual block, the triplane layout) and the model contract (``Model``, ``save_model``,
  ``load_model``).
- ``diffusion``, ``data`` (floor 3): diffusion math (D1-D10) and the training core; MiniSprites, the sprite tracker, real
  videos.
- ``metrics`` (floor 4): every video metric: PSNR, SSIM, FVD with the Kinetics-400 I3D (E1), the sprite check,
  trajectory error (T9), caption accuracy, clip joins (P9); ``python -m minivid eval``.
- ``autoencoders``, ``unets``, ``transformers`` (floor 5, the models; they never import each other): PVDM's triplane
  autoencoder (P1-P6), a per-frame 2D VAE, CogVideoX's causal 3D VAE (C1), Reducio's VAE (R1-R3); the factorised video
  U-Net and PVDM's plane U-Net (P7); Latte (L1-L8), CogVideoX's expert transformer (C2-C5), ST-DiT and Reducio-DiT.
- ``conditioning``, ``pretrained`` (floor 6): the condition encoders (T5 text, OpenCLIP image, Tora's trajectory
  extractor and fusers); the model zoo's loader.
- ``pipeline`` (floor 7): the demo, the model zoo's recipes, text-, image- and trajectory-conditioned generation, and
  PVDM's joint training and long-video sampling (P8-P9); the command line is ``minivid/__main__.py`` (floor 8).

Every model saves and loads one way: ``minivid.save_model(model, folder)`` / ``minivid.load_model(folder)``.
docs/architecture.md draws the floors and the import graph; equation IDs refer to ``docs/equations.md``.
"""

from .nn.model import load_model, save_model

__version__ = "0.1.0"
__all__ = ["save_model", "load_model", "__version__"]
