"""The Renderer protocol: plan (+ video) → audio file. Offline sampler and ThinkSound both sit behind it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from reasoning.plan import Plan
from store.media import VideoInfo


@dataclass
class RenderResult:
    audio_path: Path
    sample_rate: int
    duration_s: float
    # What the renderer did, for the round record (sample choices, cache hits, timings...).
    meta: dict = field(default_factory=dict)


@runtime_checkable
class Renderer(Protocol):
    name: str
    model_id: str

    def render(self, plan: Plan, video: Path | None, info: VideoInfo | None, seed: int, out_path: Path) -> RenderResult:
        """Write 44.1 kHz stereo audio for ``plan`` to ``out_path`` (video None → text-to-audio)."""
        ...
