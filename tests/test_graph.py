"""Graph logic with fast fake backends: loop, best-so-far, review, fork, kill -9 resume, concurrency."""

import json
import os
import signal
import time

import pytest

from agent import runs
from agent.config import RunConfig
from contract.plan import Plan
from store.db import Store
from store.media import probe, read_audio
from tests.helpers import FAKE, cli_subprocess, tiny_clip

CFG = RunConfig(watcher="fake", renderer="fake", critic="fake", refiner="fake", rounds=3)


@pytest.fixture
def clip(tmp_path):
    return tiny_clip(tmp_path / "clip.mp4")


def test_loop_refines_until_pass_and_muxes(store, fake_backends, clip, tmp_path):
    out = tmp_path / "out.mp4"
    run_id, result = runs.dub(store, clip, CFG, out=out)
    rounds = store.rounds(run_id)
    assert [r.index for r in rounds] == [0, 1, 2]
    assert [r.author for r in rounds] == ["watcher", "refiner", "refiner"]
    assert rounds[1].parent_round_id == rounds[0].id
    run = store.get_run(run_id)
    assert run.status == "done" and run.stop_reason == "passed" and run.best_round_id == rounds[2].id
    assert rounds[0].model_id == "fake-watcher" and rounds[0].prompt_version == "fake-v1"
    info = probe(out)
    assert info.has_audio and info.audio_rate == 44100 and info.audio_channels == 2
    audio, sr = read_audio(out)
    assert audio.shape[1] / sr == pytest.approx(info.duration_s, abs=0.05)
    timings = run.timings()
    assert {"load", "wall", "node:render", "node:critique"} <= set(timings)
    nodes = [e.node for e in store.node_events(run_id)]
    assert nodes[:4] == ["probe", "watch", "render", "critique"] and nodes[-1] == "finalize"


def test_round_cap_and_no_improvement(store, fake_backends, clip, monkeypatch):
    monkeypatch.setenv("FOLEYLOOP_FAKE_BASE", "0.0")  # needs 3 refinements to pass
    run_id, _ = runs.dub(store, clip, CFG.model_copy(update={"rounds": 2}))
    assert store.get_run(run_id).stop_reason == "round_cap"
    assert len(store.rounds(run_id)) == 2

    from tests import fakes

    monkeypatch.setattr(fakes.FakeRefiner, "refine",
                        lambda self, plan, *a, **k: fakes.RefineResult(plan=plan.derive("refiner"), seed=9))
    run_id, _ = runs.dub(store, clip, CFG.model_copy(update={"rounds": 5}))
    run = store.get_run(run_id)
    rounds = store.rounds(run_id)
    assert run.stop_reason == "no_improvement" and len(rounds) == 2
    assert run.best_round_id == rounds[0].id  # the equal-scoring later round never replaces the best


def test_a_later_round_better_only_where_the_refine_did_not_aim_is_not_kept(store, fake_backends, clip, monkeypatch):
    """The refine says what it acted on; a rise elsewhere is the critic reacting to other takes, not the fix."""
    from tests import fakes

    def critique(self, plan, audio, video, info):  # each refine raises the level score only
        k = plan.caption.count("+")
        return fakes.Critique(scores={"semantic": 0.3, "temporal": 0.3, "aesthetic": min(1.0, 0.3 + 0.2 * k),
                                      "spatial": 0.3})

    def refine_aimed_at(dims):
        def refine(self, plan, critique, failing, round_index, seed, video=None, info=None):
            return fakes.RefineResult(plan=plan.derive("refiner", caption=plan.caption + " +"), seed=seed + 1,
                                      changes=["+"], aimed_at=dims)
        return refine

    monkeypatch.setattr(fakes.FakeCritic, "critique", critique)
    monkeypatch.setattr(fakes.FakeRefiner, "refine", refine_aimed_at(["temporal"]))
    run_id, _ = runs.dub(store, clip, CFG)
    run, rounds = store.get_run(run_id), store.rounds(run_id)
    assert run.stop_reason == "no_improvement" and len(rounds) == 2 and run.best_round_id == rounds[0].id
    why = json.loads(rounds[1].changes_json)[-1]  # the decision is recorded beside the refiner's changes
    assert why.startswith("loop: not kept against round 0: gain +0.000 on what the refine aimed at is within")
    assert "aesthetic +0.200 (not aimed at)" in why

    monkeypatch.setattr(fakes.FakeRefiner, "refine", refine_aimed_at(["aesthetic"]))
    run_id, _ = runs.dub(store, clip, CFG)
    run, rounds = store.get_run(run_id), store.rounds(run_id)
    assert run.stop_reason == "round_cap" and run.best_round_id == rounds[2].id


