"""The Store: one SQLite file (WAL) plus a content-addressed artifact folder beside it.

Several processes (CLI dubs, workers, the studio) write to the same file at once; WAL with a long
busy timeout and short transactions keeps every row.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from sqlalchemy import event, text
from sqlmodel import Session, SQLModel, col, create_engine, func, select

from store.media import sha256_file
from store.schema import SCHEMA_VERSION, Artifact, Job, Meta, NodeEvent, Round, Run, utcnow

BUSY_TIMEOUT_MS = 30_000


def default_home() -> Path:
    return Path(os.environ.get("FOLEYLOOP_HOME", Path.home() / ".foleyloop")).expanduser()


def _pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


# Migrations from version N to N+1, run in order inside one transaction. Version 1 is the first schema.
MIGRATIONS: dict[int, list[str]] = {}


class SchemaTooNew(RuntimeError):
    pass


class Store:
    def __init__(self, db_path: str | Path | None = None, home: str | Path | None = None):
        if db_path is None:
            home_dir = Path(home) if home else default_home()
            db_path = home_dir / "foleyloop.db"
        self.db_path = Path(db_path).expanduser().resolve()
        self.home = Path(home).expanduser().resolve() if home else self.db_path.parent
        self.artifact_dir = self.home / "artifacts"
        self.home.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(f"sqlite:///{self.db_path}", connect_args={"timeout": BUSY_TIMEOUT_MS / 1000,
                                                                               "check_same_thread": False})
        event.listen(self.engine, "connect", _pragmas)
        self._init_schema()

    # ---- schema -----------------------------------------------------------------------------------------
    def _init_schema(self) -> None:
        SQLModel.metadata.create_all(self.engine)
        with self.session() as s:
            row = s.get(Meta, "schema_version")
            if row is None:
                s.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
                s.commit()
                return
            version = int(row.value)
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(f"{self.db_path}: database schema {version} is newer than this foleyloop "
                                   f"({SCHEMA_VERSION}); upgrade foleyloop")
            while version < SCHEMA_VERSION:
                for stmt in MIGRATIONS.get(version, []):
                    s.exec(text(stmt))
                version += 1
            row.value = str(version)
            s.add(row)
            s.commit()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    def schema_version(self) -> int:
        with self.session() as s:
            return int(s.get(Meta, "schema_version").value)

    # ---- runs -------------------------------------------------------------------------------------------
    def create_run(self, **fields) -> Run:
        fields.setdefault("id", uuid.uuid4().hex[:12])
        for key in ("config_json", "backends_json", "video_info_json", "timings_json"):
            if key in fields and not isinstance(fields[key], str):
                fields[key] = json.dumps(fields[key])
        run = Run(**fields)
        with self.session() as s:
            s.add(run)
            s.commit()
        return run

    def get_run(self, run_id: str) -> Optional[Run]:
        """By id, by a unique id prefix (as git does), or ``"last"`` for the most recent run."""
        if run_id == "last":
            latest = self.list_runs(limit=1)
            return latest[0] if latest else None
        with self.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                matches = s.exec(select(Run).where(col(Run.id).startswith(run_id)).limit(2)).all()
                run = matches[0] if len(matches) == 1 else None
            return run

    def update_run(self, run_id: str, **fields) -> Run:
        with self.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise KeyError(run_id)
            for key, value in fields.items():
                if key.endswith("_json") and not isinstance(value, str):
                    value = json.dumps(value)
                setattr(run, key, value)
            run.updated_at = utcnow()
            s.add(run)
            s.commit()
            return run

    def add_timing(self, run_id: str, key: str, seconds: float) -> None:
        with self.session() as s:
            run = s.get(Run, run_id)
            timings = run.timings()
            timings[key] = round(timings.get(key, 0.0) + seconds, 4)
            run.timings_json = json.dumps(timings)
            s.add(run)
            s.commit()

    def list_runs(self, status: str | None = None, text_filter: str | None = None, since=None, until=None,
                  limit: int = 50, offset: int = 0) -> list[Run]:
        with self.session() as s:
            q = self._runs_query(select(Run), status, text_filter, since, until)
            return list(s.exec(q.order_by(col(Run.created_at).desc()).offset(offset).limit(limit)).all())

    def count_runs(self, status: str | None = None, text_filter: str | None = None, since=None, until=None) -> int:
        with self.session() as s:
            q = self._runs_query(select(func.count()).select_from(Run), status, text_filter, since, until)
            return int(s.exec(q).one())

    @staticmethod
    def _runs_query(q, status, text_filter, since, until):
        if status:
            q = q.where(Run.status == status)
        if text_filter:
            like = f"%{text_filter}%"
            q = q.where(col(Run.video_path).like(like) | col(Run.id).like(like) | col(Run.prompt).like(like))
        if since is not None:
            q = q.where(Run.created_at >= since)
        if until is not None:
            q = q.where(Run.created_at < until)
        return q

    # ---- rounds -----------------------------------------------------------------------------------------
    def add_round(self, **fields) -> Round:
        for key in ("changes_json", "timings_json"):
            if key in fields and not isinstance(fields[key], str):
                fields[key] = json.dumps(fields[key])
        rnd = Round(**fields)
        with self.session() as s:
            s.add(rnd)
            s.commit()
        return rnd

    def update_round(self, round_id: int, **fields) -> Round:
        with self.session() as s:
            rnd = s.get(Round, round_id)
            if rnd is None:
                raise KeyError(round_id)
            for key, value in fields.items():
                if key.endswith("_json") and value is not None and not isinstance(value, str):
                    value = json.dumps(value)
                setattr(rnd, key, value)
            s.add(rnd)
            s.commit()
            return rnd

    def get_round(self, round_id: int) -> Optional[Round]:
        with self.session() as s:
            return s.get(Round, round_id)

    def rounds(self, run_id: str, branch: int | None = None) -> list[Round]:
        with self.session() as s:
            q = select(Round).where(Round.run_id == run_id)
            if branch is not None:
                q = q.where(Round.branch == branch)
            return list(s.exec(q.order_by(Round.branch, Round.index, Round.id)).all())

    def next_branch(self, run_id: str) -> int:
        with self.session() as s:
            top = s.exec(select(func.max(Round.branch)).where(Round.run_id == run_id)).one()
            return 0 if top is None else int(top) + 1

    # ---- artifacts --------------------------------------------------------------------------------------
    def put_file(self, path: str | Path, kind: str, run_id: str | None = None, mime: str = "",
                 move: bool = False) -> Artifact:
        """Copy (or move) a file into the content-addressed store and record it."""
        src = Path(path)
        digest = sha256_file(src)
        rel = Path(digest[:2]) / f"{digest}{src.suffix.lower()}"
        dst = self.artifact_dir / rel
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + f".{uuid.uuid4().hex[:6]}.part")
            if move:
                shutil.move(str(src), tmp)
            else:
                shutil.copyfile(src, tmp)
            tmp.replace(dst)
        elif move:
            src.unlink(missing_ok=True)
        art = Artifact(sha256=digest, kind=kind, path=str(rel), bytes=dst.stat().st_size, mime=mime, run_id=run_id)
        with self.session() as s:
            s.add(art)
            s.commit()
        return art

    def artifact_path(self, artifact_id: int | None) -> Optional[Path]:
        if artifact_id is None:
            return None
        with self.session() as s:
            art = s.get(Artifact, artifact_id)
        return None if art is None else self.artifact_dir / art.path

    # ---- progress ---------------------------------------------------------------------------------------
    def node_started(self, run_id: str, node: str, round_index: int | None = None, detail: str = "") -> int:
        ev = NodeEvent(run_id=run_id, node=node, round_index=round_index, detail=detail)
        with self.session() as s:
            s.add(ev)
            s.commit()
            return ev.id

    def node_finished(self, event_id: int, seconds: float, status: str = "done", detail: str = "") -> None:
        with self.session() as s:
            ev = s.get(NodeEvent, event_id)
            ev.status, ev.seconds = status, round(seconds, 4)
            if detail:
                ev.detail = detail
            s.add(ev)
            s.commit()

    def node_events(self, run_id: str) -> list[NodeEvent]:
        with self.session() as s:
            return list(s.exec(select(NodeEvent).where(NodeEvent.run_id == run_id).order_by(NodeEvent.id)).all())

    # ---- jobs -------------------------------------------------------------------------------------------
    def enqueue(self, kind: str, run_id: str | None = None, **payload) -> Job:
        job = Job(kind=kind, run_id=run_id, payload_json=json.dumps(payload))
        with self.session() as s:
            s.add(job)
            s.commit()
        return job
