"""Tora's trajectory input and maps (T4-T5): exact displacements, the blur's centre, the colour wheel against
torchvision, the dense MiniSprites flow, the input formats and their errors."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from torchvision.utils import flow_to_image

from minivid.conditioning.trajectory import (Trajectories, blur_for_size, blur_maps, flow_to_rgb, gaussian_kernel,
                                             load_trajectories, maps_to_video, motion_video, sample_sparse,
                                             save_trajectories, sprite_flow, trajectory_maps)
from minivid.data import MiniSprites


# ------------------------------------------------------------------------------------------- T4
def test_displacements_equal_the_differences_of_t4_and_frame_zero_is_zero():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(3, 9, 2, generator=g) * 31  # 3 objects, 9 frames, inside a 32 x 32 video
    maps = trajectory_maps(pts, 32, 32)
    assert maps.shape == (9, 2, 32, 32)
    assert maps[0].abs().sum() == 0
    for i in range(8):
        for k in range(3):
            x, y = pts[k, i].round().long().tolist()
            later = [j for j in range(k + 1, 3) if pts[j, i].round().long().tolist() == [x, y]]
            if later:
                continue  # a later object overwrote this pixel
            assert torch.allclose(maps[i + 1, :, y, x], pts[k, i + 1] - pts[k, i], atol=1e-6)
        # nothing else is written: at most one non-zero pixel per object and frame
        assert int((maps[i + 1].abs().sum(0) > 0).sum()) <= 3


def test_maps_refuse_a_trajectory_for_another_frame_count_and_points_outside():
    t = Trajectories([[[0, 0], [10, 10]]])
    pts = t.per_frame(8, 16, 16)
    with pytest.raises(ValueError, match="8 frames but the video has 9"):
        trajectory_maps(pts, 16, 16, num_frames=9)
    with pytest.raises(ValueError, match="8 frames but the video has 9"):
        motion_video(pts, 16, 16, num_frames=9)
    with pytest.raises(ValueError, match="outside the 16 x 16 video"):
        trajectory_maps(pts * 3, 16, 16)
    with pytest.raises(ValueError, match="NaN"):
        trajectory_maps(torch.full((1, 4, 2), float("nan")), 16, 16)


# ------------------------------------------------------------------------------------------- T5: blur
def test_gaussian_kernel_centre_is_one_and_matches_the_closed_form():
    k = gaussian_kernel(99, 10.0)
    assert k.shape == (99, 99) and k[49, 49] == 1.0 and k.max() == 1.0
    assert math.isclose(float(k[49, 59]), math.exp(-100 / 200), rel_tol=1e-6)  # 10 px away: exp(-d^2 / 2 sigma^2)
    assert torch.equal(k, k.T) and torch.equal(k, k.flip(0))
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(4, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_kernel(5, 0.0)


def test_blur_scales_with_the_video_and_matches_the_release_at_480p():
    assert blur_for_size(480, 720) == (99, 10.0)
    size, sigma = blur_for_size(32, 32)
    assert size % 2 == 1 and size == 7 and math.isclose(sigma, 10 * 32 / 480)


def test_blur_of_a_single_displacement_is_the_kernel_times_the_displacement():
    g = torch.zeros(2, 2, 21, 21)
    g[1, 0, 10, 10], g[1, 1, 10, 10] = 3.0, -2.0
    k = gaussian_kernel(7, 1.5)
    out = blur_maps(g, k)
    assert out[0].abs().sum() == 0
    assert torch.allclose(out[1, 0, 7:14, 7:14], 3 * k) and torch.allclose(out[1, 1, 7:14, 7:14], -2 * k)
    assert out[1, :, 10, 10].tolist() == [3.0, -2.0]  # the centre keeps the displacement (centre 1)


def test_blur_border_is_reflect_101_like_cv2_filter2d():
    """cv2.filter2D's default border reflects without repeating the edge pixel (BORDER_REFLECT_101): a unit impulse
    one pixel from the edge comes back mirrored about the edge pixel, i.e. at the same distance inside."""
    g = torch.zeros(1, 1, 9, 9)
    g[0, 0, 4, 1] = 1.0
    k = torch.zeros(3, 3)
    k[1, 0] = 1.0  # out[y, x] = in[y, x - 1] (correlation)
    out = blur_maps(g, k)
    # out[:, 0] reads in[:, -1] = in[:, 1] (reflect-101), so the impulse appears at column 0 and column 2
    assert out[0, 0, 4, 0] == 1.0 and out[0, 0, 4, 2] == 1.0 and out.sum() == 2.0


def _cv2_reflect_101(p: int, n: int) -> int:
    """cv2's borderInterpolate for BORDER_REFLECT_101, as OpenCV writes it (a loop, not a closed form)."""
    if n == 1:
        return 0
    while not 0 <= p < n:
        p = -p if p < 0 else 2 * (n - 1) - p
    return p


