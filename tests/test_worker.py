"""The job worker: atomic claims, per-run exclusion, heartbeats, reclaiming a killed worker's job, several
worker processes on one database."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlmodel import select

from agent import worker as w
from store.db import Store
from store.schema import Job, NodeEvent
from tests.browser import seed
from tests.browser.seed import fake_backends_module  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _fakes(fake_backends_module):
    yield


def jobs(store: Store) -> list[Job]:
    with store.session() as s:
        return list(s.exec(select(Job).order_by(Job.id)).all())


def wait_until(predicate, timeout_s: float, every_s: float = 0.1) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every_s)
    return False


# ---- the queue ------------------------------------------------------------------------------------------------
def test_claims_are_exclusive_across_concurrent_connections(tmp_path):
    db = tmp_path / "q.db"
    store = Store(db)
    ids = [store.enqueue("dub", f"run{i}").id for i in range(60)]
    cfg = w.WorkerConfig(stale_s=60)
    got: dict[str, list[int]] = {}
    start = threading.Barrier(4)

    def claimer(name: str) -> None:
        own = Store(db)  # its own engine and connections, as a separate process would have
        start.wait()
        mine = got.setdefault(name, [])
        while (job := w.claim(own, name, cfg)) is not None:
            mine.append(job.id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    claimed = [j for lst in got.values() for j in lst]
    assert sorted(claimed) == ids  # every job once, none twice
    rows = jobs(store)
    assert {j.status for j in rows} == {"running"} and {j.attempts for j in rows} == {1}
    assert all(j.worker_id == name for name, lst in got.items() for j in rows if j.id in lst)


def test_jobs_of_one_run_wait_for_each_other(store):
    first, second, other = store.enqueue("dub", "a"), store.enqueue("regenerate", "a", branch=1), \
        store.enqueue("dub", "b")
    cfg = w.WorkerConfig()
    assert w.claim(store, "A", cfg).id == first.id
    assert w.claim(store, "B", cfg).id == other.id  # run a is busy, so B skips to run b
    assert w.claim(store, "C", cfg) is None
    w.finish(store, first.id, "A")
    assert w.claim(store, "C", cfg).id == second.id


def test_heartbeat_keeps_a_claim_and_a_stale_claim_is_taken_over(store):
    job = store.enqueue("dub", "r")
    cfg = w.WorkerConfig(stale_s=0.4)
    claimed = w.claim(store, "A", cfg)
    with w.Heartbeat(store, job.id, "A", every_s=0.05) as hb:
        time.sleep(0.8)  # twice the stale limit, but the heartbeat keeps it fresh
        assert w.claim(store, "B", cfg) is None
        assert not hb.lost
    beat = jobs(store)[0].heartbeat_at
    assert beat > claimed.heartbeat_at
    time.sleep(0.5)  # no heartbeat now: A is presumed dead
    taken = w.claim(store, "B", cfg)
    assert taken.id == job.id and taken.worker_id == "B" and taken.attempts == 2
    assert w.heartbeat(store, job.id, "A") is False  # A learns it lost the job
    w.finish(store, job.id, "A")  # a late finish from A changes nothing
    assert jobs(store)[0].status == "running"


def test_a_job_that_keeps_killing_workers_is_given_up(store, tmp_path):
    run = store.create_run(status="running")
    job = store.enqueue("dub", run.id)
    cfg = w.WorkerConfig(stale_s=0.1, max_attempts=2)
    for name in ("A", "B"):
        assert w.claim(store, name, cfg).id == job.id
        time.sleep(0.2)
    assert w.claim(store, "C", cfg) is None
    row = jobs(store)[0]
    assert row.status == "failed" and row.error.startswith("WorkerLost") and row.attempts == 2
    assert store.get_run(run.id).status == "failed"


# ---- running jobs in process --------------------------------------------------------------------------------------
def test_worker_runs_a_dub_job_and_records_failures(store, tmp_path):
    from agent import runs
    from agent.config import RunConfig

    clip = seed.make_clip(tmp_path)
    good = runs.create_dub_run(store, clip, seed.fake_cfg(rounds=2), status="queued")
    bad = runs.create_dub_run(store, clip, RunConfig(watcher="fake", renderer="broken", critic="fake",
                                                      refiner="fake"), status="queued")
    store.enqueue("dub", good)
    store.enqueue("dub", bad)
    store.enqueue("dub", "no-such-run")
    store.enqueue("transmogrify", good)
    worker = w.Worker(store, w.WorkerConfig(poll_s=0.05, heartbeat_s=0.1))
    assert worker.loop(drain=True) == 4
    by_run = {(j.run_id, j.kind): j for j in jobs(store)}
    assert by_run[(good, "dub")].status == "done" and by_run[(good, "dub")].error is None
    run = store.get_run(good)
    assert run.status == "done" and Path(run.output_path).is_file()
    assert Path(run.output_path).parent == store.home / "outputs"
    assert by_run[(bad, "dub")].status == "failed" and "ran out of patience" in by_run[(bad, "dub")].error
    assert store.get_run(bad).status == "failed"
    assert by_run[("no-such-run", "dub")].error.startswith("LookupError")
    assert "unknown job kind 'transmogrify'" in by_run[(good, "transmogrify")].error


def test_a_dub_job_for_a_run_waiting_for_review_does_nothing(store, tmp_path):
    run_id = seed.review_run(store, seed.make_clip(tmp_path))
    n_rounds = len(store.rounds(run_id))
    store.enqueue("dub", run_id)
    assert w.Worker(store).run_one().status == "done"
    assert store.get_run(run_id).status == "review" and len(store.rounds(run_id)) == n_rounds


# ---- real worker processes -----------------------------------------------------------------------------------
def _events(store: Store, run_id: str, node: str) -> list[NodeEvent]:
    return [e for e in store.node_events(run_id) if e.node == node]


def test_a_killed_workers_job_is_reclaimed_and_resumed_from_its_checkpoint(store, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from agent import runs

    run_id = runs.create_dub_run(store, seed.make_clip(tmp_path), seed.fake_cfg(rounds=2), status="queued")
    job = store.enqueue("dub", run_id)
    slow = subprocess.Popen(seed.worker_cmd(store.db_path, "--once", "--heartbeat", "0.2", "--stale", "1.5"),
                            cwd=ROOT, env={**os.environ, "FOLEYLOOP_FAKE_RENDER_DELAY": "3"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Kill it while it renders the second round: probe, watch and round 0 are checkpointed by then.
        assert wait_until(lambda: any(e.round_index == 1 for e in _events(store, run_id, "render")), 90)
        # Meanwhile the studio shows the work live: the claiming worker, its heartbeat and the current step.
        monkeypatch.setenv("FOLEYLOOP_DB", str(store.db_path))
        at = AppTest.from_file(str(ROOT / "ui" / "app.py"), default_timeout=60).run()
        at.query_params["run"] = run_id
        at.switch_page("views/run.py").run()
        shown = " ".join(str(e.value) for e in [*at.info, *at.caption, *at.markdown])
        assert f"Job {job.id} (dub) is running: worker " in shown and "Current step: render (round 1)" in shown
        slow.send_signal(signal.SIGKILL)
        slow.wait(10)
    finally:
        if slow.poll() is None:
            slow.kill()
    row = jobs(store)[0]
    assert row.status == "running" and row.attempts == 1
    assert w.claim(store, "early", w.WorkerConfig(stale_s=30)) is None  # not stale yet for a patient worker

    time.sleep(1.6)
    done = seed.run_worker(store.db_path, "--once", "--stale", "1.5", "--heartbeat", "0.2", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    row = jobs(store)[0]
    assert (row.id, row.status, row.attempts, row.error) == (job.id, "done", 2, None)
    run = store.get_run(run_id)
    assert run.status == "done" and run.stop_reason and Path(run.output_path).is_file()
    rounds = store.rounds(run_id)
    assert [r.index for r in rounds] == [0, 1] and all(r.score_overall is not None for r in rounds)
    # Resumed, not restarted: the steps finished before the kill ran once.
    assert len(_events(store, run_id, "probe")) == 1 and len(_events(store, run_id, "watch")) == 1
    assert len([e for e in _events(store, run_id, "render") if e.round_index == 0]) == 1


def test_several_worker_processes_share_one_queue(store, tmp_path):
    from agent import runs

    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    procs = [subprocess.Popen(seed.worker_cmd(store.db_path, "--poll", "0.1", "--heartbeat", "0.2"), cwd=ROOT,
                              env={**os.environ, "FOLEYLOOP_FAKE_RENDER_DELAY": "0.4"},
                              stdout=subprocess.DEVNULL, stderr=open(log, "wb")) for log in logs]
    try:
        assert wait_until(lambda: all(" on " in log.read_text() for log in logs if log.exists())
                          and all(log.exists() for log in logs), 90), "workers did not start"
        clip = seed.make_clip(tmp_path)
        run_ids = [runs.create_dub_run(store, clip, seed.fake_cfg(rounds=2), status="queued") for _ in range(6)]
        for r in run_ids:
            store.enqueue("dub", r)
        assert wait_until(lambda: all(j.status == "done" for j in jobs(store)), 120)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)  # finish the current job, then exit
        codes = [p.wait(30) for p in procs]
    assert codes == [0, 0, 0]
    rows = jobs(store)
    assert [j.attempts for j in rows] == [1] * 6  # nobody ran a job twice
    assert len({j.worker_id for j in rows}) >= 2, "the jobs were not shared"
    for r in run_ids:
        assert store.get_run(r).status == "done"
        assert [x.index for x in store.rounds(r)] == [0, 1]  # one watcher round, one refined round
    assert sum(int(log.read_text().rsplit("worker ran ", 1)[1].split()[0]) for log in logs) == 6


def test_cli_worker_takes_its_own_db_option(tmp_path, capsys):
    from agent.cli import main

    db = tmp_path / "cli.db"
    store = Store(db)
    store.enqueue("dub", "missing-run")
    assert main(["worker", "--once", "--db", str(db), "--poll", "0.1"]) == 0
    assert "worker ran 1 job(s)" in capsys.readouterr().err
    assert jobs(store)[0].status == "failed"
    assert main(["worker", "--once", "--db", str(db), "--heartbeat", "5", "--stale", "1"]) == 2  # bad options
