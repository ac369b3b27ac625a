"""`foleyloop worker`: takes queued jobs from SQLite and runs them through the runs service (``agent.runs``).

Several workers may share one database. A job is claimed by a single UPDATE … RETURNING (SQLite runs it
under its write lock, so two workers never get the same job), a thread refreshes ``heartbeat_at`` while the
job runs, and a running job whose heartbeat is older than ``stale_s`` belongs to a dead worker: the next
worker claims it again and the graph continues from its last checkpoint. Jobs of one run never run in
parallel (two graph invocations on one run would race on its rounds).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import aliased
from sqlmodel import col

from store.db import Store
from store.redact import redact_text
from store.schema import Job, Run

log = logging.getLogger(__name__)

KINDS = ("dub", "regenerate", "resume")
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm"}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class WorkerConfig:
    poll_s: float = 2.0  # sleep between empty polls
    heartbeat_s: float = 5.0
    stale_s: float = 60.0  # a running job whose heartbeat is older than this is reclaimed
    max_attempts: int = 3  # claims per job (first run + reclaims) before it is failed


# ---- the queue ------------------------------------------------------------------------------------------------
def _stale(job, cutoff: datetime):
    return and_(job.status == "running", or_(col(job.heartbeat_at).is_(None), col(job.heartbeat_at) < cutoff))


def give_up_stale(store: Store, cfg: WorkerConfig) -> list[int]:
    """Fail jobs whose workers died ``max_attempts`` times: the job itself is probably what kills them."""
    cutoff = _now() - timedelta(seconds=cfg.stale_s)
    msg = redact_text(f"WorkerLost: the worker running this job stopped responding {cfg.max_attempts} times; "
                      "not retrying (the job may be crashing its worker)")  # Core UPDATEs: no ORM redaction hook
    with store.session() as s:
        rows = s.execute(update(Job).where(_stale(Job, cutoff), Job.attempts >= cfg.max_attempts)
                         .values(status="failed", error=msg).returning(Job.id, Job.run_id)).all()
        for _, run_id in rows:
            if run_id:
                s.execute(update(Run).where(Run.id == run_id, col(Run.status).in_(("queued", "running")))
                          .values(status="failed", error=msg, updated_at=_now()))
        s.commit()
    for job_id, _ in rows:
        log.warning("job %s: giving up after %d lost workers", job_id, cfg.max_attempts)
    return [r[0] for r in rows]


def claim_statement(worker_id: str, cutoff: datetime):
    """UPDATE job … WHERE id = (oldest claimable job whose run is idle) … RETURNING id, as one statement."""
    cand, busy = aliased(Job), aliased(Job)
    busy_runs = select(busy.run_id).where(busy.status == "running", col(busy.heartbeat_at) >= cutoff,
                                          col(busy.run_id).is_not(None))
    pick = (select(cand.id)
            .where(or_(cand.status == "queued", _stale(cand, cutoff)),
                   or_(col(cand.run_id).is_(None), col(cand.run_id).not_in(busy_runs)))
            .order_by(cand.id).limit(1).scalar_subquery())
    # The outer condition repeats the claimable test, so a row another worker took in between is never re-taken.
    return (update(Job).where(Job.id == pick, or_(Job.status == "queued", _stale(Job, cutoff)))
            .values(status="running", worker_id=worker_id, heartbeat_at=_now(), attempts=Job.attempts + 1,
                    error=None)
            .returning(Job.id))


def claim(store: Store, worker_id: str, cfg: WorkerConfig) -> Job | None:
    """Atomically take the oldest queued (or abandoned) job whose run has no other live job."""
    give_up_stale(store, cfg)
    stmt = claim_statement(worker_id, _now() - timedelta(seconds=cfg.stale_s))
    with store.session() as s:
        job_id = s.execute(stmt).scalar_one_or_none()
        s.commit()
        return s.get(Job, job_id) if job_id is not None else None


def heartbeat(store: Store, job_id: int, worker_id: str) -> bool:
    """Refresh the claim; False when another worker has taken the job over (this one was presumed dead)."""
    with store.session() as s:
        n = s.execute(update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
                      .values(heartbeat_at=_now())).rowcount
        s.commit()
    return n == 1


def finish(store: Store, job_id: int, worker_id: str, error: str | None = None) -> None:
    """Record a job's end. A Core UPDATE skips the Store's ORM redaction hook, so the error (an exception's text,
    which may quote an endpoint URL with its password) is redacted here."""
    with store.session() as s:
        s.execute(update(Job).where(Job.id == job_id, Job.worker_id == worker_id)
                  .values(status="failed" if error else "done", error=redact_text(error), heartbeat_at=_now()))
        s.commit()


class Heartbeat:
    """Background thread that keeps a claimed job alive while the graph runs."""

    def __init__(self, store: Store, job_id: int, worker_id: str, every_s: float):
        self.store, self.job_id, self.worker_id, self.every_s = store, job_id, worker_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}", daemon=True)
        self.lost = False

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                if not heartbeat(self.store, self.job_id, self.worker_id) and not self.lost:
                    self.lost = True
                    log.warning("job %s was taken over by another worker; this worker's result may race it",
                                self.job_id)
            except Exception as exc:  # a busy database must not kill the thread; the next beat retries
                log.warning("heartbeat for job %s failed: %s", self.job_id, exc)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every_s + 5)


# ---- running a job --------------------------------------------------------------------------------------------
def output_path(store: Store, run: Run, branch: int = 0) -> Path:
    """Where a job's result goes: the store's own outputs folder (named by run and branch, so the worker may
    replace a file there; it is never a user's)."""
    suffix = Path(run.video_path).suffix.lower() if run.video_path else ".wav"
    if run.video_path and suffix not in VIDEO_SUFFIXES:
        suffix = ".mp4"
    name = f"{run.id}{'' if branch == 0 else f'.b{branch}'}{suffix}"
    return store.home / "outputs" / name


def execute(store: Store, job: Job, devices=None) -> None:
    """Run one job to its end (or to a review pause). Exceptions propagate; the service has recorded the failure
    (on the run, or on the fork's branch only). ``devices``: the run's device manager (a worker passes one that
    keeps models loaded for its next job)."""
    from agent import runs

    payload = json.loads(job.payload_json or "{}")
    run = store.get_run(job.run_id) if job.run_id else None
    if run is None:
        raise LookupError(f"job {job.id} names run {job.run_id!r}, which does not exist")
    if job.kind == "dub":
        if run.status == "review" and runs.pending_review(store, run.id) is not None:
            log.info("run %s is already paused for review; nothing to do", run.id)
        elif store.rounds(run.id):  # a previous worker died mid-run: continue from the checkpoint
            runs.resume(store, run.id, devices=devices)
        else:
            runs.execute_dub(store, run.id, output_path(store, run), force=True, devices=devices)
    elif job.kind == "regenerate":
        branch = int(payload["branch"])
        runs.execute_branch(store, run.id, branch, output_path(store, run, branch), rounds=payload.get("rounds"),
                            force=True, devices=devices)
    elif job.kind == "resume":
        runs.resume(store, run.id, payload.get("answer"), devices=devices)
    else:
        raise ValueError(f"unknown job kind {job.kind!r} (known: {', '.join(KINDS)})")


class Worker:
    """Claims and runs jobs. Models stay warm between jobs: consecutive jobs whose backends have the same
    configuration share the loaded instances (``load()`` runs once); a job with other backends first frees the
    models of the roles whose configuration changed."""

    def __init__(self, store: Store, cfg: WorkerConfig | None = None, worker_id: str | None = None):
        self.store, self.cfg = store, cfg or WorkerConfig()
        self.id = worker_id or worker_name()
        self.stopping = threading.Event()
        self.warm: dict[str, tuple] = {}  # role → backend cache key of the models kept from the last job

    def _devices(self, job: Job):
        """The job's device manager (keeps its models after the run), after making way for a new configuration."""
        from agent import backends
        from agent.config import RunConfig
        from agent.devices import CACHE_ROLE, KeepLoaded
        from contract.memory import SLOTS

        run = self.store.get_run(job.run_id) if job.run_id else None
        if run is None or not run.config_json:
            return None
        try:
            cfg = RunConfig.model_validate_json(run.config_json).resolved()
        except ValueError:
            return None  # the service reports the bad config
        roles = ("watcher", "renderer", "critic", "refiner")
        keys = {role: next(iter(backends.keys_for(cfg, (role,)))) for role in roles}
        changed = {role for role in roles if role in self.warm and self.warm[role] != keys[role]}
        if changed:
            backends.forget({self.warm[r] for r in changed} - set(keys.values()))
            released = SLOTS.release_roles({CACHE_ROLE[r] for r in changed})
            log.info("worker %s: backends changed (%s); released %s", self.id, ", ".join(sorted(changed)),
                     ", ".join(released) or "nothing")
        self.warm = keys
        return KeepLoaded(cfg)

    def run_one(self) -> Job | None:
        """Claim and run one job; None when nothing is claimable."""
        job = claim(self.store, self.id, self.cfg)
        if job is None:
            return None
        log.info("worker %s: job %s (%s, run %s, attempt %d)", self.id, job.id, job.kind, job.run_id, job.attempts)
        error = None
        with Heartbeat(self.store, job.id, self.id, self.cfg.heartbeat_s):
            try:
                execute(self.store, job, self._devices(job))
            except Exception as exc:
                error = redact_text(f"{type(exc).__name__}: {exc}")[:2000]  # logged and stored: no credentials
                log.warning("job %s failed: %s", job.id, error)
        finish(self.store, job.id, self.id, error)
        with self.store.session() as s:
            return s.get(Job, job.id)

    def loop(self, once: bool = False, drain: bool = False) -> int:
        """Work until stopped (``once``: one job at most; ``drain``: until nothing is claimable); returns jobs run."""
        done = 0
        while not self.stopping.is_set():
            job = self.run_one()
            if job is not None:
                done += 1
            if once or (drain and job is None):
                break
            if job is None:
                self.stopping.wait(self.cfg.poll_s)
        return done

    def stop_on_signals(self) -> None:
        """SIGTERM/SIGINT finish the current job, then exit (a second signal kills as usual)."""

        def handler(signum, _frame):
            log.warning("worker %s: signal %s, stopping after the current job", self.id, signum)
            self.stopping.set()
            signal.signal(signum, signal.SIG_DFL)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)


def main(store: Store, once: bool = False, drain: bool = False, cfg: WorkerConfig | None = None) -> int:
    store.require_writable()  # a read-only database: refuse before claiming anything (StoreError)
    worker = Worker(store, cfg)
    worker.stop_on_signals()
    log.info("worker %s on %s", worker.id, store.db_path)
    return worker.loop(once=once, drain=drain)

