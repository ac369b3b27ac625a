"""Batch dubbing: many clips through one recording path, resumable, in this process or across a Ray cluster.

A batch is a list of clips (a folder of videos, or a CSV/JSONL manifest with per-clip options), checked up front
(bad input: ``UserError`` before any work). Each clip gets one Run row in the driver's database. A *worker* dubs
it with the run service into its own scratch store (never the driver's SQLite) and returns a compact result: the
run's rows as plain data, and its artifacts as bytes or as files in a shared folder. The driver writes the rows
into its database in one transaction per clip, as clips complete, so a killed driver loses no finished clip.

Engines: ``LocalEngine`` runs one worker in this process; ``RayEngine`` runs one Ray actor per worker (GPU-aware,
models loaded once per actor and kept between clips; a killed actor is restarted and its clip retried). With
``resume``, a clip already done for the same config (key: video sha256 + config hash, looked up in the DB) is
skipped, and a run that a killed batch left without results is taken over instead of recorded twice.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import json
import logging
import math
import os
import queue as queue_mod
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import psutil
from pydantic import ValidationError
from sqlalchemy import delete
from sqlmodel import col, select

from agent import backends, nodes, outputs, runs
from agent.config import RunConfig
from agent.devices import KeepLoaded, resolve_device
from contract.errors import UserError
from store import media
from store.db import Store
from store.redact import redact_json
from store.schema import Artifact, NodeEvent, Round, Run, utcnow

log = logging.getLogger(__name__)

MANIFEST_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
MAX_MANIFEST_BYTES = 32 << 20
MAX_CLIPS = 100_000
# Per-clip options a manifest row may set: column → (RunConfig field, type).
CLIP_OPTIONS: dict[str, tuple[str, type]] = {
    "rounds": ("rounds", int), "seed": ("seed", int), "watcher": ("watcher", str), "renderer": ("renderer", str),
    "critic": ("critic", str), "refiner": ("refiner", str), "keep_original": ("keep_original", str),
    "max_duration": ("max_duration_s", float)}
COLUMNS = ("path", "out", *CLIP_OPTIONS)
ENGINES = ("local", "ray")
_SETUP = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


# ---- the clips ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clip:
    path: Path  # absolute
    out: Path  # absolute, checked
    cfg: RunConfig
    where: str  # how messages name it: the file name, or "MANIFEST line N"


def _resolve(value: Any, base: Path, where: str, what: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: {what} must be a non-empty path")
    p = Path(value.strip()).expanduser()
    return Path(os.path.normpath((p if p.is_absolute() else base / p).absolute()))


def _option(key: str, value: Any, where: str) -> tuple[str, Any]:
    """A manifest cell (text in CSV, JSON value in JSONL) as a RunConfig field and value."""
    name, typ = CLIP_OPTIONS[key]
    bad = UserError(f"{where}: {key} must be {'an integer' if typ is int else 'a number' if typ is float else 'text'},"
                    f" got {str(value)[:40]!r}")
    if typ is str:
        if not isinstance(value, str):
            raise bad
        return name, value.strip()
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad
    try:
        number = typ(value.strip()) if isinstance(value, str) else value
        if typ is int and (isinstance(number, float) and not number.is_integer()):
            raise ValueError
        number = typ(number)
    except (ValueError, OverflowError):
        raise bad from None
    if typ is float and not math.isfinite(number):
        raise bad
    return name, number


def read_manifest(path: Path) -> list[tuple[int, dict]]:
    """``(line, row)`` for each clip of a CSV (header line) or JSONL (one object per line) manifest; empty cells
    are unset. UserError names the line of the first problem."""
    fmt = MANIFEST_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: a manifest must be .csv or .jsonl (got {path.suffix or 'no extension'})")
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise UserError(f"{path}: the manifest is over {MAX_MANIFEST_BYTES >> 20} MiB")
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: the manifest is not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    rows: list[tuple[int, dict]] = []
    known = ", ".join(COLUMNS)
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            header = [h.strip() for h in reader.fieldnames or []]
            if not header:
                raise UserError(f"{path}: empty manifest (the first line names the columns: {known})")
            unknown = [h for h in header if h not in COLUMNS]
            if unknown or "path" not in header or len(set(header)) != len(header):
                what = f"unknown column {unknown[0]!r}" if unknown else "no 'path' column" \
                    if "path" not in header else "a column named twice"
                raise UserError(f"{path} line 1: {what} (columns: {known})")
            reader.fieldnames = header
            for row in reader:
                if None in row:
                    raise UserError(f"{path} line {reader.line_num}: more cells than columns")
                cells = {k: v.strip() for k, v in row.items() if v is not None and v.strip()}
                if cells:
                    rows.append((reader.line_num, cells))
                if len(rows) > MAX_CLIPS:
                    raise UserError(f"{path}: more than {MAX_CLIPS} clips")
        except csv.Error as exc:
            raise UserError(f"{path} line {reader.line_num}: not valid CSV ({exc})") from None
        return rows
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise UserError(f"{path} line {n}: not JSON ({getattr(exc, 'msg', exc)})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path} line {n}: each line must be a JSON object with a \"path\"")
        unknown = [k for k in obj if k not in COLUMNS]
        if unknown:
            raise UserError(f"{path} line {n}: unknown key {str(unknown[0])[:40]!r} (keys: {known})")
        rows.append((n, {k: v for k, v in obj.items() if v is not None and v != ""}))
        if len(rows) > MAX_CLIPS:
            raise UserError(f"{path}: more than {MAX_CLIPS} clips")
    return rows


def clip_config(base: RunConfig, options: dict, where: str) -> RunConfig:
    """``base`` with a clip's own options, validated (UserError naming the clip)."""
    if not options:
        return base
    for role in ("watcher", "renderer", "critic", "refiner"):
        if role in options and options[role] not in backends.REGISTRY[role]:
            raise UserError(f"{where}: unknown {role} backend {options[role]!r} "
                            f"(known: {', '.join(sorted(backends.REGISTRY[role]))})")
    try:
        return RunConfig.model_validate(base.model_dump() | options)
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = ".".join(str(x) for x in first.get("loc", ())) or "option"
        raise UserError(f"{where}: {field_name}: {first.get('msg', 'invalid')}") from None


