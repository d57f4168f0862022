"""Data: MiniSprites (procedural videos with captions and exact sprite centres), the sprite tracker that recovers
the centres of generated samples (for :func:`minivid.metrics.trajectory_error`), and VideoFolder for real clips
(UCF-101 layout), and C6's mixed image-video / multi-resolution / progressive batching (``mixed``).
"""

from .minisprites import (
    BACKGROUND_MAX,
    COLOR_NAMES,
    DIRECTIONS,
    MOTIONS,
    PALETTE,
    SHAPES,
    MiniSprites,
    Scene,
    Sprite,
    make_caption,
    random_background,
    render_scene,
    sample_trajectory,
)
from .mixed import ProgressiveStages, ResolutionBuckets, Stage, pack_clips
from .tracking import track_sprites
from .video_folder import VideoFolder

__all__ = [
    "BACKGROUND_MAX",
    "COLOR_NAMES",
    "DIRECTIONS",
    "MOTIONS",
    "PALETTE",
    "SHAPES",
    "MiniSprites",
    "ProgressiveStages",
    "ResolutionBuckets",
    "Scene",
    "Sprite",
    "Stage",
    "VideoFolder",
    "make_caption",
    "pack_clips",
    "random_background",
    "render_scene",
    "sample_trajectory",
    "track_sprites",
]
