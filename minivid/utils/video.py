"""Video I/O shared by every notebook, the CLI and the data sets.

Conventions: a video is a float tensor or array in [-1, 1], either channels-first ``(3, T, H, W)``
(the library's layout, a batch element of ``(B, C, T, H, W)``) or channels-last ``(T, H, W, 3)`` (what
mediapy and image files use). ``layout="auto"`` picks channels-first when the first axis has size 3,
otherwise channels-last, so an ambiguous ``(3, H, W, 3)`` array is read as channels-first; pass
``layout="thwc"`` for a 3-frame channels-last clip. ``uint8`` input is taken as already in [0, 255].

Writing goes through mediapy with the ffmpeg binary shipped by ``imageio-ffmpeg`` (set lazily, once);
reading uses PyAV, because mediapy's reader passes a ``-vsync`` flag that this ffmpeg (9.x) removed.
Every write is atomic: the file is written next to its destination under a temporary name and moved
into place with ``os.replace``, so an interrupted run never leaves a half-written video or PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .files import atomic_path

_FFMPEG_SET = False


def _ensure_ffmpeg() -> None:
    """Point mediapy at imageio-ffmpeg's binary (once; there may be no system ffmpeg)."""
    global _FFMPEG_SET
    if not _FFMPEG_SET:
        import imageio_ffmpeg
        import mediapy

        mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())
        _FFMPEG_SET = True


def to_uint8_frames(video, layout: str = "auto") -> np.ndarray:
    """A video in [-1, 1] ((3, T, H, W) or (T, H, W, 3)) -> uint8 frames (T, H, W, 3).

    x in [-1, 1] maps to round((x + 1) / 2 * 255), clipped to [0, 255].
    """
    v = video.detach().cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
    if v.ndim != 4:
        raise ValueError(f"expected a video of shape (3, T, H, W) or (T, H, W, 3), got {v.shape}")
    if layout not in ("auto", "cthw", "thwc"):
        raise ValueError(f"layout={layout!r} is invalid: expected 'auto', 'cthw' or 'thwc'")
    if layout == "cthw" or (layout == "auto" and v.shape[0] == 3):
        v = np.moveaxis(v, 0, -1)  # (3, T, H, W) -> (T, H, W, 3)
    if v.shape[-1] != 3:
        raise ValueError(f"expected 3 colour channels in a (3, T, H, W) or (T, H, W, 3) video, "
                         f"got shape {video.shape}")
    if v.dtype == np.uint8:
        return np.ascontiguousarray(v)
    v = (v.astype(np.float32) + 1.0) * 127.5
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def write_video(path, video, fps: float = 8, qp: int | None = None, layout: str = "auto") -> Path:
    """Write a video in [-1, 1] ((3, T, H, W) or (T, H, W, 3)) as an h264 mp4 (yuv420p); returns path.

    yuv420p stores colour at half resolution and so needs even H and W: an odd side is padded by
    repeating the last row/column (the file is then one pixel larger). ``qp`` is h264's quantiser
    (lower = better; mediapy's default, 20 for small videos, when None).
    """
    import mediapy

    _ensure_ffmpeg()
    frames = to_uint8_frames(video, layout)  # (T, H, W, 3)
    T, H, W, _ = frames.shape
    if H % 2 or W % 2:
        frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
    path = Path(path)
    with atomic_path(path) as tmp:
        mediapy.write_video(tmp, frames, fps=fps, codec="h264", qp=qp, encoded_format="yuv420p")
    return path


def iter_frames(path) -> Iterator[np.ndarray]:
    """Decode a video file with PyAV, yielding uint8 RGB frames (H, W, 3) one by one.

    A file that cannot be opened or decoded raises ``RuntimeError`` naming it.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise RuntimeError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise RuntimeError(f"cannot decode video file {path}: {e}") from e


def count_frames(path) -> int:
    """Number of frames: from the container header (cheap), else duration x frame rate, else by
    decoding the whole file. Estimates may be off by a frame; readers pad with the last frame."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames > 0:
                return int(stream.frames)
            rate = stream.average_rate or stream.guessed_rate
            if rate and stream.duration and stream.time_base:
                return max(1, int(round(float(stream.duration * stream.time_base * rate))))
            if rate and container.duration:
                return max(1, int(round(container.duration / av.time_base * float(rate))))
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as e:
        raise RuntimeError(f"cannot open video file {path}: {e}") from e
    return sum(1 for _ in iter_frames(path))


def read_video(path, max_frames: int | None = None) -> torch.Tensor:
    """Read a video file into a float32 tensor (3, T, H, W) in [-1, 1] (PyAV decoder)."""
    frames = []
    for f in iter_frames(path):
        frames.append(f)
        if max_frames is not None and len(frames) >= max_frames:
            break
    if not frames:
        raise RuntimeError(f"video file {path} has no decodable frames")
    x = torch.from_numpy(np.stack(frames))  # (T, H, W, 3) uint8
    return x.permute(3, 0, 1, 2).float().div(127.5).sub(1.0)  # (3, T, H, W)