@pytest.mark.parametrize("shape, k", [((3, 6), 9), ((6, 3), 9), ((4, 4), 9), ((1, 5), 5), ((2, 7), 11), ((5, 8), 3),
                                      ((4, 9), 9)])
def test_blur_matches_cv2_filter2d_written_out_for_any_kernel_and_frame(shape, k):
    """blur_maps against cv2.filter2D's definition computed pixel by pixel in float64: the correlation of the kernel
    with the frame extended by reflect-101 (OpenCV's borderInterpolate loop), including kernels wider than a side
    of a rectangular frame, where the border reflects more than once (a 3 x 6 frame with a 9 x 9 kernel was off by
    3.3 when the border was padded in steps of the shorter side)."""
    h, w = shape
    gen = torch.Generator().manual_seed(h * 100 + w)
    g = torch.randn(2, 2, h, w, generator=gen, dtype=torch.float64)
    kernel = torch.rand(k, k, generator=gen, dtype=torch.float64)
    r = k // 2
    want = torch.zeros_like(g)
    for y in range(h):
        for x in range(w):
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    want[..., y, x] += kernel[dy + r, dx + r] * g[..., _cv2_reflect_101(y + dy, h),
                                                                  _cv2_reflect_101(x + dx, w)]
    assert torch.allclose(blur_maps(g, kernel), want, atol=1e-12)


# ------------------------------------------------------------------------------------------- T5: colours
def test_colour_wheel_matches_torchvision_flow_to_image():
    g = torch.Generator().manual_seed(1)
    flow = torch.randn(4, 2, 17, 23, generator=g) * 5
    flow[0, :, :3] = 0  # zero flow: white
    ours = (255 * flow_to_rgb(flow)).floor()
    ref = flow_to_image(flow).float()
    assert (ours - ref).abs().max() <= 1  # float rounding at a floor step only
    assert (ours == ref).float().mean() > 0.999
    assert torch.equal(ours[0, :, 0], torch.full((3, 23), 255.0))
    # every direction of the wheel: a ring of unit vectors
    a = torch.linspace(-math.pi, math.pi, 721)
    ring = torch.stack([a.cos(), a.sin()])[:, None, :]  # (2, 1, 721)
    assert (255 * flow_to_rgb(ring)).floor().sub(flow_to_image(ring).float()).abs().max() <= 1


def test_colour_normalisation_is_per_clip_in_maps_to_video():
    g = torch.zeros(2, 3, 2, 8, 8)
    g[0, 1, 0, 4, 4] = 1.0  # clip 0: slow
    g[1, 1, 0, 4, 4] = 10.0  # clip 1: ten times faster
    v = maps_to_video(g, blur=(1, 1.0))
    assert v.shape == (2, 3, 3, 8, 8) and v.min() >= -1 and v.max() <= 1
    assert torch.allclose(v[0], v[1])  # each clip saturates at its own largest displacement
    assert torch.equal(v[:, :, 0], torch.ones_like(v[:, :, 0]))  # frame 0: zero flow, white


