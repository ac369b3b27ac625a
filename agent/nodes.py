"""LangGraph nodes. Each is thin: it reads ids from the state, calls a backend or the store, writes ids back.

Every node is idempotent against the database, because a run killed between a node's side effects
and its checkpoint re-runs that node on resume: it then finds its round/artifact and reuses it.
"""

from __future__ import annotations

import json
import contextlib
import logging
import tempfile
import time
from pathlib import Path

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from agent import backends
from agent.state import RunContext, RunState
from contract.plan import Critique, Plan
from reasoning.policy import decide
from contract.errors import BackendError
from store import media
from store.media import VideoInfo
from store.schema import Round

log = logging.getLogger(__name__)


def tracked(name: str):
    """Record start/end/duration of a node in the DB (live progress, per-node timings)."""

    def wrap(fn):
        def inner(state: RunState, runtime: Runtime[RunContext]):
            ctx = runtime.context
            ev = ctx.store.node_started(state["run_id"], name, state.get("round_index"))
            t0 = time.perf_counter()
            try:
                with _progress(ctx, name, state.get("round_index", 0)):
                    out = fn(state, ctx)
            except Exception as exc:
                if type(exc).__name__ == "GraphInterrupt":  # a human-review pause, not a failure
                    ctx.store.node_finished(ev, time.perf_counter() - t0, status="paused")
                    raise
                ctx.store.node_finished(ev, time.perf_counter() - t0, status="failed", detail=str(exc)[:500])
                raise
            dt = time.perf_counter() - t0
            ctx.store.node_finished(ev, dt)
            ctx.store.add_timing(state["run_id"], f"node:{name}", dt)
            return out

        # No functools.wraps: LangGraph reads the signature to decide whether to pass ``runtime``.
        inner.__name__, inner.__doc__ = fn.__name__, fn.__doc__
        return inner

    return wrap


@contextlib.contextmanager
def _progress(ctx: RunContext, name: str, round_index: int):
    """A spinner with elapsed time while a node works, then one line with its duration (CLI only)."""
    if not ctx.show_progress:
        yield
        return
    from rich.console import Console

    console = Console(stderr=True)
    label = f"{name} (round {round_index})"
    t0 = time.perf_counter()
    with console.status(f"{label}…", spinner="dots"):
        yield
    console.print(f"[dim]· {label} {time.perf_counter() - t0:.2f} s[/dim]", highlight=False)


def _info(ctx: RunContext, run_id: str) -> VideoInfo | None:
    run = ctx.store.get_run(run_id)
    data = json.loads(run.video_info_json or "{}")
    return VideoInfo(**data) if data else None


def _plan(rnd: Round) -> Plan:
    return Plan.from_json(rnd.plan_json)


@tracked("probe")
def probe(state: RunState, ctx: RunContext) -> dict:
    info = media.probe(state["video_path"])
    if info.duration_s > ctx.cfg.max_duration_s:
        raise media.MediaError(f"{state['video_path']}: {info.duration_s:.1f}s is longer than --max-duration "
                               f"{ctx.cfg.max_duration_s:.0f}s")
    ctx.store.update_run(state["run_id"], video_info_json=info.to_dict(), duration_s=info.duration_s, status="running")
    return {}


@tracked("watch")
def watch(state: RunState, ctx: RunContext) -> dict:
    existing = [r for r in ctx.store.rounds(state["run_id"], branch=state["branch"]) if r.status != "failed"]
    if existing:  # watched before a crash: reuse it
        return {"current_round_id": existing[0].id, "round_index": 0}
    watcher = backends.get("watcher", ctx.cfg)
    try:
        result = watcher.watch(Path(state["video_path"]), _info(ctx, state["run_id"]))
    except BackendError as exc:  # keep the model's raw text on a failed round, then fail the run
        ctx.store.add_round(run_id=state["run_id"], index=0, branch=state["branch"], author="watcher",
                            status="failed", seed=state["seed"], error=str(exc)[:2000],
                            raw_output=exc.raw_output[:200_000], model_id=getattr(exc, "model_id", watcher.model_id),
                            prompt_version=getattr(exc, "prompt_version", ""))
        raise
    plan = result.plan.model_copy(update={"provenance": result.plan.provenance.model_copy(
        update={"author": "watcher", "backend": watcher.name, "model_id": result.model_id,
                "prompt_version": result.prompt_version, "round": 0})})
    rnd = ctx.store.add_round(run_id=state["run_id"], index=0, branch=state["branch"], author="watcher",
                              plan_json=plan.to_json(), seed=state["seed"], model_id=result.model_id,
                              prompt_version=result.prompt_version, raw_output=result.raw_output)
    return {"current_round_id": rnd.id, "round_index": 0}


