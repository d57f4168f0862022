r"""Fréchet Video Distance (Unterthiner et al. 2018): the Fréchet distance between Gaussians fitted to the I3D
logits of two sets of clips,

.. math:: \mathrm{FVD} = \lVert\mu_a-\mu_b\rVert^2 + \mathrm{tr}\big(\Sigma_a+\Sigma_b-2(\Sigma_a\Sigma_b)^{1/2}\big).

**The protocol** (what :func:`i3d_logits` does to every clip; the choices that make FVDs comparable or not):

- values: clips in [0, 1] (uint8 clips are divided by 255) are mapped to [-1, 1], as the TF-Hub module expects;
- size, ``resize="bilinear"`` (default: a direct bilinear resize, as the TF-Hub / original FVD / StyleGAN-V code
  does): every frame is resized to 224 x 224 bilinearly (half-pixel centres, no antialiasing), ignoring the aspect
  ratio. The original FVD code's TF1 ``resize_bilinear`` maps without half-pixel centres (about 0.4 input pixels
  apart at 32 -> 224 px); docs/evaluation.md measures that choice at -0.8% of FVD;
  ``resize="center_crop"``: the shorter side is resized to 224, then the centre 224 x 224 is cut out;
- time: ``num_frames=16`` frames per clip. Longer clips keep their first 16 frames (choose the clips yourself
  to sample elsewhere); shorter ones are stretched to 16 by repeating frames (nearest index, so an 8-frame clip
  shows every frame twice), which I3D needs (at least 9 frames) and which keeps 8-frame models comparable with
  each other, not with published 16-frame numbers; ``num_frames=None`` passes clips of >= 9 frames unchanged;
- features: the 400 Kinetics logits averaged over time (not the softmax, not the 1024-d pool);
- arithmetic: float32 on every device. On a GPU cuDNN would run float32 convolutions in TF32 (PyTorch's default,
  10-bit mantissas), so :func:`i3d_logits` switches it to IEEE float32 for its own calls and restores the
  caller's setting: a GPU's FVD then equals a CPU's to float32 rounding;
- statistics: sample mean and unbiased covariance (``np.cov``) in float64; the matrix square root through
  symmetric eigendecompositions, which stays real and exact for singular covariances (fewer clips than 400).

The number of clips sets FVD's bias (it shrinks roughly like 1/N): papers use 2,048 (StyleGAN-V) or a few
hundred; :class:`FVDResult` carries the counts so they are printed next to every number.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .i3d import load_i3d

RESIZES = ("bilinear", "center_crop")
I3D_SIZE = 224


def _default_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def ieee_fp32_convolutions():
    """Run cuDNN's float32 convolutions in IEEE float32, not TF32, inside the block; the previous setting is
    restored on exit, errors included. (PyTorch runs them in TF32 by default on Ampere and later GPUs; CPUs
    and older GPUs compute float32 either way.) PyTorch before 2.9 has no ``fp32_precision`` flags: there the
    legacy ``torch.backends.cudnn.allow_tf32`` is switched instead."""
    conv = _cudnn_conv_flags()
    if conv is None:  # PyTorch < 2.9
        previous = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = previous
        return
    previous = conv.fp32_precision
    conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = previous


def _cudnn_conv_flags():
    """cuDNN's convolution flags with ``fp32_precision`` (PyTorch >= 2.9), or None."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    return conv if conv is not None and hasattr(conv, "fp32_precision") else None


def _as_clips(videos) -> torch.Tensor:
    v = torch.as_tensor(np.asarray(videos) if not torch.is_tensor(videos) else videos)
    if v.ndim != 5 or v.shape[1] != 3:
        raise ValueError(f"videos must have shape (N, 3, T, H, W), got {tuple(v.shape)}")
    if len(v) == 0:
        raise ValueError("videos is empty: need at least one clip")
    return v


def _check_range(v: torch.Tensor) -> None:
    """Float clips must lie in [0, 1] (uint8 in [0, 255] always does); checked without copying the clips."""
    if v.dtype == torch.uint8:
        return
    if not v.is_floating_point():
        raise ValueError(f"videos has dtype {v.dtype}: expected float values in [0, 1] or uint8 in [0, 255]")
    lo, hi = float(v.min()), float(v.max())
    if lo < -1e-3 or hi > 1 + 1e-3 or not math.isfinite(lo + hi):
        raise ValueError(f"videos must be in [0, 1] (got values in [{lo:.3f}, {hi:.3f}]); map [-1, 1] clips "
                         "with (x + 1) / 2 first")


def _to_unit_range(v: torch.Tensor) -> torch.Tensor:
    return v.float() / 255.0 if v.dtype == torch.uint8 else v.float().clamp(0, 1)


def prepare_clips(v: torch.Tensor, resize: str = "bilinear", num_frames: int | None = 16) -> torch.Tensor:
    """The protocol's input transform: (N, 3, T, H, W) in [0, 1] -> (N, 3, T', 224, 224) in [-1, 1]."""
    if resize not in RESIZES:
        raise ValueError(f"resize={resize!r} is invalid: expected one of {RESIZES}")
    n, c, t, h, w = v.shape
    if num_frames is not None:
        if num_frames < 9:
            raise ValueError(f"num_frames={num_frames} is invalid: I3D needs at least 9 frames")
        idx = torch.arange(num_frames) if t >= num_frames else torch.div(
            torch.arange(num_frames) * t, num_frames, rounding_mode="floor")
        v = v[:, :, idx.to(v.device)]
        t = num_frames
    elif t < 9:
        raise ValueError(f"clips have {t} frames; I3D needs at least 9 (or pass num_frames=16 to repeat frames)")
    frames = v.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)
    if resize == "bilinear":
        frames = F.interpolate(frames, size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False)
    else:
        s = I3D_SIZE / min(h, w)
        nh, nw = max(I3D_SIZE, round(h * s)), max(I3D_SIZE, round(w * s))
        frames = F.interpolate(frames, size=(nh, nw), mode="bilinear", align_corners=False)
        top, left = (nh - I3D_SIZE) // 2, (nw - I3D_SIZE) // 2
        frames = frames[:, :, top:top + I3D_SIZE, left:left + I3D_SIZE]
    frames = frames.reshape(n, t, c, I3D_SIZE, I3D_SIZE).permute(0, 2, 1, 3, 4)
    return frames * 2.0 - 1.0


