"""Transformer building blocks shared by every video transformer in minivid (Latte, PVDM's video
transformers, Reducio's fusion, the CogVideoX expert transformer, Tora), and Latte itself.

- :mod:`~minivid.transformers.attention`: multi-head attention with a backend switch
  ("sdpa" | "math" | "triton"), key-padding masks and QK-norm (K1).
- :mod:`~minivid.transformers.embeddings`: patch embeddings (uniform and tubelet, L1/L4), the output
  decoder (L8), sin-cos position tables (1D/2D/3D), RoPE in 1D (L6) and 3D (C3).
- :mod:`~minivid.transformers.modulation`: AdaLN, S-AdaLN, adaLN-Zero, adaLN-single, condition tokens (L5).
- :mod:`~minivid.transformers.blocks`: the DiT block family: spatial, temporal, factorised, head-split and
  full attention (L2, L3).
- :mod:`~minivid.transformers.latte`: Latte's four variants, the image DiT it can start from (L1-L8).
"""

from .attention import BACKENDS, Attention, attention, set_attention_backend
from .blocks import (
    BLOCK_KINDS,
    MLP,
    DiTBlock,
    attention_pattern,
    block_flops,
    full_attention,
    spatial_attention,
    temporal_attention,
)
from .embeddings import (
    PatchDecoder,
    PatchEmbed,
    RotaryEmbedding,
    apply_rope,
    patch_grid,
    patchify,
    rope_1d,
    rope_3d,
    rope_axes_dims,
    rope_frequencies,
    sincos_1d,
    sincos_2d,
    sincos_3d,
    unpatchify,
)
from .latte import TEMPORAL_POSITIONS, VARIANTS, ImageDiT, Latte, LatteConfig, latte_flops
from .modulation import (
    MODULATIONS,
    AdaLN,
    AdaLNSingle,
    AdaLNSingleTable,
    Modulation,
    NoModulation,
    append_condition_tokens,
    gate,
    make_block_modulation,
    modulate,
    strip_condition_tokens,
)

__all__ = [
    # attention
    "BACKENDS", "Attention", "attention", "set_attention_backend",
    # embeddings
    "PatchEmbed", "PatchDecoder", "patch_grid", "patchify", "unpatchify",
    "sincos_1d", "sincos_2d", "sincos_3d",
    "RotaryEmbedding", "rope_1d", "rope_3d", "rope_axes_dims", "rope_frequencies", "apply_rope",
    # modulation
    "MODULATIONS", "Modulation", "AdaLN", "AdaLNSingle", "AdaLNSingleTable", "NoModulation",
    "make_block_modulation", "modulate", "gate", "append_condition_tokens", "strip_condition_tokens",
    # blocks
    "BLOCK_KINDS", "MLP", "DiTBlock", "attention_pattern", "block_flops", "spatial_attention", "temporal_attention",
    "full_attention",
    # Latte
    "VARIANTS", "TEMPORAL_POSITIONS", "LatteConfig", "Latte", "ImageDiT", "latte_flops",
]
