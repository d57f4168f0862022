"""Condition encoders (floor 5): what turns a caption, an image or a trajectory into the tokens a denoiser attends to.

- :mod:`~minivid.conditioning.text`: the T5 text encoder (a small random T5 with ByT5's byte tokenizer by default,
  a local checkpoint by name or path), returning ``(tokens, key_padding_mask)`` and the empty caption's encoding
  for classifier-free guidance.
"""

from .text import TextEncoder, TextEncoderConfig

__all__ = ["TextEncoder", "TextEncoderConfig"]
