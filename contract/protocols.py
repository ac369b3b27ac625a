"""The four backend roles as typed protocols, and what they return: every backend, offline or neural, sits
behind one of these, so the graph never knows which it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from contract.plan import Critique, Plan
from store.media import VideoInfo


@dataclass
class WatchResult:
    plan: Plan
    model_id: str
    prompt_version: str = ""
    raw_output: str = ""  # the model's raw text, kept on the Round even when parsing failed
    meta: dict = field(default_factory=dict)


@dataclass
class RefineResult:
    plan: Plan
    seed: int
    changes: list[str] = field(default_factory=list)  # human-readable list of what was changed and why
    raw_output: str = ""
    prompt_version: str = ""
    # Non-empty: no change worth a round (its audio would equal an earlier one, or be inaudibly different); the
    # loop stops with this reason instead of rendering ``plan``.
    stop: str = ""
    # The dimensions this refine acted on (None: not said). Only these count as gains when the loop decides
    # whether the new round is clearly better (reasoning.policy.clear_gain).
    aimed_at: list[str] | None = None


@runtime_checkable
class Watcher(Protocol):
    name: str
    model_id: str

    def watch(self, video: Path, info: VideoInfo) -> WatchResult: ...


@runtime_checkable
class Critic(Protocol):
    name: str

    def critique(self, plan: Plan, audio: Path, video: Path | None, info: VideoInfo | None) -> Critique: ...


@runtime_checkable
class Refiner(Protocol):
    name: str

    def refine(self, plan: Plan, critique: Critique, failing: list[str], round_index: int, seed: int,
               video: Path | None = None, info: VideoInfo | None = None) -> RefineResult: ...

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
