"""Condition encoders (floor 6): what turns a caption, an image or a trajectory into the tokens a denoiser attends to.

- :mod:`~minivid.conditioning.text`: the T5 text encoder (a small random T5 with ByT5's byte tokenizer by default,
  a local checkpoint by name or path), returning ``(tokens, key_padding_mask)`` and the empty caption's encoding
  for classifier-free guidance.
- :mod:`~minivid.conditioning.image`: Reducio's image condition (R4): OpenCLIP patch tokens of the content frame
  V_{T/2} (a small random ViT by default, or a local open_clip checkpoint), the VAE's latent mean of frame (T-1)//2,
  and e_img = MLP(e_s) ⊕ MLP(e_c); ``condition_tokens`` makes e = [e_img, e_p].
- :mod:`~minivid.conditioning.trajectory`: Tora's trajectory input (points or keyframes, JSON or text, several
  objects) and maps (T4-T5): displacements, the Gaussian blur, the Middlebury colour wheel, dense MiniSprites flow.
- :mod:`~minivid.conditioning.motion`: Tora's trajectory extractor (T6) and motion-guidance fusers (T7), handed to a
  transformer through its fuser hook.
"""

from .image import (ContentImageEncoder, ImageCondition, SemanticImageEncoder, SemanticImageEncoderConfig,
                    condition_tokens, middle_frame, middle_frame_index, resample_tokens, token_grid)
from .motion import (FUSERS, AdaNormFuser, ConcatFuser, CrossAttentionFuser, MotionGuidance, MotionGuidanceConfig,
                     TrajectoryExtractor, make_fuser)
from .text import TextEncoder, TextEncoderConfig
from .trajectory import (Trajectories, blur_for_size, blur_maps, flow_to_rgb, gaussian_kernel, load_trajectories,
                         maps_to_video, motion_video, sample_sparse, save_trajectories, sprite_flow, trajectory_maps)

__all__ = ["TextEncoder", "TextEncoderConfig", "SemanticImageEncoder", "SemanticImageEncoderConfig",
           "ContentImageEncoder", "ImageCondition", "condition_tokens", "middle_frame", "middle_frame_index",
           "resample_tokens", "token_grid", "FUSERS", "AdaNormFuser", "ConcatFuser", "CrossAttentionFuser",
           "MotionGuidance", "MotionGuidanceConfig", "TrajectoryExtractor", "make_fuser", "Trajectories", "blur_for_size",
           "blur_maps", "flow_to_rgb", "gaussian_kernel", "load_trajectories", "maps_to_video", "motion_video",
           "sample_sparse", "save_trajectories", "sprite_flow", "trajectory_maps"]
