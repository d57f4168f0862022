"""How well the clips of a long video join (P9), on videos whose answer is known."""

import pytest
import torch

from minivid.metrics import clip_join_distances


def test_clip_join_distances():
    """A video whose frames drift smoothly joins well; one whose clips restart does not."""
    t = torch.arange(12).float()
    smooth = (t / 12)[None, None, :, None, None].expand(2, 3, 12, 4, 4).clone()
    smooth[1] += 0.5
    d = clip_join_distances(smooth, 4, torch.Generator().manual_seed(0))
    assert d["join"].shape == (2, 2) and d["within"].shape == (2, 9)
    torch.testing.assert_close(d["join"], torch.full((2, 2), 1 / 12))
    assert d["join_mean"] <= d["random_same_mean"] and d["join_mean"] < d["random_other_mean"]
    restart = ((t % 4) / 4)[None, None, :, None, None].expand(1, 3, 12, 4, 4)
    d = clip_join_distances(restart, 4)
    assert d["join_mean"] > d["random_same_mean"] and "random_other" not in d
    with pytest.raises(ValueError, match="clip_length=5"):
        clip_join_distances(smooth, 5)
