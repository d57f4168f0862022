r"""Tora's trajectory input and trajectory maps (T4-T5): from points a user draws to the flow video g_vis that the
motion VAE encodes.

**Input** (:class:`Trajectories`, :func:`load_trajectories`). One or more objects, each either

- a path of points ``[[x, y], ...]`` (2 or more), spread evenly over the clip's frames: frame i sits at position
  s = i (N - 1) / (L - 1) along the path and takes the linear interpolation of points floor(s) and ceil(s)
  (N < L inserts points between the given ones, as the release's ``process_points`` does; N > L resamples), or
- keyframes ``[[frame, x, y], ...]`` (2 or more, frames strictly increasing integers in [0, L - 1]): linear
  between keyframes, held before the first and after the last.

Coordinates are pixels of a *canvas* (``canvas=(width, height)``; the release draws on 256 x 256), with the pixel
convention of MiniSprites: pixel (row i, column j) has its centre at (x=j, y=i). They are rescaled to the video by
:math:`x_v = (x + \tfrac12)\,W/W_c - \tfrac12` (the same for y), which maps pixel extents onto pixel extents.
Without a canvas the points are in the video's own pixels. Files: JSON (a list of objects, one object as a list
of points, or ``{"canvas": [W, H], "trajectories": [...]}``) or text with one point per line (``x y``, ``x, y`` or
``frame x y``), objects separated by a blank line or ``---``, ``#`` comments, and an optional ``canvas W H`` line.

**Points outside the canvas** (documented policy): a point at most 10% of the canvas size outside it (a stroke that
slips off the edge) is clipped onto the canvas with a :class:`UserWarning`; a point farther out raises a
ValueError, since it is more likely a wrong canvas or swapped coordinates than a drawing. NaN or infinite values,
fewer than 2 points, and keyframes beyond the clip's frame count raise a ValueError naming the object.

**T4: displacement maps.** For an object at integer pixel p_i = round(x_i, y_i) in frame i,
:math:`g_{i+1}[p_i] = (x_{i+1} - x_i,\ y_{i+1} - y_i)`; frame 0 is all zero (:func:`trajectory_maps`, (L, 2, H, W)).
The release truncates the points to integers first; minivid keeps the exact differences and rounds only the pixel
they are written to. Several objects write into the same maps (a later object overwrites an earlier one on a
shared pixel, as the release's loop does).

**T5: blur and colours.** Each frame is filtered by a Gaussian normalised so its centre is 1 (:func:`gaussian_kernel`;
the release: 99 x 99, sigma = 10 at 480p, ``cv2.filter2D`` with its default reflect-101 border, which
:func:`blur_maps` reproduces). :func:`blur_for_size` scales kernel and sigma to a video's shorter side (at 32 px:
7 x 7, sigma 0.67). The blurred maps are turned into RGB by the Middlebury colour wheel (:func:`flow_to_rgb`,
numerically torchvision's ``flow_to_image``: a clip's lengths normalised by its largest displacement, as the
release calls it on the clip's maps; zero flow is white). :func:`motion_video` chains T4-T5 into g_vis (3, L, H, W) in [-1, 1], the motion VAE's input.

**Dense maps** (stage 1 of T8, :func:`sprite_flow`): MiniSprites' exact per-pixel motion, the "optical flow" of its
scenes: a pixel covered by a sprite in frame i - 1 (the front-most sprite where they overlap) moves with that
sprite's centre, :math:`g_i[p] = c_k(i) - c_k(i-1)`; sprites only translate, so this is the true flow.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..utils.validation import check_int, check_number, is_int

OUTSIDE_MARGIN = 0.1  # points up to 10% of the canvas size outside it are clipped (with a warning), farther refused
RELEASE_BLUR = (99, 10.0, 480)  # T5 [code]: kernel size, sigma, at this shorter side (480p)


# ---------------------------------------------------------------------------------------------- input
@dataclass
class Trajectories:
    """One or more object trajectories: ``objects`` a list of arrays (N, 2) of points (x, y) or (N, 3) keyframes
    (frame, x, y); ``canvas`` (width, height) of the drawing, None for the video's own pixels. See the module
    docstring for the format and how points become per-frame positions (:meth:`per_frame`)."""

    objects: list
    canvas: tuple[int, int] | None = None

    def __post_init__(self):
        if isinstance(self.objects, np.ndarray | torch.Tensor) and np.ndim(self.objects) == 2:
            self.objects = [self.objects]
        if not isinstance(self.objects, Sequence | np.ndarray | torch.Tensor) or len(self.objects) == 0:
            raise ValueError(f"objects={self.objects!r} is invalid: expected a non-empty list of trajectories, each "
                             "(N, 2) points (x, y) or (N, 3) keyframes (frame, x, y)")
        objs = []
        for k, obj in enumerate(self.objects):
            try:
                a = np.asarray(obj.detach().cpu() if isinstance(obj, torch.Tensor) else obj, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise ValueError(f"trajectory {k} is not an array of numbers: {e}") from None
            if a.ndim != 2 or a.shape[1] not in (2, 3):
                raise ValueError(f"trajectory {k} has shape {a.shape}: expected (N, 2) points (x, y) or (N, 3) "
                                 "keyframes (frame, x, y)")
            if len(a) < 2:
                raise ValueError(f"trajectory {k} has {len(a)} point(s): a trajectory needs at least 2")
            if not np.isfinite(a).all():
                raise ValueError(f"trajectory {k} contains NaN or infinite values (first at row "
                                 f"{int(np.argwhere(~np.isfinite(a))[0, 0])})")
            if a.shape[1] == 3:
                f = a[:, 0]
                if (f != np.round(f)).any() or (f < 0).any() or (np.diff(f) <= 0).any():
                    raise ValueError(f"trajectory {k}: keyframe frames {f.astype(int).tolist() if (f == np.round(f)).all() else f.tolist()} "
                                     "must be integers >= 0, strictly increasing")
            objs.append(a)
        self.objects = objs
        if self.canvas is not None:
            c = tuple(self.canvas) if isinstance(self.canvas, Sequence) else ()
            if len(c) != 2 or not all(is_int(v) and v >= 1 for v in c):
                raise ValueError(f"canvas={self.canvas!r} is invalid: expected (width, height), two integers >= 1")
            self.canvas = (int(c[0]), int(c[1]))

    def __len__(self) -> int:
        return len(self.objects)

    def per_frame(self, num_frames: int, height: int, width: int) -> torch.Tensor:
        """(K, L, 2) float32 positions (x, y) in the video's pixels, one per frame, for L = ``num_frames``; points
        outside the canvas follow the module's policy (clipped with a warning within 10%, else a ValueError)."""
        num_frames = check_int("num_frames", num_frames, 2, what="an integer >= 2 (a trajectory moves between frames)")
        height, width = check_int("height", height, 1), check_int("width", width, 1)
        cw, ch = self.canvas or (width, height)
        out = []
        for k, a in enumerate(self.objects):
            xy = a[:, -2:].copy()
            xy = _inside(k, xy, cw, ch)
            xy[:, 0] = (xy[:, 0] + 0.5) * width / cw - 0.5
            xy[:, 1] = (xy[:, 1] + 0.5) * height / ch - 0.5
            if a.shape[1] == 3:
                frames = a[:, 0]
                if frames[-1] > num_frames - 1:
                    raise ValueError(f"trajectory {k} has a keyframe at frame {int(frames[-1])} but the video has "
                                     f"{num_frames} frames (0..{num_frames - 1})")
                i = np.arange(num_frames)
                pos = np.stack([np.interp(i, frames, xy[:, 0]), np.interp(i, frames, xy[:, 1])], -1)
            else:
                s = np.linspace(0.0, len(xy) - 1, num_frames)
                lo = np.floor(s).astype(int).clip(0, len(xy) - 2)
                w = (s - lo)[:, None]
                pos = (1 - w) * xy[lo] + w * xy[lo + 1]
            out.append(pos)
        return torch.from_numpy(np.stack(out)).float()


