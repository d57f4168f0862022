"""Transformer building blocks shared by every video transformer in minivid (Latte, PVDM's video
transformers, Reducio's fusion, the CogVideoX expert transformer, Tora).

Start with :mod:`minivid.transformers.attention`: multi-head attention with a backend switch
("sdpa" | "math" | "triton"), key-padding masks and QK-norm.
"""

from .attention import BACKENDS, Attention, attention, set_attention_backend

__all__ = ["BACKENDS", "Attention", "attention", "set_attention_backend"]
