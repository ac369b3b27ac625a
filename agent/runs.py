"""The runs service: create, execute, resume, fork, regenerate, text-to-audio and edit runs.

The CLI, the worker and the studio call these functions; none of them writes Run/Round rows itself. Every graph
run goes through ``_drive``, which streams the graph (``stream_mode=["tasks", "values"]``) and records a
NodeEvent (and a ``node:NAME`` timing) per task from the stream's start/finish events; callers that want live
progress pass ``on_event``.

Branches: branch 0 is the run's own rounds, and its failure fails the run. A fork (branch ≥ 1) is atomic with
respect to the run: its life (running / done / failed + error) is kept in its record in ``Run.branches_json``,
a failed fork leaves the run's status, error, best round and output untouched, and ``resume`` skips failed forks
unless ``retry_failed``. The run's best is the best finished branch (``nodes.best_branch``).
"""

from __future__ import annotations

import json
import logging
import mimetypes
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from langgraph.types import Command
from pydantic import ValidationError
from sqlalchemy import update

from agent import backends, graph, nodes, outputs
from agent.config import RunConfig
from agent.devices import DeviceManager
from agent.state import RunContext, RunState, thread_id
from contract.errors import UserError
from contract.plan import Event, EventKind, Plan, PlanInvalid, Provenance
from store import media
from store.db import Store
from store.schema import NodeEvent, Round, Run

log = logging.getLogger(__name__)

ROLES = ("watcher", "renderer", "critic", "refiner")


@dataclass(frozen=True)
class NodeProgress:
    """One step of a run starting or finishing (what ``on_event`` receives)."""

    run_id: str
    branch: int
    node: str
    round_index: Optional[int]
    status: str  # started | done | failed | paused | interrupted
    seconds: Optional[float] = None


OnEvent = Optional[Callable[[NodeProgress], None]]


def run_status(result: dict) -> str:
    return "review" if "__interrupt__" in result else "done"


def describe_backends(cfg: RunConfig) -> dict:
    return {"watcher": cfg.watcher, "renderer": cfg.renderer, "critic": cfg.critic, "refiner": cfg.refiner_name,
            "options": cfg.options}


plan_length = nodes.plan_length  # what a new plan for a run must last (None: text-to-audio)


def check_plan(plan: Plan | str | dict, length: float | None) -> Plan:
    """A plan handed to the service (by the CLI, the studio, the worker), through the user door: every bound,
    and the length within ±0.5 s of ``length`` (or the text-to-audio cap when it is None). A ``Plan`` built in
    code is checked again from its JSON, since ``model_copy(update=...)`` skips validation. PlanInvalid only."""
    text = plan.model_dump_json() if isinstance(plan, Plan) else plan
    return Plan.parse_user(text, video_duration_s=length)


def _resolved(cfg: RunConfig) -> RunConfig:
    """``device="auto"`` and ``dtype="auto"`` become concrete before anything is recorded."""
    return cfg.resolved()


