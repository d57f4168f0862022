"""Trajectory error (T9) against hand-computed distances, with lost and absent entries left out."""

import numpy as np
import pytest
import torch

from minivid.metrics import trajectory_error


def test_trajectory_error_is_the_mean_distance_over_valid_entries():
    true = torch.zeros(2, 4, 2)
    pred = true + torch.tensor([3.0, 4.0])  # distance 5 everywhere
    assert trajectory_error(pred, true) == pytest.approx(5.0)
    pred[0, 1] = float("nan")  # a lost frame is left out ...
    true[1, :2] = float("nan")  # ... and so are absent ground-truth entries
    pred[1, 3] = torch.tensor([0.0, 1.0])
    assert trajectory_error(pred, true) == pytest.approx((5 * 4 + 1) / 5)
    assert np.isnan(trajectory_error(torch.full((1, 2, 2), float("nan")), torch.zeros(1, 2, 2)))
    assert trajectory_error(np.ones((3, 2)), np.zeros((3, 2))) == pytest.approx(2 ** 0.5)
    with pytest.raises(ValueError, match="shape"):
        trajectory_error(torch.zeros(2, 3, 2), torch.zeros(3, 2))


def _clip_on_path(path, size=32):
    from minivid.data import Sprite, random_background, render_scene

    background = random_background(np.random.default_rng(0), size, size)
    video = render_scene(background, [Sprite("circle", "red", radius=3.0, centers=np.asarray(path, float))])
    return video, torch.as_tensor(background, dtype=video.dtype) * 2 - 1


def test_path_errors_skip_the_given_frame_and_count_lost_frames_apart():
    """T9 as Tora scores it: frames 1.. only (frame 0 is given), frames where the tracker loses the sprite counted in
    ``lost`` and left out of the mean, on a rendered sprite asked to be (3, 4) px off its path (5 px)."""
    from minivid.data.minisprites import COLOR_NAMES
    from minivid.metrics import path_errors

    T = 8
    path = np.stack([np.linspace(8, 24, T), np.linspace(10, 20, T)], axis=1)
    video, blank = _clip_on_path(path)
    red = torch.tensor([COLOR_NAMES.index("red")])
    asked = torch.as_tensor(path)[None] + torch.tensor([3.0, 4.0])
    base = path_errors(video[None], asked, red)
    assert base["trajectory_error_px"] == pytest.approx(5.0, abs=0.1) and base["lost"] == 0.0

    moved = asked.clone()
    moved[0, 0] += 10.0  # frame 0 is not scored ...
    assert path_errors(video[None], moved, red)["trajectory_error_px"] == base["trajectory_error_px"]
    from0 = path_errors(video[None], moved, red, from_frame=0)["trajectory_error_px"]
    assert from0 > base["trajectory_error_px"] + 0.5  # ... unless asked: 8 frames, one 10 px further off

    lost = video.clone()
    lost[:, [2, 5, 6]] = blank[:, None]  # the sprite gone from 3 of the 7 scored frames
    r = path_errors(lost[None], asked, red)
    assert r["lost"] == pytest.approx(3 / 7)
    assert r["trajectory_error_px"] == pytest.approx(5.0, abs=0.1)  # the mean of the 4 found frames, not 0 for lost