def review(state: RunState, runtime: Runtime[RunContext]) -> dict:
    """Pause for a human: the resume value approves the plan or carries an edited one."""
    ctx = runtime.context
    rnd = ctx.store.get_round(state["current_round_id"])
    if rnd.author == "human":  # already reviewed before a crash
        return {}
    ctx.store.update_run(state["run_id"], status="review")
    answer = interrupt({"run_id": state["run_id"], "round_id": rnd.id, "plan": rnd.plan_json})
    ctx.store.update_run(state["run_id"], status="running")
    edited = answer.get("plan") if isinstance(answer, dict) else None
    if not edited:
        return {}
    plan = Plan.from_json(edited)
    plan = plan.model_copy(update={"provenance": plan.provenance.model_copy(
        update={"author": "human", "parent_plan_id": _plan(rnd).plan_id, "round": rnd.index})})
    ctx.store.update_round(rnd.id, status="replaced")
    new = ctx.store.add_round(run_id=state["run_id"], index=rnd.index, branch=rnd.branch, author="human",
                              parent_round_id=rnd.id, plan_json=plan.to_json(), seed=rnd.seed)
    return {"current_round_id": new.id}


@tracked("render")
def render(state: RunState, ctx: RunContext) -> dict:
    rnd = ctx.store.get_round(state["current_round_id"])
    if rnd.audio_artifact_id is not None:
        return {}
    ctx.devices.before("render")
    renderer = backends.get("renderer", ctx.cfg)
    video = Path(state["video_path"]) if state.get("video_path") else None
    tmp_dir = ctx.store.home / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        result = renderer.render(_plan(rnd), video, _info(ctx, state["run_id"]), rnd.seed, Path(tmp) / "audio.wav")
        art = ctx.store.put_file(result.audio_path, kind="audio", run_id=state["run_id"], mime="audio/wav", move=True)
    timings = json.loads(rnd.timings_json or "{}") | {"render_meta": _small(result.meta)}
    ctx.store.update_round(rnd.id, audio_artifact_id=art.id, status="rendered", timings_json=timings)
    return {}


def _small(meta: dict) -> dict:
    text = json.dumps(meta, default=str)
    return json.loads(text) if len(text) < 20_000 else {"truncated": True}


@tracked("critique")
def critique(state: RunState, ctx: RunContext) -> dict:
    rnd = ctx.store.get_round(state["current_round_id"])
    if rnd.critique_json is None:
        critic = backends.get("critic", ctx.cfg)
        audio = ctx.store.artifact_path(rnd.audio_artifact_id)
        video = Path(state["video_path"]) if state.get("video_path") else None
        crit = critic.critique(_plan(rnd), audio, video, _info(ctx, state["run_id"]))
        s = crit.scores
        ctx.store.update_round(rnd.id, critique_json=crit.to_json(), status="scored", score_semantic=s["semantic"],
                               score_temporal=s["temporal"], score_aesthetic=s["aesthetic"],
                               score_spatial=s["spatial"], score_overall=crit.overall)
    return {}


