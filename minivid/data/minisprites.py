"""MiniSprites: a procedurally generated video data set that trains in minutes on a CPU.

Real video data sets (UCF-101, SkyTimelapse) are gigabytes and cannot be downloaded here, yet every
notebook needs videos with *known* content: captions for text-to-video, exact object positions for
trajectory control (Tora) and for measuring trajectory error. MiniSprites draws them on the fly:
1-3 coloured shapes move over a smooth background, and the generator returns the video together with
the caption it describes and the exact centre of every sprite in every frame.

The pipeline has three pure steps, each usable on its own (trajectory control renders its own scenes):

1. ``random_background(rng, H, W)`` -> ``(3, H, W)`` smooth, low-saturation, mid-dark image.
2. a list of ``Sprite`` (shape, colour, radius, per-frame ``centers`` of shape ``(T, 2)``), drawn by
   ``MiniSprites.scene(i)`` from one of four motions: linear, bounce, circle, wave.
3. ``render_scene(background, sprites)`` -> ``(3, T, H, W)`` in [-1, 1]: each sprite's coverage is
   computed from a signed distance (about 1 px soft edge, i.e. anti-aliased) and alpha-composited in
   list order (the first sprite is at the back).

Coordinates: a centre is ``(x, y)`` in pixel units, x the column and y the row index; the pixel at
(row i, col j) has its centre at (x=j, y=i), so the frame spans [-0.5, W-0.5] x [-0.5, H-0.5]. Every
shape's centre is its area centroid, so the centroid of a sprite's pixels recovers it (see
``minivid.data.tracking``). Item ``i`` is a pure function of (seed, split, i, constructor arguments):
it uses ``np.random.default_rng([seed, split_id, i])`` and no global random state.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils.validation import check_int

# ---------------------------------------------------------------- public constants
COLOR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white")
# (8, 3) RGB in [0, 1]. Every colour has a channel equal to 1 while every background channel is at
# most BACKGROUND_MAX, so a background pixel is always >= 0.45 (Euclidean RGB) from every palette colour.
PALETTE = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 0.5, 0], [1, 1, 1]],
    dtype=np.float32,
)
BACKGROUND_MAX = 0.55
SHAPES = ("circle", "square", "triangle", "diamond")
MOTIONS = ("linear", "bounce", "circle", "wave")
# Compass words for a direction as seen on screen, counter-clockwise from "right" in 45 degree steps.
DIRECTIONS = ("right", "up and to the right", "up", "up and to the left",
              "left", "down and to the left", "down", "down and to the right")
# Size of each shape relative to the sprite `radius` r (chosen so the four shapes look alike in size):
# circle radius r, square half-side 0.8 r, triangle circumradius 1.2 r, diamond half-diagonal 1.1 r.
_BOUNDING = {"circle": 1.0, "square": 0.8 * math.sqrt(2.0), "triangle": 1.2, "diamond": 1.1}
SPLITS = ("train", "test")


@dataclass
class Sprite:
    """One moving shape. ``centers`` (T, 2) holds the (x, y) centre in pixels for every frame.

    ``motion`` and ``description`` only feed the labels and the caption ("moves right", "bounces");
    a hand-made sprite (trajectory control) may leave them at their defaults.
    """

    shape: str
    color: str
    radius: float
    centers: np.ndarray  # (T, 2) float, (x, y) pixel units
    motion: str = "linear"
    description: str = "moves"

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"shape={self.shape!r} is invalid: expected one of {SHAPES}")
        if self.color not in COLOR_NAMES:
            raise ValueError(f"color={self.color!r} is invalid: expected one of {COLOR_NAMES}")
        if self.motion not in MOTIONS:
            raise ValueError(f"motion={self.motion!r} is invalid: expected one of {MOTIONS}")
        self.centers = np.asarray(self.centers, dtype=np.float64)
        if self.centers.ndim != 2 or self.centers.shape[1] != 2 or len(self.centers) == 0:
            raise ValueError(f"centers must have shape (T, 2) with T >= 1, got {self.centers.shape}")
        if not np.isfinite(self.centers).all():
            raise ValueError("centers must be finite (x, y) pixel positions")
        if not self.radius > 0:
            raise ValueError(f"radius={self.radius!r} is invalid: expected a positive number")

    @property
    def bounding_radius(self) -> float:
        """Radius of the smallest disc around the centre that contains the shape."""
        return _BOUNDING[self.shape] * self.radius

    @property
    def phrase(self) -> str:
        article = "an" if self.color[0] in "aeiou" else "a"
        return f"{article} {self.color} {self.shape} {self.description}"


@dataclass
class Scene:
    """A background (3, H, W) in [0, 1] plus sprites listed back to front."""

    background: np.ndarray
    sprites: list

    @property
    def caption(self) -> str:
        return make_caption(self.sprites)

    def render(self) -> torch.Tensor:
        return render_scene(self.background, self.sprites)


def make_caption(sprites: Sequence[Sprite]) -> str:
    """"a red circle moves right", "A while B", "A, B and C" (one phrase per sprite, in order)."""
    p = [s.phrase for s in sprites]
    if len(p) <= 1:
        return p[0] if p else "an empty scene"
    if len(p) == 2:
        return f"{p[0]} while {p[1]}"
    return ", ".join(p[:-1]) + " and " + p[-1]


# ---------------------------------------------------------------- rendering
def _box(dx: np.ndarray, dy: np.ndarray, a: float) -> np.ndarray:
    """Exact signed distance to an axis-aligned square of half-side a centred at the origin."""
    qx, qy = np.abs(dx) - a, np.abs(dy) - a
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Exact signed distance (pixels, < 0 inside) from pixel centres offset (dx, dy) from the centroid.

    Exact distances keep the anti-aliased band 1 px wide everywhere, corners included, so a sprite
    whose shape is inside the frame never tints the outermost pixels.
    """
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if shape == "square":  # half-side 0.8 r
        return _box(dx, dy, 0.8 * r)
    if shape == "diamond":  # a square turned by 45 degrees, half-diagonal 1.1 r
        c = 1.0 / math.sqrt(2.0)
        return _box((dx + dy) * c, (dx - dy) * c, 1.1 * r * c)
    # Equilateral triangle with its apex up on screen and circumradius R = 1.2 r (Inigo Quilez's
    # exact formula, https://iquilezles.org/articles/distfunctions2d); fold x to one half, then to
    # the nearer edge, and measure the distance to that edge segment.
    k = math.sqrt(3.0)
    h = 1.2 * r * k / 2.0  # half the side length
    px = np.abs(dx) - h  # (T, H, W) after broadcasting
    py = -dy + h / k  # y up, base edge on py = 0
    flip = px + k * py > 0
    px, py = np.where(flip, (px - k * py) / 2, px), np.where(flip, (-k * px - py) / 2, py)
    px = px - np.clip(px, -2.0 * h, 0.0)
    return -np.hypot(px, py) * np.sign(py)