def collect(source: Path, out_dir: Optional[Path], base: RunConfig, name_for: Callable[[Path], str],
            video_exts: Iterable[str]) -> list[Clip]:
    """The clips of a folder (its videos, not recursive) or of a manifest, every path and option checked.

    Manifest paths are relative to the manifest's folder; a relative ``out`` is relative to ``out_dir`` when
    given, else to the manifest's folder; a clip without ``out`` goes to ``out_dir / name_for(path)``."""
    source = Path(source).expanduser()
    exts = {e.lower() for e in video_exts}
    entries: list[tuple[str, Path, Optional[Path], dict]] = []
    out_base = Path(out_dir).expanduser().absolute() if out_dir is not None else None
    if source.is_dir():
        videos = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in exts)
        if not videos:
            raise UserError(f"{source}: no video files ({', '.join(sorted(exts))})")
        if out_base is None:
            raise UserError("--out-dir is required with a folder of videos")
        entries = [(p.name, p.absolute(), None, {}) for p in videos]
    elif source.is_file():
        rows = read_manifest(source)
        if not rows:
            raise UserError(f"{source}: the manifest lists no clips")
        here = source.absolute().parent
        for line, row in rows:
            where = f"{source.name} line {line}"
            if "path" not in row:
                raise UserError(f"{where}: no path")
            path = _resolve(row["path"], here, where, "path")
            if not path.is_file():
                raise UserError(f"{where}: {path}: no such video file")
            out = _resolve(row["out"], out_base or here, where, "out") if "out" in row else None
            if out is None and out_base is None:
                raise UserError(f"{where}: no out, and no --out-dir to put it in")
            opts = dict(_option(k, v, where) for k, v in row.items() if k in CLIP_OPTIONS)
            entries.append((where, path, out, opts))
    else:
        raise UserError(f"{source}: no such folder or manifest file")
    if out_base is not None:
        outputs.check_folder(out_base, "--out-dir")
    inputs = {_same(p) for _, p, _, _ in entries}
    clips, seen = [], {}
    for where, path, out, opts in entries:
        out = outputs.check_out(out or out_base / name_for(path), "video", inputs=[path], force=True,
                                what=f"{where}: output")
        key = _same(out)
        if key in seen:
            raise UserError(f"{where}: output {out} is also the output of {seen[key]}; give each clip its own out")
        if key in inputs:
            raise UserError(f"{where}: output {out} is an input of this batch; refusing to overwrite it")
        seen[key] = where
        clips.append(Clip(path, out, clip_config(base, opts, where), where))
    return clips


def _same(path: Path) -> str:
    """One spelling per file (links and ``..`` resolved), to find two clips naming the same file."""
    return os.path.normcase(os.path.realpath(path))


def check_setup(specs: Iterable[str]) -> list[str]:
    """Worker setup hooks are ``module:function`` (called on each worker before its first clip)."""
    specs = list(specs)
    for spec in specs:
        if not _SETUP.match(spec):
            raise UserError(f"--worker-setup {spec!r}: expected MODULE:FUNCTION, e.g. mypkg.backends:register")
    return specs


def check_address(address: Optional[str], timeout_s: float = 5.0) -> None:
    """A ``HOST:PORT`` Ray address must answer now: ``ray.init`` would otherwise retry for minutes."""
    if not address or address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379) or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


def run_setup(specs: Iterable[str]) -> None:
    for spec in specs:
        module, _, func = spec.partition(":")
        getattr(importlib.import_module(module), func)()


# ---- resume keys ------------------------------------------------------------------------------------------------
def _key_of(config_json: str) -> str:
    try:
        data = json.loads(config_json or "{}")
    except json.JSONDecodeError:
        return ""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def config_key(cfg: RunConfig) -> str:
    """The hash of a config as the Store keeps it (credentials redacted), so a stored run's key is comparable."""
    return _key_of(redact_json(cfg.model_dump_json()))


