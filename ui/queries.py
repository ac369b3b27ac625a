"""Read-side queries for the studio pages: one indexed query per table view, never one per row."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Optional

from sqlalchemy import func, or_, select
from sqlmodel import col

from store.db import Store
from store.schema import Job, Round, Run

SCORE_COLUMNS = ("semantic", "temporal", "aesthetic", "spatial")
ACTIVE_JOB_STATES = ("queued", "running")


@dataclass(frozen=True)
class RunFilter:
    status: Optional[str] = None
    text: str = ""
    since: Optional[date] = None  # inclusive, local calendar day in UTC
    until: Optional[date] = None  # inclusive

    def clauses(self) -> list:
        out = []
        if self.status:
            out.append(Run.status == self.status)
        if self.text.strip():
            like = f"%{self.text.strip()}%"
            out.append(or_(col(Run.id).like(like), col(Run.video_path).like(like), col(Run.prompt).like(like)))
        if self.since is not None:
            out.append(Run.created_at >= datetime.combine(self.since, time.min, tzinfo=timezone.utc))
        if self.until is not None:
            out.append(Run.created_at < datetime.combine(self.until + timedelta(days=1), time.min, tzinfo=timezone.utc))
        return out


@dataclass(frozen=True)
class RunRow:
    id: str
    created_at: datetime
    status: str
    kind: str
    source: str  # video file name, or the text prompt of a text-to-audio run
    duration_s: Optional[float]
    rounds: int
    best_overall: Optional[float]
    scores: dict[str, Optional[float]]
    backends: str
    stop_reason: Optional[str]
    error: Optional[str]


def _backends_label(raw: str) -> str:
    try:
        b = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return ""
    return " / ".join(str(b.get(k, "?")) for k in ("watcher", "renderer", "critic", "refiner") if k in b)


def count_runs(store: Store, f: RunFilter) -> int:
    with store.session() as s:
        return int(s.exec(select(func.count()).select_from(Run).where(*f.clauses())).one()[0])


def runs_page(store: Store, f: RunFilter, page: int = 1, size: int = 50) -> list[RunRow]:
    """One page of runs, newest first, with the best round's score vector joined in (no N+1)."""
    q = (select(Run.id, Run.created_at, Run.status, Run.kind, Run.video_path, Run.prompt, Run.duration_s,
                Run.n_rounds, Run.best_overall, Run.backends_json, Run.stop_reason, Run.error,
                Round.score_semantic, Round.score_temporal, Round.score_aesthetic, Round.score_spatial)
         .outerjoin(Round, Round.id == Run.best_round_id)
         .where(*f.clauses())
         .order_by(col(Run.created_at).desc())
         .offset(max(0, page - 1) * size).limit(size))
    with store.session() as s:
        rows = s.exec(q).all()
    return [RunRow(id=r[0], created_at=r[1], status=r[2], kind=r[3],
                   source=Path(r[4]).name if r[4] else (r[5] or "")[:60], duration_s=r[6], rounds=r[7],
                   best_overall=r[8], backends=_backends_label(r[9]), stop_reason=r[10], error=r[11],
                   scores=dict(zip(SCORE_COLUMNS, r[12:16])))
            for r in rows]


def status_counts(store: Store) -> dict[str, int]:
    with store.session() as s:
        rows = s.exec(select(Run.status, func.count()).group_by(Run.status)).all()
    return {status: int(n) for status, n in rows}


def review_queue(store: Store) -> list[Run]:
    """Runs paused at the human-review interrupt, oldest first (first come, first served)."""
    with store.session() as s:
        return list(s.exec(select(Run).where(Run.status == "review").order_by(col(Run.updated_at))).scalars())


def jobs_for_run(store: Store, run_id: str) -> list[Job]:
    with store.session() as s:
        return list(s.exec(select(Job).where(Job.run_id == run_id).order_by(col(Job.id))).scalars())


def active_jobs(store: Store, run_id: str, kind: Optional[str] = None) -> list[Job]:
    q = select(Job).where(Job.run_id == run_id, col(Job.status).in_(ACTIVE_JOB_STATES))
    if kind:
        q = q.where(Job.kind == kind)
    with store.session() as s:
        return list(s.exec(q.order_by(col(Job.id))).scalars())