def _inside(k: int, xy: np.ndarray, cw: int, ch: int) -> np.ndarray:
    lo, hi = np.zeros(2), np.array([cw - 1.0, ch - 1.0])
    margin = OUTSIDE_MARGIN * np.array([cw, ch], dtype=np.float64)
    far = ((xy < lo - margin) | (xy > hi + margin)).any(1)
    if far.any():
        j = int(np.argmax(far))
        raise ValueError(f"trajectory {k}: point {j} = ({xy[j, 0]:g}, {xy[j, 1]:g}) lies more than 10% outside the "
                         f"canvas {cw} x {ch} (x in [0, {cw - 1}], y in [0, {ch - 1}]); is the canvas right, or are x "
                         "and y swapped?")
    if ((xy < lo) | (xy > hi)).any():
        warnings.warn(f"trajectory {k}: points slightly outside the canvas {cw} x {ch} were clipped onto it",
                      UserWarning, stacklevel=3)
        xy = np.clip(xy, lo, hi)
    return xy


def _parse_text(text: str) -> tuple[list, tuple[int, int] | None]:
    objects, current, canvas = [], [], None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line == "---":
            if current:
                objects.append(current)
                current = []
            continue
        if line.lower().startswith("canvas"):
            parts = re.split(r"[,\s]+", line[6:].strip())
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                raise ValueError(f"line {n}: {raw.strip()!r} is invalid: expected 'canvas WIDTH HEIGHT'")
            canvas = (int(parts[0]), int(parts[1]))
            continue
        parts = [p for p in re.split(r"[,\s]+", line) if p]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"line {n}: {raw.strip()!r} is not a point: expected 'x y' or 'frame x y'") from None
        if len(values) not in (2, 3):
            raise ValueError(f"line {n}: {raw.strip()!r} has {len(values)} numbers: expected 'x y' or 'frame x y'")
        current.append(values)
    if current:
        objects.append(current)
    return objects, canvas