def test_review_pause_then_edit_resumes(store, fake_backends, clip):
    run_id, result = runs.dub(store, clip, CFG.model_copy(update={"review": True}))
    assert runs.run_status(result) == "review" and store.get_run(run_id).status == "review"
    payload = runs.pending_review(store, run_id)
    plan = Plan.from_json(payload["plan"])
    edited = plan.model_copy(update={"caption": "edited + +"})
    runs.resume(store, run_id, {"action": "edit", "plan": edited.to_json()})
    rounds = store.rounds(run_id)
    assert rounds[0].status == "replaced" and rounds[0].author == "watcher"
    assert rounds[1].author == "human" and Plan.from_json(rounds[1].plan_json).caption == "edited + +"
    assert Plan.from_json(rounds[1].plan_json).provenance.author == "human"
    assert store.get_run(run_id).status == "done"


def test_fork_from_edited_plan_keeps_old_rounds(store, fake_backends, clip, tmp_path):
    run_id, _ = runs.dub(store, clip, CFG)
    before = [(r.id, r.plan_json, r.critique_json, r.audio_artifact_id) for r in store.rounds(run_id)]
    first = store.rounds(run_id)[0]
    edited = Plan.from_json(first.plan_json).model_copy(update={"semantic": "glass breaking"})
    branch, _ = runs.regenerate(store, run_id, first.id, edited, out=tmp_path / "fork.mp4")
    assert branch == 1
    after = store.rounds(run_id)
    assert [(r.id, r.plan_json, r.critique_json, r.audio_artifact_id) for r in after[:len(before)]] == before
    fork_rounds = [r for r in after if r.branch == 1]
    assert fork_rounds[0].parent_round_id == first.id and fork_rounds[0].author == "human"
    assert Plan.from_json(fork_rounds[0].plan_json).semantic == "glass breaking"
    assert all(r.audio_artifact_id for r in fork_rounds)
    branches = store.get_run(run_id).branches()
    assert set(branches) == {"0", "1"} and (tmp_path / "fork.mp4").exists()


def test_resume_after_kill_9_does_not_recompute_finished_rounds(tmp_path, fake_backends):
    db = tmp_path / "fl.db"
    clip = tiny_clip(tmp_path / "clip.mp4")
    proc = cli_subprocess(["--db", str(db), "dub", str(clip), "--out", str(tmp_path / "o.mp4"), "--rounds", "3",
                           *FAKE], env={"FOLEYLOOP_FAKE_RENDER_DELAY": "1.5", "FOLEYLOOP_FAKE_BASE": "0.0"})
    store = Store(db)
    deadline = time.time() + 60
    killed_at = None
    while time.time() < deadline and killed_at is None:
        listed = store.list_runs()
        if listed:
            evs = [e for e in store.node_events(listed[0].id) if e.node == "render" and e.round_index == 1]
            if evs:  # round 0 is finished; round 1 is rendering: kill now
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = time.time()
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert killed_at is not None, proc.stderr.read()
    run = store.list_runs()[0]
    assert run.status == "running"
    done_before = {r.id: (r.plan_json, r.critique_json, r.audio_artifact_id)
                   for r in store.rounds(run.id) if r.status == "scored"}
    assert len(done_before) == 1
    renders_before = len([e for e in store.node_events(run.id) if e.node == "render" and e.round_index == 0])
    cut = [e.id for e in store.node_events(run.id) if e.status == "started"]
    assert cut  # the render the kill cut short

    os.environ["FOLEYLOOP_FAKE_BASE"] = "0.0"
    try:
        runs.resume(store, run.id)
    finally:
        del os.environ["FOLEYLOOP_FAKE_BASE"]
    rounds = store.rounds(run.id)
    assert [r.index for r in rounds] == [0, 1, 2]  # no duplicated rounds
    for rid, row in done_before.items():
        r = store.get_round(rid)
        assert (r.plan_json, r.critique_json, r.audio_artifact_id) == row
    assert len([e for e in store.node_events(run.id) if e.node == "render" and e.round_index == 0]) == renders_before
    assert store.get_run(run.id).status == "done"
    statuses = {e.id: e.status for e in store.node_events(run.id)}
    assert "started" not in statuses.values() and all(statuses[i] == "interrupted" for i in cut)


