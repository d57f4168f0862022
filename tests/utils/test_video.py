"""Video I/O: value mapping, mp4 round trips (lossy h264, so with a measured tolerance), atomic
writes, and the PNG frame grid (lossless, so exact)."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from minivid.data import MiniSprites
from minivid.utils import (count_frames, frame_grid, read_video, save_frame_grid, show_videos,
                           to_uint8_frames, write_video)


def test_to_uint8_frames_maps_and_transposes():
    v = torch.tensor([-1.0, -0.5, 0.0, 1.0, 2.0, -3.0]).reshape(1, 6, 1, 1).expand(3, 6, 2, 4)  # (3, T, H, W)
    f = to_uint8_frames(v)
    assert f.shape == (6, 2, 4, 3) and f.dtype == np.uint8
    assert f[:, 0, 0, 0].tolist() == [0, 64, 128, 255, 255, 0]  # round((x + 1) * 127.5), clipped
    assert np.array_equal(to_uint8_frames(v.permute(1, 2, 3, 0).numpy()), f)  # (T, H, W, 3) input
    assert np.array_equal(to_uint8_frames(f), f)  # uint8 passes through
    three = torch.rand(3, 5, 7, 3) * 2 - 1  # ambiguous: (3, T, H, W=3) unless told otherwise
    assert to_uint8_frames(three).shape == (5, 7, 3, 3)
    assert to_uint8_frames(three, layout="thwc").shape == (3, 5, 7, 3)
    with pytest.raises(ValueError, match="shape"):
        to_uint8_frames(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        to_uint8_frames(torch.zeros(2, 4, 4, 4))


def test_mp4_round_trip(tmp_path):
    """h264 with 4:2:0 chroma is lossy: measured mean absolute error about 0.015 (in [-1, 1] units,
    about 2 grey levels of 255) on MiniSprites clips, mostly at the sharp colour edges."""
    video = MiniSprites(size=64, num_frames=12)[0]["video"]
    path = write_video(tmp_path / "sub" / "clip.mp4", video, fps=8)
    assert path.exists() and count_frames(path) == 12
    back = read_video(path)
    assert back.shape == video.shape and back.dtype == torch.float32
    assert back.min() >= -1 and back.max() <= 1
    mae = (back - video).abs().mean().item()
    assert mae < 0.03, mae
    assert (back - video).abs().mean(dim=(0, 2, 3)).max() < 0.05  # every frame, in order
    assert read_video(path, max_frames=5).shape[1] == 5
    assert os.listdir(tmp_path / "sub") == ["clip.mp4"]  # no temporary file left behind
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)


def test_channels_last_input_and_odd_sizes_are_padded(tmp_path):
    video = MiniSprites(size=64, num_frames=4)[1]["video"][:, :, :33, :35]  # (3, T, 33, 35)
    write_video(tmp_path / "odd.mp4", video.permute(1, 2, 3, 0))  # given as (T, H, W, 3)
    back = read_video(tmp_path / "odd.mp4")
    assert back.shape == (3, 4, 34, 36)  # yuv420p needs even sizes: last row/column repeated
    assert (back[:, :, :33, :35] - video).abs().mean() < 0.03  # measured about 0.01
    assert (back[:, :, 33, :35] - video[:, :, 32]).abs().mean() < 0.03
    assert (back[:, :, :33, 35] - video[:, :, :, 34]).abs().mean() < 0.03


def test_failed_write_leaves_nothing_and_overwrite_replaces(tmp_path):
    target = tmp_path / "v.mp4"
    write_video(target, torch.zeros(3, 2, 16, 16))
    before = read_video(target)
    with pytest.raises(ValueError):
        write_video(target, torch.zeros(5, 16, 16))  # not a video
    assert os.listdir(tmp_path) == ["v.mp4"] and torch.equal(read_video(target), before)
    write_video(target, torch.ones(3, 3, 16, 16))
    assert read_video(target).shape[1] == 3 and read_video(target).mean() > 0.95


def test_read_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    with pytest.raises(RuntimeError, match="broken.mp4"):
        read_video(bad)
    with pytest.raises(RuntimeError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")


def test_frame_grid_layout_and_subsampling(tmp_path):
    T, H, W = 10, 6, 8
    frames = torch.arange(T, dtype=torch.float32) / (T - 1) * 2 - 1  # frame t has grey level t
    videos = frames.reshape(1, 1, T, 1, 1).expand(2, 3, T, H, W).clone()  # (B, 3, T, H, W)
    videos[1] = -videos[1]
    grid = frame_grid(videos, nrow=4, padding=2)
    assert grid.shape == (2 * (H + 2) + 2, 4 * (W + 2) + 2, 3)
    levels = [int(grid[2 + H // 2, 2 + c * (W + 2) + W // 2, 0]) for c in range(4)]
    expected = to_uint8_frames(videos[0])[[0, 3, 6, 9], 0, 0, 0]  # first and last frame kept
    assert levels == expected.tolist()
    assert (grid[:2] == 255).all() and (grid[:, :2] == 255).all()  # white padding
    path = save_frame_grid(tmp_path / "g.png", [videos[0], videos[1]], nrow=4, scale=2)
    png = np.asarray(Image.open(path))
    assert png.shape == (2 * (2 * H + 2) + 2, 4 * (2 * W + 2) + 2, 3)
    assert np.array_equal(png[2:2 + 2 * H, 2:2 + 2 * W], to_uint8_frames(videos[0])[0].repeat(2, 0).repeat(2, 1))
    assert frame_grid(videos[0], max_frames=16).shape[1] == T * (W + 2) + 2  # all 10 frames
    with pytest.raises(ValueError, match="same frame size"):
        frame_grid([videos[0], videos[0][:, :, :4]])


def test_show_videos_returns_html():
    html = show_videos(torch.zeros(2, 3, 4, 16, 16), fps=4, titles=["a", "b"], return_html=True)
    assert html.count("<video") == 2 and "a" in html


def test_show_frames_displays_once_or_returns_the_figure():
    """show=True draws the grid and returns None (a returned figure would be drawn again as a notebook cell's
    result); show=False returns the figure, whose image is the frame grid enlarged to at least 96 px."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minivid.utils import show_frames

    videos = [torch.rand(3, 4, 16, 16) * 2 - 1 for _ in range(2)]
    assert show_frames(videos, titles=["a", "b"]) is None
    fig = show_frames(videos, titles=["a", "b"], show=False)
    image = fig.axes[0].get_images()[0].get_array()
    grid = frame_grid(videos, max_frames=8, padding=2, scale=6)
    assert image.shape == grid.shape and np.array_equal(np.asarray(image), grid)
    plt.close(fig)
