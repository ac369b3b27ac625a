"""The LangGraph state machine: its definition, compiled once per process, bound to one checkpointer per database.

probe → watch → [review] → render → critique → decide ─┬─ refine → render …
                                                        └─ finalize → END
A fork (regenerate) or a text-to-audio run enters at render with a prepared round. Routing reads the state and
the run context (``RunContext.cfg.review``), so one compiled graph serves every run configuration. Starting,
resuming and forking runs is ``agent.runs``'s job.
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import threading

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from agent import nodes
from agent.state import RunContext, RunState
from store.db import Store

NODES = ("probe", "watch", "review", "render", "critique", "decide", "refine", "finalize")


def _entry(state: RunState) -> str:
    if state.get("current_round_id") is not None:
        return "render"
    return "probe" if state.get("video_path") else "render"


def _after_watch(_state: RunState, runtime: Runtime[RunContext]) -> str:
    return "review" if runtime.context.cfg.review else "render"


def _after_decide(state: RunState) -> str:
    return "finalize" if state.get("stop_reason") else "refine"


def _after_refine(state: RunState) -> str:
    return "finalize" if state.get("stop_reason") else "render"


def definition() -> StateGraph:
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
    g.add_conditional_edges("watch", _after_watch, {"review": "review", "render": "render"})
    g.add_edge("review", "render")
    g.add_edge("render", "critique")
    g.add_edge("critique", "decide")
    g.add_conditional_edges("decide", _after_decide, {"refine": "refine", "finalize": "finalize"})
    g.add_conditional_edges("refine", _after_refine, {"render": "render", "finalize": "finalize"})
    g.add_edge("finalize", END)
    return g


_lock = threading.Lock()
_compiled: CompiledStateGraph | None = None
_bound: dict[tuple[int, str], tuple[sqlite3.Connection, CompiledStateGraph]] = {}


def compiled() -> CompiledStateGraph:
    """The graph compiled once for this process (no checkpointer: see ``for_store``)."""
    global _compiled
    with _lock:
        if _compiled is None:
            _compiled = definition().compile()
        return _compiled


def for_store(store: Store) -> CompiledStateGraph:
    """The compiled graph bound to the checkpointer of ``store``'s database: one SQLite connection per database
    and process, shared by threads (``SqliteSaver`` serialises its cursor use with a lock)."""
    base = compiled()
    key = (os.getpid(), str(store.db_path))  # a forked child must not reuse its parent's connection
    with _lock:
        if key not in _bound:
            conn = sqlite3.connect(str(store.db_path), check_same_thread=False, timeout=30)
            conn.execute("PRAGMA busy_timeout=30000")
            saver = SqliteSaver(conn)
            saver.setup()
            _bound[key] = (conn, base.copy(update={"checkpointer": saver}))
        return _bound[key][1]


@atexit.register
def close_all() -> None:
    """Close every checkpointer connection this process opened (tests call it to release files)."""
    with _lock:
        for key, (conn, _) in list(_bound.items()):
            if key[0] == os.getpid():
                conn.close()
        _bound.clear()
