"""The Store: one SQLite file (WAL) plus a content-addressed artifact folder beside it.

Several processes (CLI dubs, workers, the studio) write to the same file at once; WAL with a long
busy timeout and short transactions keeps every row.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import quote

from sqlalchemy import event, text
from sqlalchemy.pool import NullPool
from sqlmodel import Session, SQLModel, col, create_engine, func, select

from store.atomic import part_path
from store.media import sha256_file
from store.redact import redact_json, redact_text
from store.schema import SCHEMA_VERSION, Artifact, Job, Meta, NodeEvent, Round, Run, utcnow

BUSY_TIMEOUT_MS = 30_000
MAX_RUN_ID_CHARS = 64  # ids we make are 12 hex characters; a longer "id" is no run of ours
MAX_FILTER_CHARS = 1000  # SQLite refuses LIKE patterns over 50 000 bytes; nobody searches with 1000


def default_home() -> Path:
    return Path(os.environ.get("FOLEYLOOP_HOME", Path.home() / ".foleyloop")).expanduser()


class StoreError(Exception):
    """A user-facing problem with the database or its folder (not SQLite, read-only, unwritable home, an id
    that cannot be one...). One line that names the path; the CLI maps it to exit 2."""


class SchemaTooNew(StoreError):
    pass


def _pragmas(read_only: bool):
    def apply(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")  # first: the next pragma may have to wait
        if read_only:
            cur.execute("PRAGMA query_only=1")
        else:
            _wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
    return apply


def _wal(cur) -> None:
    """Switch a new file to WAL (persistent, so an existing one is left alone). The switch needs an exclusive lock
    and SQLite may refuse it at once, without the busy handler, while another process creates the same file:
    retried until the busy timeout."""
    if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
        return
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# Migrations from version N to N+1, run in order inside one transaction. Version 1 is the first schema.
MIGRATIONS: dict[int, list[str]] = {}

_SQLITE_PROBLEMS = (  # (substring of SQLite's message, what the user is told)
    ("readonly database", "the database is read-only: nothing can be written to it"),
    ("attempt to write", "the database is read-only: nothing can be written to it"),
    ("file is not a database", "this file is not a foleyloop database (not SQLite)"),
    ("malformed", "the database file is damaged (malformed)"),
    ("unable to open database file", "cannot open the database file (missing folder, or no permission)"),
    ("disk is full", "the disk is full"),
    ("disk i/o error", "a disk I/O error occurred"),
    ("pattern too complex", "the search text is too long"),
)


def _is_text(value: str) -> bool:
    """False for strings SQLite cannot bind (lone surrogates, e.g. undecodable bytes in argv)."""
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _redact_row(_mapper, _conn, row) -> None:
    """Last line of defence: credentials never reach the database, whoever writes the row through the ORM."""
    for name in ("config_json", "backends_json", "payload_json"):
        if isinstance(getattr(row, name, None), str):
            setattr(row, name, redact_json(getattr(row, name)))
    for name in ("error", "detail"):
        if isinstance(getattr(row, name, None), str):
            setattr(row, name, redact_text(getattr(row, name)))


for _table in (Run, Round, Job, NodeEvent):
    event.listen(_table, "before_insert", _redact_row)
    event.listen(_table, "before_update", _redact_row)


class Store:
    def __init__(self, db_path: str | Path | None = None, home: str | Path | None = None,
                 read_only: bool | None = None):
        """``read_only``: None decides from the file system (a database file or folder that cannot be written
        is opened read-only, so listing works); True forces it. Problems raise ``StoreError``."""
        try:
            if db_path is None:
                home_dir = Path(home) if home else default_home()
                db_path = home_dir / "foleyloop.db"
            self.db_path = Path(db_path).expanduser().resolve()
            self.home = Path(home).expanduser().resolve() if home else self.db_path.parent
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"{db_path}: not a usable database path ({exc})") from None
        self.artifact_dir = self.home / "artifacts"
        if self.db_path.is_dir():
            raise StoreError(f"{self.db_path}: is a folder, not a database file")
        self.read_only = self._decide_read_only() if read_only is None else bool(read_only)
        if not self.read_only:
            self._make_home()
        elif not self.db_path.is_file():
            raise StoreError(f"{self.db_path}: no such database, and it cannot be created read-only")
        self.engine = self._engine(immutable=False)
        try:
            self._init_schema()
        except StoreError:
            if not self.read_only:
                raise
            # A read-only folder without the WAL's -shm file: SQLite can still read the file as immutable.
            self.engine.dispose()
            self.engine = self._engine(immutable=True)
            self._init_schema()

    def _decide_read_only(self) -> bool:
        if not self.db_path.exists():
            return False
        return not (os.access(self.db_path, os.W_OK) and os.access(self.db_path.parent, os.W_OK))

    def _make_home(self) -> None:
        for folder in dict.fromkeys((self.home, self.db_path.parent)):
            if folder.exists() and not folder.is_dir():
                raise StoreError(f"{folder}: is a file, not a folder (check FOLEYLOOP_HOME / --db)")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{folder}: cannot create the folder ({exc.strerror or exc})") from None
        if not self.db_path.exists() and not os.access(self.db_path.parent, os.W_OK | os.X_OK):
            raise StoreError(f"{self.db_path.parent}: the folder is not writable, so no database can be created")

    def _url(self, immutable: bool) -> str:
        if not self.read_only:
            return f"sqlite:///{self.db_path}"
        return f"sqlite:///file:{quote(str(self.db_path))}?mode=ro{'&immutable=1' if immutable else ''}&uri=true"

    def _engine(self, immutable: bool):
        engine = create_engine(self._url(immutable), connect_args={"timeout": BUSY_TIMEOUT_MS / 1000,
                                                                   "check_same_thread": False})
        event.listen(engine, "connect", _pragmas(self.read_only))
        event.listen(engine, "handle_error", self._handle_error)
        return engine

    def _handle_error(self, ctx) -> None:
        """SQLite problems a user can act on become one-line ``StoreError``s naming the file."""
        orig = ctx.original_exception
        if isinstance(orig, sqlite3.DatabaseError):
            msg = str(orig).lower()
            for needle, said in _SQLITE_PROBLEMS:
                if needle in msg:
                    ro = " (opened read-only)" if self.read_only and "read-only" not in said else ""
                    raise StoreError(f"{self.db_path}: {said}{ro}") from None

    def require_writable(self) -> None:
        """Raise ``StoreError`` now, before any work, when this Store was opened read-only (call it first in
        commands that will write: dub, resume, regenerate, worker)."""
        if self.read_only:
            raise StoreError(f"{self.db_path}: opened read-only (the file or its folder is not writable); "
                             "this command needs to write")

    # ---- schema -----------------------------------------------------------------------------------------
    def _state(self, conn) -> tuple[set[str], int | None]:
        have = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}
        version = None
        if "meta" in have:
            row = conn.exec_driver_sql("SELECT value FROM meta WHERE key='schema_version'").first()
            try:
                version = int(row[0]) if row is not None else None
            except ValueError:
                raise StoreError(f"{self.db_path}: the schema version {row[0]!r} is not a number") from None
        return have, version

    def _too_new(self, version: int | None) -> None:
        if version is not None and version > SCHEMA_VERSION:
            raise SchemaTooNew(f"{self.db_path}: database schema {version} is newer than this foleyloop "
                               f"({SCHEMA_VERSION}); upgrade foleyloop")

    def _init_schema(self) -> None:
        """A read first: an up-to-date database takes no lock. Otherwise one ``BEGIN IMMEDIATE`` transaction
        creates or migrates, so processes opening a fresh file together wait for each other instead of racing."""
        with self.engine.connect() as conn:
            have, version = self._state(conn)
        self._too_new(version)
        if version == SCHEMA_VERSION and set(SQLModel.metadata.tables) <= have:
            return
        self.require_writable()
        mig = create_engine(f"sqlite:///{self.db_path}", poolclass=NullPool,
                            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "isolation_level": None})
        event.listen(mig, "connect", _pragmas(False))
        event.listen(mig, "handle_error", self._handle_error)
        try:
            with mig.connect() as conn:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    have, version = self._state(conn)  # again: another process may have done it meanwhile
                    self._too_new(version)
                    while version is not None and version < SCHEMA_VERSION:
                        for stmt in MIGRATIONS.get(version, []):
                            conn.execute(text(stmt))
                        version += 1
                    SQLModel.metadata.create_all(conn)  # new tables only (checkfirst)
                    conn.exec_driver_sql("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                                         (str(SCHEMA_VERSION),))
                    conn.exec_driver_sql("COMMIT")
                except BaseException:
                    conn.exec_driver_sql("ROLLBACK")
                    raise
        finally:
            mig.dispose()

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
        """By id, by a unique id prefix (as git does), or ``"last"`` for the most recent run.

        The prefix is matched literally (``%`` and ``_`` are not wildcards); an empty or over-long id
        (> ``MAX_RUN_ID_CHARS``) is no run."""
        if run_id == "last":
            latest = self.list_runs(limit=1)
            return latest[0] if latest else None
        if not isinstance(run_id, str) or not run_id or len(run_id) > MAX_RUN_ID_CHARS or not _is_text(run_id):
            return None
        with self.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                matches = s.exec(select(Run).where(col(Run.id).startswith(run_id, autoescape=True)).limit(2)).all()
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
        if not (_is_text(status or "") and _is_text(text_filter or "")):
            return q.where(text("0"))  # text no row can hold (argv's undecodable bytes) matches nothing
        if status:
            q = q.where(Run.status == status)
        if text_filter:
            if len(text_filter) > MAX_FILTER_CHARS:
                raise StoreError(f"the search text is {len(text_filter)} characters; at most {MAX_FILTER_CHARS}")
            q = q.where(col(Run.video_path).contains(text_filter, autoescape=True)
                        | col(Run.id).contains(text_filter, autoescape=True)
                        | col(Run.prompt).contains(text_filter, autoescape=True))
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
        self.require_writable()
        src = Path(path)
        digest = sha256_file(src)
        rel = Path(digest[:2]) / f"{digest}{src.suffix.lower()}"
        dst = self.artifact_dir / rel
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = part_path(dst)
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
