"""VideoFolder: real video clips from a folder tree, for training on UCF-101 or SkyTimelapse on a GPU.

MiniSprites is enough to watch every model learn on a CPU; real footage needs a GPU and a data set
downloaded by hand (nothing is fetched at run time; see ``data/README.md``). This data set lists
every file under ``root`` whose extension is in ``extensions`` (recursively, sorted, so the order is
the same on every machine) and returns fixed-size clips in the MiniSprites item format:

* ``video`` (3, T, H, W) float32 in [-1, 1] with H = W = ``size``: ``num_frames`` frames taken every
  ``frame_stride`` frames, the short side resized to ``size`` (bilinear with antialiasing, so
  downscaling does not alias) and the long side centre-cropped to a square.
* ``label`` and ``caption``: with class folders (the UCF-101 layout ``root/ApplyEyeMakeup/*.avi``) the
  class index in ``class_names`` (sorted folder names) and "a video of apply eye makeup"; without
  them -1 and ``default_caption``.

Clip choice: with ``random_clip`` the start frame is drawn from ``np.random.default_rng([seed, epoch,
i])``, so a run is reproducible and each epoch (``set_epoch``) sees other clips; otherwise the clip is
centred in the video (for evaluation). A video shorter than ``(num_frames - 1) * frame_stride + 1``
frames is padded by repeating its last frame. Frames are decoded with PyAV from the start of the file
up to the last frame needed (exact frame indices, no keyframe seeking).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..utils.video import count_frames, iter_frames
from ..utils.validation import check_int
from .minisprites import check_size

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")


def class_caption(name: str) -> str:
    """Folder name -> caption words: "ApplyEyeMakeup" -> "apply eye makeup", "sky_timelapse" -> "sky timelapse"."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return " ".join(re.sub(r"[_\-]+", " ", words).lower().split())


class VideoFolder(Dataset):
    """Fixed-size clips of the videos under ``root`` (see the module docstring for the item format).

    Args:
        root: folder searched recursively for files ending in one of ``extensions`` (any case).
        num_frames: frames per clip T >= 1.  size: output side, an int in [16, 512] divisible by 8.
        frame_stride: take every k-th frame (k >= 1), e.g. 2 or 4 for 25 fps UCF-101.
        seed: seeds the random clip start.  random_clip: random (True) or centred (False) clips.
        class_folders: None: classes when every video lies exactly one folder below root (UCF-101);
            True: require that layout; False: no classes.
        default_caption: caption of every clip when there are no classes.
    """

    def __init__(self, root, num_frames: int = 16, size: int = 64, frame_stride: int = 1,
                 extensions=VIDEO_EXTENSIONS, seed: int = 0, random_clip: bool = True,
                 class_folders: bool | None = None, default_caption: str = "a video"):
        self.root = Path(root)
        self.num_frames = check_int("num_frames", num_frames, 1)
        if not isinstance(size, (int, np.integer)):
            raise ValueError(f"size={size!r} is invalid: expected an int in [16, 512] divisible by 8")
        self.size = check_size(size)[0]
        self.frame_stride = check_int("frame_stride", frame_stride, 1)
        self.seed = check_int("seed", seed, 0)
        if isinstance(extensions, str) or not extensions:
            raise ValueError(f"extensions={extensions!r} is invalid: expected a tuple such as {VIDEO_EXTENSIONS}")
        self.extensions = tuple("." + e.lower().lstrip(".") for e in extensions)
        self.random_clip = bool(random_clip)
        self.default_caption = default_caption
        self.epoch = 0
        if not self.root.is_dir():
            raise FileNotFoundError(f"VideoFolder root {str(self.root)!r} does not exist or is not a folder")
        self.files = sorted(p for p in self.root.rglob("*")
                            if p.is_file() and p.suffix.lower() in self.extensions)
        if not self.files:
            raise FileNotFoundError(f"no videos with extensions {self.extensions} under {str(self.root)!r}")
        rel = [p.relative_to(self.root).parts for p in self.files]
        layered = all(len(r) == 2 for r in rel)
        if class_folders and not layered:
            bad = next(str(Path(*r)) for r in rel if len(r) != 2)
            raise ValueError(f"class_folders=True needs every video at root/<class>/<file>; "
                             f"{bad!r} under {str(self.root)!r} is not")
        use_classes = layered if class_folders is None else bool(class_folders)
        self.class_names = sorted({r[0] for r in rel}) if use_classes else []
        self.labels = [self.class_names.index(r[0]) if use_classes else -1 for r in rel]
        self._num_frames_cache: dict[int, int] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def set_epoch(self, epoch: int) -> None:
        """Change the random clip starts (call once per epoch, as with a DistributedSampler)."""
        self.epoch = check_int("epoch", epoch, 0)

    def __len__(self) -> int:
        return len(self.files)

    def caption(self, i: int) -> str:
        label = self.labels[i]
        return f"a video of {class_caption(self.class_names[label])}" if label >= 0 else self.default_caption

    def frame_indices(self, i: int) -> np.ndarray:
        """The (num_frames,) frame indices of clip i (indices past the end mean "repeat the last")."""
        if i not in self._num_frames_cache:
            self._num_frames_cache[i] = count_frames(self.files[i])
        n = self._num_frames_cache[i]
        span = (self.num_frames - 1) * self.frame_stride + 1
        if n <= span:
            start = 0
        elif self.random_clip:
            start = int(np.random.default_rng([self.seed, self.epoch, i]).integers(0, n - span + 1))
        else:
            start = (n - span) // 2
        return start + np.arange(self.num_frames) * self.frame_stride

    def _resize_crop(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> float (3, T, size, size) in [-1, 1]: resize short side, centre-crop."""
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # (T, 3, H, W)
        H, W = x.shape[-2:]
        scale = self.size / min(H, W)
        nh, nw = max(self.size, round(H * scale)), max(self.size, round(W * scale))
        if (nh, nw) != (H, W):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        x = x[:, :, top:top + self.size, left:left + self.size].clamp(-1.0, 1.0)
        return x.permute(1, 0, 2, 3).contiguous()  # (3, T, size, size)

    def __getitem__(self, i: int) -> dict:
        if not isinstance(i, (int, np.integer)) or not -len(self) <= i < len(self):
            raise IndexError(f"index {i!r} out of range for VideoFolder of length {len(self)}")
        i = int(i) % len(self)
        wanted = self.frame_indices(i)
        got, last, need = {}, None, set(wanted.tolist())
        for k, frame in enumerate(iter_frames(self.files[i])):
            last = frame
            if k in need:
                got[k] = frame
            if k >= wanted[-1]:
                break
        if last is None:
            raise RuntimeError(f"video file {self.files[i]} has no decodable frames")
        frames = np.stack([got.get(int(k), last) for k in wanted])  # (T, H, W, 3) uint8
        return {"video": self._resize_crop(frames), "caption": self.caption(i), "label": self.labels[i]}