# ---- driving the graph ------------------------------------------------------------------------------------------
class _Tracker:
    """NodeEvents and timings from the task stream: a row when a task starts, closed when it finishes."""

    def __init__(self, store: Store, run_id: str, branch: int, on_event: OnEvent):
        self.store, self.run_id, self.branch, self.on_event = store, run_id, branch, on_event
        self.open: dict[str, tuple[int, str, Optional[int], float]] = {}

    def _tell(self, node: str, rnd: Optional[int], status: str, seconds: Optional[float] = None) -> None:
        if self.on_event is not None:
            self.on_event(NodeProgress(self.run_id, self.branch, node, rnd, status, seconds))

    def task(self, data: dict) -> None:
        name = data["name"]
        if "result" not in data:  # a task starts
            state = data.get("input")
            rnd = state.get("round_index") if isinstance(state, dict) else None
            ev = self.store.node_started(self.run_id, name, rnd)
            self.open[data["id"]] = (ev, name, rnd, time.perf_counter())
            self._tell(name, rnd, "started")
            return
        ev, _, rnd, t0 = self.open.pop(data["id"], (None, name, None, time.perf_counter()))
        dt = time.perf_counter() - t0
        error = data.get("error")
        if error is not None:
            status, detail = "failed", f"{type(error).__name__}: {error}"[:500] if isinstance(error, BaseException) \
                else str(error)[:500]
        elif data.get("interrupts"):
            status, detail = "paused", ""
        else:
            status, detail = "done", ""
            self.store.add_timing(self.run_id, f"node:{name}", dt)
        if ev is not None:
            self.store.node_finished(ev, dt, status=status, detail=detail)
        self._tell(name, rnd, status, dt)

    def abandon(self, exc: BaseException) -> None:
        """Close the steps an exception cut short (Ctrl-C: interrupted; an error outside a task: failed)."""
        status = "failed" if isinstance(exc, Exception) else "interrupted"
        for ev, name, rnd, t0 in self.open.values():
            dt = time.perf_counter() - t0
            self.store.node_finished(ev, dt, status=status, detail=f"{type(exc).__name__}: {exc}"[:500])
            self._tell(name, rnd, status, dt)
        self.open.clear()


def _drive(store: Store, cfg: RunConfig, run_id: str, branch: int, payload, on_event: OnEvent,
           rounds_cap: int, devices: Optional[DeviceManager] = None) -> dict:
    """Stream the graph for one branch and return its final state (``__interrupt__`` set when paused)."""
    compiled = graph.for_store(store)
    config = {"configurable": {"thread_id": thread_id(run_id, branch)},
              "recursion_limit": 10 + 6 * max(rounds_cap, cfg.rounds)}
    tracker = _Tracker(store, run_id, branch, on_event)
    result: dict = {}
    t0 = time.perf_counter()
    try:
        for mode, data in compiled.stream(payload, config, context=RunContext(store=store, cfg=cfg, devices=devices),
                                          stream_mode=["tasks", "values"], durability="sync"):
            if mode == "values":
                result = data
            else:
                tracker.task(data)
    except BaseException as exc:
        tracker.abandon(exc)
        raise
    finally:
        store.add_timing(run_id, "wall", time.perf_counter() - t0)
    return result


def _run_branch(store: Store, cfg: RunConfig, run_id: str, branch: int, payload, on_event: OnEvent,
                rounds_cap: int, devices: Optional[DeviceManager] = None) -> dict:
    """``_drive`` with the failure recorded where it belongs: on the run (branch 0) or on the fork only."""
    if branch == 0:
        store.update_run(run_id, status="running", error=None)
    else:
        nodes.update_branch(store, run_id, branch, status="running", error=None)
    try:
        return _drive(store, cfg, run_id, branch, payload, on_event, rounds_cap, devices)
    except Exception as exc:
        msg = f"{type(exc).__name__}: {exc}"[:2000]
        if branch == 0:
            store.update_run(run_id, status="failed", error=msg)
        else:
            _fail_branch(store, run_id, branch, msg)
        raise


def _fail_branch(store: Store, run_id: str, branch: int, msg: str) -> None:
    unfinished = [r for r in store.rounds(run_id, branch=branch) if r.status in ("planned", "rendered")]
    for r in unfinished:
        store.update_round(r.id, status="failed", error=msg)
    nodes.update_branch(store, run_id, branch, status="failed", error=msg,
                        failed_round_ids=[r.id for r in unfinished] or None)


def _revive_branch(store: Store, run_id: str, branch: int) -> None:
    """Undo ``_fail_branch`` before a retry: its rounds get back the status their stored results give them."""
    rec = nodes.branch_record(store.get_run(run_id), branch)
    for rid in rec.get("failed_round_ids") or []:
        r = store.get_round(rid)
        status = "scored" if r.critique_json else "rendered" if r.audio_artifact_id else "planned"
        store.update_round(rid, status=status, error=None)
    nodes.update_branch(store, run_id, branch, status="running", error=None, failed_round_ids=None)


