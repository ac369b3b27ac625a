"""The runs service (agent.runs) with the fast fake backends: forks that fail or score worse never touch the run,
the graph is compiled once per process with one checkpointer per database, the input is probed once, and node
progress comes from LangGraph's task stream."""

from __future__ import annotations

import pytest

from agent import graph, runs
from agent.config import RunConfig
from contract.plan import Plan, PlanInvalid
from tests import fakes
from tests.helpers import tiny_clip

CFG = RunConfig(watcher="fake", renderer="fake", critic="fake", refiner="fake", rounds=3)
RUN_FIELDS = ("status", "error", "best_round_id", "best_overall", "output_path", "output_artifact_id", "stop_reason")


@pytest.fixture
def clip(tmp_path):
    return tiny_clip(tmp_path / "clip.mp4", seconds=3)


def _fields(store, run_id: str) -> dict:
    run = store.get_run(run_id)
    return {k: getattr(run, k) for k in RUN_FIELDS}


HEAVY = "a plan this renderer cannot hold in memory"


def _heavy_plan_fails(monkeypatch):
    """A renderer that runs out of memory on one plan (an absurd plan, an hour long on a 3-s clip, is refused
    before it reaches a renderer now: ``runs.check_plan``)."""
    real = fakes.FakeRenderer.render

    def render(self, plan, *a, **k):
        if plan.caption == HEAVY:
            raise MemoryError(f"cannot allocate the audio of {plan.duration_s:.0f} s")
        return real(self, plan, *a, **k)

    monkeypatch.setattr(fakes.FakeRenderer, "render", render)


def test_a_failed_fork_leaves_the_finished_run_untouched(store, fake_backends, clip, tmp_path, monkeypatch):
    _heavy_plan_fails(monkeypatch)
    run_id, _ = runs.dub(store, clip, CFG, out=tmp_path / "out.mp4")
    before = _fields(store, run_id)
    assert before["status"] == "done" and before["error"] is None
    first = store.rounds(run_id)[0]
    with pytest.raises(PlanInvalid, match="duration_s"):  # an hour on a 3-s clip never gets as far as a fork
        runs.regenerate(store, run_id, first.id, Plan.from_json(first.plan_json).model_copy(
            update={"duration_s": 3600.0}), out=tmp_path / "fork.mp4")
    assert _fields(store, run_id) == before and store.rounds(run_id, branch=1) == []
    huge = Plan.from_json(first.plan_json).model_copy(update={"caption": HEAVY})

    with pytest.raises(MemoryError):
        runs.regenerate(store, run_id, first.id, huge, out=tmp_path / "fork.mp4")
    assert _fields(store, run_id) == before  # status, error, best round, output: all as they were
    rec = store.get_run(run_id).branches()["1"]
    assert rec["status"] == "failed" and "MemoryError" in rec["error"]
    (fork_round,) = store.rounds(run_id, branch=1)
    assert fork_round.status == "failed" and "MemoryError" in fork_round.error
    assert not (tmp_path / "fork.mp4").exists()

    # resume does not retry the failed fork unless asked, and the run stays as it was
    renders = len([e for e in store.node_events(run_id) if e.node == "render"])
    assert runs.open_branches(store, run_id) == [] and runs.failed_branches(store, run_id) == [1]
    runs.resume(store, run_id)
    assert len([e for e in store.node_events(run_id) if e.node == "render"]) == renders
    assert _fields(store, run_id) == before

    # a later successful fork: the run is done, with no stale error
    ok = Plan.from_json(first.plan_json).model_copy(update={"caption": "thuds + + + +"})
    branch, _ = runs.regenerate(store, run_id, first.id, ok, out=tmp_path / "fork2.mp4")
    run = store.get_run(run_id)
    assert branch == 2 and run.status == "done" and run.error is None


def test_resume_retry_failed_reruns_only_the_failed_fork(store, fake_backends, clip, tmp_path, monkeypatch):
    calls = {"fail": True}
    real = fakes.FakeRenderer.render

    def flaky(self, plan, *a, **k):
        if plan.caption == "flaky" and calls["fail"]:
            raise RuntimeError("the GPU fell over")
        return real(self, plan, *a, **k)

    monkeypatch.setattr(fakes.FakeRenderer, "render", flaky)
    run_id, _ = runs.dub(store, clip, CFG)
    first = store.rounds(run_id)[0]
    with pytest.raises(RuntimeError):
        runs.regenerate(store, run_id, first.id, Plan.from_json(first.plan_json).model_copy(
            update={"caption": "flaky"}), rounds=1)
    calls["fail"] = False
    runs.resume(store, run_id)  # not asked: nothing happens
    assert store.get_run(run_id).branches()["1"]["status"] == "failed"
    runs.resume(store, run_id, retry_failed=True)
    rec = store.get_run(run_id).branches()["1"]
    assert rec["status"] == "done" and "error" not in rec
    (fork_round,) = store.rounds(run_id, branch=1)
    assert fork_round.status == "scored" and fork_round.error is None and fork_round.audio_artifact_id