def previous_runs(store: Store, sha256: str, key: str) -> list[Run]:
    """Dub runs of this video (by content) with this config, newest first."""
    with store.session() as s:
        rows = s.exec(select(Run).where(Run.video_sha256 == sha256, Run.kind == "dub")
                      .order_by(col(Run.created_at).desc())).all()
    return [r for r in rows if _key_of(r.config_json) == key]


def _unfinished(store: Store, run: Run) -> bool:
    """A run a killed batch left behind: recorded, never given results (the driver writes them all at once)."""
    return run.status in ("queued", "running") and not store.rounds(run.id)


def _ours(store: Store, clip: Clip, claimed: set[str] | frozenset[str] = frozenset()) -> bool:
    """Whether an existing ``clip.out`` may stay or be replaced on resume: the clip is done for this config (it will
    be skipped), or an unfinished run of it was publishing exactly this file when it was killed."""
    try:
        sha = media.sha256_file(clip.path)
    except OSError:
        return False
    for run in previous_runs(store, sha, config_key(clip.cfg)):
        if run.id in claimed:
            continue
        if run.status == "done":
            return True
        if _unfinished(store, run) and nodes.branch_record(run, 0).get("publishing") == str(clip.out):
            return True
    return False


def check_existing(store: Store, clips: list[Clip], force: bool, resume: bool) -> None:
    """An output that already exists is refused before any work, unless ``force``, or ``resume`` finds it ours."""
    if force:
        return
    clashes = [c for c in clips if os.path.lexists(c.out)]
    if resume:
        clashes = [c for c in clashes if not _ours(store, c)]
    if clashes:
        c, more = clashes[0], f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
        raise UserError(f"{c.where}: output {c.out} already exists{more}; pass --force to overwrite, "
                        "or --resume to skip clips already done")


# ---- the worker: dubs into its own scratch store ------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]


def _pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class ClipWorker:
    """Dubs one clip at a time into a scratch store of its own and returns the run as plain data.

    ``handoff``: a folder the driver can read (a shared path, or ``"local"``: a folder in the scratch space, for a
    worker in the driver's process): artifacts are left there as files; without it they travel as bytes. Scratch
    space lives in ``scratch_root/foleyloop-batch/HOST-PID`` and is removed by ``close``, or by a later worker on
    the same host once this process is gone."""

    def __init__(self, scratch_root: str | Path | None = None, handoff: str | Path | None = None,
                 setup: Iterable[str] = (), in_ray: bool = False, slot: int = 0):
        """``slot`` k > 0: one more worker in this process (``--batch-size``), with a scratch store of its own."""
        run_setup(setup)
        self.host, self.pid, self.in_ray = socket.gethostname(), os.getpid(), in_ray
        self.root = Path(scratch_root or tempfile.gettempdir()) / "foleyloop-batch"
        self.root.mkdir(parents=True, exist_ok=True)
        if slot == 0:
            self._clean_dead()
        self.dir = self.root / f"{self.host}-{self.pid}"
        if slot:
            self.dir = self.dir / f"slot{slot}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.handoff = self.dir / "handoff" if handoff == "local" else Path(handoff) if handoff else None
        if self.handoff is not None:
            self.handoff.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.dir / "scratch.db")
        self.clips = 0

    def _clean_dead(self) -> None:
        for d in self.root.iterdir():
            host, _, pid = d.name.rpartition("-")
            if host == self.host and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                shutil.rmtree(d, ignore_errors=True)

    def info(self) -> dict:
        node = None
        if self.in_ray:
            import ray

            node = ray.get_runtime_context().get_node_id()
        return {"node_id": node, "host": self.host, "pid": self.pid}

    def dub(self, task: dict, data: bytes | None = None, on_event: runs.OnEvent = None) -> dict:
        """Dub ``task`` (see ``Batch._task``); ``data``: the video's bytes when its path is not visible here."""
        t0 = time.perf_counter()
        self.clips += 1
        video, shipped = Path(task["video"]), None
        visible = video.is_file() and video.stat().st_size == task["size"]
        if not visible:
            if data is None:
                return {"status": "unavailable", "worker": self.info(),
                        "error": f"{video} is not visible on {self.host} (not the same file there)"}
            shipped = self.dir / "inputs" / f"{task['sha256']}{video.suffix.lower()}"
            shipped.parent.mkdir(exist_ok=True)
            shipped.write_bytes(data)
            video = shipped
        cfg = RunConfig.model_validate_json(task["config"])
        out = self.dir / "out" / f"{uuid.uuid4().hex[:12]}{task['suffix']}"
        run_id, error = None, None
        try:
            run_id = runs.create_dub_run(self.store, video, cfg, status="running", out=out)
            if self.store.get_run(run_id).video_sha256 != task["sha256"] and shipped is None:
                self.store.update_run(run_id, status="failed", error="a different file at this path")
                return {"status": "unavailable", "worker": self.info(),
                        "error": f"{video} on {self.host} is not the driver's file (different content)"}
            runs.execute_dub(self.store, run_id, out, force=True, on_event=on_event, devices=KeepLoaded(cfg))
        except Exception as exc:  # the clip failed; the result says why and carries what was recorded
            error = _one_line(exc)
        finally:
            if shipped is not None:
                shipped.unlink(missing_ok=True)
        result = self._export(run_id, error)
        out.unlink(missing_ok=True)
        result["seconds"] = round(time.perf_counter() - t0, 4)
        return result

    def _export(self, run_id: Optional[str], error: Optional[str]) -> dict:
        if run_id is None:
            return {"status": "failed", "error": error or "the clip could not be recorded", "worker": self.info()}
        st = self.store
        run = st.get_run(run_id)
        if error is None and run.status != "done":
            error = f"the run stopped with status {run.status!r}"
        with st.session() as s:
            arts = list(s.exec(select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.id)).all())
        exported, by_sha = [], {}
        for a in arts:
            src = st.artifact_dir / a.path
            entry = {"id": a.id, "kind": a.kind, "mime": a.mime, "sha256": a.sha256, "suffix": Path(a.path).suffix}
            if a.sha256 not in by_sha:
                if self.handoff is not None:
                    dst = self.handoff / f"{uuid.uuid4().hex}{entry['suffix']}"
                    tmp = dst.with_name(f".{dst.name}.part")
                    shutil.copyfile(src, tmp)
                    tmp.replace(dst)
                    by_sha[a.sha256] = {"path": str(dst)}
                else:
                    by_sha[a.sha256] = {"data": src.read_bytes()}
            exported.append(entry | by_sha[a.sha256])
        for a in arts:  # exported: free the scratch space (one clip at a time, so nothing else uses them)
            (st.artifact_dir / a.path).unlink(missing_ok=True)
        return {"status": "failed" if error else "done", "error": error, "worker": self.info(),
                "run": {"stop_reason": run.stop_reason, "best_overall": run.best_overall,
                        "best_round_id": run.best_round_id, "output_artifact_id": run.output_artifact_id,
                        "branches": run.branches(), "timings": run.timings(), "backends": run.backends()},
                "rounds": [r.model_dump() for r in st.rounds(run_id)],
                "events": [e.model_dump() for e in st.node_events(run_id)],
                "artifacts": exported}

    def close(self) -> None:
        self.store.engine.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            self.root.rmdir()
        except OSError:  # other workers' folders are still there
            pass