def render_scene(background, sprites: Sequence[Sprite], height: int | None = None,
                 width: int | None = None, num_frames: int | None = None) -> torch.Tensor:
    """Render sprites over a background; returns a float32 video (3, T, H, W) in [-1, 1].

    ``background`` is an array (3, H, W) in [0, 1], or an RGB triple (then ``height`` and ``width``
    are required). T comes from the sprites' ``centers`` (or ``num_frames`` when there are none).
    Coverage alpha = clip(0.5 - sdf, 0, 1): 1 inside, 0 outside, linear across a 1 px edge band;
    compositing is ``out = (1 - alpha) * out + alpha * colour``, back to front.
    """
    bg = np.asarray(background, dtype=np.float32)
    if bg.ndim == 1:
        if bg.shape != (3,) or height is None or width is None:
            raise ValueError("a flat background needs an RGB triple plus height and width")
        bg = np.broadcast_to(bg[:, None, None], (3, height, width))
    if bg.ndim != 3 or bg.shape[0] != 3:
        raise ValueError(f"background must have shape (3, H, W), got {bg.shape}")
    H, W = bg.shape[1:]
    if (height is not None and height != H) or (width is not None and width != W):
        raise ValueError(f"background is {H} x {W} but height={height}, width={width} were asked for")
    T = len(sprites[0].centers) if sprites else num_frames
    if T is None or any(len(s.centers) != T for s in sprites):
        raise ValueError("all sprites need centers of the same length T (or pass num_frames)")
    # Blend in [-1, 1] directly (blending commutes with the affine map x -> 2x - 1).
    out = np.repeat(bg[:, None] * 2.0 - 1.0, T, axis=1)  # (3, T, H, W)
    tt = np.arange(T)[:, None, None]  # (T, 1, 1)
    for s in sprites:
        c = s.centers.astype(np.float32)  # (T, 2)
        # Only pixels within R + 0.5 of the centre can be covered: work in a per-frame window
        # (wy, wx) around the sprite, moved inside the frame (10x less work at 256 px).
        m = int(math.ceil(s.bounding_radius)) + 2
        wy, wx = min(2 * m, H), min(2 * m, W)
        y0 = np.clip(np.floor(c[:, 1]).astype(int) - m + 1, 0, H - wy)  # (T,)
        x0 = np.clip(np.floor(c[:, 0]).astype(int) - m + 1, 0, W - wx)
        rows = y0[:, None, None] + np.arange(wy)[None, :, None]  # (T, wy, 1) pixel row = y
        cols = x0[:, None, None] + np.arange(wx)[None, None, :]  # (T, 1, wx) pixel column = x
        dx = cols.astype(np.float32) - c[:, 0, None, None]  # (T, 1, wx)
        dy = rows.astype(np.float32) - c[:, 1, None, None]  # (T, wy, 1)
        alpha = np.clip(0.5 - _signed_distance(s.shape, dx, dy, s.radius), 0.0, 1.0)  # (T, wy, wx)
        color = PALETTE[COLOR_NAMES.index(s.color)][:, None, None, None] * 2.0 - 1.0  # (3, 1, 1, 1)
        win = out[:, tt, rows, cols]  # (3, T, wy, wx)
        out[:, tt, rows, cols] = win + alpha * (color - win)  # (1 - a) * out + a * colour
    return torch.from_numpy(out)