def test_a_worse_fork_never_replaces_the_runs_best(store, fake_backends, clip, tmp_path):
    run_id, _ = runs.dub(store, clip, CFG, out=tmp_path / "out.mp4")
    before = _fields(store, run_id)
    assert before["best_overall"] == pytest.approx(0.7)  # "thuds + +" passed in round 2
    first = store.rounds(run_id)[0]
    worse = Plan.from_json(first.plan_json).model_copy(update={"caption": "quiet thuds"})  # scores 0.3
    branch, _ = runs.regenerate(store, run_id, first.id, worse, out=tmp_path / "worse.mp4", rounds=1)
    run = store.get_run(run_id)
    assert _fields(store, run_id) == before
    assert run.branches()[str(branch)]["best_overall"] == pytest.approx(0.3)
    assert run.branches()[str(branch)]["output_path"] == str(tmp_path / "worse.mp4")
    assert runs.best_round(store, run).id == before["best_round_id"]

    better = Plan.from_json(first.plan_json).model_copy(update={"caption": "thuds + + + +"})  # scores 1.0
    branch, _ = runs.regenerate(store, run_id, first.id, better, out=tmp_path / "better.mp4", rounds=1)
    run = store.get_run(run_id)
    (fork_round,) = store.rounds(run_id, branch=branch)
    assert run.best_round_id == fork_round.id and run.best_overall == pytest.approx(1.0)
    assert run.output_path == str(tmp_path / "better.mp4") and run.status == "done"


def test_graph_compiled_once_and_one_checkpointer_per_database(store, fake_backends, clip, monkeypatch):
    from langgraph.graph import StateGraph

    graph.compiled()  # whatever earlier tests did, the process's one compile has happened
    compiles, connects = [], []
    real_compile, real_connect = StateGraph.compile, graph.sqlite3.connect
    monkeypatch.setattr(StateGraph, "compile", lambda self, *a, **k: compiles.append(1) or real_compile(self, *a, **k))
    monkeypatch.setattr(graph.sqlite3, "connect", lambda *a, **k: connects.append(a[0]) or real_connect(*a, **k))
    plain, _ = runs.dub(store, clip, CFG.model_copy(update={"rounds": 2}))
    reviewed, result = runs.dub(store, clip, CFG.model_copy(update={"review": True, "rounds": 2}))
    # routing reads the run's config from the context: one compiled graph serves both
    assert runs.run_status(result) == "review" and runs.pending_review(store, reviewed) is not None
    runs.resume(store, reviewed)
    first = store.rounds(plain)[0]
    runs.regenerate(store, plain, first.id, Plan.from_json(first.plan_json), rounds=1)
    assert store.get_run(plain).status == "done" and store.get_run(reviewed).status == "done"
    assert compiles == [] and len(connects) <= 1  # ≤ 1: this test's database may already have its connection


def test_the_input_is_probed_once_per_dub(store, fake_backends, clip, monkeypatch):
    from store import media

    probes = []
    real = media.probe
    monkeypatch.setattr(media, "probe", lambda *a, **k: probes.append(a[0]) or real(*a, **k))
    run_id, _ = runs.dub(store, clip, CFG.model_copy(update={"rounds": 1}))  # no --out: nothing muxed
    assert len(probes) == 1
    assert [e.node for e in store.node_events(run_id)][0] == "probe"  # the node ran, and reused the row's probe
    assert store.get_run(run_id).duration_s == pytest.approx(3.0, abs=0.05)


