"""What every command module shares: the consoles, the per-invocation state (``ctx.obj``: database and debug
flag), the option definitions (one each), and the helpers that turn arguments into a RunConfig.

Command modules import this module, never the root (``agent.cli.app``), so the CLI assembles downward.
``--db`` and ``--debug`` are declared here once and accepted both before and after the command name.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console

from agent.backends import REGISTRY
from agent.config import RunConfig
from contract.errors import UserError
from contract.options import DEFAULT_THRESHOLDS
from contract.plan import Plan, PlanInvalid
from models.precision import DTYPES

# Wide when piped, so ids and paths are never cut or wrapped in logs.
out_console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class CommandFailed(Exception):
    """A command's own negative verdict (not bad input, not a crash): its message on stderr, exit ``exit_code``."""

    exit_code = 1


# ---- per-invocation state (ctx.obj) -----------------------------------------------------------------------------
@dataclass
class CliState:
    """The database and debug flag of one invocation; the Store opens on first use."""

    db: Optional[Path] = None
    debug: bool = False
    _store: object = field(default=None, repr=False)

    def store(self):
        from store.db import Store

        if self._store is None:
            self._store = Store(self.db) if self.db else Store()
        return self._store


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def store(ctx: typer.Context):
    return state(ctx).store()


def writable_store(ctx: typer.Context):
    """The Store of a command that will write (dub, batch, resume, regenerate, text, edit, worker): a read-only
    database is refused here, first, before any argument is probed or any model loads (StoreError, exit 2)."""
    st = store(ctx)
    st.require_writable()
    return st


def check_db(path: Path) -> Path:
    """Refuse a --db path that cannot be a database file, before any work starts (exit 2, path named). A file
    that can be read but not written is fine: the Store opens it read-only, so it can be listed, and commands
    that write refuse it first (``writable_store``)."""
    p = Path(path).expanduser().absolute()
    if p.is_dir():
        raise UserError(f"--db {p} is a directory, not a database file")
    parent = p.parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--db {p}: {parent} is a file, not a directory")
    if not p.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--db {p}: cannot create it, {parent} is not writable")
    if p.exists() and not p.is_file():  # /dev/null, a FIFO, a socket: SQLite cannot keep a database there
        raise UserError(f"--db {p} is not a regular file")
    if p.exists() and not os.access(p, os.R_OK):
        raise UserError(f"--db {p} is not readable")
    return p


def _db_callback(ctx: typer.Context, value: Optional[Path]) -> Optional[Path]:
    if value is not None:
        st = state(ctx)
        st.db, st._store = check_db(value), None
    return value


def _debug_callback(ctx: typer.Context, value: bool) -> bool:
    if value:
        state(ctx).debug = True
        logging.getLogger().setLevel(logging.DEBUG)
    return value


def _choices(role: str) -> str:
    return " | ".join(REGISTRY[role])


# ---- option definitions (each defined once; commands reuse them) ------------------------------------------------
Db = Annotated[Optional[Path], typer.Option(
    "--db", help="SQLite file (default $FOLEYLOOP_HOME/foleyloop.db); before or after the command",
    callback=_db_callback, expose_value=False, is_eager=True)]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs", callback=_debug_callback,
                                     expose_value=False, is_eager=True)]