def _snapshot(store: Store, run_id: str, branch: int):
    return graph.for_store(store).get_state({"configurable": {"thread_id": thread_id(run_id, branch)}})


def close_interrupted(store: Store, run_id: str) -> int:
    """Steps left ``started`` by a killed process are closed as ``interrupted`` (called before continuing)."""
    with store.session() as s:
        n = s.execute(update(NodeEvent).where(NodeEvent.run_id == run_id, NodeEvent.status == "started")
                      .values(status="interrupted", detail="the process running this step stopped")).rowcount
        s.commit()
    return n


def _load_backends(cfg: RunConfig, roles=ROLES) -> dict:
    """Every backend of the run with its models loaded now (``backends.load`` calls each ``load()``), so the run's
    ``load`` timing is the real loading time and round 0's nodes pay none of it."""
    return {role: backends.load(role, cfg) for role in roles}


def _record_model_ids(store: Store, run_id: str, cfg: RunConfig, branch: int = 0) -> None:
    """Load the backends (timed separately from the rounds) and record their model ids on the Run. A failure
    fails the run (branch 0) or only the fork that was about to run."""
    t0 = time.perf_counter()
    ids = describe_backends(cfg)
    roles = ROLES if store.get_run(run_id).kind == "dub" else ROLES[1:]
    try:
        loaded = _load_backends(cfg, roles)
    except Exception as exc:  # missing weights etc.: the run must not stay "running"
        msg = f"{type(exc).__name__}: {exc}"[:2000]
        if branch == 0:
            store.update_run(run_id, status="failed", error=msg)
        else:
            _fail_branch(store, run_id, branch, msg)
        raise
    for role, backend in loaded.items():
        ids[f"{role}_model_id"] = getattr(backend, "model_id", getattr(backend, "name", role))
    store.update_run(run_id, backends_json=ids)
    store.add_timing(run_id, "load", time.perf_counter() - t0)


# ---- dubbing ------------------------------------------------------------------------------------------------
def create_dub_run(store: Store, video: str | Path, cfg: RunConfig, status: str = "queued",
                   out: str | Path | None = None, load_backends: bool = False, resolve: bool = True) -> str:
    """Probe the input once and record a Run carrying the probe; bad input records a failed Run and raises
    MediaError. ``out``, when given, must be a container that can hold the input's video (UserError).
    ``resolve=False``: the caller resolved the config already (or leaves dtype "auto" to a remote worker).
    ``load_backends`` (a dub that runs now, in this process) loads every backend before the run is recorded, so
    missing or bad weights (ModelMissing/BadWeights) record nothing; a queued run leaves that to its worker."""
    path = Path(video)
    cfg = _resolved(cfg) if resolve else cfg
    store.require_writable()
    try:
        info = nodes.check_video(path, cfg.max_duration_s)
    except media.MediaError as exc:
        store.create_run(video_path=str(path), status="failed", error=str(exc), config_json=cfg.model_dump_json())
        raise
    if out is not None:
        outputs.check_container(Path(out), info.video_codec)
    t0 = time.perf_counter()
    if load_backends:  # ModelMissing/BadWeights here: nothing is recorded
        _load_backends(cfg)
    load_s = time.perf_counter() - t0
    run = store.create_run(video_path=info.path, video_sha256=media.sha256_file(path), video_info_json=info.to_dict(),
                           duration_s=info.duration_s, config_json=cfg.model_dump_json(), status=status,
                           backends_json=describe_backends(cfg))
    if load_backends:
        store.add_timing(run.id, "load", load_s)
    return run.id


