"""minivid: a notebook-first reference implementation of modern latent video diffusion.

Families (one sub-package each):

- ``diffusion``: schedules, losses, samplers (D1-D10); the demo's video U-Net; PVDM's plane U-Net,
  joint training and long-video sampling (P7-P9).
- ``autoencoders``: the shared autoencoder interface, losses and trainer; PVDM's triplane autoencoder
  (P1-P6), a per-frame 2D VAE, CogVideoX's causal 3D VAE (C1) and Reducio's VAE (R1-R3).
- ``transformers``: attention with a backend switch, patch embeddings, sin-cos and RoPE, AdaLN family,
  DiT blocks and Latte (L1-L8, C3).
- ``kernels``: FlashAttention-2 forward and backward in Triton and its PyTorch reference (K1-K4).
- ``metrics``: PSNR and SSIM.
- ``data``: MiniSprites, the sprite tracker and trajectory error, real-video folders.
- ``nn``: small layers shared by every model (timestep embeddings).
- ``pipeline``: the diffusion trainer and the demo (the command line is ``minivid/__main__.py``).
- ``utils``: video I/O, atomic files, checkpoints, and the device and versions a measurement records.

Equation IDs refer to ``docs/equations.md``.
"""

__version__ = "0.1.0"
