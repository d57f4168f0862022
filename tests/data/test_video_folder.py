"""VideoFolder on small mp4s written with minivid.utils.video.write_video: round trip against the
original frames, exact clip indices, padding, resize/crop geometry, class folders and errors."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from minivid.data import MiniSprites, VideoFolder
from minivid.data.video_folder import class_caption
from minivid.utils import write_video


def _grey_ramp_video(T, H=32, W=32):
    """Frame t is a flat grey of level -0.9 + 0.1 t: the decoded mean tells which frame it was."""
    return (-0.9 + 0.1 * torch.arange(T, dtype=torch.float32)).reshape(1, T, 1, 1).expand(3, T, H, W)


def _frame_ids(video):
    return torch.round((video.mean(dim=(0, 2, 3)) + 0.9) / 0.1).long().tolist()


@pytest.fixture
def ucf_like(tmp_path):
    """root/ApplyEyeMakeup/*.mp4 and root/YoYo/*.mp4 holding MiniSprites clips."""
    ds = MiniSprites(size=64, num_frames=16)
    originals = {}
    for k, cls in enumerate(["YoYo", "ApplyEyeMakeup"]):
        for j in range(2):
            path = tmp_path / "ucf" / cls / f"v_{cls}_g0{j}.mp4"
            originals[str(path)] = ds[2 * k + j]["video"]
            write_video(path, originals[str(path)], fps=8)
    (tmp_path / "ucf" / "notes.txt").write_text("not a video")
    return tmp_path / "ucf", originals


def test_round_trip_labels_and_captions(ucf_like):
    """Measured mean absolute error of the decoded clips: about 0.015 (h264, [-1, 1] units)."""
    root, originals = ucf_like
    ds = VideoFolder(root, num_frames=16, size=64, random_clip=False)
    assert len(ds) == 4 and ds.class_names == ["ApplyEyeMakeup", "YoYo"] and ds.num_classes == 2
    for i, path in enumerate(ds.files):
        item = ds[i]
        assert set(item) == {"video", "caption", "label"}
        assert item["video"].shape == (3, 16, 64, 64) and item["video"].dtype == torch.float32
        assert (item["video"] - originals[str(path)]).abs().mean() < 0.03
        cls = path.parent.name
        assert item["label"] == ds.class_names.index(cls)
        assert item["caption"] == {"ApplyEyeMakeup": "a video of apply eye makeup",
                                   "YoYo": "a video of yo yo"}[cls]
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["video"].shape == (4, 3, 16, 64, 64) and batch["label"].tolist() == [0, 0, 1, 1]


def test_clip_indices_with_stride(tmp_path):
    write_video(tmp_path / "a.mp4", _grey_ramp_video(16))
    centred = VideoFolder(tmp_path, num_frames=4, size=32, frame_stride=2, random_clip=False)
    assert _frame_ids(centred[0]["video"]) == [4, 6, 8, 10]  # span 7 of 16 frames, centred: start 4
    starts = set()
    for epoch in range(12):
        rand = VideoFolder(tmp_path, num_frames=4, size=32, frame_stride=2, seed=1)
        rand.set_epoch(epoch)
        ids = _frame_ids(rand[0]["video"])
        assert ids == list(range(ids[0], ids[0] + 8, 2)) and 0 <= ids[0] <= 9
        assert ids == _frame_ids(rand[0]["video"])  # reproducible within an epoch
        starts.add(ids[0])
    assert len(starts) >= 4  # and different across epochs


def test_short_videos_repeat_their_last_frame(tmp_path):
    write_video(tmp_path / "short.mp4", _grey_ramp_video(5))
    item = VideoFolder(tmp_path, num_frames=8, size=32)[0]
    assert _frame_ids(item["video"]) == [0, 1, 2, 3, 4, 4, 4, 4]
    assert torch.equal(item["video"][:, 4], item["video"][:, 7])
    assert item["label"] == -1 and item["caption"] == "a video"  # flat folder: no classes


def test_resize_short_side_and_centre_crop(tmp_path):
    """48 x 96 frames with a horizontal ramp: size 32 resizes to 32 x 64, then keeps columns 16-47,
    which sample the original at x = (j + 16 + 0.5) * 1.5 - 0.5. The ramp is linear, so the
    (antialiased) bilinear resize reproduces it exactly up to the codec."""
    H, W = 48, 96
    ramp = torch.linspace(-0.8, 0.8, W)  # value at original column x
    video = torch.zeros(3, 3, H, W)
    video[0] = ramp
    video[1] = 0.2
    write_video(tmp_path / "wide.mp4", video)
    out = VideoFolder(tmp_path, num_frames=3, size=32)[0]["video"]
    assert out.shape == (3, 3, 32, 32)
    x = (torch.arange(32) + 16 + 0.5) * 1.5 - 0.5
    expected = -0.8 + 1.6 * x / (W - 1)
    got = out[0, :, 4:-4].mean(dim=(0, 1))  # average over frames and rows
    assert (got - expected).abs().max() < 0.03
    assert (out[1] - 0.2).abs().mean() < 0.03


def test_class_folders_option_and_nested_layouts(tmp_path):
    for rel in ["sky/day1/clip0.mp4", "sky/day1/clip1.MP4", "sky/day2/deep/clip2.mp4"]:
        write_video(tmp_path / rel, _grey_ramp_video(3, 16, 16))
    ds = VideoFolder(tmp_path / "sky", num_frames=2, size=16, default_caption="a timelapse of the sky")
    assert len(ds) == 3 and ds.class_names == []  # not all one level deep: no classes
    assert ds[0]["caption"] == "a timelapse of the sky" and ds[2]["label"] == -1
    with pytest.raises(ValueError, match="class_folders"):
        VideoFolder(tmp_path / "sky", num_frames=2, size=16, class_folders=True)
    only_mp4 = VideoFolder(tmp_path / "sky", size=16, extensions=("mp4",))
    assert len(only_mp4) == 3  # extensions match in any case, with or without the dot
    assert class_caption("HandstandPushups") == "handstand pushups"
    assert class_caption("sky_timelapse") == "sky timelapse"


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VideoFolder(tmp_path / "nowhere")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "frame.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no videos with extensions") as e:
        VideoFolder(tmp_path / "empty")
    assert "empty" in str(e.value) and ".mp4" in str(e.value) and ".avi" in str(e.value)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "corrupt.avi").write_bytes(np.random.default_rng(0).bytes(2000))
    ds = VideoFolder(tmp_path / "bad")
    with pytest.raises(RuntimeError, match="corrupt.avi"):
        ds[0]
    with pytest.raises(IndexError):
        ds[1]
    for kwargs, name in [(dict(num_frames=0), "num_frames"), (dict(size=60), "size"),
                         (dict(size=(64, 64)), "size"), (dict(frame_stride=0), "frame_stride")]:
        with pytest.raises(ValueError, match=name):
            VideoFolder(tmp_path / "bad", **kwargs)
