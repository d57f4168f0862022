"""Every video metric of minivid in one place.

- reconstruction: :func:`psnr`, :func:`ssim` (per frame, averaged; ``image``);
- distribution: :func:`fvd` with the real Kinetics-400 I3D (:func:`i3d_logits`, :func:`frechet_distance`;
  ``fvd``, ``i3d``), the protocol documented in :mod:`minivid.metrics.fvd`;
- MiniSprites, through its tracker: the sprite check (:func:`sprite_check`, :func:`sprite_scores`; ``sprites``),
  trajectory error (T9, :func:`trajectory_error`, :func:`path_errors`; ``trajectory``) and caption attribute
  accuracy (:func:`caption_accuracy`; ``captions``);
- long videos: how well clips join (P9, :func:`clip_join_distances`; ``video``).

``python -m minivid eval`` computes them for a folder of videos or a zoo checkpoint (:mod:`minivid.metrics.evaluate`).
"""

from .captions import caption_accuracy, caption_scores, parse_caption
from .fvd import FVDResult, frechet_distance, frechet_distance_from_stats, fvd, i3d_logits
from .i3d import I3D, load_i3d
from .image import psnr, ssim
from .sprites import centre_jitter, sprite_check, sprite_check_rate, sprite_scores
from .trajectory import generated_paths, path_errors, trajectory_error
from .video import clip_join_distances

__all__ = [
    "psnr", "ssim",
    "fvd", "i3d_logits", "frechet_distance", "frechet_distance_from_stats", "FVDResult", "I3D", "load_i3d",
    "sprite_check", "sprite_check_rate", "sprite_scores", "centre_jitter",
    "trajectory_error", "path_errors", "generated_paths",
    "caption_accuracy", "caption_scores", "parse_caption",
    "clip_join_distances",
]
