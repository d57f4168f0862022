"""The tiny full-system config the system and run tests share (not a test module)."""

from __future__ import annotations

from minivid.conditioning import TextEncoderConfig
from minivid.conditioning.motion import MotionGuidanceConfig
from minivid.pipeline.system import SystemConfig
from minivid.transformers import ExpertTransformerConfig

C, T, HW = 4, 4, 4


def tiny(motion: bool = True, zero_init: bool = False) -> SystemConfig:
    return SystemConfig(
        text=TextEncoderConfig(max_length=24, pad_to_max_length=True, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                               num_heads=2),
        transformer=ExpertTransformerConfig(in_channels=C + 1, out_channels=C, patch_size=2, heads=2, head_dim=16,
                                            depth=2, time_embed_dim=32, text_dim=16, max_text_len=24, positional="rope",
                                            rope_grid="slice", base_size=(HW, HW), zero_init=zero_init),
        motion=MotionGuidanceConfig(motion_channels=2, dim=32, depth=2, patch_size=2, motion_dim=16, heads=2)
        if motion else None)
