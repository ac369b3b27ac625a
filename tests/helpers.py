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
