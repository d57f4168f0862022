"""Utilities, the ground floor (they import nothing else from minivid): video I/O (``video``), atomic file writes
(``files``), checkpoints (``checkpoint``), config dataclasses that round-trip through JSON (``config``), argument
checks that name the argument, its value and what is allowed (``validation``), the device and versions a
measurement records (``machine``), and the package's import graph and floors (``imports``, for the layout test
and docs/architecture.md)."""

from .checkpoint import load_weights, save_json, save_state, save_weights
from .config import Config
from .files import atomic_path
from .video import (
    count_frames,
    frame_grid,
    iter_frames,
    read_video,
    save_frame_grid,
    show_frames,
    show_videos,
    to_uint8_frames,
    write_video,
)

__all__ = [
    "Config",
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
    "show_frames",
    "show_videos",
    "to_uint8_frames",
    "write_video",
]
