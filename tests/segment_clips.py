"""A synthetic multi-scene clip for the long-video tests: shots of distinct colours, each with its own motion."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

FPS = 25

# (seconds, background RGB, what moves): a bouncing square makes impacts, a glide makes steady motion
SHOTS = [(24.0, (30, 90, 40), "bounce"), (30.0, (30, 90, 40), "glide"), (20.0, (150, 40, 40), "bounce"),
         (26.0, (40, 40, 160), "glide"), (20.0, (200, 190, 60), "bounce")]


def shot_cuts(shots=SHOTS) -> list[float]:
    edges = np.cumsum([s[0] for s in shots])
    return [float(e) for e in edges[:-1]]


def _frame(t: float, bg, motion: str, w: int, h: int) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = bg
    s = max(2, w // 5)
    if motion == "glide":
        x = int((w - s) * (0.5 + 0.5 * np.sin(2 * np.pi * t / 6.0)))
        img[h // 4:h // 4 + s, x:x + s] = 240
    else:  # a drop every 3 s, alternating sides: an impact at 1.5 s into each period
        k, u = divmod(t, 3.0)
        floor = h - s
        rebound = 1 - 0.5 * np.sin(np.pi * min(1.0, u - 1.5))
        y = int(floor * min(1.0, (u / 1.5) ** 2)) if u < 1.5 else int(floor * rebound)
        x = w // 4 if int(k) % 2 == 0 else 3 * w // 4 - s
        img[y:y + s, x:x + s] = (250, 250, 250)
    return img


def make_multiscene_clip(path: Path, shots=SHOTS, size: tuple[int, int] = (32, 32)) -> Path:
    import av

    w, h = size
    with av.open(str(path), "w") as dst:
        vs = dst.add_stream("libx264", rate=Fraction(FPS))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "18"}
        for seconds, bg, motion in shots:
            for i in range(int(round(seconds * FPS))):
                frame = av.VideoFrame.from_ndarray(_frame(i / FPS, bg, motion, w, h), format="rgb24")
                for packet in vs.encode(frame):
                    dst.mux(packet)
        for packet in vs.encode(None):
            dst.mux(packet)
    return path


def rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def floor_db(x: np.ndarray, sr: int) -> float:
    """Median RMS (dB) of the 50 ms windows of ``x``: the level of a stretch, not of its loudest impact."""
    w = int(0.05 * sr)
    n = x.shape[1] // w
    rms = np.sqrt(np.mean(np.square(x[:, :n * w].reshape(x.shape[0], n, w), dtype=np.float64), axis=(0, 2)))
    return float(20 * np.log10(np.median(rms) + 1e-9))


def join_report(audio: np.ndarray, sr: int, segments, level_s: float = 0.5) -> list[dict]:
    """At every boundary: the largest sample step inside the crossfade vs the largest step inside the two
    segments (outside any crossfade), and the level (``floor_db``) of the ``level_s`` before the crossfade
    against the ``level_s`` after it."""
    out = []
    d = np.abs(np.diff(audio, axis=1)).max(axis=0)
    L = int(level_s * sr)
    for prev, nxt in zip(segments[:-1], segments[1:]):
        a, b = int(round(nxt.window_start_s * sr)), int(round(prev.window_end_s * sr))
        lo, hi = int(round(prev.window_start_s * sr)), int(round(nxt.window_end_s * sr))
        join_step = float(d[max(0, a - 2):b + 2].max())
        inside = np.r_[d[lo + 1:max(lo + 1, a - 2)], d[b + 2:hi - 1]]
        jump = abs(floor_db(audio[:, a - L:a], sr) - floor_db(audio[:, b:b + L], sr))
        out.append({"t": nxt.start_s, "join_step": join_step, "inside_step": float(inside.max()),
                    "level_jump_db": jump})
    return out