@tracked("decide")
def decide_node(state: RunState, ctx: RunContext) -> dict:
    rnd = ctx.store.get_round(state["current_round_id"])
    crit = Critique.from_json(rnd.critique_json)
    d = decide(crit, ctx.cfg.thresholds, rounds_done=state["round_index"] + 1, rounds_cap=state["rounds_cap"],
               best_overall=state.get("best_overall"),
               rounds_without_improvement=state.get("rounds_without_improvement", 0),
               min_improvement=ctx.cfg.min_improvement, patience=ctx.cfg.patience)
    update = {"best_overall": d.best_overall, "rounds_without_improvement": d.rounds_without_improvement,
              "stop_reason": d.reason}
    if d.improved or state.get("best_round_id") is None:
        update["best_round_id"] = rnd.id
    ctx.store.update_run(state["run_id"], n_rounds=len(ctx.store.rounds(state["run_id"])))
    return update


@tracked("refine")
def refine(state: RunState, ctx: RunContext) -> dict:
    best = ctx.store.get_round(state["best_round_id"])
    next_index = state["round_index"] + 1
    for rnd in ctx.store.rounds(state["run_id"], branch=state["branch"]):
        if rnd.index == next_index and rnd.author == "refiner":  # refined before a crash
            return {"current_round_id": rnd.id, "round_index": next_index}
    refiner = backends.get("refiner", ctx.cfg)
    crit = Critique.from_json(best.critique_json)
    failing = crit.failing(ctx.cfg.thresholds) or [d for d, v in crit.scores.items() if v is not None]
    video = Path(state["video_path"]) if state.get("video_path") else None
    try:
        result = refiner.refine(_plan(best), crit, failing, next_index, best.seed, video=video,
                                info=_info(ctx, state["run_id"]))
    except BackendError as exc:  # the best round so far stands; the failed attempt is kept for review
        ctx.store.add_round(run_id=state["run_id"], index=next_index, branch=state["branch"], author="refiner",
                            parent_round_id=best.id, status="failed", seed=best.seed, error=str(exc)[:2000],
                            raw_output=exc.raw_output[:200_000], plan_json=best.plan_json,
                            prompt_version=getattr(exc, "prompt_version", ""),
                            model_id=getattr(exc, "model_id", getattr(refiner, "model_id", refiner.name)))
        return {"stop_reason": f"refiner_failed: {str(exc)[:200]}"}
    plan = result.plan.model_copy(update={"provenance": result.plan.provenance.model_copy(
        update={"author": "refiner", "round": next_index, "backend": refiner.name})})
    rnd = ctx.store.add_round(run_id=state["run_id"], index=next_index, branch=state["branch"], author="refiner",
                              parent_round_id=best.id, plan_json=plan.to_json(), seed=result.seed,
                              model_id=getattr(refiner, "model_id", refiner.name),
                              prompt_version=result.prompt_version, raw_output=result.raw_output,
                              changes_json=result.changes)
    return {"current_round_id": rnd.id, "round_index": next_index}


@tracked("finalize")
def finalize(state: RunState, ctx: RunContext) -> dict:
    best = ctx.store.get_round(state["best_round_id"])
    audio_path = ctx.store.artifact_path(best.audio_artifact_id)
    out = state.get("out_path")
    run = ctx.store.get_run(state["run_id"])
    branches = json.loads(run.branches_json or "{}")
    record = {"stop_reason": state.get("stop_reason"), "best_round_id": best.id, "best_overall": best.score_overall}
    if state.get("video_path") and out:
        # The WAV is streamed into the mux in blocks: an hour of soundtrack is never held in memory.
        media.mux(state["video_path"], audio_path, None, out, keep_original=ctx.cfg.keep_original,
                  info=_info(ctx, state["run_id"]))
        art = ctx.store.put_file(out, kind="video", run_id=state["run_id"], mime="video/mp4")
        record |= {"output_path": str(Path(out).resolve()), "output_artifact_id": art.id}
    elif out:
        media.copy_file(audio_path, out)
        record |= {"output_path": str(Path(out).resolve())}
    branches[str(state["branch"])] = record
    ctx.devices.release_all()
    ctx.store.update_run(state["run_id"], status="done", stop_reason=state.get("stop_reason"),
                         best_round_id=best.id, best_overall=best.score_overall, branches_json=branches,
                         output_path=record.get("output_path"), output_artifact_id=record.get("output_artifact_id"),
                         n_rounds=len(ctx.store.rounds(state["run_id"])))
    return {"output_path": record.get("output_path")}