Out = Annotated[Optional[Path], typer.Option(
    "--out", "-o", help="Output file: a video (.mp4 .mov .mkv .webm .m4v) for a dub, a .wav for text/edit")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing --out file")]
Rounds = Annotated[Optional[int], typer.Option("--rounds", min=1, max=20, help="Round cap")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed of the first round")]
Review = Annotated[bool, typer.Option("--review", help="Pause for a human to approve/edit the plan")]
Watcher = Annotated[str, typer.Option("--watcher", help=f"Plan writer: {_choices('watcher')}")]
WatcherModel = Annotated[Optional[str], typer.Option("--watcher-model",
                                                     help="VLM hub id or local path (qwen/openai roles)")]
Endpoint = Annotated[Optional[str], typer.Option("--endpoint", help="OpenAI-compatible base URL")]
Renderer = Annotated[str, typer.Option("--renderer", help=f"Audio renderer: {_choices('renderer')}")]
Critic = Annotated[Optional[str], typer.Option(
    "--critic", help=f"Critic: {_choices('critic')}, or a+b+… (default: verified with thinksound+qwen, else offline)")]
Refiner = Annotated[Optional[str], typer.Option(
    "--refiner", help=f"Refiner: {_choices('refiner')} (default: follows --watcher)")]
MaxDuration = Annotated[float, typer.Option("--max-duration", help="Refuse videos longer than this (s)")]
KeepOriginal = Annotated[str, typer.Option("--keep-original", help="drop | mix the original soundtrack")]
Device = Annotated[str, typer.Option("--device", help="auto (cuda, then mps, then cpu) | cpu | cuda | mps")]
Dtype = Annotated[str, typer.Option(
    "--dtype", help="auto (bf16 where the device has bf16 units, fp16 on older CUDA, else fp32) | fp32 | fp16 | bf16")]
Weights = Annotated[Optional[Path], typer.Option("--weights", help="ThinkSound weights folder")]
Steps = Annotated[Optional[int], typer.Option("--steps", min=1, help="Sampler steps (thinksound; default 24)")]
CfgScale = Annotated[Optional[float], typer.Option("--cfg-scale", help="Guidance scale (thinksound; default 5)")]
MetaClip = Annotated[Optional[str], typer.Option("--metaclip", help="MetaCLIP hub id or folder (thinksound)")]
T5 = Annotated[Optional[str], typer.Option("--t5", help="T5 hub id or folder (thinksound)")]
Synchformer = Annotated[Optional[str], typer.Option(
    "--synchformer", help="synchformer_state_dict.pth (thinksound; default: in --weights)")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON")]
RoundRef = Annotated[str, typer.Option("--round", help="K or BRANCH.K")]
PlanFile = Annotated[Optional[Path], typer.Option("--plan", help="Plan JSON (see `foleyloop plan`)")]
PassAt = Annotated[Optional[str], typer.Option(
    "--pass-at", metavar="SCORE|DIM=SCORE,…",
    help="Critic scores (0–1) a round must reach to pass, for every dimension or per dimension, e.g. 0.8 or "
         "temporal=0.8,semantic=0.7 (default " + ",".join(f"{k}={v}" for k, v in DEFAULT_THRESHOLDS.items()) + ")")]


# ---- configuration --------------------------------------------------------------------------------------------
FEATURE_FLAGS = ("metaclip", "t5", "synchformer")


def renderer_options(weights: Optional[Path] = None, steps: Optional[int] = None, cfg_scale: Optional[float] = None,
                     metaclip: Optional[str] = None, t5: Optional[str] = None,
                     synchformer: Optional[str] = None) -> dict:
    """The `options["renderer"]` entries for the ThinkSound flags (paths made absolute)."""
    o: dict = {}
    if weights:
        o["weights"] = str(Path(weights).expanduser().resolve())
    if steps:
        o["steps"] = int(steps)
    if cfg_scale is not None:
        o["cfg_scale"] = float(cfg_scale)
    for key, value in zip(FEATURE_FLAGS, (metaclip, t5, synchformer)):
        if value:
            p = Path(value).expanduser()
            o[key] = str(p.resolve()) if p.exists() else value  # a local path, or a hub id
    return o


def build_config(*, rounds: int = 3, seed: int = 0, review: bool = False, watcher: str = "offline",
                 watcher_model: Optional[str] = None, endpoint: Optional[str] = None, renderer: str = "offline",
                 critic: Optional[str] = None, refiner: Optional[str] = None, max_duration: float = 600.0,
                 keep_original: str = "drop", device: str = "auto", dtype: str = "auto",
                 renderer_opts: Optional[dict] = None, pass_at: Optional[str] = None,
                 resolve: bool = True) -> RunConfig:
    """A validated RunConfig (UserError on an unknown backend or a bad value); ``device=auto`` and ``dtype=auto``
    are resolved here, before anything is recorded (``resolve=False``: left for the machine that runs it)."""
    from agent.devices import resolve_device
    from models.precision import resolve as resolve_dtype

    options: dict[str, dict] = {}
    for role in ("watcher", "critic", "refiner"):
        if watcher_model:
            options.setdefault(role, {})["model"] = watcher_model
        if endpoint:
            options.setdefault(role, {})["endpoint"] = endpoint
    if renderer_opts:
        options["renderer"] = dict(renderer_opts)
    for role, name in (("watcher", watcher), ("renderer", renderer), ("critic", critic), ("refiner", refiner)):
        if name is not None and name not in REGISTRY[role]:  # a critic may be a+b+… (see agent.backends)
            raise UserError(f"unknown {role} backend {name!r} (known: {', '.join(sorted(REGISTRY[role]))})")
    if device not in ("auto", "cpu", "mps") and not device.startswith("cuda"):
        raise UserError(f"--device must be auto, cpu, cuda[:N] or mps, got {device!r}")
    if dtype not in DTYPES:  # otherwise the offline backends ignore it and a model backend fails mid-run
        raise UserError(f"--dtype must be {', '.join(DTYPES)}, got {dtype!r}")
    thresholds = parse_pass_at(pass_at) if pass_at is not None else dict(DEFAULT_THRESHOLDS)
    if resolve:
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
    try:
        return RunConfig(rounds=rounds, seed=seed, review=review, watcher=watcher, renderer=renderer, critic=critic,
                         refiner=refiner, max_duration_s=max_duration, keep_original=keep_original,
                         device=device, dtype=dtype, options=options, thresholds=thresholds)
    except ValidationError as exc:  # "--seed: Input should be ...", not pydantic's help-page footer
        raise UserError("; ".join(f"{_flag(e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}"
                                  for e in exc.errors(include_url=False, include_input=False))) from None


_FLAGS = {"max_duration_s": "--max-duration"}


def parse_pass_at(text: str) -> dict[str, float]:
    """``0.8`` (every dimension) or ``temporal=0.8,semantic=0.7`` (the others keep their defaults)."""
    from contract.plan import DIMENSIONS

    def score(value: str, what: str) -> float:
        try:
            v = float(value)
        except ValueError:
            raise UserError(f"--pass-at: {what} must be a number from 0 to 1, got {value.strip()!r}") from None
        if not 0.0 <= v <= 1.0:  # NaN fails this too
            raise UserError(f"--pass-at: {what} must be from 0 to 1, got {value.strip()}")
        return v

    text = text.strip()
    if "=" not in text:
        v = score(text, "the score")
        return {d: v for d in DIMENSIONS}
    out = dict(DEFAULT_THRESHOLDS)
    for part in filter(None, (x.strip() for x in text.split(","))):
        dim, sep, value = part.partition("=")
        dim = dim.strip()
        if not sep or dim not in DIMENSIONS:
            raise UserError(f"--pass-at: {part!r} is not DIM=SCORE with DIM one of {', '.join(DIMENSIONS)}")
        out[dim] = score(value, dim)
    return out


def _flag(loc: tuple) -> str:
    """The command-line option a RunConfig field comes from (``max_duration_s`` → ``--max-duration``)."""
    name = ".".join(map(str, loc))
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


# ---- shared helpers ---------------------------------------------------------------------------------------------
def fmt(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.3f}"


MAX_SHOWN_ID = 64  # store.db.MAX_RUN_ID_CHARS: no id of ours is longer, so an error never echoes more


def shown_id(run_id: str) -> str:
    """A run id as an error message quotes it: at most 64 characters, escapes for what is not printable."""
    cut = run_id if len(run_id) <= MAX_SHOWN_ID else f"{run_id[:MAX_SHOWN_ID]}…"
    return ascii(cut) if not cut.isprintable() else repr(cut)


def get_run(st, run_id: str):
    run = st.get_run(run_id)
    if run is None:
        raise UserError(f"no run {shown_id(run_id)} in {st.db_path}")
    return run


def load_plan(path: Path, video_duration_s: Optional[float]) -> Plan:
    """A plan file from the user through the one door (``Plan.parse_user``): every bound, and the length within
    ±0.5 s of ``video_duration_s`` (a dub, an edit of that much audio) or, when it is None, at most the
    text-to-audio cap. UserError (exit 2) with one line naming the file otherwise."""
    try:
        return Plan.parse_user(Path(path), video_duration_s=video_duration_s)
    except PlanInvalid as exc:  # the file named once, cut if it is absurdly long; then what is wrong, one line
        name = str(path)
        problems = [p.removeprefix(f"{name}: ") for p in exc.problems]
        shown = name if len(name) <= 200 else f"{name[:199]}…"
        raise UserError(f"not a valid plan: {shown}: {PlanInvalid(problems)}") from None


def stored_plan(text: str, where: str) -> Plan:
    """A plan read back from the database (types only, so rows older than the bounds still show); a row that
    cannot be read at all is one line, exit 2."""
    try:
        return Plan.from_stored(text)
    except PlanInvalid as exc:
        raise UserError(f"the plan stored with {where} cannot be read: {exc}") from None


def round_by_ref(st, run, ref: str):
    branch, _, index = ref.rpartition(".")
    try:
        b, i = int(branch or 0), int(index)
    except ValueError:
        raise UserError(f"--round must be K or BRANCH.K, got {ref!r}") from None
    for r in st.rounds(run.id, branch=b):
        if r.index == i and r.status != "replaced":
            return r
    raise UserError(f"run {run.id} has no round {b}.{i}")


def free_path(path: Path) -> Path:
    """``path``, or NAME-2.EXT, NAME-3.EXT… when it exists: a default output never replaces a file."""
    n, candidate = 2, path
    while os.path.lexists(candidate):
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate


def as_user_error(exc: Exception) -> UserError:
    return UserError(" ".join(str(exc).split()))


class Progress:
    """Live progress on stderr from the runs service's node events: a spinner while a step works, then one line
    with its duration."""

    def __init__(self, console: Console = err_console):
        self.console, self.status = console, None

    def __call__(self, ev) -> None:
        where = "" if ev.round_index is None else \
            f" (round {ev.round_index})" if not ev.branch else f" (round {ev.branch}.{ev.round_index})"
        label = f"{ev.node}{where}"
        if ev.status == "started":
            self._stop()
            self.status = self.console.status(f"{label}…", spinner="dots")
            self.status.start()
            return
        self._stop()
        note = "" if ev.status == "done" else f" {ev.status}"
        self.console.print(f"[dim]· {label} {ev.seconds or 0:.2f} s{note}[/dim]", highlight=False)

    def _stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def report(st, run_id: str, result: dict) -> None:
    """One line: where the run stands (paused for review, or done with its best score and output)."""
    from agent.runs import run_status

    if run_status(result) == "review":
        out_console.print(f"run {run_id} paused for review: `foleyloop show {run_id}`, then "
                          f"`foleyloop resume {run_id} [--plan EDITED.json]`")
        return
    run = st.get_run(run_id)
    out_console.print(f"run {run_id} done ({run.stop_reason}); best overall {fmt(run.best_overall)}; "
                      f"output: {run.output_path}")
