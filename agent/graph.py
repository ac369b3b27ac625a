"""The LangGraph state machine and the functions that start, resume and fork runs.

probe → watch → [review] → render → critique → decide ─┬─ refine → render …
                                                        └─ finalize → END
A fork (regenerate) or a text-to-audio run enters at render with a prepared round.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

from agent import backends, nodes
from agent.config import RunConfig
from agent.state import RunContext, RunState, thread_id
from contract.plan import Plan
from store import media
from store.db import Store


def _entry(state: RunState) -> str:
    if state.get("current_round_id") is not None:
        return "render"
    return "probe" if state.get("video_path") else "render"


def _after_watch(review: bool):
    def route(_state: RunState) -> str:
        return "review" if review else "render"

    return route


def _after_decide(state: RunState) -> str:
    return "finalize" if state.get("stop_reason") else "refine"


def _after_refine(state: RunState) -> str:
    return "finalize" if state.get("stop_reason") else "render"


def build_graph(cfg: RunConfig, checkpointer) -> "CompiledStateGraph":  # noqa: F821
    g = StateGraph(RunState, context_schema=RunContext)
    g.add_node("probe", nodes.probe)
    g.add_node("watch", nodes.watch)
    g.add_node("review", nodes.review)
    g.add_node("render", nodes.render)
    g.add_node("critique", nodes.critique)
    g.add_node("decide", nodes.decide_node)
    g.add_node("refine", nodes.refine)
    g.add_node("finalize", nodes.finalize)
    g.add_conditional_edges(START, _entry, {"probe": "probe", "render": "render"})
    g.add_edge("probe", "watch")
    g.add_conditional_edges("watch", _after_watch(cfg.review), {"review": "review", "render": "render"})
    g.add_edge("review", "render")
    g.add_edge("render", "critique")
    g.add_edge("critique", "decide")
    g.add_conditional_edges("decide", _after_decide, {"refine": "refine", "finalize": "finalize"})
    g.add_conditional_edges("refine", _after_refine, {"render": "render", "finalize": "finalize"})
    g.add_edge("finalize", END)
    return g.compile(checkpointer=checkpointer)


@contextmanager
def checkpointer(store: Store) -> Iterator[SqliteSaver]:
    conn = sqlite3.connect(str(store.db_path), check_same_thread=False, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    try:
        saver = SqliteSaver(conn)
        saver.setup()
        yield saver
    finally:
        conn.close()


def _invoke(store: Store, cfg: RunConfig, run_id: str, branch: int, payload, show_progress: bool) -> dict:
    config = {"configurable": {"thread_id": thread_id(run_id, branch)}, "recursion_limit": 10 + 6 * cfg.rounds}
    ctx = RunContext(store=store, cfg=cfg, show_progress=show_progress)
    t0 = time.perf_counter()
    try:
        with checkpointer(store) as saver:
            graph = build_graph(cfg, saver)
            result = graph.invoke(payload, config, context=ctx, durability="sync")
    except Exception as exc:
        store.update_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    finally:
        store.add_timing(run_id, "wall", time.perf_counter() - t0)
    return result


def run_status(result: dict) -> str:
    return "review" if "__interrupt__" in result else "done"


# ---- public entry points (CLI, worker and studio call these) -----------------------------------------------
def create_dub_run(store: Store, video: str | Path, cfg: RunConfig, status: str = "queued") -> str:
    """Validate the input and record a Run; bad input records a failed Run and raises MediaError."""
    path = Path(video)
    try:
        info = media.probe(path)
        if info.duration_s > cfg.max_duration_s:
            raise media.MediaError(f"{path}: {info.duration_s:.1f}s is longer than --max-duration "
                                   f"{cfg.max_duration_s:.0f}s")
    except media.MediaError as exc:
        store.create_run(video_path=str(path), status="failed", error=str(exc), config_json=cfg.model_dump_json())
        raise
    run = store.create_run(video_path=info.path, video_sha256=media.sha256_file(path), video_info_json=info.to_dict(),
                           duration_s=info.duration_s, config_json=cfg.model_dump_json(), status=status,
                           backends_json=describe_backends(cfg))
    return run.id


def describe_backends(cfg: RunConfig) -> dict:
    return {"watcher": cfg.watcher, "renderer": cfg.renderer, "critic": cfg.critic, "refiner": cfg.refiner_name,
            "options": cfg.options}


def execute_dub(store: Store, run_id: str, out: str | Path | None, show_progress: bool = False) -> dict:
    run = store.get_run(run_id)
    cfg = RunConfig.model_validate_json(run.config_json)
    _record_model_ids(store, run_id, cfg)
    state: RunState = {"run_id": run_id, "branch": 0, "video_path": run.video_path,
                       "out_path": str(out) if out else None, "rounds_cap": cfg.rounds, "round_index": 0,
                       "current_round_id": None, "best_round_id": None, "best_overall": None,
                       "rounds_without_improvement": 0, "stop_reason": None, "seed": cfg.seed}
    store.update_run(run_id, status="running")
    return _invoke(store, cfg, run_id, 0, state, show_progress)


def _record_model_ids(store: Store, run_id: str, cfg: RunConfig) -> None:
    """Load the backends (timed separately from the rounds) and record their model ids on the Run."""
    t0 = time.perf_counter()
    ids = describe_backends(cfg)
    for role in ("watcher", "renderer", "critic", "refiner"):
        if role == "watcher" and store.get_run(run_id).kind != "dub":
            continue
        try:
            backend = backends.get(role, cfg)
        except Exception as exc:  # missing weights etc.: the run must not stay "running"
            store.update_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
            raise
        ids[f"{role}_model_id"] = getattr(backend, "model_id", getattr(backend, "name", role))
    store.update_run(run_id, backends_json=ids)
    store.add_timing(run_id, "load", time.perf_counter() - t0)


def dub(store: Store, video: str | Path, cfg: RunConfig, out: str | Path | None = None,
        show_progress: bool = False) -> tuple[str, dict]:
    run_id = create_dub_run(store, video, cfg, status="running")
    return run_id, execute_dub(store, run_id, out, show_progress)


def resume(store: Store, run_id: str, answer: dict | None = None, show_progress: bool = False) -> dict:
    """Continue a killed or paused run from its last checkpoint; ``answer`` resumes a review pause."""
    run = store.get_run(run_id)
    if run is None:
        raise KeyError(f"no run {run_id!r}")
    cfg = RunConfig.model_validate_json(run.config_json)
    results = {}
    for branch in _open_branches(store, run.id):
        store.update_run(run.id, status="running", error=None)
        if branch != 0 and not _state(store, cfg, run.id, branch).values:  # forked, never started
            results[branch] = execute_branch(store, run.id, branch, show_progress=show_progress)
            continue
        payload = Command(resume=answer or {"action": "approve"}) if _paused(store, cfg, run.id, branch) else None
        results[branch] = _invoke(store, cfg, run.id, branch, payload, show_progress)
    return results.get(0) or next(iter(results.values()), {})


def _state(store: Store, cfg: RunConfig, run_id: str, branch: int):
    with checkpointer(store) as saver:
        graph = build_graph(cfg, saver)
        return graph.get_state({"configurable": {"thread_id": thread_id(run_id, branch)}})


def _paused(store: Store, cfg: RunConfig, run_id: str, branch: int) -> bool:
    snap = _state(store, cfg, run_id, branch)
    return bool(snap.interrupts) if hasattr(snap, "interrupts") else bool(snap.tasks and snap.tasks[0].interrupts)


def _open_branches(store: Store, run_id: str) -> list[int]:
    run = store.get_run(run_id)
    cfg = RunConfig.model_validate_json(run.config_json)
    done = set(run.branches())
    branches = sorted({r.branch for r in store.rounds(run_id)} | {0})
    out = []
    for b in branches:
        if str(b) in done:
            continue
        snap = _state(store, cfg, run_id, b)
        if snap.next or not snap.values:
            out.append(b)
    return out


def pending_review(store: Store, run_id: str) -> dict | None:
    """The interrupt payload of a run paused for review, or None."""
    run = store.get_run(run_id)
    cfg = RunConfig.model_validate_json(run.config_json)
    snap = _state(store, cfg, run.id, 0)
    for intr in getattr(snap, "interrupts", ()) or ():
        return intr.value
    return None


def fork(store: Store, run_id: str, round_id: int, plan: Plan, rounds: int | None = None,
         author: str = "human") -> tuple[int, int]:
    """Record a new branch whose first round is ``plan`` (parent = ``round_id``); nothing is overwritten."""
    run = store.get_run(run_id)
    parent = store.get_round(round_id)
    if run is None or parent is None or parent.run_id != run.id:
        raise KeyError(f"no round {round_id} in run {run_id}")
    branch = store.next_branch(run.id)
    plan = plan.model_copy(update={"provenance": plan.provenance.model_copy(
        update={"author": author, "parent_plan_id": Plan.from_json(parent.plan_json).plan_id, "round": 0})})
    rnd = store.add_round(run_id=run.id, index=0, branch=branch, author=author, parent_round_id=parent.id,
                          plan_json=plan.to_json(), seed=parent.seed)
    cfg = RunConfig.model_validate_json(run.config_json)
    if rounds:
        cfg = cfg.model_copy(update={"rounds": rounds})
        store.update_run(run.id, config_json=cfg.model_dump_json())
    return branch, rnd.id


def execute_branch(store: Store, run_id: str, branch: int, out: str | Path | None = None,
                   rounds: int | None = None, show_progress: bool = False) -> dict:
    run = store.get_run(run_id)
    cfg = RunConfig.model_validate_json(run.config_json)
    first = store.rounds(run.id, branch=branch)[0]
    state: RunState = {"run_id": run.id, "branch": branch, "video_path": run.video_path or None,
                       "out_path": str(out) if out else None, "rounds_cap": rounds or cfg.rounds,
                       "round_index": 0, "current_round_id": first.id, "best_round_id": None,
                       "best_overall": None, "rounds_without_improvement": 0, "stop_reason": None,
                       "seed": first.seed}
    store.update_run(run.id, status="running")
    return _invoke(store, cfg, run.id, branch, state, show_progress)


def regenerate(store: Store, run_id: str, round_id: int, plan: Plan, out: str | Path | None = None,
               rounds: int | None = None, show_progress: bool = False) -> tuple[int, dict]:
    branch, _ = fork(store, run_id, round_id, plan)
    return branch, execute_branch(store, run_id, branch, out, rounds, show_progress)


def text_to_audio(store: Store, plan: Plan, cfg: RunConfig, out: str | Path | None,
                  show_progress: bool = False) -> tuple[str, dict]:
    """Render a plan with no video (text-to-audio): the loop runs render → critique → refine."""
    run = store.create_run(kind="text", prompt=plan.caption, duration_s=plan.duration_s,
                           config_json=cfg.model_dump_json(), status="running", backends_json=describe_backends(cfg))
    store.add_round(run_id=run.id, index=0, branch=0, author=plan.provenance.author or "human",
                    plan_json=plan.to_json(), seed=cfg.seed)
    _record_model_ids(store, run.id, cfg)
    return run.id, execute_branch(store, run.id, 0, out, cfg.rounds, show_progress)