def test_motion_video_marks_the_sprite_path():
    t = Trajectories([[[4, 16], [28, 16]]])  # left to right across a 32 x 32 video
    pts = t.per_frame(8, 32, 32)
    v = motion_video(pts, 32, 32)
    assert v.shape == (3, 8, 32, 32)
    for i in range(1, 8):
        sat = (1 - v[:, i]).sum(0)  # colour where the flow is: the previous frame's position
        y, x = divmod(int(sat.argmax()), 32)
        assert (x, y) == tuple(pts[0, i - 1].round().long().tolist())
    # moving right (u > 0, v = 0): the wheel's colour for angle 0 (red-ish), its first channel the largest
    assert (1 - v[:, 1]).sum((1, 2)).argmin() == 0


# ------------------------------------------------------------------------------------------- dense flow
def test_sprite_flow_moves_every_sprite_pixel_with_its_centre():
    data = MiniSprites(num_videos=4, size=32, num_frames=6, num_sprites=(1, 2), seed=3)
    for i in range(4):
        scene = data.scene(i)
        g = sprite_flow(scene)
        assert g.shape == (6, 2, 32, 32) and g[0].abs().sum() == 0
        front = scene.sprites[-1]
        for f in range(1, 6):
            c0, c1 = front.centers[f - 1], front.centers[f]
            x, y = int(round(float(c0[0]))), int(round(float(c0[1])))
            if 0 <= x < 32 and 0 <= y < 32:  # the front sprite's centre pixel moves with it
                assert np.allclose(g[f, :, y, x].numpy(), c1 - c0, atol=1e-5)
        # background pixels far from every sprite do not move
        far = torch.ones(32, 32, dtype=torch.bool)
        for s in scene.sprites:
            for f in range(6):
                cx, cy = s.centers[f]
                yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
                far &= (xx - cx) ** 2 + (yy - cy) ** 2 > (s.bounding_radius + 1) ** 2
        assert g[:, :, far].abs().sum() == 0


def test_sample_sparse_picks_one_to_n_real_sprites():
    data = MiniSprites(num_videos=8, size=32, num_frames=6, num_sprites=3, seed=0)
    item = data[0]
    g = torch.Generator().manual_seed(0)
    counts = set()
    for _ in range(40):
        paths = sample_sparse(item["centers"], item["sprite_mask"], g)
        counts.add(len(paths))
        assert paths.shape[1:] == (6, 2) and torch.isfinite(paths).all()
        assert all(any(torch.equal(p, c) for c in item["centers"]) for p in paths)
    assert counts == {1, 2, 3}
    assert {len(sample_sparse(item["centers"], item["sprite_mask"], g, max_objects=1)) for _ in range(10)} == {1}


# ------------------------------------------------------------------------------------------- input
def test_points_are_spread_over_the_frames_and_rescaled_from_the_canvas():
    t = Trajectories([[[0, 0], [255, 255]]], canvas=(256, 256))
    p = t.per_frame(5, 32, 64)  # H = 32, W = 64
    assert p.shape == (1, 5, 2)
    # pixel extents map onto pixel extents: x_v = (x + 0.5) W / W_c - 0.5
    assert torch.allclose(p[0, 0], torch.tensor([0.5 * 64 / 256 - 0.5, 0.5 * 32 / 256 - 0.5]))
    assert torch.allclose(p[0, -1], torch.tensor([255.5 * 64 / 256 - 0.5, 255.5 * 32 / 256 - 0.5]))
    assert torch.allclose(p[0, 2], (p[0, 0] + p[0, -1]) / 2)
    # three points over 5 frames: the middle point lands on frame 2
    p = Trajectories([[[0, 0], [10, 0], [10, 10]]]).per_frame(5, 16, 16)
    assert p[0].tolist() == [[0, 0], [5, 0], [10, 0], [10, 5], [10, 10]]
    # more points than frames: resampled, end points kept
    path = np.stack([np.arange(20.0) / 2, np.zeros(20)], 1)
    p = Trajectories([path]).per_frame(4, 16, 16)
    assert p[0, 0, 0] == 0 and p[0, -1, 0] == 9.5


