"""Typed protocols for the reasoning backends; the offline default and the VLMs are interchangeable."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from reasoning.plan import Critique, Plan
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


class BackendError(RuntimeError):
    """A backend could not do its job (model missing, malformed output after retries...)."""

    def __init__(self, message: str, raw_output: str = ""):
        super().__init__(message)
        self.raw_output = raw_output


class BadWeights(BackendError):
    """User-supplied weights exist but are unusable (wrong keys/shapes, pickle payload): a user error, exit 2."""


class ModelMissing(BackendError):
    """Weights for a named model are not available locally; the message says how to get them."""


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