def test_two_concurrent_dubs_into_one_db(tmp_path):
    db = tmp_path / "fl.db"
    Store(db)  # create schema first, as a CLI would on first use
    clips = [tiny_clip(tmp_path / f"c{i}.mp4", seed=i) for i in range(2)]
    procs = [cli_subprocess(["--db", str(db), "dub", str(c), "--out", str(tmp_path / f"o{i}.mp4"), *FAKE],
                            env={"FOLEYLOOP_FAKE_RENDER_DELAY": "0.2"}) for i, c in enumerate(clips)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    store = Store(db)
    listed = store.list_runs()
    assert len(listed) == 2 and all(r.status == "done" for r in listed)
    for r in listed:
        rounds = store.rounds(r.id)
        assert [x.index for x in rounds] == [0, 1, 2]
        assert all(store.artifact_path(x.audio_artifact_id).exists() for x in rounds)
    assert {json.loads(r.video_info_json)["path"] for r in listed} == {str(c.resolve()) for c in clips}


def test_malformed_vlm_output_fails_the_run_and_keeps_raw_text(store, fake_backends, clip, monkeypatch, tmp_path,
                                                                capsys):
    from agent.cli import main
    from contract.errors import BackendError
    from tests import fakes

    def broken(self, video, info):
        raise BackendError("watcher reply is not a valid plan after 3 attempts", raw_output="{not json")

    monkeypatch.setattr(fakes.FakeWatcher, "watch", broken)
    code = main(["--db", str(store.db_path), "dub", str(clip), "--out", str(tmp_path / "o.mp4"),
                 "--watcher", "fake", "--renderer", "fake", "--critic", "fake", "--refiner", "fake"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("error: watcher reply is not a valid plan")
    assert not any("Traceback" in line for line in err)
    run = store.list_runs()[0]
    assert run.status == "failed" and "not a valid plan" in run.error
    (rnd,) = store.rounds(run.id)
    assert rnd.status == "failed" and rnd.raw_output == "{not json"


def test_refiner_failure_keeps_best_round_and_finishes(store, fake_backends, clip, monkeypatch):
    from contract.errors import BackendError
    from tests import fakes

    def broken(self, plan, *a, **k):
        raise BackendError("refiner timed out", raw_output="partial")

    monkeypatch.setattr(fakes.FakeRefiner, "refine", broken)
    run_id, _ = runs.dub(store, clip, CFG)
    run = store.get_run(run_id)
    rounds = store.rounds(run_id)
    assert run.status == "done" and run.stop_reason.startswith("refiner_failed")
    assert run.best_round_id == rounds[0].id and rounds[1].status == "failed" and rounds[1].raw_output == "partial"


def test_resume_starts_a_fork_that_never_ran(store, fake_backends, clip):
    run_id, _ = runs.dub(store, clip, CFG)
    first = store.rounds(run_id)[0]
    branch, _ = runs.fork(store, run_id, first.id, Plan.from_json(first.plan_json))  # crash before it runs
    runs.resume(store, run_id)
    assert str(branch) in store.get_run(run_id).branches()
    assert all(r.status == "scored" for r in store.rounds(run_id, branch=branch))
