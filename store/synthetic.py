"""Synthetic test clips with known ground truth: a bouncing ball whose floor hits are the impacts.

Tests for the watcher, the critic and the renderer need videos where the right answer is known to the
frame: when each impact happens and on which side of the picture. Real footage cannot give that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from store.media import write_video

AUDIO_RATE = 44100
_FIRST_DROP_S = 0.9  # free fall before the first hit; a later hit waits at the top, an earlier one starts mid-air


@dataclass
class SyntheticClip:
    path: Path
    impacts: list[float]
    duration_s: float
    fps: float
    side_of_impact: list[float]  # pan -1..1 of the ball's x position at each impact
    has_audio: bool = False
    size: tuple[int, int] = (320, 180)


@dataclass
class _Trajectory:
    """Ball centre (x, y) in pixels as a function of time: parabolic hops between floor hits."""

    impacts: np.ndarray
    xs: np.ndarray  # x at each impact
    floor_y: float
    g: float  # px / s^2
    roll_speed: float  # px / s after the last impact
    first_drop: float  # seconds of free fall before the first impact

    def at(self, t: float) -> tuple[float, float]:
        imp = self.impacts
        if t <= imp[0]:
            # Held still at the top, then dropped from rest straight down onto the first impact point
            # (already falling at t=0 when the first hit comes sooner than the full drop).
            fallen = max(0.0, t - (imp[0] - self.first_drop))  # seconds since release
            return float(self.xs[0]), self.floor_y - 0.5 * self.g * (self.first_drop ** 2 - fallen ** 2)
        i = int(np.searchsorted(imp, t, side="right")) - 1
        tau = t - imp[i]
        if i + 1 < len(imp):
            flight = imp[i + 1] - imp[i]
            x = self.xs[i] + (self.xs[i + 1] - self.xs[i]) * tau / flight
        else:
            # After the last hit the ball stays on the floor and rolls on steadily until the clip ends:
            # stopping (or leaving the picture) would itself be a sudden change of motion.
            return float(self.xs[i] + self.roll_speed * tau), self.floor_y
        v_up = 0.5 * self.g * flight
        height = v_up * tau - 0.5 * self.g * tau ** 2
        return float(x), self.floor_y - height


def _background(rng: np.random.Generator, w: int, h: int, floor_top: int) -> np.ndarray:
    """A static textured scene: smooth colour blotches, fine grain and a darker floor band."""
    base = rng.uniform(40, 120, size=3)
    coarse = rng.normal(0.0, 1.0, size=(h // 16 + 2, w // 16 + 2, 3))
    coarse = np.kron(coarse, np.ones((16, 16, 1)))[:h, :w]
    from scipy.ndimage import gaussian_filter

    coarse = gaussian_filter(coarse, sigma=(6, 6, 0)) * 40.0
    grain = rng.normal(0.0, 6.0, size=(h, w, 1))
    img = base + coarse + grain
    img[floor_top:] = img[floor_top:] * 0.55 + 10.0
    img[floor_top:floor_top + 2] = 20.0
    return np.clip(img, 0, 200).astype(np.float32)


def _disc(img: np.ndarray, cx: float, cy: float, r: float, color: np.ndarray) -> None:
    """Anti-aliased bright disc drawn in place (clipped at the frame borders)."""
    h, w = img.shape[:2]
    x0, x1 = max(0, int(cx - r - 2)), min(w, int(cx + r + 3))
    y0, y1 = max(0, int(cy - r - 2)), min(h, int(cy + r + 3))
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    alpha = np.clip(r + 0.5 - d, 0.0, 1.0)[..., None]
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - alpha) + color * alpha


def _trajectory(impacts: np.ndarray, xs: np.ndarray, duration_s: float, floor_y: float, top_y: float,
                width: int) -> _Trajectory:
    avail = floor_y - top_y
    flights = np.diff(impacts)
    first = _FIRST_DROP_S
    # The first drop starts from rest inside the frame, and no hop's apex leaves the frame (an object
    # leaving the picture would look like a sudden stop to a motion detector).
    g = min([2.0 * avail / first ** 2] + [8.0 * avail / f ** 2 for f in flights.tolist()])
    # Roll towards the middle, slowly enough to stay in the picture until the end.
    centre = 0.5 * width
    room = abs(xs[-1] - centre) + 0.25 * width
    speed = min(0.25 * width, room / max(duration_s - impacts[-1], 1e-3))
    return _Trajectory(impacts, xs, floor_y, g, float(np.sign(centre - xs[-1]) * speed), first)


def render_impact_frames(duration_s: float = 4.0, impacts: Sequence[float] = (0.8, 1.9, 3.1), fps: float = 25.0,
                         size: tuple[int, int] = (320, 180), seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """Frames (T,H,W,3 uint8) of the bouncing ball and the pan (-1..1) of each impact.

    Impact sides alternate left/right (the first side is drawn from ``seed``), so every hop crosses the
    picture and the left/right balance has something to find.
    """
    imp = np.asarray(sorted(float(t) for t in impacts), dtype=np.float64)
    if len(imp) == 0 or imp[0] <= 0.05 or imp[-1] >= duration_s:
        raise ValueError("impacts must lie strictly inside (0.05, duration_s)")
    w, h = size
    rng = np.random.default_rng(seed)
    r = max(4.0, h / 18.0)
    floor_top = int(h * 0.85)
    floor_y = floor_top - r  # ball centre when touching the floor
    first_left = bool(rng.integers(0, 2))
    pans = []
    for i in range(len(imp)):
        left = first_left ^ bool(i % 2)
        mag = rng.uniform(0.35, 0.75)
        pans.append(-mag if left else mag)
    xs = (np.asarray(pans) + 1.0) * 0.5 * (w - 1)
    traj = _trajectory(imp, xs, duration_s, floor_y, top_y=r + 2, width=w)
    bg = _background(rng, w, h, floor_top)
    color = np.array([250.0, 245.0, 225.0], dtype=np.float32)
    n = int(round(duration_s * fps))
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    for k in range(n):
        img = bg.copy()
        cx, cy = traj.at(k / fps)
        _disc(img, cx, cy, r, color)
        frames[k] = np.clip(img, 0, 255).astype(np.uint8)
    return frames, [float(p) for p in pans]


def impact_clicks(impacts: Sequence[float], pans: Sequence[float], duration_s: float,
                  sample_rate: int = AUDIO_RATE, seed: int = 0) -> np.ndarray:
    """Stereo (2, N) float32: a short decaying knock at each impact, panned (constant power) to its side."""
    rng = np.random.default_rng(seed + 1)
    n = int(round(duration_s * sample_rate))
    out = np.zeros((2, n), dtype=np.float32)
    length = int(0.06 * sample_rate)
    t = np.arange(length) / sample_rate
    for when, pan in zip(impacts, pans):
        knock = (np.sin(2 * np.pi * 180.0 * t) * 0.6 + rng.normal(0, 0.3, length)) * np.exp(-t / 0.012)
        start = int(round(when * sample_rate))
        seg = knock[: max(0, min(length, n - start))].astype(np.float32)
        theta = (float(pan) + 1.0) * np.pi / 4.0
        out[0, start:start + len(seg)] += 0.8 * np.cos(theta) * seg
        out[1, start:start + len(seg)] += 0.8 * np.sin(theta) * seg
    return out


def make_impact_clip(path: str | Path, duration_s: float = 4.0, impacts: Sequence[float] = (0.8, 1.9, 3.1),
                     fps: float = 25.0, size: tuple[int, int] = (320, 180), audio: bool = False,
                     seed: int = 0) -> SyntheticClip:
    """Write the bouncing-ball clip (H.264, optional AAC knocks at the impacts) and return its ground truth."""
    frames, pans = render_impact_frames(duration_s, impacts, fps, size, seed)
    imp = sorted(float(t) for t in impacts)
    track = impact_clicks(imp, pans, duration_s, AUDIO_RATE, seed) if audio else None
    p = write_video(path, frames, fps, audio=track, sample_rate=AUDIO_RATE)
    return SyntheticClip(path=Path(p), impacts=imp, duration_s=float(duration_s), fps=float(fps),
                         side_of_impact=pans, has_audio=audio, size=(int(size[0]), int(size[1])))


def make_static_clip(path: str | Path, duration_s: float = 3.0, fps: float = 25.0,
                     size: tuple[int, int] = (320, 180), seed: int = 0) -> SyntheticClip:
    """The same textured scene with nothing moving: a detector must find no impacts here."""
    w, h = size
    bg = _background(np.random.default_rng(seed), w, h, int(h * 0.85))
    frames = np.repeat(np.clip(bg, 0, 255).astype(np.uint8)[None], int(round(duration_s * fps)), axis=0)
    p = write_video(path, frames, fps)
    return SyntheticClip(path=Path(p), impacts=[], duration_s=float(duration_s), fps=float(fps), side_of_impact=[],
                         size=(int(w), int(h)))