def execute_dub(store: Store, run_id: str, out: str | Path | None, force: bool = False,
                on_event: OnEvent = None, devices: Optional[DeviceManager] = None) -> dict:
    """Run a recorded dub. ``devices``: the run's device manager (default: a fresh one, which frees every model
    when the run ends; a batch worker passes one that keeps them loaded for its next clip)."""
    run = store.get_run(run_id)
    cfg = RunConfig.model_validate_json(run.config_json)
    _record_model_ids(store, run_id, cfg)
    state: RunState = {"run_id": run_id, "branch": 0, "video_path": run.video_path,
                       "out_path": str(out) if out else None, "out_force": force, "rounds_cap": cfg.rounds,
                       "round_index": 0, "current_round_id": None, "best_round_id": None, "best_overall": None,
                       "rounds_without_improvement": 0, "stop_reason": None, "seed": cfg.seed}
    return _run_branch(store, cfg, run_id, 0, state, on_event, cfg.rounds, devices)


def dub(store: Store, video: str | Path, cfg: RunConfig, out: str | Path | None = None, force: bool = False,
        on_event: OnEvent = None) -> tuple[str, dict]:
    run_id = create_dub_run(store, video, cfg, status="running", out=out, load_backends=True)
    return run_id, execute_dub(store, run_id, out, force, on_event)


# ---- resuming -----------------------------------------------------------------------------------------------
branch_status = nodes.branch_status  # running | done | failed | None, from a branch record


def _branch_status(run: Run, branch: int) -> Optional[str]:
    return branch_status(run.branches().get(str(branch)))


def open_branches(store: Store, run_id: str, retry_failed: bool = False) -> list[int]:
    """Branches that have work left: paused, killed, failed (branch 0 always; forks with ``retry_failed``),
    or forked and never started."""
    run = store.get_run(run_id)
    out = []
    for b in sorted({r.branch for r in store.rounds(run.id)} | {0}):
        status = _branch_status(run, b)
        if status == "done" or (status == "failed" and b != 0 and not retry_failed):
            continue
        snap = _snapshot(store, run.id, b)
        if snap.next or not snap.values:
            out.append(b)
    return out


def failed_branches(store: Store, run_id: str) -> list[int]:
    run = store.get_run(run_id)
    return sorted(int(b) for b, rec in run.branches().items() if branch_status(rec) == "failed")


def resume(store: Store, run_id: str, answer: dict | None = None, on_event: OnEvent = None,
           retry_failed: bool = False, devices: Optional[DeviceManager] = None) -> dict:
    """Continue a killed, failed or paused run from its last checkpoints; ``answer`` resumes a review pause.
    A failed fork is retried only with ``retry_failed``."""
    run = store.get_run(run_id)
    if run is None:
        raise KeyError(f"no run {run_id!r}")
    if isinstance(answer, dict) and answer.get("plan"):  # an edited plan answers a review: checked before anything
        answer = {**answer, "plan": check_plan(answer["plan"], plan_length(run)).to_json()}
    cfg = RunConfig.model_validate_json(run.config_json)
    close_interrupted(store, run.id)
    results = {}
    todo = open_branches(store, run.id, retry_failed)
    if todo:  # loaded (and timed) before any node runs, as in a fresh dub
        _record_model_ids(store, run.id, cfg, branch=todo[0])
    for branch in todo:
        snap = _snapshot(store, run.id, branch)
        if not snap.values:  # recorded (a fork, or a dub killed while loading) but never started
            if branch == 0 and run.kind == "dub":
                results[branch] = execute_dub(store, run.id, None, on_event=on_event, devices=devices)
            else:
                results[branch] = execute_branch(store, run.id, branch, on_event=on_event, devices=devices)
            continue
        if branch and _branch_status(run, branch) == "failed":
            _revive_branch(store, run.id, branch)
        payload = Command(resume=answer or {"action": "approve"}) if snap.interrupts else None
        results[branch] = _run_branch(store, cfg, run.id, branch, payload, on_event,
                                      snap.values.get("rounds_cap", cfg.rounds), devices)
    return results.get(0) or next(iter(results.values()), {})


def pending_review(store: Store, run_id: str) -> dict | None:
    """The interrupt payload of a run paused for review, or None."""
    run = store.get_run(run_id)
    for intr in _snapshot(store, run.id, 0).interrupts or ():
        return intr.value
    return None