def _as_video_list(videos, layout: str) -> list[np.ndarray]:
    """A video, a batch (B, 3, T, H, W) or a list of videos -> list of uint8 (T, H, W, 3)."""
    if isinstance(videos, (torch.Tensor, np.ndarray)) and videos.ndim == 5:
        videos = list(videos)
    elif isinstance(videos, (torch.Tensor, np.ndarray)):
        videos = [videos]
    return [to_uint8_frames(v, layout) for v in videos]


def frame_grid(videos, nrow: int | None = None, max_frames: int = 16, padding: int = 2,
               scale: int = 1, layout: str = "auto") -> np.ndarray:
    """A uint8 image (rows = videos, columns = frames) separated by ``padding`` white pixels.

    ``nrow`` is the number of frames per row (as in torchvision's ``make_grid``); by default all
    frames up to ``max_frames``. Longer videos are subsampled evenly, always keeping the first and
    last frame. ``scale`` enlarges each frame by pixel repetition (for tiny 32 px frames).
    """
    vids = _as_video_list(videos, layout)
    if not vids:
        raise ValueError("frame_grid needs at least one video")
    H, W = vids[0].shape[1:3]
    if any(v.shape[1:3] != (H, W) for v in vids):
        raise ValueError(f"all videos need the same frame size, got {[v.shape[1:3] for v in vids]}")
    cols = nrow if nrow is not None else min(max(len(v) for v in vids), max_frames)
    if cols < 1:
        raise ValueError(f"nrow={nrow!r} is invalid: expected an int >= 1")
    h, w = H * scale, W * scale
    grid = np.full((len(vids) * (h + padding) + padding, cols * (w + padding) + padding, 3), 255,
                   np.uint8)
    for r, v in enumerate(vids):
        idx = np.unique(np.rint(np.linspace(0, len(v) - 1, min(cols, len(v)))).astype(int))
        for c, t in enumerate(idx):
            frame = v[t].repeat(scale, 0).repeat(scale, 1)
            y0, x0 = padding + r * (h + padding), padding + c * (w + padding)
            grid[y0:y0 + h, x0:x0 + w] = frame
    return grid


def save_frame_grid(path, videos, nrow: int | None = None, max_frames: int = 16, padding: int = 2,
                    scale: int = 1, layout: str = "auto") -> Path:
    """Write ``frame_grid(videos, ...)`` as a PNG (atomically, with PIL); returns the path."""
    from PIL import Image

    grid = frame_grid(videos, nrow, max_frames, padding, scale, layout)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return path


def show_frames(videos, titles: Sequence[str] | None = None, max_frames: int = 8, scale: int | None = None,
                layout: str = "auto", title: str | None = None, show: bool = True):
    """Show videos in a notebook as a static frame grid (rows = videos, columns = frames), which renders everywhere
    (GitHub, nbviewer, PDF), unlike mp4 data URIs. Frames are enlarged by pixel repetition to at least 96 px
    (``scale``). ``titles`` label the rows. ``show=True`` displays the grid and returns None (a returned figure
    would be drawn a second time as the cell's result); ``show=False`` returns the matplotlib figure undisplayed
    (to save it or draw on it)."""
    import matplotlib.pyplot as plt

    vids = _as_video_list(videos, layout)
    if not vids:
        raise ValueError("show_frames needs at least one video")
    h = vids[0].shape[1]
    scale = scale or max(1, -(-96 // h))
    grid = frame_grid(vids, max_frames=max_frames, padding=2, scale=scale)
    dpi = 100
    fig = plt.figure(figsize=(grid.shape[1] / dpi + (2.2 if titles else 0.2), grid.shape[0] / dpi + 0.4), dpi=dpi)
    ax = fig.add_axes([(2.2 if titles else 0.1) / fig.get_figwidth(), 0.1 / fig.get_figheight(),
                       grid.shape[1] / dpi / fig.get_figwidth(), grid.shape[0] / dpi / fig.get_figheight()])
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    row = h * scale + 2
    if titles:
        ax.set_yticks([2 + row * i + row / 2 for i in range(len(vids))], list(titles)[:len(vids)], fontsize=9)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    if not show:
        return fig
    plt.show()
    return None


def show_videos(videos, fps: float = 8, titles: Sequence[str] | None = None, layout: str = "auto",
                **kwargs):
    """Show videos in a notebook: thin wrapper over ``mediapy.show_videos`` taking [-1, 1] tensors.

    ``videos``: one video, a batch (B, 3, T, H, W) or a list. Extra keyword arguments go to mediapy
    (e.g. ``width=128``, ``columns=4``, ``return_html=True``).
    """
    import mediapy

    _ensure_ffmpeg()
    vids = _as_video_list(videos, layout)
    return mediapy.show_videos(vids, titles=titles, fps=fps, **kwargs)