def _parse_json(data) -> tuple[list, tuple[int, int] | None]:
    canvas = None
    if isinstance(data, dict):
        unknown = set(data) - {"canvas", "trajectories"}
        if unknown or "trajectories" not in data:
            raise ValueError(f"a JSON trajectory object has the keys 'trajectories' and optionally 'canvas'; got "
                             f"{sorted(data)}")
        canvas, data = data.get("canvas"), data["trajectories"]
    if not isinstance(data, list) or not data:
        raise ValueError("JSON trajectories must be a non-empty list (one object: a list of [x, y] points; several: "
                         "a list of such lists)")
    one_object = all(isinstance(p, list) and p and not isinstance(p[0], list) for p in data)
    return ([data] if one_object else data), canvas


def load_trajectories(source, canvas: tuple[int, int] | None = None) -> Trajectories:
    """:class:`Trajectories` from a JSON or text file (``.json`` is read as JSON, anything else as text), from a
    string holding either format, or from a list of point lists / arrays. ``canvas`` (width, height) overrides the
    file's."""
    if isinstance(source, Trajectories):
        return Trajectories(source.objects, canvas or source.canvas)
    file_canvas = None
    if isinstance(source, (str, Path)) and not (isinstance(source, str) and ("\n" in source or source.lstrip()[:1]
                                                                              in "[{")):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"trajectory file {str(path)!r} does not exist (pass a .json or a text file, or "
                                    "the points themselves)")
        text = path.read_text()
        objects, file_canvas = (_parse_json(json.loads(text)) if path.suffix.lower() == ".json"
                                else _parse_text(text))
    elif isinstance(source, str):
        s = source.strip()
        objects, file_canvas = _parse_json(json.loads(s)) if s[:1] in "[{" else _parse_text(s)
    else:
        objects = source
    if not isinstance(objects, (list, tuple, np.ndarray, torch.Tensor)) or len(objects) == 0:
        raise ValueError(f"no trajectory found in {source!r}")
    return Trajectories(list(objects) if not isinstance(objects, (np.ndarray, torch.Tensor)) else objects,
                        canvas or (tuple(file_canvas) if file_canvas is not None else None))


def save_trajectories(trajectories: Trajectories, path: str | Path) -> Path:
    """Write ``trajectories`` as JSON (``{"canvas": ..., "trajectories": ...}``), the format :func:`load_trajectories`
    and the CLI read."""
    path = Path(path)
    data = {"trajectories": [a.tolist() for a in trajectories.objects]}
    if trajectories.canvas is not None:
        data["canvas"] = list(trajectories.canvas)
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------------------------------------- T4
def _check_points(points, height: int, width: int, num_frames: int | None = None) -> torch.Tensor:
    p = torch.as_tensor(points, dtype=torch.float64)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[-1] != 2 or p.shape[1] < 2:
        raise ValueError(f"points must be per-frame positions (K, L, 2) with L >= 2 (Trajectories.per_frame makes "
                         f"them), got shape {tuple(p.shape)}")
    if num_frames is not None and p.shape[1] != num_frames:
        raise ValueError(f"the trajectories have {p.shape[1]} frames but the video has {num_frames}: build them with "
                         f"Trajectories.per_frame(num_frames={num_frames}, ...)")
    if not torch.isfinite(p).all():
        raise ValueError("points contain NaN or infinite values")
    if (p[..., 0] < -0.5).any() or (p[..., 0] > width - 0.5).any() or (p[..., 1] < -0.5).any() \
            or (p[..., 1] > height - 0.5).any():
        raise ValueError(f"points lie outside the {width} x {height} video (x in [-0.5, {width - 0.5}], y in "
                         f"[-0.5, {height - 0.5}])")
    return p