# ---- forks --------------------------------------------------------------------------------------------------
def fork(store: Store, run_id: str, round_id: int, plan: Plan, rounds: int | None = None,
         author: str = "human") -> tuple[int, int]:
    """Record a new branch whose first round is ``plan`` (parent = ``round_id``); nothing is overwritten. The plan
    is checked (``check_plan``: bounds, and the run's length) and the parent's stored plan read before anything
    is recorded (PlanInvalid)."""
    run = store.get_run(run_id)
    parent = store.get_round(round_id)
    if run is None or parent is None or parent.run_id != run.id:
        raise KeyError(f"no round {round_id} in run {run_id}")
    plan = check_plan(plan, plan_length(run))
    try:
        parent_plan_id = Plan.from_stored(parent.plan_json).plan_id
    except PlanInvalid as exc:
        raise PlanInvalid(f"the plan stored with round {parent.branch}.{parent.index} cannot be read: {exc}") from None
    branch = store.next_branch(run.id)
    plan = plan.model_copy(update={"provenance": plan.provenance.model_copy(
        update={"author": author, "parent_plan_id": parent_plan_id, "round": 0})})
    rnd = store.add_round(run_id=run.id, index=0, branch=branch, author=author, parent_round_id=parent.id,
                          plan_json=plan.to_json(), seed=parent.seed)
    if rounds:
        cfg = RunConfig.model_validate_json(run.config_json).model_copy(update={"rounds": rounds})
        store.update_run(run.id, config_json=cfg.model_dump_json())
    return branch, rnd.id


def execute_branch(store: Store, run_id: str, branch: int, out: str | Path | None = None,
                   rounds: int | None = None, force: bool = False, on_event: OnEvent = None,
                   devices: Optional[DeviceManager] = None) -> dict:
    """Run a branch that enters at render (a fork, or a text run's rounds); continue it if it was cut short."""
    run = store.get_run(run_id)
    cfg = RunConfig.model_validate_json(run.config_json)
    snap = _snapshot(store, run.id, branch)
    _record_model_ids(store, run.id, cfg, branch)  # loaded (and timed) before any node runs
    if snap.next:  # killed or failed part-way (e.g. a reclaimed worker job): continue from its checkpoint
        close_interrupted(store, run.id)
        if branch and _branch_status(run, branch) == "failed":
            _revive_branch(store, run.id, branch)
        return _run_branch(store, cfg, run.id, branch, None, on_event, snap.values.get("rounds_cap", cfg.rounds),
                           devices)
    first = store.rounds(run.id, branch=branch)[0]
    cap = rounds or cfg.rounds
    state: RunState = {"run_id": run.id, "branch": branch, "video_path": run.video_path or None,
                       "out_path": str(out) if out else None, "out_force": force, "rounds_cap": cap,
                       "round_index": 0, "current_round_id": first.id, "best_round_id": None,
                       "best_overall": None, "rounds_without_improvement": 0, "stop_reason": None,
                       "seed": first.seed}
    return _run_branch(store, cfg, run.id, branch, state, on_event, cap, devices)


def regenerate(store: Store, run_id: str, round_id: int, plan: Plan, out: str | Path | None = None,
               rounds: int | None = None, force: bool = False, on_event: OnEvent = None) -> tuple[int, dict]:
    branch, _ = fork(store, run_id, round_id, plan)
    return branch, execute_branch(store, run_id, branch, out, rounds, force, on_event)


def best_round(store: Store, run: Run) -> Round | None:
    """The run's best: the best finished branch's best round, else its highest-scoring round so far."""
    rec = nodes.best_branch(run.branches())
    if rec is not None:
        return store.get_round(rec["best_round_id"])
    scored = [r for r in store.rounds(run.id) if r.status == "scored" and r.score_overall is not None]
    if scored:
        return max(scored, key=lambda r: (r.score_overall, -r.id))
    return store.get_round(run.best_round_id) if run.best_round_id is not None else None