@torch.no_grad()
def i3d_logits(videos, *, resize: str = "bilinear", num_frames: int | None = 16, batch_size: int = 8,
               device=None, weights=None, progress: bool | None = None) -> torch.Tensor:
    """Kinetics-400 I3D logits (N, 400), float32 on the CPU, of clips (N, 3, T, H, W) in [0, 1] (or uint8) of any
    size, by the protocol in this module's docstring. Runs ``batch_size`` clips at a time on ``device`` (CUDA when
    present); ``progress`` shows a bar (default: when there are more than 4 batches)."""
    v = _as_clips(videos)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid: expected an int >= 1")
    if resize not in RESIZES:
        raise ValueError(f"resize={resize!r} is invalid: expected one of {RESIZES}")
    if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 9):
        raise ValueError(f"num_frames={num_frames!r} is invalid: expected None or an int >= 9 (I3D's minimum)")
    if num_frames is None and v.shape[2] < 9:
        raise ValueError(f"clips have {v.shape[2]} frames; I3D needs at least 9 (or pass num_frames=16)")
    _check_range(v)  # dtype and range of every clip, before any work
    dev = torch.device(device) if device is not None else _default_device()
    model = load_i3d(weights, dev)
    batches = range(0, len(v), batch_size)
    show = len(batches) > 4 if progress is None else progress
    out = []
    with ieee_fp32_convolutions():  # the protocol's float32, not TF32, on a GPU
        for i in tqdm(batches, desc="I3D", disable=not show, unit="batch"):
            clip = _to_unit_range(v[i:i + batch_size].to(dev))
            x = prepare_clips(clip, resize, num_frames)
            if dev.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last_3d)
            out.append(model(x).float().cpu())
    return torch.cat(out)


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64) of features (N, D), N >= 2."""
    f = np.asarray(torch.as_tensor(features).detach().cpu().double() if not isinstance(features, np.ndarray)
                   else features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or inf")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_from_stats(mu_a, sigma_a, mu_b, sigma_b) -> float:
    r"""Fréchet (2-Wasserstein) distance between N(mu_a, sigma_a) and N(mu_b, sigma_b), in float64.

    :math:`\mathrm{tr}(\Sigma_a\Sigma_b)^{1/2}` is computed as the sum of square roots of the eigenvalues of
    :math:`\Sigma_a^{1/2}\Sigma_b\Sigma_a^{1/2}` (similar to :math:`\Sigma_a\Sigma_b`, symmetric, PSD), so
    rank-deficient covariances give a real, non-negative answer without the offset ``scipy.linalg.sqrtm``
    recipes add to the diagonal. Zero eigenvalues come out at round-off level and their square roots add an error of
    about 1e-7 of the trace (400 logits from 30 clips: 5e-5 on 400), far below any FVD difference that matters."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sa, sb = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
    d = mu_a.shape[0]
    if mu_a.shape != (d,) or mu_b.shape != (d,) or sa.shape != (d, d) or sb.shape != (d, d):
        raise ValueError(f"need means (D,) and covariances (D, D) of one D; got {mu_a.shape}, {sa.shape}, "
                         f"{mu_b.shape}, {sb.shape}")
    root = _psd_sqrt(sa)
    m = root @ sb @ root
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * cross)
    return max(value, 0.0)


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature matrices (N_a, D) and (N_b, D)."""
    mu_a, s_a = gaussian_stats(features_a)
    mu_b, s_b = gaussian_stats(features_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature dimensions differ: {mu_a.shape[0]} and {mu_b.shape[0]}")
    return frechet_distance_from_stats(mu_a, s_a, mu_b, s_b)


@dataclass
class FVDResult:
    """An FVD with what it was measured on; ``float(result)`` is the number, ``str(result)`` prints the counts."""

    fvd: float
    clips_a: int
    clips_b: int
    resize: str = "bilinear"
    num_frames: int | None = 16
    features_a: torch.Tensor | None = field(default=None, repr=False)
    features_b: torch.Tensor | None = field(default=None, repr=False)

    def __float__(self) -> float:
        return self.fvd

    def __str__(self) -> str:
        return (f"FVD {self.fvd:.1f} ({self.clips_a} vs {self.clips_b} clips, {self.num_frames} frames, "
                f"{self.resize} to 224)")

    def as_dict(self) -> dict:
        return {"fvd": self.fvd, "clips_a": self.clips_a, "clips_b": self.clips_b, "resize": self.resize,
                "num_frames": self.num_frames, "features": "i3d-kinetics-400 logits"}


def fvd(videos_a, videos_b, **kwargs) -> FVDResult:
    """FVD between two sets of clips (N, 3, T, H, W) in [0, 1]; keyword arguments go to :func:`i3d_logits`
    (``resize``, ``num_frames``, ``batch_size``, ``device``, ``weights``, ``progress``)."""
    fa = i3d_logits(videos_a, **kwargs)
    fb = i3d_logits(videos_b, **kwargs)
    return FVDResult(frechet_distance(fa, fb), len(fa), len(fb), kwargs.get("resize", "bilinear"),
                     kwargs.get("num_frames", 16), fa, fb)