# ---- outcomes -----------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    clip: Clip
    status: str  # done | failed | skipped
    run_id: Optional[str] = None
    error: Optional[str] = None
    worker: dict = field(default_factory=dict)
    seconds: Optional[float] = None
    best_overall: Optional[float] = None
    stop_reason: Optional[str] = None
    note: str = ""


@dataclass
class BatchReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def of(self, status: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    def summary(self) -> str:
        return f"{len(self.of('done'))} done, {len(self.of('failed'))} failed, {len(self.of('skipped'))} skipped"


class WorkersLost(RuntimeError):
    """No worker is left to take the remaining clips (they are not recorded; rerun with --resume)."""


# ---- engines ------------------------------------------------------------------------------------------------------
class LocalEngine:
    """Workers in this process; artifacts handed over as files in their scratch folders. ``batch_size`` 1: one
    clip at a time. N > 1: N clips at once in threads, and a renderer with ``render_batch`` (ThinkSound) renders
    their requests together (``agent.batching``): clips of one duration bucket share each forward."""

    name = "local"

    def __init__(self, scratch_root: str | Path | None = None, setup: Iterable[str] = (),
                 on_event: runs.OnEvent = None, batch_size: int = 1):
        if batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {batch_size}")
        self.scratch_root, self.setup, self.on_event = scratch_root, list(setup), on_event
        self.batch_size = int(batch_size)
        self.worker: Optional[ClipWorker] = None
        self.queue: deque = deque()
        self.idle: list[ClipWorker] = []
        self.workers: list[ClipWorker] = []
        self.results: "queue_mod.Queue[tuple[int, Any, ClipWorker]]" = queue_mod.Queue()
        self.batchers: dict[tuple, Any] = {}  # renderer cache key → RenderBatcher
        self._restore: list[tuple[RunConfig, Any]] = []
        self._lock = threading.Lock()

    def start(self) -> dict:
        return {"gpus": None}

    def launch(self, needs_gpu: bool, n_clips: int) -> None:
        self.worker = ClipWorker(self.scratch_root, handoff="local", setup=self.setup)
        self.workers = [self.worker]
        if self.batch_size > 1:
            self.workers += [ClipWorker(self.scratch_root, handoff="local", slot=k)
                             for k in range(1, min(self.batch_size, max(1, n_clips)))]
            self.idle = list(self.workers)

    def free(self) -> int:
        if self.batch_size > 1:
            return len(self.idle)
        return 0 if self.queue else 1

    def submit(self, key: int, task: dict, ship: bool = False) -> None:
        if self.batch_size == 1:
            self.queue.append((key, task))
            return
        worker = self.idle.pop()
        try:
            batcher = self._batcher(task["config"])
        except Exception as exc:  # e.g. the renderer cannot be built: the clip's own dub reports it
            log.debug("no batcher for clip %s: %s", key, exc)
            batcher = None
        if batcher is not None:
            batcher.enter()  # counted before its thread runs, so no batch starts without it
        threading.Thread(target=self._dub, args=(key, task, worker, batcher), name=f"batch-clip-{key}",
                         daemon=True).start()

    def _batcher(self, cfg_json: str):
        """The batcher of this clip's renderer, installed in the backend registry on first use (None: the
        renderer cannot render batches)."""
        from agent.batching import BatchingRenderer, RenderBatcher

        cfg = RunConfig.model_validate_json(cfg_json).resolved()
        key = next(iter(backends.keys_for(cfg, ("renderer",))))
        with self._lock:
            if key not in self.batchers:
                inner = backends.get("renderer", cfg)
                if isinstance(inner, BatchingRenderer):
                    inner = inner.inner
                batcher = RenderBatcher(inner, self.batch_size) if callable(getattr(inner, "render_batch", None)) \
                    else None
                if batcher is not None:
                    self._restore.append((cfg, backends.install("renderer", cfg, BatchingRenderer(inner, batcher))))
                self.batchers[key] = batcher
            return self.batchers[key]

    def _dub(self, key: int, task: dict, worker: ClipWorker, batcher) -> None:
        try:
            result: Any = worker.dub(task, on_event=self.on_event)
        except Exception as exc:
            result = exc
        finally:
            if batcher is not None:
                batcher.leave()
        self.results.put((key, result, worker))

    def wait(self) -> list[tuple[int, Any]]:
        if self.batch_size > 1:
            got = [self.results.get()]
            while True:
                try:
                    got.append(self.results.get_nowait())
                except queue_mod.Empty:
                    break
            self.idle += [w for _, _, w in got]
            return [(k, r) for k, r, _ in got]
        key, task = self.queue.popleft()
        try:
            return [(key, self.worker.dub(task, on_event=self.on_event))]
        except Exception as exc:
            return [(key, exc)]

    def render_batches(self) -> list[int]:
        """Sizes of every cross-clip render_batch call so far."""
        return [n for b in self.batchers.values() if b is not None for n in b.batches]

    def close(self) -> None:
        for cfg, before in self._restore:  # the registry gets its plain renderer back
            if before is not None:
                backends.install("renderer", cfg, before)
        self._restore.clear()
        for w in reversed(self.workers or ([self.worker] if self.worker else [])):
            w.close()


class RayEngine:
    """One Ray actor per worker. Actors ask for ``num_gpus=1`` when the clips run on CUDA, else one CPU; they are
    spread over the nodes, load their models once and keep them. A killed actor is restarted and its clip retried
    (``max_restarts``/``max_task_retries``); a clip whose worker keeps dying is recorded as failed. Clips go only to
    actors that have started, so an actor waiting for resources (a second GPU that is not there) holds none back.

    Without ``address`` a private Ray instance is started here (``init_options`` go to ``ray.init``) and stopped
    at the end; with one (``HOST:PORT``, or ``auto``) the driver joins that cluster and leaves it running."""

    name = "ray"

    def __init__(self, address: Optional[str] = None, workers: Optional[int] = None,
                 artifacts_dir: str | Path | None = None, scratch_root: str | Path | None = None,
                 setup: Iterable[str] = (), init_options: Optional[dict] = None, max_restarts: int = 2,
                 max_task_retries: int = 1, on_note: Optional[Callable[[str], None]] = None, poll_s: float = 0.5):
        self.address, self.workers = address, workers
        self.artifacts_dir = str(Path(artifacts_dir).absolute()) if artifacts_dir else None
        self.scratch_root = str(scratch_root) if scratch_root else None
        self.setup, self.init_options = list(setup), dict(init_options or {})
        self.max_restarts, self.max_task_retries = max_restarts, max_task_retries
        self.on_note, self.poll_s = on_note or (lambda msg: None), poll_s
        self.initialized = False  # whether this engine started/joined Ray (and so disconnects at the end)
        self.actors: list = []
        self.starting: dict = {}  # ready() ref → actor
        self.running: dict = {}  # dub() ref → (actor, key)
        self.idle: list = []
        self.start_errors: list[str] = []
        self.info: dict = {}  # actor → its worker info
        self.t_launch = 0.0
        self.noted_wait = False

    def start(self) -> dict:
        import ray

        if not ray.is_initialized():
            check_address(self.address)
            opts = {"include_dashboard": False, "log_to_driver": False} | self.init_options
            try:
                ray.init(address=self.address or "local", **opts)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = f"at {self.address}" if self.address else "on this machine"
                raise UserError(f"cannot start or reach Ray {where}: {' '.join(str(exc).split())[:300]}") from None
            self.initialized = True
        res = ray.cluster_resources()
        return {"gpus": int(res.get("GPU", 0)), "cpus": int(res.get("CPU", 0)),
                "nodes": sum(1 for n in ray.nodes() if n.get("Alive"))}

    def launch(self, needs_gpu: bool, n_clips: int) -> None:
        import ray

        res = ray.cluster_resources()
        capacity = int(res.get("GPU", 0)) if needs_gpu else int(res.get("CPU", 0))
        n = self.workers or max(1, min(capacity, n_clips))
        remote = ray.remote(ClipWorker).options(
            num_cpus=1, num_gpus=1 if needs_gpu else 0, max_restarts=self.max_restarts,
            max_task_retries=self.max_task_retries, scheduling_strategy="SPREAD")
        for _ in range(n):
            actor = remote.remote(self.scratch_root, self.artifacts_dir, self.setup, True)
            self.actors.append(actor)
            self.starting[actor.info.remote()] = actor
        if n > capacity:
            self.on_note(f"{n} workers asked, the cluster has room for {capacity} "
                         f"{'GPU' if needs_gpu else 'CPU'} workers now; the others wait for resources")
        self.t_launch = time.monotonic()

    def free(self) -> int:
        return len(self.idle)

    def submit(self, key: int, task: dict, ship: bool = False) -> None:
        import ray

        actor = self.idle.pop()
        data = ray.put(Path(task["video"]).read_bytes()) if ship else None
        self.running[actor.dub.remote(task, data)] = (actor, key)

    def wait(self) -> list[tuple[int, Any]]:
        import ray
        from ray.exceptions import RayActorError, RayError

        refs = list(self.starting) + list(self.running)
        if not refs:
            detail = f": {self.start_errors[-1]}" if self.start_errors else ""
            raise WorkersLost(f"no Ray worker is left to take the remaining clips{detail}")
        ready, _ = ray.wait(refs, num_returns=1, timeout=self.poll_s)
        if not ready and not self.running and not self.idle and not self.noted_wait \
                and time.monotonic() - self.t_launch > 30:
            self.noted_wait = True
            self.on_note(f"waiting for Ray workers to start ({len(self.starting)} pending: the cluster may be busy "
                         "or lack the resources they ask for)")
        results = []
        for ref in ready:
            if ref in self.starting:
                actor = self.starting.pop(ref)
                try:
                    self.info[actor] = ray.get(ref)
                    self.idle.append(actor)
                except RayError as exc:
                    self.start_errors.append(_short_ray_error(exc))
                    ray.kill(actor)
                continue
            actor, key = self.running.pop(ref)
            try:
                results.append((key, ray.get(ref)))
                self.idle.append(actor)
            except RayActorError as exc:  # Ray's own restarts and retries are used up: fail the clip
                results.append((key, WorkerLostError(
                    f"WorkerLost: the Ray worker running this clip died {self.max_task_retries + 1} times "
                    f"(killed, out of memory, or crashed by the clip); not retrying ({_short_ray_error(exc)})")))
                self.starting[actor.info.remote()] = actor  # alive again (restarted) or dead: info() tells
            except RayError as exc:
                results.append((key, exc))
                self.idle.append(actor)
        return results

    def close(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        try:
            if self.idle:
                ray.get([a.close.remote() for a in self.idle], timeout=30)
        except Exception as exc:  # cleaning scratch space must not hide the batch's result
            log.warning("closing Ray workers: %s", exc)
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # already dead
                pass
        if self.initialized:
            ray.shutdown()


class WorkerLostError(RuntimeError):
    """One clip's worker kept dying (Ray's restarts and retries used up): the clip fails, the batch goes on."""


class DamagedArtifact(RuntimeError):
    """A result's file does not hash to what the worker recorded (damaged on the way): the clip fails."""


def _short_ray_error(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


# ---- the driver ----------------------------------------------------------------------------------------------------
@dataclass
class _Job:
    clip: Clip
    run_id: str
    sha256: str
    ours: bool  # an existing output is this run's own (published before a kill): replace it
    shipped: bool = False


OnOutcome = Optional[Callable[[Outcome], None]]


class Batch:
    """Runs clips through an engine and records every result in ``store``, clip by clip."""

    def __init__(self, store: Store, clips: list[Clip], engine, resume: bool = False, force: bool = False,
                 auto_device: bool = False, on_outcome: OnOutcome = None,
                 on_note: Optional[Callable[[str], None]] = None, on_start: Optional[Callable[[int], None]] = None):
        """``on_start(n)``: the checks passed and ``n`` clips start; ``on_outcome``: one clip is done, failed or
        skipped; ``on_note``: a message for the user (workers waiting for resources...)."""
        self.store, self.clips, self.engine = store, list(clips), engine
        self.resume, self.force, self.auto_device = resume, force, auto_device
        self.on_outcome, self.on_note = on_outcome or (lambda o: None), on_note or (lambda msg: None)
        self.on_start = on_start or (lambda n: None)
        self.report = BatchReport()
        self.claimed: set[str] = set()

    # -- before any work --
    def prepare(self) -> None:
        """Everything that can be refused is refused here, before a row is written."""
        self.store.require_writable()
        cluster = self.engine.start()
        if self.auto_device:  # --device auto on a cluster: the cluster's GPUs decide, not the driver's
            device = "cuda" if cluster.get("gpus") else "cpu"
            self.clips = [replace(c, cfg=c.cfg.model_copy(update={"device": device})) for c in self.clips]
        # Resume keys hash the config as recorded, so it is resolved once here (dtype "auto" → this machine's
        # check); on a Ray cluster an "auto" dtype is left for each worker's hardware to decide, and kept as "auto".
        self.clips = [replace(c, cfg=self._resolved(c.cfg)) for c in self.clips]
        check_existing(self.store, self.clips, self.force, self.resume)
        needs_gpu = any(c.cfg.device.startswith("cuda") for c in self.clips)
        if needs_gpu and cluster.get("gpus") == 0:
            raise UserError("the clips run on CUDA but the Ray cluster has no GPU (use --device cpu)")
        self.engine.launch(needs_gpu, len(self.clips))

    def _resolved(self, cfg: RunConfig) -> RunConfig:
        if getattr(self.engine, "name", "") == "ray" and cfg.dtype == "auto":
            return cfg.model_copy(update={"device": resolve_device(cfg.device)}) if cfg.device == "auto" else cfg
        return cfg.resolved()

    def run(self) -> BatchReport:
        try:
            self.prepare()
            self.on_start(len(self.clips))
            queue: deque[tuple[int, Optional[_Job]]] = deque((i, None) for i in range(len(self.clips)))
            inflight: dict[int, _Job] = {}
            while queue or inflight:
                while queue and self.engine.free() > 0:
                    i, job = queue.popleft()
                    job = job or self._start(self.clips[i])
                    if job is None:
                        continue
                    self.store.update_run(job.run_id, status="running")
                    self.engine.submit(i, self._task(job), ship=job.shipped)
                    inflight[i] = job
                if not inflight and not queue:
                    break
                try:
                    finished = self.engine.wait()
                except WorkersLost:
                    for job in inflight.values():
                        self._finish(job, Outcome(job.clip, "failed", job.run_id, error="WorkerLost: no worker left"))
                    raise
                for i, result in finished:
                    job = inflight.pop(i)
                    if isinstance(result, dict) and result.get("status") == "unavailable" and not job.shipped:
                        job.shipped = True  # the worker cannot see the file: send its bytes
                        queue.appendleft((i, job))
                        continue
                    self._record(job, result)
        finally:
            self.engine.close()
        return self.report

    # -- per clip --
    def _emit(self, outcome: Outcome) -> None:
        self.report.outcomes.append(outcome)
        self.on_outcome(outcome)

    def _start(self, clip: Clip) -> Optional[_Job]:
        """The clip's run row (new, or taken over on resume), or None when it was skipped or failed already."""
        try:
            sha = media.sha256_file(clip.path)
        except OSError:
            sha = ""  # create_dub_run records why
        run_id, ours = None, False
        if self.resume and sha:
            prev = [r for r in previous_runs(self.store, sha, config_key(clip.cfg)) if r.id not in self.claimed]
            done = next((r for r in prev if r.status == "done"), None)
            if done is not None:
                self.claimed.add(done.id)
                self._emit(self._skip(clip, done))
                return None
            left = next((r for r in prev if _unfinished(self.store, r)), None)
            if left is not None:
                run_id = left.id
                ours = nodes.branch_record(left, 0).get("publishing") == str(clip.out)
                with self.store.session() as s:  # files a killed import had stored: unreferenced, redone below
                    s.execute(delete(Artifact).where(Artifact.run_id == run_id))
                    s.commit()
                self.store.update_run(run_id, error=None)
        if run_id is None:
            try:
                run_id = runs.create_dub_run(self.store, clip.path, clip.cfg, status="queued", out=clip.out,
                                             resolve=False)  # resolved in prepare (the resume key's config)
            except media.MediaError as exc:  # recorded as a failed run by the service
                self._emit(Outcome(clip, "failed", None, error=" ".join(str(exc).split())))
                return None
            except UserError as exc:  # e.g. the output container cannot hold this video: record it
                msg = " ".join(str(exc).split())
                run = self.store.create_run(video_path=str(clip.path), video_sha256=sha, status="failed",
                                            error=msg, config_json=clip.cfg.model_dump_json())
                self._emit(Outcome(clip, "failed", run.id, error=msg))
                return None
        self.claimed.add(run_id)
        return _Job(clip, run_id, sha, ours)

    def _task(self, job: _Job) -> dict:
        return {"clip": job.clip.where, "video": str(job.clip.path), "sha256": job.sha256,
                "size": job.clip.path.stat().st_size, "config": job.clip.cfg.model_dump_json(),
                "suffix": job.clip.out.suffix.lower()}

    def _skip(self, clip: Clip, run: Run) -> Outcome:
        """A clip done before: its output is copied to the asked path when that is free and the container fits."""
        note = ""
        src = self.store.artifact_path(run.output_artifact_id)
        if not os.path.lexists(clip.out) and src is not None and src.is_file():
            if src.suffix.lower() == clip.out.suffix.lower():
                with outputs.staging(clip.out) as tmp:
                    media.copy_file(src, tmp)
                    try:
                        outputs.publish(tmp, clip.out)
                        note = f"output copied to {clip.out}"
                    except FileExistsError:
                        pass
            else:
                note = f"its output is {run.output_path}"
        return Outcome(clip, "skipped", run.id, best_overall=run.best_overall, stop_reason=run.stop_reason,
                       note=note)

    def _finish(self, job: _Job, outcome: Outcome) -> None:
        if outcome.status == "failed":
            self.store.update_run(job.run_id, status="failed", error=outcome.error)
        self._emit(outcome)

    def _record(self, job: _Job, result: Any) -> None:
        """Write a worker's result into the driver's database: artifacts, then the output file, then every row and
        the run's final status in one transaction (a kill before it leaves the run without results: resumable)."""
        if not isinstance(result, dict):  # the worker itself failed (not the clip): an exception
            error = _short_ray_error(result) if "\n" in str(result) else _one_line(result)
            self._finish(job, Outcome(job.clip, "failed", job.run_id, error=error))
            return
        worker = result.get("worker") or {}
        if "run" not in result:
            self._finish(job, Outcome(job.clip, "failed", job.run_id, error=result.get("error") or "failed",
                                      worker=worker, seconds=result.get("seconds")))
            return
        try:
            arts = self._import_artifacts(job.run_id, result["artifacts"])
        except DamagedArtifact as exc:
            self._finish(job, Outcome(job.clip, "failed", job.run_id, error=str(exc), worker=worker))
            return
        error = result.get("error")
        output_path = None
        if result["status"] == "done":
            try:
                output_path = self._publish(job, arts.get(result["run"]["output_artifact_id"]))
            except (UserError, OSError) as exc:
                error = " ".join(str(exc).split()) if isinstance(exc, UserError) else _one_line(exc)
        status = "failed" if error else "done"
        with self.store.session() as s:
            ids: dict[int, int] = {}
            for r in sorted(result["rounds"], key=lambda r: r["id"]):
                data = {k: v for k, v in r.items() if k not in ("id", "run_id")}
                data["parent_round_id"] = ids.get(data.get("parent_round_id"))
                data["audio_artifact_id"] = arts.get(data.get("audio_artifact_id"))
                row = Round(run_id=job.run_id, **data)
                s.add(row)
                s.flush()
                ids[r["id"]] = row.id
            for e in result["events"]:
                s.add(NodeEvent(run_id=job.run_id, **{k: v for k, v in e.items() if k not in ("id", "run_id")}))
            info = result["run"]
            branches = {}
            for b, rec in info["branches"].items():
                rec = {k: v for k, v in rec.items() if k != "publishing"}
                for k, table in (("best_round_id", ids), ("output_artifact_id", arts)):
                    if rec.get(k) is not None:
                        rec[k] = table.get(rec[k])
                if rec.get("failed_round_ids"):
                    rec["failed_round_ids"] = [ids.get(x) for x in rec["failed_round_ids"]]
                if "output_path" in rec:
                    rec["output_path"] = output_path
                branches[b] = rec
            run = s.get(Run, job.run_id)
            run.status, run.error = status, error
            run.stop_reason, run.best_overall = info["stop_reason"], info["best_overall"]
            run.best_round_id = ids.get(info["best_round_id"])
            run.output_artifact_id = arts.get(info["output_artifact_id"])
            run.output_path = output_path
            run.n_rounds = len(ids)
            run.branches_json = json.dumps(branches)
            run.timings_json = json.dumps(info["timings"])
            run.backends_json = json.dumps(info["backends"] | ({"worker": worker} if worker else {}))
            run.updated_at = utcnow()
            s.add(run)
            s.commit()
        for a in result["artifacts"]:  # handed-over files now live in the store
            if "path" in a:
                Path(a["path"]).unlink(missing_ok=True)
        self._emit(Outcome(job.clip, status, job.run_id, error=error, worker=worker, seconds=result.get("seconds"),
                           best_overall=info["best_overall"], stop_reason=info["stop_reason"]))

    def _import_artifacts(self, run_id: str, artifacts: list[dict]) -> dict[int, int]:
        """Worker artifact id → the driver's (content-addressed copies, one per worker row)."""
        ids: dict[int, int] = {}
        tmp_dir = self.store.home / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        for a in artifacts:
            if "data" in a:
                with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
                    src = Path(tmp) / f"artifact{a['suffix']}"
                    src.write_bytes(a["data"])
                    art = self.store.put_file(src, kind=a["kind"], run_id=run_id, mime=a["mime"], move=True)
            else:
                art = self.store.put_file(Path(a["path"]), kind=a["kind"], run_id=run_id, mime=a["mime"])
            if art.sha256 != a["sha256"]:
                raise DamagedArtifact(f"artifact {a['id']} of run {run_id} arrived damaged (its sha256 differs)")
            ids[a["id"]] = art.id
        return ids

    def _publish(self, job: _Job, artifact_id: Optional[int]) -> Optional[str]:
        """The dubbed video to the clip's output, atomically; never over a file that is not the user's --force or
        this run's own (a "publishing" mark set before the move, so a killed driver's half-done clip is ours)."""
        src = self.store.artifact_path(artifact_id)
        if src is None:
            return None
        out = job.clip.out
        force = self.force or job.ours
        nodes.update_branch(self.store, job.run_id, 0, publishing=str(out))
        with outputs.staging(out) as tmp:
            media.copy_file(src, tmp)
            try:
                outputs.publish(tmp, out, force=force)
            except FileExistsError:
                raise UserError(f"{out} appeared while run {job.run_id} was working; nothing was overwritten "
                                "(move it away, then rerun with --resume)") from None
        return str(out.resolve())


def run(store: Store, clips: list[Clip], engine, **kw) -> BatchReport:
    return Batch(store, clips, engine, **kw).run()