# ---- text to audio ------------------------------------------------------------------------------------------
def plan_from_prompt(prompt: str, duration_s: float) -> Plan:
    """A human plan for a text prompt: caption = first ≤12 words, semantic = prompt, one bed over the clip."""
    words = prompt.split()
    if not words:
        raise UserError("the prompt is empty")
    if not duration_s > 0:
        raise UserError(f"--duration must be > 0, got {duration_s}")
    caption = " ".join(words[:12])
    try:  # a prompt of 100 000 words, or an hour-long edit source: the plan's bounds say what is wrong
        return Plan(caption=caption, semantic=" ".join(words), duration_s=float(duration_s),
                    events=[Event(id="e0", label=caption[:120], kind=EventKind.ambience, start_s=0.0,
                                  end_s=float(duration_s))],
                    provenance=Provenance(author="human"))
    except ValidationError as exc:
        raise PlanInvalid.from_validation(exc) from None


def text_to_audio(store: Store, plan: Plan, cfg: RunConfig, out: str | Path | None, force: bool = False,
                  on_event: OnEvent = None) -> tuple[str, dict]:
    """Render a plan with no video (text-to-audio): the loop runs render → critique → refine. The backends load
    before the run is recorded, so missing weights record nothing; the plan is checked first (at most
    ``MAX_TEXT_DURATION_S``, every bound: PlanInvalid)."""
    plan = check_plan(plan, None)
    store.require_writable()
    cfg = _resolved(cfg)
    t0 = time.perf_counter()
    _load_backends(cfg, ROLES[1:])
    load_s = time.perf_counter() - t0
    run = store.create_run(kind="text", prompt=plan.caption, duration_s=plan.duration_s,
                           config_json=cfg.model_dump_json(), status="running", backends_json=describe_backends(cfg))
    store.add_timing(run.id, "load", load_s)
    store.add_round(run_id=run.id, index=0, branch=0, author=plan.provenance.author or "human",
                    plan_json=plan.to_json(), seed=cfg.seed)
    _record_model_ids(store, run.id, cfg)
    return run.id, execute_branch(store, run.id, 0, out, cfg.rounds, force, on_event)


# ---- edits (audio to audio) ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class EditSource:
    audio_path: Path
    run: Run | None = None
    round: Round | None = None
    video: Path | None = None

    def describe(self) -> str:
        return f"run {self.run.id}" if self.run else self.audio_path.name


def edit_source(store: Store, source: str) -> EditSource:
    """An audio file, or a run id ('last' works): a run's best track (highest-scoring round across branches)."""
    p = Path(source).expanduser()
    try:
        is_file = p.is_file()
    except OSError:  # a name no file system allows (100 KB): it can only be a (wrong) run id
        is_file = False
    if is_file:
        return EditSource(p)
    run = store.get_run(source)
    if run is None:
        shown = source if len(source) <= 64 else f"{source[:64]}…"  # no run id is longer; never echo 100 KB
        raise UserError(f"{shown}: no such audio file, and no run with that id in {store.db_path}")
    rnd = best_round(store, run)
    if rnd is None or rnd.audio_artifact_id is None:
        rounds = [r for r in store.rounds(run.id) if r.audio_artifact_id is not None]
        rnd = rounds[-1] if rounds else None
    if rnd is None:
        raise UserError(f"run {run.id} has no rendered audio to edit")
    video = Path(run.video_path) if run.video_path and Path(run.video_path).is_file() else None
    return EditSource(store.artifact_path(rnd.audio_artifact_id), run, rnd, video)


def load_edit_audio(path: Path):
    """The source track as the renderer's stereo 44.1 kHz array, and its duration in seconds."""
    from generator.thinksound.pipeline import SAMPLE_RATE, stereo_44k

    raw, rate = media.read_audio(path)
    audio = stereo_44k(raw, rate)
    return audio, audio.shape[1] / SAMPLE_RATE


