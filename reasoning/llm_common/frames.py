"""Key frames with their timestamps, so a VLM can time events against the video it is shown.

Frames come from ``store.media.iter_frames`` (PyAV, streaming), never from qwen-vl-utils' own readers:
torchvision >= 0.28 lost ``read_video`` and the timestamps we print must be the ones the model sees.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from store.media import VideoInfo, iter_frames


@dataclass
class KeyFrames:
    times: list[float]
    frames: list[np.ndarray]  # RGB uint8 HxWx3
    fps: float  # the sampling rate actually used (lowered for long clips to respect max_frames)
    duration_s: float

    def __len__(self) -> int:
        return len(self.times)

    def timestamps_text(self) -> str:
        return ", ".join(f"{t:.2f}" for t in self.times)


def effective_fps(duration_s: float, fps: float, max_frames: int) -> float:
    """Lower the rate for long clips so that at most ``max_frames`` frames are sent."""
    if duration_s <= 0:
        return fps
    return min(fps, max_frames / duration_s)


def sample_keyframes(video: str | Path, info: VideoInfo, fps: float = 2.0, max_frames: int = 64,
                     max_side: int = 640, min_frames: int = 2) -> KeyFrames:
    """Evenly timed frames across the clip; at least ``min_frames`` (Qwen merges frames in pairs)."""
    rate = effective_fps(info.duration_s, fps, max_frames)
    times, frames = [], []
    for t, img in iter_frames(video, rate, max_side=max_side, end_s=info.duration_s):
        times.append(round(float(t), 3))
        frames.append(img)
        if len(frames) >= max_frames:
            break
    if not frames:
        raise ValueError(f"{video}: no frames could be sampled")
    while len(frames) < min_frames:  # very short clip: repeat the last frame rather than fail
        times.append(times[-1])
        frames.append(frames[-1])
    return KeyFrames(times=times, frames=frames, fps=rate, duration_s=info.duration_s)


def subsample(kf: KeyFrames, max_frames: int) -> KeyFrames:
    """A thinner, still evenly spread set (the refiner and judge need fewer frames than the watcher)."""
    if len(kf) <= max_frames:
        return kf
    idx = np.unique(np.linspace(0, len(kf) - 1, max_frames).round().astype(int))
    times = [kf.times[i] for i in idx]
    span = times[-1] - times[0]
    fps = (len(times) - 1) / span if span > 0 else kf.fps
    return KeyFrames(times=times, frames=[kf.frames[i] for i in idx], fps=fps, duration_s=kf.duration_s)


def jpeg_base64(frame: np.ndarray, quality: int = 85) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def video_content(video, info, fps: float, max_frames: int, max_side: int) -> tuple[list[dict], str]:
    """The chat content item carrying the key frames, and their timestamps as text for the prompt."""
    if video is None or info is None:
        return [], "(no video frames)"
    kf = sample_keyframes(video, info, fps, max_frames, max_side)
    return [{"type": "video", "frames": kf}], kf.timestamps_text()
