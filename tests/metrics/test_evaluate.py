"""``python -m minivid eval`` and minivid.metrics.evaluate: folders of clips, zoo checkpoints, clear errors."""

import json

import numpy as np
import pytest
import torch

from minivid.__main__ import main
from minivid.metrics import psnr, ssim
from minivid.metrics.evaluate import evaluate_videos, load_clips
from minivid.utils.video import write_video


def _one_sprite_clips(n=4, seed=0):
    from minivid.data import MiniSprites

    d = MiniSprites(num_videos=n, size=32, num_frames=8, split="test", seed=seed, num_sprites=1)
    items = [d[i] for i in range(n)]
    return items


def _save(folder, clips, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(clips):
        np.save(folder / f"{(names or [f'clip{i:02d}' for i in range(len(clips))])[i]}.npy", c.numpy())
    return folder


def test_folder_eval_scores_real_clips_with_their_captions_and_paths(tmp_path, capsys):
    items = _one_sprite_clips(4)
    clips = [it["video"] for it in items]
    folder = _save(tmp_path / "clips", clips)
    names = [f"clip{i:02d}" for i in range(4)]
    captions = {n: it["caption"] for n, it in zip(names, items)}
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    from minivid.data.minisprites import COLOR_NAMES
    traj = {n: {"color": COLOR_NAMES[int(it["labels"]["color"][0])], "trajectory": it["centers"][0].tolist()}
            for n, it in zip(names, items)}
    (tmp_path / "paths.json").write_text(json.dumps(traj))
    out = tmp_path / "m.json"
    assert main(["eval", str(folder), "--no-fvd", "--captions", str(tmp_path / "captions.json"),
                 "--trajectories", str(tmp_path / "paths.json"), "--out", str(out), "--no-progress"]) == 0
    m = json.loads(out.read_text())
    assert m["clips"] == 4 and m["clip_shape"] == [3, 8, 32, 32] and m["source"]["names"] == names
    assert m["sprite_check"]["sprite_check"] == 1.0  # real one-sprite clips: the ceiling
    assert m["caption_accuracy"]["color"] == 1.0
    assert m["trajectory"]["trajectory_error_px"] < 0.3 and m["trajectory"]["lost"] == 0.0
    assert "fvd" not in m and m["reference"]["clips"] == 4  # MiniSprites' test split at 32 px x 8 frames
    # someone else's paths: the error is large
    shuffled = dict(zip(names, [traj[n] for n in names[1:] + names[:1]]))
    for n in names:
        shuffled[n] = {**shuffled[n], "color": traj[n]["color"]}
    (tmp_path / "wrong.json").write_text(json.dumps(shuffled))
    main(["eval", str(folder), "--no-fvd", "--trajectories", str(tmp_path / "wrong.json"), "--out", str(out)])
    assert json.loads(out.read_text())["trajectory"]["trajectory_error_px"] > 3.0
    capsys.readouterr()


def test_paired_folders_give_psnr_and_ssim_and_fvd_of_a_set_with_itself_is_zero(tmp_path):
    real = torch.stack([it["video"] for it in _one_sprite_clips(2)]).repeat(1, 1, 2, 1, 1)  # 16 frames
    noisy = (real + 0.05 * torch.randn(real.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    a, b = _save(tmp_path / "rec", list(noisy)), _save(tmp_path / "real", list(real))
    out = tmp_path / "m.json"
    assert main(["eval", str(a), "--reference", str(b), "--paired", "--no-fvd", "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["psnr"] == pytest.approx(float(psnr(noisy, real).mean()), abs=1e-3)
    assert m["ssim"] == pytest.approx(float(ssim(noisy, real).mean()), abs=1e-3)
    same = evaluate_videos(real, real, progress=False)  # 2 clips x 4 I3D passes
    assert same["fvd"]["fvd"] == pytest.approx(0.0, abs=1e-6) and same["frame_fd"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert same["fvd"]["clips_a"] == same["fvd"]["clips_b"] == 2 and same["fvd"]["num_frames"] == 16


def test_video_files_are_read_and_shapes_checked(tmp_path):
    clip = _one_sprite_clips(1)[0]["video"]
    (tmp_path / "v").mkdir()
    write_video(tmp_path / "v" / "a.mp4", clip)
    np.save(tmp_path / "v" / "b.npy", clip.numpy())
    videos, names = load_clips(tmp_path / "v")
    assert names == ["a", "b"] and videos.shape == (2, 3, 8, 32, 32)
    assert float((videos[0] - videos[1]).abs().mean()) < 0.05  # h264 at qp 20 vs the exact clip
    np.save(tmp_path / "v" / "c.npy", clip[:, :5].numpy())
    with pytest.raises(ValueError, match="differ in shape"):
        load_clips(tmp_path / "v")
    assert load_clips(tmp_path / "v", frames=5)[0].shape == (3, 3, 5, 32, 32)
    np.save(tmp_path / "v" / "d.npy", (clip * 3).numpy())
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        load_clips(tmp_path / "v", frames=5)


@pytest.mark.parametrize("argv, message", [
    (["eval"], "either a FOLDER"),
    (["eval", "x", "--checkpoint", "latte"], "either a FOLDER"),
    (["eval", "--checkpoint", "nope"], "not a zoo name"),
    (["eval", "--checkpoint", "latte", "--clips", "1"], "--clips 1"),
    (["eval", "--checkpoint", "latte", "--resize", "nearest"], "--resize 'nearest'"),
    (["eval", "--checkpoint", "latte", "--fvd-frames", "8"], "--fvd-frames 8"),
    (["eval", "--checkpoint", "latte", "--i3d-weights", "/nonexistent.ckpt"], "make weights"),
    (["eval", "--checkpoint", "motion-vae", "--no-fvd"], "flow videos"),
    (["eval", "/nonexistent-folder", "--no-fvd"], "no such folder"),
    (["eval", "--checkpoint", "latte", "--captions", "/nonexistent.json"], "--captions"),
    (["eval", "--checkpoint", "latte", "--frames", "0"], "--frames 0"),
    (["eval", "--checkpoint", "latte", "--batch-size", "0"], "--batch-size 0"),
    (["eval", "--checkpoint", "latte", "--no-fvd", "--frames", "8"], "--frames does not apply"),
    (["eval", "--checkpoint", "latte", "--no-fvd", "--reference", "/tmp"], "--reference does not apply"),
    (["eval", "--checkpoint", "latte", "--no-fvd", "--paired"], "--paired does not apply"),
])
def test_bad_arguments_are_refused_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_folder_of_clips_with_a_reference_it_cannot_use_is_refused(tmp_path, capsys):
    """eval FOLDER: a --reference that is neither 'minisprites' nor a folder, --paired without a reference folder,
    and non-square clips against the square MiniSprites reference are usage errors naming the option."""
    folder = tmp_path / "clips"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((2, 3, 8, 16, 24), np.float32))
    for argv, message in [
        (["eval", str(folder), "--no-fvd", "--reference", str(tmp_path / "none")], "not 'minisprites' and no such"),
        (["eval", str(folder), "--no-fvd", "--paired"], "--paired needs --reference DIR"),
        (["eval", str(folder), "--no-fvd"], "clips are 16x24: the MiniSprites reference is square"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err, argv


def test_zoo_checkpoints_autoencoder_pairs_and_tora_paths():
    from minivid.pipeline.zoo import zoo_eval_set

    s = zoo_eval_set("vae2d", 4)
    assert s["paired"] and s["videos"].shape == s["reference"].shape == (4, 3, 8, 32, 32)
    m = evaluate_videos(s["videos"], s["reference"], paired=True, fvd=False, frame_fd=False)
    assert m["psnr"] > 30  # the card: 33.6 dB on 64 clips
    t = zoo_eval_set("tora", 4)
    assert t["from_frame"] == 1 and t["paths"].shape == (4, 8, 2)
    m = evaluate_videos(t["videos"], t["reference"], paths=t["paths"], colors=t["colors"], from_frame=1, fvd=False,
                        frame_fd=False)
    assert m["trajectory"]["trajectory_error_px"] < 2.0  # the card: 0.53 px on 64 clips


def test_zoo_reducio_system_is_scored_from_the_reference_clips_content_frames():
    """``eval --checkpoint system-reducio``: each sample is made from its reference clip's caption and content frame
    (frame 3) and decoded with it, so frame 3 of a sample is that clip's frame 3 up to the decoder's warp."""
    from minivid.pipeline.zoo import zoo_eval_set

    s = zoo_eval_set("system-reducio", 4)
    assert s["videos"].shape == s["reference"].shape == (4, 3, 8, 64, 64) and "content frames" in s["what"]
    own = (s["videos"][:, :, 3] - s["reference"][:, :, 3]).abs().mean()
    other = (s["videos"][:, :, 3] - s["reference"][:, :, 3].roll(1, 0)).abs().mean()
    assert own < 0.05 < other
    m = evaluate_videos(s["videos"], s["reference"], paths=s["paths"], colors=s["colors"], fvd=False, frame_fd=False)
    assert m["trajectory"]["trajectory_error_px"] < 4.0  # the card: 2.88 px on 64 clips (the still frame: 4.00)
