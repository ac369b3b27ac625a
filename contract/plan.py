"""The sound plan: the structured chain-of-thought every component speaks (../shared/spec/cot.md).

The watcher writes it, a human edits it, the renderer consumes it, the critic scores against it and the
refiner rewrites it. Plans are stored as JSON in the database, so every change here must keep old
``schema_version`` values readable (see ``Plan.from_json`` and ``Plan.from_stored``).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from contract.segments import Segment, check_tiling

SCHEMA_VERSION = 1
SECTIONS = ("semantic", "temporal", "aesthetic", "spatial")
DIMENSIONS = SECTIONS
COT_TOKEN_BUDGET = 77  # T5 truncates the CoT at 77 tokens (including </s>)
CAPTION_MAX_WORDS = 12

# ---- bounds: what a plan from outside (a user's file, the studio, a model's reply) may hold -------------------
# Everything downstream allocates from these (the renderer: duration × 44100 samples; every refined round copies
# the strings), so they are checked before any work starts. Stored rows read through ``Plan.from_stored`` skip
# the size bounds so that a row written before they existed can still be shown.
MAX_PLAN_BYTES = 8_000_000  # a plan file or a plan JSON text, before parsing (~100 bytes an event, at the cap)
MAX_JSON_DEPTH = 32  # a plan nests 4 deep; provenance extras a little more
MAX_EVENTS = 15_000  # ~4 per second over the longest plan (MAX_PLAN_DURATION_S): long videos are allowed
MAX_SECTION_CHARS = 2000  # the CoT budget is 77 tokens, so this is ~25x the useful length
MAX_NEGATIVES = 32
MAX_LABEL_CHARS = 120
MAX_EVIDENCE_CHARS = 240  # an event's evidence note: which frames, which label, which confidence
MAX_UNCERTAIN = 64  # plan-level notes on what the watcher could not tell
MAX_ID_CHARS = 64
MAX_META_CHARS = 512  # provenance backend/model_id (a local path)/prompt_version
MAX_EXTRAS_BYTES = 16_384  # provenance extras (render options, sample variants) as JSON
MAX_PLAN_DURATION_S = 3600.0  # any plan
MAX_TEXT_DURATION_S = 60.0  # text-to-audio: there is no video to set the length
DURATION_TOLERANCE_S = 0.5  # a dub's plan must be this close to the video's length

# Numbers are finite and never booleans (``true`` is not a time); ints stay ints.
Num = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Int = Annotated[int, Field(strict=True)]


class PlanInvalid(ValueError):
    """The one error any plan door raises: a one-line message; ``problems`` lists them one by one."""

    def __init__(self, problems: list[str] | str):
        problems = [problems] if isinstance(problems, str) else list(problems)
        self.problems = [" ".join(p.split()) for p in problems] or ["invalid plan"]
        shown = "; ".join(self.problems[:4]) + (f"; and {len(self.problems) - 4} more" if len(self.problems) > 4 else "")
        super().__init__(shown if len(shown) <= 400 else shown[:399] + "…")

    @classmethod
    def from_validation(cls, exc: ValidationError) -> "PlanInvalid":
        """Pydantic's errors as ``field.path: message``, without echoing the (possibly huge) input values."""
        out = []
        for err in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("", "__root__"))
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            out.append(f"{where}: {msg}" if where else msg)
        return cls(out)


class JSONRejected(ValueError):
    """Text that is not bounded JSON data (too big, too deep, NaN/Infinity, an absurd number, a syntax error)."""


