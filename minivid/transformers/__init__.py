"""Video diffusion transformers: Latte's four variants and the image DiT it can start from (L1-L8), and their
patch embeddings (L1, L4, L8).

- :mod:`~minivid.transformers.embeddings`: uniform and tubelet patch embeddings, the output decoder.
- :mod:`~minivid.transformers.latte`: Latte (L1-L8).
- :mod:`~minivid.transformers.cogvideox`: CogVideoX's expert transformer (C2-C5) and ``from_diffusers``.
- :mod:`~minivid.transformers.stdit`: ST-DiT (T2-T3), Tora's base, with a motion-fuser hook (T7).
- :mod:`~minivid.transformers.reducio_dit`: Reducio-DiT (R4-R7).

The layers they are built from (attention, sinusoids, RoPE, modulation, the DiT block family) are shared by
every model and live in :mod:`minivid.nn`; they are re-exported here for convenience.
"""

from ..nn import (BACKENDS, BLOCK_KINDS, MLP, MODULATIONS, AdaLN, AdaLNSingle, AdaLNSingleTable, Attention, DiTBlock,
                  Modulation, NoModulation, RotaryEmbedding, append_condition_tokens, apply_rope, attention,
                  attention_pattern, block_flops, full_attention, gate, make_block_modulation, modulate, rope_1d,
                  rope_3d, rope_axes_dims, rope_frequencies, set_attention_backend, sincos_1d, sincos_2d, sincos_3d,
                  spatial_attention, strip_condition_tokens, temporal_attention)
from .embeddings import PatchDecoder, PatchEmbed, patch_grid, patchify, unpatchify
from .cogvideox import ExpertTransformer, ExpertTransformerConfig, from_diffusers
from .latte import TEMPORAL_POSITIONS, VARIANTS, ImageDiT, Latte, LatteConfig, latte_flops
from .stdit import FUSER_SITES, LAYOUTS, STDiT, STDiTConfig
from .reducio_dit import ATTENTIONS, ReducioDiT, ReducioDiTConfig, SizeEmbedding, deepstack_groups

__all__ = [
    # patches (this package)
    "PatchEmbed", "PatchDecoder", "patch_grid", "patchify", "unpatchify",
    # Latte (this package)
    "VARIANTS", "TEMPORAL_POSITIONS", "LatteConfig", "Latte", "ImageDiT", "latte_flops",
    # CogVideoX (this package)
    "ExpertTransformerConfig", "ExpertTransformer", "from_diffusers",
    # ST-DiT (this package)
    "STDiTConfig", "STDiT", "LAYOUTS", "FUSER_SITES",
    # Reducio-DiT (this package)
    "ReducioDiTConfig", "ReducioDiT", "SizeEmbedding", "deepstack_groups", "ATTENTIONS",
    # re-exported from minivid.nn
    "BACKENDS", "Attention", "attention", "set_attention_backend",
    "sincos_1d", "sincos_2d", "sincos_3d",
    "RotaryEmbedding", "rope_1d", "rope_3d", "rope_axes_dims", "rope_frequencies", "apply_rope",
    "MODULATIONS", "Modulation", "AdaLN", "AdaLNSingle", "AdaLNSingleTable", "NoModulation",
    "make_block_modulation", "modulate", "gate", "append_condition_tokens", "strip_condition_tokens",
    "BLOCK_KINDS", "MLP", "DiTBlock", "attention_pattern", "block_flops", "spatial_attention", "temporal_attention",
    "full_attention",
]
