"""SQLModel tables. One SQLite file holds runs, rounds, artifacts, jobs and LangGraph checkpoints.

Bump ``SCHEMA_VERSION`` and add a step to ``store.db.MIGRATIONS`` for every change to these tables.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Optional

from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Meta(SQLModel, table=True):
    key: str = Field(primary_key=True)
    value: str


class Run(SQLModel, table=True):
    id: str = Field(primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    kind: str = "dub"  # dub | text | edit
    status: str = Field(default="queued", index=True)  # queued | running | review | done | failed
    video_path: str = ""
    video_sha256: str = Field(default="", index=True)
    video_info_json: str = "{}"
    duration_s: Optional[float] = None
    config_json: str = "{}"
    backends_json: str = "{}"  # {"watcher": {"name", "model_id"}, ...}
    timings_json: str = "{}"  # {"load": s, "node:render": s, ...}
    error: Optional[str] = None
    stop_reason: Optional[str] = None
    best_round_id: Optional[int] = None
    output_path: Optional[str] = None
    output_artifact_id: Optional[int] = None
    parent_run_id: Optional[str] = Field(default=None, index=True)
    n_rounds: int = 0
    branches_json: str = "{}"  # {branch: {stop_reason, best_round_id, best_overall, output_path}}
    best_overall: Optional[float] = None
    prompt: str = ""  # text-to-audio prompt, or a user note

    def config(self) -> dict:
        return json.loads(self.config_json or "{}")

    def backends(self) -> dict:
        return json.loads(self.backends_json or "{}")

    def timings(self) -> dict:
        return json.loads(self.timings_json or "{}")

    def branches(self) -> dict:
        return json.loads(self.branches_json or "{}")


class Round(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True)
    index: int = 0  # position within its branch, 0-based
    branch: int = 0  # 0 = the run's own rounds; forks get 1, 2, ...
    parent_round_id: Optional[int] = Field(default=None, foreign_key="round.id")
    created_at: datetime = Field(default_factory=utcnow)
    status: str = "planned"  # planned | rendered | scored | failed
    author: str = "watcher"  # watcher | refiner | human
    plan_json: str = "{}"
    critique_json: Optional[str] = None
    score_semantic: Optional[float] = None
    score_temporal: Optional[float] = None
    score_aesthetic: Optional[float] = None
    score_spatial: Optional[float] = None
    score_overall: Optional[float] = None
    seed: int = 0
    audio_artifact_id: Optional[int] = Field(default=None, foreign_key="artifact.id")
    model_id: str = ""
    prompt_version: str = ""
    raw_output: str = ""
    changes_json: str = "[]"
    timings_json: str = "{}"
    error: Optional[str] = None

    def scores(self) -> dict[str, Optional[float]]:
        return {"semantic": self.score_semantic, "temporal": self.score_temporal,
                "aesthetic": self.score_aesthetic, "spatial": self.score_spatial}


class Artifact(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    sha256: str = Field(index=True)
    kind: str  # audio | video | plan | features | input
    path: str  # relative to the store home (content-addressed)
    bytes: int
    mime: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    run_id: Optional[str] = Field(default=None, index=True)


class NodeEvent(SQLModel, table=True):
    """Per-node progress and timing, written as the graph runs (the studio shows it live)."""

    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: str = Field(index=True)
    node: str
    round_index: Optional[int] = None
    status: str = "started"  # started | done | failed
    started_at: datetime = Field(default_factory=utcnow)
    seconds: Optional[float] = None
    detail: str = ""


class Job(SQLModel, table=True):
    """Work queued for `foleyloop worker` (studio enqueues; workers claim atomically)."""

    id: Optional[int] = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    kind: str  # dub | regenerate | resume
    run_id: Optional[str] = Field(default=None, index=True)
    payload_json: str = "{}"
    status: str = Field(default="queued", index=True)  # queued | running | done | failed
    worker_id: Optional[str] = None
    heartbeat_at: Optional[datetime] = None
    attempts: int = 0
    error: Optional[str] = None


# ---- evaluations (``foleyloop eval``; created by create_all, so older databases gain them without a migration) ----
class Eval(SQLModel, table=True):
    """One evaluation of a corpus: which material (``corpus_hash``), which backends (``config_json``), which code."""

    id: str = Field(primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    status: str = Field(default="running", index=True)  # running | done | interrupted
    corpus_path: str = ""
    corpus_kind: str = ""  # folder | json | csv | corpus-manifest
    corpus_hash: str = Field(default="", index=True)
    n_clips: int = 0
    config_json: str = "{}"  # {"run": RunConfig, "eval": {model refs, device}}
    code_version: str = ""  # git describe, or the package version
    code_dirty: Optional[bool] = None  # None: unknown (no git checkout)
    out_dir: str = ""
    summary_json: str = "{}"
    error: Optional[str] = None

    def config(self) -> dict:
        return json.loads(self.config_json or "{}")

    def summary(self) -> dict:
        return json.loads(self.summary_json or "{}")


class EvalClip(SQLModel, table=True):
    """One clip of an evaluation: its run, and the independent metrics of round 0 and of the kept round."""

    id: Optional[int] = Field(default=None, primary_key=True)
    eval_id: str = Field(foreign_key="eval.id", index=True)
    position: int = 0
    name: str = ""
    content_group: str = ""
    video_path: str = ""  # as the corpus gives it
    reference: str = ""  # a file, "own" (the video's own soundtrack) or "none"
    notes: str = ""
    labels_json: str = "[]"
    run_id: Optional[str] = Field(default=None, index=True)
    status: str = "pending"  # pending | dubbed | scored | failed
    error: Optional[str] = None
    round0_id: Optional[int] = None
    kept_id: Optional[int] = None
    kept_index: Optional[int] = None
    kept_later: Optional[bool] = None  # the loop kept a round after round 0
    no_worse: Optional[bool] = None  # kept round no worse than round 0 on every independent measure
    metrics_json: str = "{}"  # {"round0": {...}, "kept": {...}}
    critic_json: str = "[]"  # per round of branch 0: {"index", "overall", "scores"}
    timings_json: str = "{}"  # seconds per step / metric
    updated_at: datetime = Field(default_factory=utcnow)

    def metrics(self) -> dict:
        return json.loads(self.metrics_json or "{}")

    def critic(self) -> list:
        return json.loads(self.critic_json or "[]")

    def timings(self) -> dict:
        return json.loads(self.timings_json or "{}")

    def labels(self) -> list:
        return json.loads(self.labels_json or "[]")