def rescale_points(points: torch.Tensor, scale: float) -> torch.Tensor:
    """Positions (..., 2) (x, y) in one video's pixels -> the same places in a video ``scale`` times as large (pixel
    centres at integers: (p + 0.5) * scale - 0.5, as :meth:`Trajectories.per_frame` maps a canvas to a video)."""
    scale = check_number("scale", scale, 0.0, strict_minimum=True)
    return (torch.as_tensor(points) + 0.5) * scale - 0.5


def trajectory_maps(points, height: int, width: int, num_frames: int | None = None) -> torch.Tensor:
    """T4: displacement maps g (L, 2, H, W) float32 of per-frame positions ``points`` (K, L, 2) (x, y) in the video's
    pixels: g[i + 1, :, round(y_i), round(x_i)] = p_{i+1} - p_i for each object, zero elsewhere and in frame 0.
    ``num_frames``: the video's frame count, refused (ValueError) when the trajectories have another."""
    height, width = check_int("height", height, 1), check_int("width", width, 1)
    p = _check_points(points, height, width, num_frames)
    k, L, _ = p.shape
    g = torch.zeros(L, 2, height, width, dtype=torch.float64)
    d = p[:, 1:] - p[:, :-1]  # (K, L - 1, 2): u, v
    col = p[:, :-1, 0].round().long().clamp(0, width - 1)
    row = p[:, :-1, 1].round().long().clamp(0, height - 1)
    for j in range(k):  # later objects overwrite earlier ones on a shared pixel (the release's loop order)
        frames = torch.arange(1, L)
        g[frames, 0, row[j], col[j]] = d[j, :, 0]
        g[frames, 1, row[j], col[j]] = d[j, :, 1]
    return g.float()


