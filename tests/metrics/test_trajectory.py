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
