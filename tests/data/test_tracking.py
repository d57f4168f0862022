"""track_sprites against ground truth: hand-drawn pixels, MiniSprites' own centres (the exact positions the
generator placed, scored with minivid.metrics.trajectory_error), and known shifts."""

import numpy as np
import pytest
import torch

from minivid.data import COLOR_NAMES, MiniSprites, Sprite, random_background, render_scene, track_sprites
from minivid.metrics import trajectory_error

ORANGE = COLOR_NAMES.index("orange")


def _flat_video(T=3, H=32, W=40, gray=0.3):
    return torch.full((3, T, H, W), gray * 2 - 1)


@pytest.mark.parametrize("subpixel", [True, False])
def test_hand_drawn_block_centre_and_absent_frames(subpixel):
    v = _flat_video()
    v[:, 0, 10:20, 20:30] = torch.tensor([1.0, 0.0, -1.0])[:, None, None]  # orange, rows 10-19, cols 20-29
    v[:, 2, 3:6, 0:4] = torch.tensor([1.0, 0.0, -1.0])[:, None, None]  # rows 3-5, cols 0-3
    centers, colors = track_sprites(v, subpixel=subpixel)
    assert colors.tolist() == [ORANGE]
    assert torch.allclose(centers[0, 0], torch.tensor([24.5, 14.5]))  # x = mean column, y = mean row
    assert torch.isnan(centers[0, 1]).all()  # absent in frame 1
    assert torch.allclose(centers[0, 2], torch.tensor([1.5, 4.0]))


def _free_frames(scene, margin=1.5):
    """(K, T) True where sprite k's bounding disc is clear of every other sprite's (no occlusion)."""
    sp = scene.sprites
    free = np.ones((len(sp), len(sp[0].centers)), bool)
    for a in range(len(sp)):
        for b in range(len(sp)):
            if a != b:
                d = np.linalg.norm(sp[a].centers - sp[b].centers, axis=1)
                free[a] &= d > sp[a].bounding_radius + sp[b].bounding_radius + margin
    return free


@pytest.mark.parametrize("size, T", [(32, 8), (64, 16)])
def test_tracks_minisprites_ground_truth(size, T):
    """Measured (test split, 40 videos): mean error over occlusion-free frames about 0.03 px at 32 px
    and 0.02 px at 64 px (max about 0.13 px); over all frames, occluded ones included, 0.1-0.2 px mean."""
    ds = MiniSprites(size=size, num_frames=T, split="test")
    free_err, all_err, lost = [], [], 0
    for i in range(40):
        item, scene = ds[i], ds.scene(i)
        pred, colors = track_sprites(item["video"], item["labels"]["color"])
        assert pred.shape == item["centers"].shape and colors.tolist() == item["labels"]["color"].tolist()
        k = len(scene.sprites)
        assert torch.isnan(pred[k:]).all()  # padding rows stay NaN
        dist = (pred[:k] - item["centers"][:k]).norm(dim=-1).numpy()  # (k, T)
        free = _free_frames(scene)
        assert np.isfinite(dist[free]).all()  # a fully visible sprite is always found
        free_err.append(dist[free])
        all_err.append(dist[np.isfinite(dist)])
        lost += int((~np.isfinite(dist)).sum())
        assert trajectory_error(pred, item["centers"]) == pytest.approx(float(np.nanmean(dist)), rel=1e-5)
    free_err, all_err = np.concatenate(free_err), np.concatenate(all_err)
    assert free_err.mean() < 0.05 and free_err.max() < 0.25
    assert all_err.mean() < 0.5  # occlusion biases the centroid of the visible part
    assert lost <= 0.05 * (len(all_err) + lost)  # frames where a sprite is hidden


def test_detects_the_colours_present():
    ds = MiniSprites(size=32, num_frames=8, split="test")
    missed = 0
    for i in range(60):
        item = ds[i]
        true = set(item["labels"]["color"][item["sprite_mask"]].tolist())
        _, found = track_sprites(item["video"])
        assert set(found.tolist()) <= true, "never reports a colour that is not there"
        assert found.tolist() == sorted(found.tolist())  # palette order
        missed += len(true - set(found.tolist()))  # only a sprite hidden most of the clip is missed
    assert missed <= 2


def test_integer_shift_moves_the_centre_by_exactly_k():
    s = Sprite("triangle", "cyan", 5.0, [[20.3, 14.6], [22.0, 15.2]])
    v = render_scene([0.25, 0.2, 0.3], [s], 40, 48)  # flat background: shifting is exact
    base, _ = track_sprites(v, ["cyan"])
    for kx, ky in [(3, 0), (0, -4), (7, 5)]:
        moved, _ = track_sprites(torch.roll(v, shifts=(ky, kx), dims=(2, 3)), ["cyan"])
        assert torch.allclose(moved - base, torch.tensor([float(kx), float(ky)]), atol=1e-4)


def test_subpixel_shift_on_a_varied_background():
    bg = random_background(np.random.default_rng(5), 64, 64)
    c = np.array([[25.0, 30.0], [40.0, 22.0]])
    for shape in ("circle", "square", "diamond", "triangle"):
        for shift in ([0.3, 0.0], [2.0, -1.7], [-4.45, 3.2]):
            a, _ = track_sprites(render_scene(bg, [Sprite(shape, "green", 6.0, c)]), ["green"])
            b, _ = track_sprites(render_scene(bg, [Sprite(shape, "green", 6.0, c + shift)]), ["green"])
            assert torch.allclose(b - a, torch.tensor(shift, dtype=torch.float32), atol=0.1)
            assert torch.allclose(a[0], torch.tensor(c, dtype=torch.float32), atol=0.1)


def test_mixed_edge_pixels_are_not_a_third_sprite():
    """Where red and yellow meet, half-and-half pixels are (1, 0.5, 0): exactly orange."""
    sprites = [Sprite("circle", "red", 7.0, [[24.0, 24.0]]), Sprite("square", "yellow", 6.0, [[30.0, 26.0]]),
               Sprite("circle", "orange", 5.0, [[50.0, 50.0]])]
    v = render_scene([0.2, 0.25, 0.3], sprites, 64, 64)
    pred, _ = track_sprites(v, ["orange"])
    assert torch.allclose(pred[0, 0], torch.tensor([50.0, 50.0]), atol=0.05)
    _, found = track_sprites(render_scene([0.2, 0.25, 0.3], sprites[:2], 64, 64))
    assert found.tolist() == [COLOR_NAMES.index("red"), COLOR_NAMES.index("yellow")]


def test_robust_to_noise_like_a_generated_sample():
    """Gaussian noise of std 0.1 (in [-1, 1] units) barely changes the estimate (~0.03 px mean)."""
    ds = MiniSprites(size=64, num_frames=8, num_sprites=1, split="test")
    g = torch.Generator().manual_seed(0)
    errs = []
    for i in range(10):
        item = ds[i]
        noisy = (item["video"] + 0.1 * torch.randn(item["video"].shape, generator=g)).clamp(-1, 1)
        pred, _ = track_sprites(noisy, item["labels"]["color"])
        errs.append(trajectory_error(pred, item["centers"]))
    assert np.mean(errs) < 0.1


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        track_sprites(torch.zeros(4, 2, 8, 8))
    with pytest.raises(ValueError, match="palette"):
        track_sprites(torch.zeros(3, 2, 8, 8), ["teal"])
    with pytest.raises(ValueError, match="tau"):
        track_sprites(torch.zeros(3, 2, 8, 8), tau=0.6)


# ---------------------------------------------------------------- the sprite check (the zoo's denoiser score)
