"""The sprite check (minivid.metrics.sprites): real clips pass, each broken rule fails."""

import numpy as np
import pytest
import torch

from minivid.data import MiniSprites, Sprite, render_scene
from minivid.metrics import centre_jitter, sprite_check, sprite_check_rate, sprite_scores


def _one_sprite_clip(centers, color="red", T=8, size=32):
    return render_scene((0.3, 0.3, 0.3), [Sprite("circle", color, 3.0, np.asarray(centers, float))],
                        height=size, width=size)


def test_sprite_check_real_clips_pass_and_broken_ones_fail():
    d = MiniSprites(num_videos=60, size=32, num_frames=8, split="test", seed=0)
    clips = torch.stack([d[i]["video"] for i in range(60)])
    assert sprite_check_rate(clips) >= 0.8  # the ceiling: about 90% (occlusions fail)
    noise = torch.rand(20, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert sprite_check_rate(noise) == 0.0
    cut = torch.cat([clips[:-1, :, :4], clips[1:, :, 4:]], dim=2)  # a cut mid-clip: colours change
    assert sprite_check_rate(cut) < 0.1


def test_sprite_check_each_rule():
    smooth = [(8 + 1.5 * t, 16) for t in range(8)]
    assert sprite_check(_one_sprite_clip(smooth)) == {"passed": True, "colors": [0], "reason": ""}
    jump = [(8 + 1.5 * t + (10 if t == 4 else 0), 16) for t in range(8)]  # one frame 10 px off the path
    r = sprite_check(_one_sprite_clip(jump))
    assert not r["passed"] and ("velocity" in r["reason"] or "jumps" in r["reason"])
    # the same motion drawn in another colour in the last frame: a colour shown in some frames only
    a, b = _one_sprite_clip(smooth), _one_sprite_clip(smooth, color="green")
    mixed = torch.cat([a[:, :7], b[:, 7:]], dim=1)
    r = sprite_check(mixed)
    assert not r["passed"] and "some frames only" in r["reason"]
    empty = torch.full((3, 8, 32, 32), -0.4)
    assert sprite_check(empty)["reason"] == "0 sprite colours (allowed 1-3)"
    with pytest.raises(ValueError, match="shape"):
        sprite_check(torch.zeros(8, 32, 32))
    with pytest.raises(ValueError, match="max_sprites"):
        sprite_check(empty, max_sprites=0)


def test_centre_jitter_is_zero_for_straight_paths_and_grows_with_zigzag():
    straight = torch.stack([_one_sprite_clip([(8 + 1.5 * t, 10 + 1.0 * t) for t in range(8)])])
    zigzag = torch.stack([_one_sprite_clip([(8 + 1.5 * t, 16 + (1.5 if t % 2 else -1.5)) for t in range(8)])])
    assert centre_jitter(straight) < 0.1  # sub-pixel tracking of an exactly straight path
    # second differences of +-1.5 px alternating rows: |d2| = 6 px in y (the tracker recovers most of it)
    assert 4.5 < centre_jitter(zigzag) < 6.5
    assert np.isnan(centre_jitter(torch.full((1, 3, 8, 32, 32), -0.4)))


def test_sprite_scores_counts_failures_by_rule():
    smooth = _one_sprite_clip([(8 + 1.5 * t, 16) for t in range(8)])
    green = _one_sprite_clip([(8 + 1.5 * t, 16) for t in range(8)], color="green")
    changes = torch.cat([smooth[:, :4], green[:, 4:]], dim=1)
    empty = torch.full((3, 8, 32, 32), -0.4)
    s = sprite_scores(torch.stack([smooth, smooth, changes, empty]))
    assert s["sprite_check"] == 0.5 and s["clips"] == 4
    assert s["failures"] == {"colours change": 1, "sprite count": 1}
