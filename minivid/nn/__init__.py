"""Layers every model in minivid shares, each written once, and the model contract.

- :mod:`~minivid.nn.model`: ``Model`` / ``ModelConfig`` (built from one config dataclass) and
  ``save_model`` / ``load_model`` (``config.json`` + ``model.safetensors``).
- :mod:`~minivid.nn.attention`: multi-head attention with a backend switch ("sdpa" | "math" | "triton" |
  "auto": the Triton kernel on CUDA where it applies, SDPA elsewhere), key-padding masks and QK-norm (K1), and
  the video attention patterns (spatial, temporal, full; L2).
- :mod:`~minivid.nn.embeddings`: the sinusoid (timestep embeddings; sin-cos position tables in 1D/2D/3D),
  class-label checks. :mod:`~minivid.nn.rope`: rotary embeddings in 1D (L6) and 3D (C3).
- :mod:`~minivid.nn.modulation`: AdaLN, S-AdaLN, adaLN-Zero, adaLN-single, condition tokens (L5).
- :mod:`~minivid.nn.mlp`: the transformer MLP. :mod:`~minivid.nn.blocks`: the DiT block family (L2, L3).
- :mod:`~minivid.nn.resblock`: the U-Nets' residual block with AdaGN, 2D or (2+1)D.
- :mod:`~minivid.nn.triplane`: PVDM's triplane latent as a tensor layout (shape checks, packing; P1), shared by
  the autoencoder that makes it, the U-Net that denoises it and the pipeline between them.
"""

from .attention import (BACKENDS, Attention, attention, full_attention, resolve_backend, set_attention_backend,
                        spatial_attention, temporal_attention)
from .blocks import BLOCK_KINDS, DiTBlock, attention_pattern, block_flops
from .embeddings import (TimestepEmbedding, check_labels, sincos_1d, sincos_2d, sincos_3d, sincos_axes, sinusoid,
                         timestep_embedding)
from .mlp import MLP
from .model import Model, ModelConfig, load_model, model_classes, read_model_config, save_model
from .modulation import (BLOCK_MODULATIONS, MODULATIONS, AdaLN, AdaLNSingle, AdaLNSingleTable, Modulation,
                         NoModulation, append_condition_tokens, check_modulation, gate, make_block_modulation,
                         modulate, strip_condition_tokens)
from .resblock import AdaGNResBlock
from .rope import RotaryEmbedding, apply_rope, rope_1d, rope_3d, rope_axes_dims, rope_frequencies
from .triplane import Planes, check_planes, pack_planes, plane_shapes, unpack_planes

__all__ = [
    # the model contract
    "Model", "ModelConfig", "save_model", "load_model", "read_model_config", "model_classes",
    # attention
    "BACKENDS", "Attention", "attention", "resolve_backend", "set_attention_backend", "spatial_attention",
    "temporal_attention", "full_attention",
    # sinusoids and RoPE
    "sinusoid", "timestep_embedding", "TimestepEmbedding", "sincos_1d", "sincos_2d", "sincos_3d", "sincos_axes",
    "check_labels", "RotaryEmbedding", "rope_1d", "rope_3d", "rope_axes_dims", "rope_frequencies", "apply_rope",
    # modulation
    "MODULATIONS", "BLOCK_MODULATIONS", "Modulation", "AdaLN", "AdaLNSingle", "AdaLNSingleTable", "NoModulation",
    "make_block_modulation", "check_modulation", "modulate", "gate", "append_condition_tokens",
    "strip_condition_tokens",
    # blocks
    "MLP", "BLOCK_KINDS", "DiTBlock", "attention_pattern", "block_flops", "AdaGNResBlock",
    # the triplane layout
    "Planes", "check_planes", "pack_planes", "unpack_planes", "plane_shapes",
]
