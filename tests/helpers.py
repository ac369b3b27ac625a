"""Test helpers: tiny clips and subprocess launchers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def tiny_clip(path: Path, seconds: float = 3.0, fps: int = 25, size: int = 64, seed: int = 0) -> Path:
    from store.media import write_video

    rng = np.random.default_rng(seed)
    frames = (rng.random((int(seconds * fps), size, size, 3)) * 255).astype(np.uint8)
    return write_video(path, frames, fps)


FAKE_CLI = "import sys; from tests import fakes; fakes.install(); from agent.cli import main; sys.exit(main(sys.argv[1:]))"


def cli_subprocess(args: list[str], env: dict | None = None, fake: bool = True, **kw) -> subprocess.Popen:
    code = FAKE_CLI if fake else "import sys; from agent.cli import main; sys.exit(main(sys.argv[1:]))"
    full_env = os.environ | {"PYTHONPATH": str(ROOT)} | (env or {})
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


FAKE = ["--watcher", "fake", "--renderer", "fake", "--critic", "fake", "--refiner", "fake"]


def known_visual(onsets, sides, duration: float = 4.0, fps: float = 25.0):
    """A VisualAnalysis with known impacts: motion bumps around each hit, balance on that hit's side."""
    from reasoning.offline.motion import VisualAnalysis

    times = np.arange(int(duration * fps)) / fps
    motion, balance = np.zeros_like(times), np.zeros_like(times)
    for t, s in zip(onsets, sides):
        near = np.abs(times - t) <= 0.25
        motion = np.maximum(motion, np.where(near, 1.0 - np.abs(times - t) * 2, 0.0))
        balance[near] = s
    return VisualAnalysis(duration_s=duration, fps=fps, times=times, motion=motion, onset_env=motion.copy(),
                          onsets=list(onsets), onset_strengths=[1.0] * len(onsets), cuts=[], balance=balance,
                          frame_size=(160, 90))


class DecodeCounter:
    """Counts every PyAV open for reading and the video frames decoded through it (a wrapper around ``av.open``).

    ``passes(path)`` are the opens of ``path`` that decoded video frames outside ``store.media.probe`` (probing
    is validation, counted apart); each is a dict with the number of frames it decoded.
    """

    def __init__(self, monkeypatch):
        import inspect

        import av

        real = av.open
        self.opens: list[dict] = []

        def opener(file, mode="r", *args, **kwargs):
            container = real(file, mode, *args, **kwargs)
            if mode != "r":
                return container
            in_probe = any(f.function == "probe" and f.filename.endswith("media.py") for f in inspect.stack()[1:6])
            rec = {"path": str(Path(file).resolve()) if isinstance(file, (str, Path)) else str(file),
                   "frames": 0, "probe": in_probe}
            self.opens.append(rec)
            return _CountedContainer(container, rec)

        monkeypatch.setattr(av, "open", opener)

    def passes(self, path) -> list[dict]:
        p = str(Path(path).resolve())
        return [r for r in self.opens if r["path"] == p and r["frames"] and not r["probe"]]


class _CountedContainer:
    def __init__(self, container, rec: dict):
        self._c, self._rec = container, rec

    def __getattr__(self, name):
        return getattr(self._c, name)

    def __enter__(self):
        self._c.__enter__()
        return self

    def __exit__(self, *exc):
        return self._c.__exit__(*exc)

    def decode(self, *args, **kwargs):
        import av

        for frame in self._c.decode(*args, **kwargs):
            if isinstance(frame, av.VideoFrame):
                self._rec["frames"] += 1
            yield frame