# ---------------------------------------------------------------------------------------------- T5: blur
def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """T5 [code]: an isotropic 2D Gaussian (size, size), normalised so its centre is 1 (odd ``size``)."""
    size = check_int("size", size, 1)
    if size % 2 == 0:
        raise ValueError(f"size={size} is invalid: expected an odd kernel size (the kernel has a centre pixel)")
    sigma = check_number("sigma", sigma, 1e-6)
    r = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return (g / g[size // 2, size // 2]).float()


def blur_for_size(height: int, width: int) -> tuple[int, float]:
    """The release's blur (99, sigma 10 at 480p) scaled to a video's shorter side: (odd size >= 3, sigma)."""
    size, sigma, ref = RELEASE_BLUR
    s = min(check_int("height", height, 1), check_int("width", width, 1)) / ref
    k = max(3, int(round(size * s)))
    return k + (k % 2 == 0), sigma * s


def blur_maps(g: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """T5: filter every frame and channel of maps (..., 2, H, W) with ``kernel`` (k, k) as ``cv2.filter2D`` does
    (correlation, reflect-101 border, the same size out)."""
    if not isinstance(kernel, torch.Tensor) or kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] \
            or kernel.shape[0] % 2 == 0:
        raise ValueError(f"kernel must be a square (k, k) tensor with odd k, got "
                         f"{tuple(kernel.shape) if isinstance(kernel, torch.Tensor) else type(kernel).__name__}")
    if not isinstance(g, torch.Tensor) or g.ndim < 3:
        raise ValueError(f"g must be maps (..., C, H, W), got {tuple(g.shape) if isinstance(g, torch.Tensor) else g!r}")
    *lead, h, w = g.shape
    r = kernel.shape[0] // 2
    x = g.reshape(-1, 1, h, w)
    if r < min(h, w):
        x = F.pad(x, (r, r, r, r), mode="reflect")
    else:  # a kernel wider than the frame: the border reflects again and again, period 2 (n - 1) on each axis
        x = x[:, :, _reflect_101(h, r, x.device)][:, :, :, _reflect_101(w, r, x.device)]
    out = F.conv2d(x, kernel.to(g)[None, None])
    return out.reshape(*lead, *out.shape[-2:])


def _reflect_101(n: int, r: int, device) -> torch.Tensor:
    """The source index of positions -r .. n - 1 + r under cv2's BORDER_REFLECT_101 (``gfedcb|abcdefgh|gfedcba``),
    repeated for borders wider than the side: periodic with period 2 (n - 1); a side of one pixel repeats it."""
    i = torch.arange(-r, n + r, device=device)
    if n == 1:
        return torch.zeros_like(i)
    m = i.remainder(2 * (n - 1))
    return torch.where(m < n, m, 2 * (n - 1) - m)


# ---------------------------------------------------------------------------------------------- T5: colours
def _colour_wheel() -> torch.Tensor:
    """The Middlebury colour wheel (55, 3) in [0, 255]: red -> yellow -> green -> cyan -> blue -> magenta -> red, in
    15, 6, 4, 11, 13 and 6 steps (Baker et al., 2011)."""
    ry, yg, gc, cb, bm, mr = 15, 6, 4, 11, 13, 6
    rows = []
    for n, (start, end) in zip((ry, yg, gc, cb, bm, mr), (((255, 0, 0), (255, 255, 0)), ((255, 255, 0), (0, 255, 0)),
                                                          ((0, 255, 0), (0, 255, 255)), ((0, 255, 255), (0, 0, 255)),
                                                          ((0, 0, 255), (255, 0, 255)), ((255, 0, 255), (255, 0, 0)))):
        s, e = torch.tensor(start, dtype=torch.float64), torch.tensor(end, dtype=torch.float64)
        # each segment ramps one channel linearly in floor(255 i / n) steps, i = 0..n-1 (the reference's integer ramp)
        i = torch.arange(n, dtype=torch.float64)
        ramp = torch.floor(255 * i / n)[:, None] / 255
        rows.append(s + (e - s) * ramp)
    return torch.cat(rows)


def flow_to_rgb(flow: torch.Tensor, clip_dims: int | None = None) -> torch.Tensor:
    """T5: flow (..., 2, H, W) -> RGB (..., 3, H, W) in [0, 1] by the Middlebury colour wheel (zero flow is white; hue
    gives the direction, saturation the length relative to the largest one). The lengths are normalised by the
    largest displacement over the whole tensor (``clip_dims=None``), as ``torchvision.utils.flow_to_image`` does and
    as Tora's release calls it on a clip's (L, 2, H, W) maps, or over each of the last ``clip_dims`` + 3 dimensions'
    blocks (``clip_dims=1``: each (L, 2, H, W) clip of a batch (B, L, 2, H, W) on its own). ``(255 * out).floor()``
    equals torchvision's result."""
    if not isinstance(flow, torch.Tensor) or flow.ndim < 3 or flow.shape[-3] != 2:
        got = tuple(flow.shape) if isinstance(flow, torch.Tensor) else type(flow).__name__
        raise ValueError(f"flow must be (..., 2, H, W), got {got}")
    f = flow.to(torch.float32)
    length = f.pow(2).sum(-3, keepdim=True).sqrt()
    if clip_dims is None:
        norm = length.max()
    else:
        clip_dims = check_int("clip_dims", clip_dims, 0, flow.ndim - 3)
        norm = length.amax(dim=tuple(range(-3 - clip_dims, 0)), keepdim=True)
    f = f / (norm + torch.finfo(torch.float32).eps)
    u, v = f.unbind(-3)
    wheel = _colour_wheel().to(torch.float32) / 255  # (55, 3)
    n = len(wheel)
    rad = (u**2 + v**2).sqrt()
    a = torch.atan2(-v, -u) / math.pi
    fk = (a + 1) / 2 * (n - 1)
    k0 = fk.floor().long()
    k1 = k0 + 1
    k1[k1 == n] = 0
    t = (fk - k0)[..., None]
    col = (1 - t) * wheel[k0] + t * wheel[k1]  # (..., H, W, 3)
    col = 1 - rad[..., None] * (1 - col)
    return col.movedim(-1, -3).clamp(0, 1)


def motion_video(points, height: int, width: int, blur: tuple[int, float] | None = None,
                 num_frames: int | None = None) -> torch.Tensor:
    """T4-T5: per-frame positions (K, L, 2) -> g_vis (3, L, H, W) in [-1, 1], the motion VAE's input: displacement
    maps, the Gaussian blur (``blur`` = (size, sigma); None: :func:`blur_for_size`), the colour wheel. ``num_frames``:
    the video's frame count (trajectories with another are refused)."""
    return maps_to_video(trajectory_maps(points, height, width, num_frames), blur)


def maps_to_video(g: torch.Tensor, blur: tuple[int, float] | None = None) -> torch.Tensor:
    """T5: displacement maps (L, 2, H, W) (or (B, L, 2, H, W)) -> blurred and coloured g_vis (3, L, H, W) (or
    (B, 3, L, H, W)) in [-1, 1]; ``blur=(1, s)`` (any s) leaves the maps unfiltered (dense flow)."""
    if not isinstance(g, torch.Tensor) or g.ndim not in (4, 5) or g.shape[-3] != 2:
        got = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
        raise ValueError(f"g must be displacement maps (L, 2, H, W) or (B, L, 2, H, W), got {got}")
    h, w = g.shape[-2:]
    size, sigma = blur_for_size(h, w) if blur is None else blur
    if size > 1:
        g = blur_maps(g, gaussian_kernel(size, sigma))
    return (2 * flow_to_rgb(g, clip_dims=1) - 1).movedim(-4, -3)  # each clip normalised on its own, as the release


# ---------------------------------------------------------------------------------------------- MiniSprites
def sprite_flow(scene, height: int | None = None, width: int | None = None) -> torch.Tensor:
    """Dense maps (L, 2, H, W) of a MiniSprites :class:`~minivid.data.Scene`: the exact per-pixel motion from frame
    i - 1 to frame i stored at frame i (frame 0 zero), on the pixels each sprite covers (alpha >= 0.5) in frame i - 1,
    the front-most sprite winning where sprites overlap (T8 stage 1)."""
    from ..data.minisprites import _signed_distance

    H, W = scene.background.shape[1:]
    L = len(scene.sprites[0].centers) if scene.sprites else 1
    g = np.zeros((L, 2, H, W), dtype=np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    for s in scene.sprites:  # back to front: later sprites overwrite
        c = s.centers.astype(np.float32)
        for i in range(1, L):
            inside = 0.5 - _signed_distance(s.shape, xx - c[i - 1, 0], yy - c[i - 1, 1], s.radius) >= 0.5
            g[i, 0][inside] = c[i, 0] - c[i - 1, 0]
            g[i, 1][inside] = c[i, 1] - c[i - 1, 1]
    return torch.from_numpy(g)


def sample_sparse(centers: torch.Tensor, sprite_mask: torch.Tensor, generator: torch.Generator | None = None,
                  max_objects: int | None = None) -> torch.Tensor:
    """T8 stage 2: the centre paths (k, L, 2) of 1..N randomly chosen sprites of a MiniSprites item (``centers``
    (S, L, 2), ``sprite_mask`` (S,)); ``max_objects`` caps N (default: every sprite may be chosen)."""
    idx = torch.nonzero(torch.as_tensor(sprite_mask)).flatten()
    if len(idx) == 0:
        raise ValueError("sprite_mask selects no sprite")
    n_max = len(idx) if max_objects is None else min(len(idx), check_int("max_objects", max_objects, 1))
    n = int(torch.randint(1, n_max + 1, (1,), generator=generator))
    pick = idx[torch.randperm(len(idx), generator=generator)[:n]]
    return centers[pick]


def load_sprite_paths(path, names: Sequence[str], num_frames: int, height: int, width: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Requested paths (N, T, 2) and sprite colours (N,) for clips ``names``, read by ``python -m minivid eval
    --trajectories``: a JSON object {name: {"color": "red", "trajectory": points or keyframes (this module's input
    format), "canvas": [W, H] (optional)}}, one tracked sprite per clip, interpolated to ``num_frames``."""
    from ..data.minisprites import COLOR_NAMES

    d = json.loads(Path(path).read_text())
    if not isinstance(d, dict):
        raise ValueError(f"trajectories file {path}: expected a JSON object {{clip name: {{color, trajectory}}}}")
    paths, colors = [], []
    for n in names:
        if n not in d:
            raise ValueError(f"trajectories file {path} has no entry for clip {n!r}")
        e = d[n]
        if not isinstance(e, dict) or e.get("color") not in COLOR_NAMES or "trajectory" not in e:
            raise ValueError(f"trajectories file {path}, clip {n!r}: expected {{\"color\": one of {COLOR_NAMES}, "
                             f"\"trajectory\": [[x, y], ...]}}, got {e!r}")
        tr = Trajectories([e["trajectory"]], e.get("canvas"))
        paths.append(tr.per_frame(num_frames, height, width)[0])
        colors.append(COLOR_NAMES.index(e["color"]))
    return torch.stack(paths), torch.tensor(colors)