def edit(store: Store, src: EditSource, audio, plan: Plan, cfg: RunConfig, strength: float,
         window: tuple[float, float] | None, out: str | Path, force: bool = False, on_event: OnEvent = None) -> str:
    """A variation of ``src`` (or a regenerated time window of it) with an editing renderer, recorded as a run of
    kind "edit" with one round. The plan must last as long as the audio (PlanInvalid), and the renderer loads,
    before the run is recorded."""
    from generator.thinksound.pipeline import SAMPLE_RATE, peak_normalise

    plan = check_plan(plan, audio.shape[1] / SAMPLE_RATE)
    store.require_writable()
    cfg = _resolved(cfg)
    renderer = backends.get("renderer", cfg)
    if not hasattr(renderer, "pipeline"):
        raise UserError(f"the {cfg.renderer} renderer cannot edit audio (use --renderer thinksound)")
    out = Path(out)
    run = store.create_run(kind="edit", prompt=plan.caption, duration_s=audio.shape[1] / SAMPLE_RATE,
                           video_path=str(src.video) if src.video else "", config_json=cfg.model_dump_json(),
                           status="running", parent_run_id=src.run.id if src.run else None,
                           backends_json={"renderer": cfg.renderer, "renderer_model_id": renderer.model_id,
                                          "options": cfg.options})
    store.put_file(src.audio_path, kind="input", run_id=run.id,
                   mime=mimetypes.guess_type(src.audio_path.name)[0] or "")
    what = (f"window {window[0]:g}-{window[1]:g} s regenerated" if window else "variation") + \
        f" at strength {strength:g} of {src.describe()}"
    rnd = store.add_round(run_id=run.id, index=0, branch=0, author="human", plan_json=plan.to_json(),
                          seed=cfg.seed, model_id=renderer.model_id, changes_json=[what])
    tracker = _Tracker(store, run.id, 0, on_event)
    tracker.task({"id": "edit", "name": "render", "input": {"round_index": 0}})
    t0 = time.perf_counter()
    try:
        kw = dict(video=src.video, seed=cfg.seed, steps=renderer.steps, cfg_scale=renderer.cfg_scale)
        if window:
            gen = renderer.pipeline.inpaint(audio, window, plan.caption, plan.cot_text(), strength=strength, **kw)
        else:
            gen = renderer.pipeline.variation(audio, plan.caption, plan.cot_text(), strength, **kw)
        tmp_dir = store.home / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
            wav = media.write_audio(Path(tmp) / "audio.wav", peak_normalise(gen.audio), SAMPLE_RATE)
            art = store.put_file(wav, kind="audio", run_id=run.id, mime="audio/wav", move=True)
        tracker.task({"id": "edit", "name": "render", "error": None, "interrupts": [], "result": {}})
        seconds = time.perf_counter() - t0
        source_note = {"audio": str(src.audio_path), "run_id": src.run.id if src.run else None,
                       "round_id": src.round.id if src.round else None}
        meta = gen.meta | {"model_id": renderer.model_id, "caption": plan.caption, "source": source_note}
        store.update_round(rnd.id, audio_artifact_id=art.id, status="rendered",
                           timings_json={"render_meta": json.loads(json.dumps(meta, default=str)),
                                         "seconds": round(seconds, 3)})
        with outputs.staging(out) as tmp_out:
            media.copy_file(store.artifact_path(art.id), tmp_out)
            try:
                outputs.publish(tmp_out, out, force=force)
            except FileExistsError:
                raise UserError(f"{out} appeared while run {run.id} was working; nothing was overwritten") from None
    except BaseException as exc:
        tracker.abandon(exc)
        msg = f"{type(exc).__name__}: {exc}"[:2000]
        store.update_round(rnd.id, status="failed", error=msg)
        store.update_run(run.id, status="failed", error=msg)
        raise
    record = {"status": "done", "stop_reason": "edit", "best_round_id": rnd.id, "best_overall": None,
              "output_path": str(out.resolve())}
    store.update_run(run.id, status="done", stop_reason="edit", best_round_id=rnd.id, n_rounds=1,
                     output_path=record["output_path"], branches_json={"0": record})
    return run.id
