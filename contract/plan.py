"""The sound plan: the structured chain-of-thought every component speaks (../shared/spec/cot.md).

The watcher writes it, a human edits it, the renderer consumes it, the critic scores against it and the
refiner rewrites it. Plans are stored as JSON in the database, so every change here must keep old
``schema_version`` values readable (see ``Plan.from_json``).
"""

from __future__ import annotations

import json
import re
import uuid
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1
SECTIONS = ("semantic", "temporal", "aesthetic", "spatial")
DIMENSIONS = SECTIONS
COT_TOKEN_BUDGET = 77  # T5 truncates the CoT at 77 tokens (including </s>)
CAPTION_MAX_WORDS = 12


class EventKind(str, Enum):
    impact = "impact"
    continuous = "continuous"
    ambience = "ambience"
    speech = "speech"
    music = "music"


class Event(BaseModel):
    """One timed sound. Non-neural renderers and the critic need times, not prose."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:8])
    label: str = Field(min_length=1, max_length=120)
    kind: EventKind = EventKind.impact
    start_s: float = Field(ge=0.0)
    end_s: float = Field(ge=0.0)
    gain_db: float = Field(default=0.0, ge=-60.0, le=12.0)
    pan: float = Field(default=0.0, ge=-1.0, le=1.0)
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> "Event":
        if self.end_s < self.start_s:
            raise ValueError(f"event {self.id!r}: end_s {self.end_s} < start_s {self.start_s}")
        return self

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class Provenance(BaseModel):
    model_config = ConfigDict(extra="allow")

    author: Literal["watcher", "human", "refiner", "unknown"] = "unknown"
    backend: str = ""
    model_id: str = ""
    prompt_version: str = ""
    round: int = 0
    parent_plan_id: str | None = None


class Plan(BaseModel):
    """A complete sound plan for one clip."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    plan_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    caption: str = Field(default="", max_length=200)
    semantic: str = ""
    temporal: str = ""
    aesthetic: str = ""
    spatial: str = ""
    events: list[Event] = Field(default_factory=list)
    negatives: list[str] = Field(default_factory=list)
    duration_s: float = Field(gt=0.0)
    provenance: Provenance = Field(default_factory=Provenance)

    @field_validator("caption")
    @classmethod
    def _short_caption(cls, v: str) -> str:
        words = v.split()
        # The caption goes to a 77-token CLIP text tower; keep what one hears, drop the rest.
        return " ".join(words[:CAPTION_MAX_WORDS])

    @model_validator(mode="after")
    def _events_inside_clip(self) -> "Plan":
        ids = [e.id for e in self.events]
        if len(ids) != len(set(ids)):
            raise ValueError("event ids must be unique")
        for e in self.events:
            if e.start_s > self.duration_s + 1e-6:
                raise ValueError(f"event {e.id!r} starts at {e.start_s}s, after the clip ends ({self.duration_s}s)")
        return self

    # ---- serialisation -------------------------------------------------------------------------------
    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes | dict) -> "Plan":
        data = json.loads(text) if isinstance(text, (str, bytes)) else dict(text)
        return cls.model_validate(migrate(data))

    def derive(self, author: str, **changes) -> "Plan":
        """A new plan (new id) whose provenance points at this one."""
        prov = self.provenance.model_copy(update={"author": author, "parent_plan_id": self.plan_id})
        data = self.model_dump()
        data.update(changes)
        data["plan_id"] = uuid.uuid4().hex[:12]
        data["provenance"] = prov.model_dump() | changes.get("provenance", {})
        return Plan.model_validate(data)

    def event(self, event_id: str) -> Event | None:
        return next((e for e in self.events if e.id == event_id), None)

    # ---- text for the generator ------------------------------------------------------------------------
    def cot_text(self) -> str:
        """CoT paragraph in priority order; what does not fit 77 tokens is lost, so order matters."""
        parts = [s.strip().rstrip(".") + "." for s in (self.semantic, self.temporal, self.aesthetic, self.spatial) if s.strip()]
        if self.negatives:
            parts.append("Keep " + ", ".join(n.strip() for n in self.negatives if n.strip()) + " minimal.")
        return " ".join(parts)

    def cot_token_estimate(self) -> int:
        return estimate_t5_tokens(self.cot_text())

    def cot_budget_report(self) -> dict:
        used = self.cot_token_estimate()
        return {"tokens": used, "budget": COT_TOKEN_BUDGET, "fits": used <= COT_TOKEN_BUDGET,
                "overflow": max(0, used - COT_TOKEN_BUDGET)}


def migrate(data: dict) -> dict:
    """Bring stored plan JSON up to SCHEMA_VERSION. Version 1 is the first; later versions add steps here."""
    version = int(data.get("schema_version", 1))
    if version > SCHEMA_VERSION:
        raise ValueError(f"plan schema_version {version} is newer than this foleyloop understands ({SCHEMA_VERSION})")
    data["schema_version"] = SCHEMA_VERSION
    return data


_WORD = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")


def estimate_t5_tokens(text: str) -> int:
    """Estimate T5 SentencePiece tokens without the tokenizer (+1 for </s>).

    Calibrated so that ordinary English lands near 1.3 tokens per word: short words are one piece,
    long words split roughly every 6 letters; digits and punctuation count one each.
    """
    count = 0
    for tok in _WORD.findall(text):
        if tok.isalpha():
            count += 1 + max(0, (len(tok) - 4) // 5)
        else:
            count += 1
    return count + 1


class Finding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str  # a section name ("temporal") or an event id
    dimension: str | None = None
    problem: str
    suggestion: str = ""
    # Machine-readable hints for rule-based refiners (e.g. {"action": "shift", "event": "e1", "by_s": 0.04}).
    hint: dict = Field(default_factory=dict)


class ScorerInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    dimension: str
    raw: float | None = None
    note: str = ""


class Critique(BaseModel):
    """A score vector (never only a sum), findings, and the scorers that produced each number."""

    model_config = ConfigDict(extra="forbid")

    scores: dict[str, float | None] = Field(default_factory=lambda: {d: None for d in DIMENSIONS})
    overall: float | None = None
    findings: list[Finding] = Field(default_factory=list)
    scorers: list[ScorerInfo] = Field(default_factory=list)

    @field_validator("scores")
    @classmethod
    def _dims(cls, v: dict) -> dict:
        out = {d: None for d in DIMENSIONS}
        for k, s in v.items():
            if k not in DIMENSIONS:
                raise ValueError(f"unknown score dimension {k!r}")
            if s is not None and not (0.0 <= s <= 1.0):
                raise ValueError(f"score {k}={s} outside 0..1")
            out[k] = s
        return out

    @model_validator(mode="after")
    def _overall(self) -> "Critique":
        present = [s for s in self.scores.values() if s is not None]
        if self.overall is None and present:
            self.overall = sum(present) / len(present)
        return self

    def failing(self, thresholds: dict[str, float]) -> list[str]:
        return [d for d, s in self.scores.items() if s is not None and s < thresholds.get(d, 0.0)]

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes | dict) -> "Critique":
        data = json.loads(text) if isinstance(text, (str, bytes)) else text
        return cls.model_validate(data)