def test_keyframes_interpolate_and_hold():
    t = Trajectories([[[2, 0, 0], [4, 8, 4]]])
    p = t.per_frame(7, 16, 16)
    assert p[0].tolist() == [[0, 0], [0, 0], [0, 0], [4, 2], [8, 4], [8, 4], [8, 4]]
    with pytest.raises(ValueError, match="keyframe at frame 9 but the video has 8 frames"):
        Trajectories([[[0, 1, 1], [9, 2, 2]]]).per_frame(8, 16, 16)
    with pytest.raises(ValueError, match="strictly increasing"):
        Trajectories([[[3, 1, 1], [3, 2, 2]]])


@pytest.mark.parametrize("bad, match", [
    ([[[1.0, float("nan")], [2, 2]]], "NaN"),
    ([[[1, 1]]], "at least 2"),
    ([[[1, 1, 1, 1], [2, 2, 2, 2]]], r"\(N, 2\) points"),
    ([], "non-empty"),
])
def test_bad_trajectories_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        Trajectories(bad)


def test_points_outside_the_canvas_are_clipped_near_and_refused_far():
    with pytest.warns(UserWarning, match="clipped"):
        p = Trajectories([[[-5, 10], [100, 10]]], canvas=(100, 50)).per_frame(3, 50, 100)
    assert p[0, 0, 0] == 0 and p[0, -1, 0] == 99
    with pytest.raises(ValueError, match="more than 10% outside the canvas 100 x 50"):
        Trajectories([[[0, 0], [10, 80]]], canvas=(100, 50)).per_frame(3, 50, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trajectories([[[0, 0], [99, 49]]], canvas=(100, 50)).per_frame(3, 50, 100)  # on the canvas: no warning


def test_json_and_text_files_round_trip(tmp_path):
    t = Trajectories([[[0, 0], [10, 5], [20, 20]], [[0, 30, 30], [7, 2, 2]]], canvas=(64, 64))
    p = save_trajectories(t, tmp_path / "t.json")
    back = load_trajectories(p)
    assert back.canvas == (64, 64) and len(back) == 2
    assert all(np.array_equal(a, b) for a, b in zip(back.objects, t.objects))
    text = "# two objects on a 64 x 64 canvas\ncanvas 64 64\n0 0\n10, 5\n20 20\n\n0 30 30\n7 2 2\n"
    (tmp_path / "t.txt").write_text(text)
    back = load_trajectories(tmp_path / "t.txt")
    assert back.canvas == (64, 64) and [a.shape for a in back.objects] == [(3, 2), (2, 3)]
    assert torch.equal(back.per_frame(8, 32, 32), t.per_frame(8, 32, 32))
    # strings and lists too; one object may be given as a bare list of points
    assert len(load_trajectories("[[1, 2], [3, 4]]")) == 1
    assert len(load_trajectories(json.dumps({"trajectories": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]}))) == 2
    assert len(load_trajectories([[[1, 2], [3, 4]]])) == 1


def test_file_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_trajectories(tmp_path / "missing.json")
    (tmp_path / "bad.txt").write_text("1 2\nhello 3\n")
    with pytest.raises(ValueError, match="line 2"):
        load_trajectories(tmp_path / "bad.txt")
    (tmp_path / "short.txt").write_text("1 2\n")
    with pytest.raises(ValueError, match="at least 2"):
        load_trajectories(tmp_path / "short.txt")
    with pytest.raises(ValueError, match="'trajectories'"):
        load_trajectories('{"points": [[1, 2], [3, 4]]}')