def _reject_constant(name: str):
    raise JSONRejected(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONRejected(f"number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 18:  # beyond int64: no field of ours holds that
        raise JSONRejected(f"number {text[:40]}{'…' if len(text) > 40 else ''} is out of range")
    return int(text)


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON data, iteratively (no recursion), stopping once past ``limit``.

    Also refuses text that is not Unicode: JSON's ``"\\ud800"`` escape parses to a lone surrogate, which no
    UTF-8 file or database row can hold (raises ``JSONRejected``)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
            if isinstance(node, dict):
                stack.extend((k, depth) for k in node if isinstance(k, str))
        elif isinstance(node, str) and not node.isascii():
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise JSONRejected("a string holds a lone surrogate (\\ud800-\\udfff), which is not text") from None
    return deepest


def loads_bounded(text: str | bytes, max_bytes: int | None = MAX_PLAN_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that cannot blow up: size cap first, a UTF-8 BOM accepted, NaN/Infinity/1e400 refused,
    recursion caught and depth checked. Raises ``JSONRejected`` (a ValueError) with a one-line reason."""
    if max_bytes is not None:  # a str longer than the cap in characters is over it in bytes too: no encoding
        size = len(text) if isinstance(text, bytes) or len(text) > max_bytes else len(text.encode("utf-8", "replace"))
        if size > max_bytes:
            raise JSONRejected(f"{size} bytes, over the {max_bytes}-byte limit")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise JSONRejected(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    text = text.removeprefix("\ufeff")
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise JSONRejected(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise JSONRejected(f"nested more than {max_depth} levels deep") from None
    except JSONRejected:
        raise
    except ValueError as exc:  # e.g. Python's 4300-digit int limit
        raise JSONRejected(" ".join(str(exc).split())[:200]) from None
    if json_depth(value, max_depth) > max_depth:
        raise JSONRejected(f"nested more than {max_depth} levels deep")
    return value


def _bounded(info: ValidationInfo) -> bool:
    """Size bounds apply unless the caller reads a stored row (``context={"stored": True}``)."""
    return not (info.context or {}).get("stored", False)


class EventKind(str, Enum):
    impact = "impact"
    continuous = "continuous"
    ambience = "ambience"
    speech = "speech"
    music = "music"


class Event(BaseModel):
    """One timed sound. Non-neural renderers and the critic need times, not prose."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:8], min_length=1)
    label: str = Field(min_length=1, max_length=MAX_LABEL_CHARS)
    kind: EventKind = EventKind.impact
    start_s: Num = Field(ge=0.0)
    end_s: Num = Field(ge=0.0)
    gain_db: Num = Field(default=0.0, ge=-60.0, le=12.0)
    pan: Num = Field(default=0.0, ge=-1.0, le=1.0)
    confidence: Num = Field(default=1.0, ge=0.0, le=1.0)
    # Why the watcher placed this sound (frames, label, strength); optional, so stored plans without it still load.
    evidence: str = Field(default="", max_length=MAX_EVIDENCE_CHARS)

    @field_validator("id")
    @classmethod
    def _short_id(cls, v: str, info: ValidationInfo) -> str:
        if _bounded(info) and len(v) > MAX_ID_CHARS:
            raise ValueError(f"event id is {len(v)} characters, over {MAX_ID_CHARS}")
        return v

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
    round: Int = Field(default=0, ge=0)
    parent_plan_id: str | None = None

    @model_validator(mode="after")
    def _bounded_meta(self, info: ValidationInfo) -> "Provenance":
        if not _bounded(info):
            return self
        for name in ("backend", "model_id", "prompt_version", "parent_plan_id"):
            v = getattr(self, name) or ""
            if len(v) > MAX_META_CHARS:
                raise ValueError(f"provenance.{name} is {len(v)} characters, over {MAX_META_CHARS}")
        if self.model_extra:
            try:
                size = len(json.dumps(self.model_extra, allow_nan=False))
            except (TypeError, ValueError, RecursionError):
                raise ValueError("provenance extras must be plain, finite JSON data") from None
            if size > MAX_EXTRAS_BYTES or json_depth(self.model_extra, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
                raise ValueError(f"provenance extras are too large ({size} bytes; at most {MAX_EXTRAS_BYTES})")
        return self


class Plan(BaseModel):
    """A complete sound plan for one clip."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Int = SCHEMA_VERSION
    plan_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    caption: str = Field(default="", max_length=200)
    semantic: str = ""
    temporal: str = ""
    aesthetic: str = ""
    spatial: str = ""
    events: list[Event] = Field(default_factory=list)
    negatives: list[str] = Field(default_factory=list)
    # What the watcher could not tell (weak labels, no contacts seen): read by people and by the critic.
    uncertain: list[str] = Field(default_factory=list, max_length=MAX_UNCERTAIN)
    duration_s: Num = Field(gt=0.0)
    provenance: Provenance = Field(default_factory=Provenance)
    # Long or multi-shot videos: how the timeline is cut for rendering (contract.segments). None: one window.
    segments: list[Segment] | None = None

    @field_validator("events", "negatives", mode="before")
    @classmethod
    def _few_enough(cls, v: Any, info: ValidationInfo) -> Any:
        """Counted before the items are validated: 100 000 events are refused at once, not after a minute."""
        cap = MAX_EVENTS if info.field_name == "events" else MAX_NEGATIVES
        if _bounded(info) and isinstance(v, (list, tuple)) and len(v) > cap:
            raise ValueError(f"{len(v)} {info.field_name}, over the limit of {cap}")
        return v

    @field_validator("plan_id", "semantic", "temporal", "aesthetic", "spatial")
    @classmethod
    def _short_text(cls, v: str, info: ValidationInfo) -> str:
        cap = MAX_ID_CHARS if info.field_name == "plan_id" else MAX_SECTION_CHARS
        if _bounded(info) and len(v) > cap:
            raise ValueError(f"{len(v)} characters, over the limit of {cap}")
        return v

    @field_validator("uncertain")
    @classmethod
    def _short_uncertain(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if _bounded(info) and any(len(n) > MAX_EVIDENCE_CHARS for n in v):
            raise ValueError(f"an uncertain note is over {MAX_EVIDENCE_CHARS} characters")
        return v

    @field_validator("negatives")
    @classmethod
    def _short_negatives(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if _bounded(info):
            for n in v:
                if len(n) > MAX_LABEL_CHARS:
                    raise ValueError(f"a negative is {len(n)} characters, over the limit of {MAX_LABEL_CHARS}")
        return v

    @field_validator("duration_s")
    @classmethod
    def _not_absurdly_long(cls, v: float, info: ValidationInfo) -> float:
        if _bounded(info) and v > MAX_PLAN_DURATION_S:
            raise ValueError(f"{v:g} s is over the {MAX_PLAN_DURATION_S:g} s limit")
        return v

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
        if self.segments is not None:
            check_tiling(self.segments, self.duration_s)
        return self

    # ---- serialisation -------------------------------------------------------------------------------
    def to_json(self, indent: int | None = 2) -> str:
        """An unsegmented plan serialises exactly as before segments existed (no ``segments`` key)."""
        return self.model_dump_json(indent=indent, exclude={"segments"} if self.segments is None else None)

    @classmethod
    def from_json(cls, text: str | bytes | dict) -> "Plan":
        """The door for plan JSON from outside (a file, the studio, a model): every bound applies; raises
        ``PlanInvalid`` only. Whether the length suits a video is ``check_for_video``'s job (or ``parse_user``)."""
        return cls._load(text, stored=False)

    @classmethod
    def from_stored(cls, text: str | bytes | dict) -> "Plan":
        """A plan read back from the database: types are checked, the size bounds are not, so that a row stored
        before the bounds existed can still be displayed. Raises ``PlanInvalid`` only."""
        return cls._load(text, stored=True)

    @classmethod
    def from_file(cls, path: str | Path) -> "Plan":
        """A plan file: at most ``MAX_PLAN_BYTES`` are read; a missing or unreadable file is ``PlanInvalid`` too."""
        p = Path(path)
        try:
            with p.open("rb") as fh:
                data = fh.read(MAX_PLAN_BYTES + 1)
        except OSError as exc:
            raise PlanInvalid(f"{p}: cannot read the plan file ({exc.strerror or type(exc).__name__})") from None
        if len(data) > MAX_PLAN_BYTES:
            raise PlanInvalid(f"{p}: the file is over the {MAX_PLAN_BYTES}-byte limit for a plan")
        try:
            return cls.from_json(data)
        except PlanInvalid as exc:
            raise PlanInvalid([f"{p}: {exc.problems[0]}", *exc.problems[1:]]) from None

    @classmethod
    def parse_user(cls, source: str | bytes | dict | Path, *, video_duration_s: float | None = None) -> "Plan":
        """THE door for a plan a person hands us (CLI ``--plan``, the runs service, the studio): parse with every
        bound, then check the length: within ±``DURATION_TOLERANCE_S`` of ``video_duration_s`` for a dub (or an
        edit of an audio file of that length), at most ``MAX_TEXT_DURATION_S`` when ``video_duration_s`` is None
        (text-to-audio). Raises ``PlanInvalid`` (a ValueError) with a one-line message."""
        plan = cls.from_file(source) if isinstance(source, Path) else cls.from_json(source)
        return plan.check_for_video(video_duration_s) if video_duration_s is not None else plan.check_for_text()

    @classmethod
    def _load(cls, text: str | bytes | dict, stored: bool) -> "Plan":
        try:
            if isinstance(text, (str, bytes)):
                data = loads_bounded(text, max_bytes=None if stored else MAX_PLAN_BYTES)
            elif isinstance(text, dict):
                data = dict(text)
                if json_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
                    raise JSONRejected(f"nested more than {MAX_JSON_DEPTH} levels deep")
            else:
                raise JSONRejected(f"expected JSON text or an object, got {type(text).__name__}")
            if not isinstance(data, dict):
                raise JSONRejected(f"a plan is a JSON object, got {_json_type(data)}")
            return cls.model_validate(migrate(data), context={"stored": stored})
        except ValidationError as exc:
            raise PlanInvalid.from_validation(exc) from None
        except PlanInvalid:
            raise
        except (JSONRejected, ValueError) as exc:
            raise PlanInvalid(str(exc)) from None
        except RecursionError:
            raise PlanInvalid(f"nested more than {MAX_JSON_DEPTH} levels deep") from None

    # ---- the plan against what it is for ---------------------------------------------------------------------
    def check_for_video(self, duration_s: float) -> "Plan":
        """A dub's plan must span its video (±``DURATION_TOLERANCE_S``); returns self or raises ``PlanInvalid``."""
        if not (isinstance(duration_s, (int, float)) and math.isfinite(duration_s) and duration_s > 0):
            raise PlanInvalid(f"the video's length {duration_s!r} is not a positive number of seconds")
        if abs(self.duration_s - duration_s) > DURATION_TOLERANCE_S:
            raise PlanInvalid(f"duration_s: the plan lasts {self.duration_s:g} s but the video {duration_s:.2f} s; "
                              f"it must be within ±{DURATION_TOLERANCE_S:g} s")
        return self

    def check_for_text(self) -> "Plan":
        """Text-to-audio has no video to bound it: at most ``MAX_TEXT_DURATION_S``."""
        if self.duration_s > MAX_TEXT_DURATION_S:
            raise PlanInvalid(f"duration_s: {self.duration_s:g} s is over the {MAX_TEXT_DURATION_S:g} s limit for "
                              "text-to-audio")
        return self

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


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "true/false", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def migrate(data: dict) -> dict:
    """Bring stored plan JSON up to SCHEMA_VERSION. Version 1 is the first; later versions add steps here."""
    version = data.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise PlanInvalid(f"schema_version must be a whole number, got {_json_type(version)}")
    if version > SCHEMA_VERSION:
        raise PlanInvalid(f"plan schema_version {version} is newer than this foleyloop understands ({SCHEMA_VERSION})")
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


class SegmentScore(BaseModel):
    """One segment's own critique in a segmented round (times of the whole video; findings in the segment's time)."""

    model_config = ConfigDict(extra="forbid")

    index: int
    start_s: float
    end_s: float
    scores: dict[str, float | None] = Field(default_factory=dict)
    overall: float | None = None
    findings: list[Finding] = Field(default_factory=list)
    rendered: bool = True  # rendered in this round (False: its audio was reused from an earlier round)
    reused_critique: bool = False


class Critique(BaseModel):
    """A score vector (never only a sum), findings, and the scorers that produced each number."""

    model_config = ConfigDict(extra="forbid")

    scores: dict[str, float | None] = Field(default_factory=lambda: {d: None for d in DIMENSIONS})
    overall: float | None = None
    findings: list[Finding] = Field(default_factory=list)
    scorers: list[ScorerInfo] = Field(default_factory=list)
    segments: list[SegmentScore] | None = None  # a segmented round: the per-segment critiques the scores come from

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
        return self.model_dump_json(indent=indent, exclude={"segments"} if self.segments is None else None)

    @classmethod
    def from_json(cls, text: str | bytes | dict) -> "Critique":
        data = loads_bounded(text, max_bytes=None) if isinstance(text, (str, bytes)) else text
        return cls.model_validate(data)