def test_node_progress_comes_from_the_task_stream(store, fake_backends, clip):
    seen = []
    run_id, result = runs.dub(store, clip, CFG.model_copy(update={"review": True, "rounds": 1}), on_event=seen.append)
    assert runs.run_status(result) == "review"
    assert [(e.node, e.status) for e in seen] == [("probe", "started"), ("probe", "done"), ("watch", "started"),
                                                  ("watch", "done"), ("review", "started"), ("review", "paused")]
    events = store.node_events(run_id)
    assert [(e.node, e.status) for e in events] == [(e.node, e.status) for e in seen if e.status != "started"]
    assert all(e.seconds is not None for e in events)
    seen.clear()
    runs.resume(store, run_id, on_event=seen.append)
    finished = [(e.node, e.round_index) for e in seen if e.status == "done"]
    assert finished == [("review", 0), ("render", 0), ("critique", 0), ("decide", 0), ("finalize", 0)]
    timings = store.get_run(run_id).timings()
    assert {"node:render", "node:critique", "node:finalize", "wall", "load"} <= set(timings)


def test_a_node_error_is_recorded_on_its_event(store, fake_backends, clip, monkeypatch):
    monkeypatch.setattr(fakes.FakeCritic, "critique", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        runs.dub(store, clip, CFG)
    (run,) = store.list_runs()
    ev = [e for e in store.node_events(run.id) if e.node == "critique"][-1]
    assert ev.status == "failed" and "ZeroDivisionError" in ev.detail
    assert run.status == "failed" and "ZeroDivisionError" in run.error


def test_outputs_are_published_atomically_and_never_over_a_file(store, fake_backends, clip, tmp_path):
    from agent.outputs import check_out
    from contract.errors import UserError

    out = tmp_path / "o" / "x.mp4"
    runs.dub(store, clip, CFG.model_copy(update={"rounds": 1}), out=out)
    assert out.is_file() and sorted(p.name for p in out.parent.iterdir()) == ["x.mp4"]  # no temporary left
    with pytest.raises(UserError, match="already exists"):
        check_out(out)
    keep = tmp_path / "keep.mp4"
    keep.write_bytes(b"user data")
    link = tmp_path / "link.mp4"
    link.symlink_to(keep)
    runs.dub(store, clip, CFG.model_copy(update={"rounds": 1}), out=link, force=True)
    assert keep.read_bytes() == b"user data" and not link.is_symlink() and link.stat().st_size > 1000


def test_finalize_killed_after_publishing_finishes_on_resume(store, fake_backends, clip, tmp_path):
    """A run killed between publishing its output and recording it may replace that file on resume (it is its
    own); a file that appeared in the meantime without that mark is never replaced."""
    from agent import nodes
    from contract.errors import UserError

    out = tmp_path / "o.wav"
    run_id, _ = runs.dub(store, clip, CFG.model_copy(update={"rounds": 1}))
    tmp = tmp_path / "staged.wav"
    state = {"run_id": run_id, "branch": 0, "out_force": False}
    out.write_bytes(b"someone else's file")
    tmp.write_bytes(b"ours")
    with pytest.raises(UserError, match="appeared while run"):
        nodes._publish(store, state, tmp, out)
    assert out.read_bytes() == b"someone else's file"
    nodes.update_branch(store, run_id, 0, publishing=str(out))  # as a killed finalize leaves it
    nodes._publish(store, state, tmp, out)
    assert out.read_bytes() == b"ours"
    assert runs.branch_status({"publishing": str(out)}) is None  # not finished: resume still has work there


def test_one_checkpointer_serves_several_threads(store, fake_backends, clip):
    from concurrent.futures import ThreadPoolExecutor

    run_id, _ = runs.dub(store, clip, CFG.model_copy(update={"review": True, "rounds": 1}))

    def read(_):
        return [runs.pending_review(store, run_id)["round_id"] for _ in range(10)] + runs.open_branches(store, run_id)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(read, range(8)))
    (rnd,) = store.rounds(run_id)
    assert all(a == [rnd.id] * 10 + [0] for a in answers)


def test_edit_source_is_the_runs_best_track_across_branches(store, fake_backends, clip):
    run_id, _ = runs.dub(store, clip, CFG)
    first = store.rounds(run_id)[0]
    best_before = store.get_run(run_id).best_round_id
    runs.regenerate(store, run_id, first.id, Plan.from_json(first.plan_json).model_copy(
        update={"caption": "thuds + + + +"}), rounds=1)  # scores 1.0, above branch 0's 0.7
    (fork_round,) = store.rounds(run_id, branch=1)
    src = runs.edit_source(store, run_id[:6])
    assert fork_round.id != best_before and src.round.id == fork_round.id and src.run.id == run_id
    assert src.audio_path == store.artifact_path(fork_round.audio_artifact_id) and src.video == clip.resolve()