def random_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth, low-saturation, mid-dark background (3, H, W) in [0, BACKGROUND_MAX].

    A linear gradient between two muted colours in a random direction, blended towards a third muted
    colour by a sum of two low-frequency plane waves (0.3-1.5 cycles per image, so it looks the same
    at every resolution).
    """
    def muted():  # hue anywhere, saturation <= 0.45, value 0.12-0.55 (so every channel <= 0.55)
        return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.05, 0.45),
                                            rng.uniform(0.12, 0.55)), dtype=np.float32)[:, None, None]
    c0, c1, c2 = muted(), muted(), muted()
    y = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None]  # (H, 1) in (0, 1)
    x = ((np.arange(width, dtype=np.float32) + 0.5) / width)[None, :]  # (1, W)
    a = rng.uniform(0, 2 * math.pi)
    g = (x - 0.5) * math.cos(a) + (y - 0.5) * math.sin(a)  # (H, W)
    g = (g - g.min()) / (np.ptp(g) + 1e-6)
    img = c0 + (c1 - c0) * g  # (3, H, W)
    wave = np.zeros((height, width), np.float32)
    for _ in range(2):
        f, b, phi = rng.uniform(0.3, 1.5), rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)
        wave += np.sin(2 * math.pi * f * (x * math.cos(b) + y * math.sin(b)) + phi)
    m = rng.uniform(0.3, 0.8) * (0.5 + 0.25 * wave)  # (H, W) blend weight in [0, 0.8]
    img = img + m * (c2 - img)
    return np.clip(img, 0.0, BACKGROUND_MAX).astype(np.float32)


# ---------------------------------------------------------------- motions
def _compass(rng):
    """A direction near one of the 8 compass directions (+-15 degrees, so the caption stays right)."""
    k = int(rng.integers(8))
    a = math.radians(45 * k + rng.uniform(-15, 15))
    return np.array([math.cos(a), -math.sin(a)]), DIRECTIONS[k]  # screen (x, y), y points down


def _reflect(u, lo, hi):
    """Fold an unbounded coordinate into [lo, hi] as a ball bouncing between two walls would."""
    L = hi - lo
    m = np.mod(u - lo, 2 * L)
    return lo + np.where(m <= L, m, 2 * L - m)


def sample_trajectory(rng, motion: str, num_frames: int, height: int, width: int,
                      bounding_radius: float, speed: float = 1.0):
    """Per-frame centres (T, 2) for one motion, keeping the whole sprite inside the frame.

    The centre must stay within [lo, hi] per axis (the sprite's bounding disc plus a 1 px margin).
    Speeds are in pixels per frame and proportional to min(H, W) * speed. Returns (centers, words).
    """
    T, s = num_frames, min(height, width)
    t = np.arange(T, dtype=np.float64)[:, None]  # (T, 1)
    lo = bounding_radius + 0.5
    hi = np.array([width - 1.5 - bounding_radius, height - 1.5 - bounding_radius])  # (x, y)
    room = hi - lo
    v = speed * s * rng.uniform(0.015, 0.035)  # px / frame
    steps = max(T - 1, 1)
    if motion in ("linear", "wave"):
        d, word = _compass(rng)
        amp, period, phase = 0.0, 1.0, 0.0
        if motion == "wave":  # sinusoid along the normal n = (-d_y, d_x)
            amp = min(rng.uniform(0.05, 0.1) * s, 0.2 * room.min())
            period, phase = rng.uniform(6, 12), rng.uniform(0, 2 * math.pi)
        n = np.array([-d[1], d[0]])
        avail = room - 2 * np.abs(n) * amp  # room left for the drift on each axis
        drift = np.abs(d) * v * steps
        v *= min(1.0, float(np.min(0.95 * avail / np.maximum(drift, 1e-9))))  # slow down to fit
        rel = t * v * d + amp * np.sin(2 * math.pi * t / period + phase) * n  # (T, 2)
        start = rng.uniform(lo - rel.min(0), hi - rel.max(0))
        words = f"moves {word}" + (" along a wavy path" if motion == "wave" else "")
        return start + rel, words
    if motion == "bounce":
        a = rng.uniform(0, 2 * math.pi)
        vel = 1.5 * v * np.array([math.cos(a), math.sin(a)])
        p0 = rng.uniform(lo, hi)
        k = int(np.argmax(np.abs(vel)))  # make the main axis hit its wall inside the clip
        wall = hi[k] if vel[k] > 0 else lo
        p0[k] = wall - vel[k] * rng.uniform(0.2, 0.8) * steps
        return _reflect(p0 + t * vel, lo, hi), "bounces"
    if motion == "circle":
        r_orbit = min(rng.uniform(0.12, 0.3) * s, 0.475 * room.min())
        centre = rng.uniform(lo + r_orbit, hi - r_orbit)
        clockwise = bool(rng.random() < 0.5)
        omega = min(1.2 * v / r_orbit, 0.35)  # rad / frame
        # With y pointing down, increasing the angle turns right -> down: clockwise on screen.
        theta = rng.uniform(0, 2 * math.pi) + (1 if clockwise else -1) * omega * t
        pos = centre + r_orbit * np.concatenate([np.cos(theta), np.sin(theta)], axis=1)
        return pos, "circles " + ("clockwise" if clockwise else "counterclockwise")
    raise ValueError(f"motion={motion!r} is invalid: expected one of {MOTIONS}")


# ---------------------------------------------------------------- argument checks
def check_size(size, name="size"):
    """``size`` -> (H, W): an int or a pair, each in [16, 512] and divisible by 8."""
    what = "an int or (H, W) pair, each an int in [16, 512] divisible by 8"
    pair = (size, size) if isinstance(size, (int, np.integer)) else size
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{name}={size!r} is invalid: expected {what}")
    for v in pair:
        check_int(name, v, 16, 512, what)
        if v % 8:
            raise ValueError(f"{name}={size!r} is invalid: expected {what}")
    return int(pair[0]), int(pair[1])


def _check_names(name, value, allowed):
    if value is None:
        return tuple(allowed)
    vals = (value,) if isinstance(value, str) else tuple(value)
    if not vals or any(v not in allowed for v in vals):
        raise ValueError(f"{name}={value!r} is invalid: expected None or a non-empty list from {allowed}")
    return vals


class MiniSprites(Dataset):
    """Procedural videos of 1-3 moving sprites with captions, labels and exact per-frame centres.

    Args:
        num_videos: length of the data set (item i does not depend on it).
        size: int or (H, W); each side in [16, 512] and divisible by 8 (every autoencoder here
            downsamples by powers of 2). 32-256 is the tested range.
        num_frames: T >= 1 (1 gives images). Long clips (e.g. 128 frames) stay in frame.
        num_sprites: int or inclusive range (lo, hi); at most len(COLOR_NAMES) (colours are distinct).
        split: "train" or "test": disjoint random streams for the same seed.
        seed: int >= 0.  motions / shapes: subsets of MOTIONS / SHAPES (None = all).
        speed: multiplies every sprite speed (linear and wave clips slow down to stay in frame).

    Item ``i`` is a dict (all collate-friendly; S = max number of sprites):
        video (3, T, H, W) float32 in [-1, 1]; caption str; centers (S, T, 2) float32 (x, y) pixel
        centres, NaN for absent sprites; sprite_mask (S,) bool; labels {shape, color, motion} int64 (S,)
        padded with -1; label int = shape_id * len(MOTIONS) + motion_id of the first sprite, one of
        ``num_classes`` = 16 classes named ``class_names[label]`` (e.g. "circle bounce").
    """

    num_classes = len(SHAPES) * len(MOTIONS)
    class_names = tuple(f"{s} {m}" for s in SHAPES for m in MOTIONS)

    def __init__(self, num_videos: int = 1000, size=64, num_frames: int = 16, num_sprites=(1, 3),
                 split: str = "train", seed: int = 0, motions=None, shapes=None, speed: float = 1.0):
        self.num_videos = check_int("num_videos", num_videos, 1)
        self.height, self.width = check_size(size)
        self.num_frames = check_int("num_frames", num_frames, 1)
        n = len(COLOR_NAMES)
        what = f"an int or a (lo, hi) pair with 1 <= lo <= hi <= {n}"
        pair = (num_sprites, num_sprites) if isinstance(num_sprites, (int, np.integer)) else num_sprites
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"num_sprites={num_sprites!r} is invalid: expected {what}")
        lo_s, hi_s = (check_int("num_sprites", v, 1, n, what) for v in pair)
        if lo_s > hi_s:
            raise ValueError(f"num_sprites={num_sprites!r} is invalid: expected {what}")
        self.min_sprites, self.max_sprites = lo_s, hi_s
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is invalid: expected one of {SPLITS}")
        self.split = split
        self.seed = check_int("seed", seed, 0)
        self.motions = _check_names("motions", motions, MOTIONS)
        self.shapes = _check_names("shapes", shapes, SHAPES)
        if isinstance(speed, bool) or not isinstance(speed, (int, float, np.floating)) \
                or not 0 < speed <= 10:
            raise ValueError(f"speed={speed!r} is invalid: expected a number in (0, 10]")
        self.speed = float(speed)

    def __len__(self) -> int:
        return self.num_videos

    def _index(self, i) -> int:
        if not isinstance(i, (int, np.integer)) or not -self.num_videos <= i < self.num_videos:
            raise IndexError(f"index {i!r} out of range for MiniSprites of length {self.num_videos}")
        return int(i) % self.num_videos

    def scene(self, i: int) -> Scene:
        """The background and sprites of item i (a pure function of seed, split, i and the args)."""
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), self._index(i)])
        H, W, s = self.height, self.width, min(self.height, self.width)
        background = random_background(rng, H, W)
        k = int(rng.integers(self.min_sprites, self.max_sprites + 1))
        colors = rng.choice(len(COLOR_NAMES), size=k, replace=False)
        sprites = []
        for c in colors:
            shape = self.shapes[int(rng.integers(len(self.shapes)))]
            motion = self.motions[int(rng.integers(len(self.motions)))]
            radius = max(2.0, rng.uniform(0.07, 0.14) * s)
            centers, words = sample_trajectory(rng, motion, self.num_frames, H, W,
                                               _BOUNDING[shape] * radius, self.speed)
            sprites.append(Sprite(shape, COLOR_NAMES[c], radius, centers, motion, words))
        return Scene(background, sprites)

    def __getitem__(self, i: int) -> dict:
        scene = self.scene(i)
        S, T = self.max_sprites, self.num_frames
        centers = torch.full((S, T, 2), float("nan"))  # (S, T, 2)
        labels = {k: torch.full((S,), -1, dtype=torch.int64) for k in ("shape", "color", "motion")}
        for j, sp in enumerate(scene.sprites):
            centers[j] = torch.from_numpy(sp.centers.astype(np.float32))
            labels["shape"][j] = SHAPES.index(sp.shape)
            labels["color"][j] = COLOR_NAMES.index(sp.color)
            labels["motion"][j] = MOTIONS.index(sp.motion)
        first = scene.sprites[0]
        return {
            "video": scene.render(),  # (3, T, H, W)
            "caption": scene.caption,
            "centers": centers,
            "sprite_mask": torch.arange(S) < len(scene.sprites),
            "labels": labels,
            "label": SHAPES.index(first.shape) * len(MOTIONS) + MOTIONS.index(first.motion),
        }
