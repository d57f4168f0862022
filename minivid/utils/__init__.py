"""Utilities shared by notebooks, the CLI and the data sets: video I/O (``minivid.utils.video``), atomic
file writes (``minivid.utils.files``) and checkpoints (``minivid.utils.checkpoint``)."""

from .checkpoint import load_weights, save_json, save_state, save_weights
from .files import atomic_path
from .video import (
    count_frames,
    frame_grid,
    iter_frames,
    read_video,
    save_frame_grid,
    show_videos,
    to_uint8_frames,
    write_video,
)

__all__ = [
    "atomic_path",
    "count_frames",
    "frame_grid",
    "iter_frames",
    "load_weights",
    "read_video",
    "save_frame_grid",
    "save_json",
    "save_state",
    "save_weights",
    "show_videos",
    "to_uint8_frames",
    "write_video",
]
