"""Issue #11 end to end through the CLI (``agent.cli.main``) and the runs service: plans are checked at every door
(the length against the video or the text cap), stored plans are read with ``Plan.from_stored``, store problems
are exit 2 before any work, credentials reach neither stderr nor the database, a full disk fails the run cleanly,
and missing weights record nothing."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent import runs
from agent.cli import main
from agent.config import RunConfig
from contract.plan import Plan, PlanInvalid
from store.db import Store
from tests import fakes
from tests.helpers import FAKE, ROOT, tiny_clip
from tests.test_openai_hardening import raw  # noqa: F401  (a scripted socket server on 127.0.0.1)

CFG = RunConfig(watcher="fake", renderer="fake", critic="fake", refiner="fake", rounds=1)
SECRET = "s3cr3tPW"


@pytest.fixture
def clip(tmp_path):
    return tiny_clip(tmp_path / "in.mp4", seconds=4)


@pytest.fixture
def done(tmp_path, clip, fake_backends):
    """A finished 4-s dub (one round) in its own database."""
    db = tmp_path / "fl.db"
    store = Store(db)
    run_id, _ = runs.dub(store, clip, CFG, out=tmp_path / "out.mp4")
    return store, run_id


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    return err[-1]


def snapshot(db: Path) -> dict:
    con = sqlite3.connect(db)
    try:
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in ("run", "round", "artifact", "job")}
    finally:
        con.close()


def plan_file(path: Path, plan: Plan | dict, bom: bool = False) -> Path:
    text = plan.to_json() if isinstance(plan, Plan) else json.dumps(plan)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def first_plan(store, run_id) -> Plan:
    return Plan.from_stored(store.rounds(run_id)[0].plan_json)


# ---- item 2: a plan from a user must fit the video (or the text cap) ------------------------------------------------
def test_regenerate_with_an_hour_long_plan_on_a_4_s_clip_is_exit_2_and_records_nothing(done, tmp_path, capsys):
    store, run_id = done
    huge = plan_file(tmp_path / "p.json", first_plan(store, run_id).model_copy(update={"duration_s": 3600.0}))
    before = snapshot(store.db_path)
    code = main(["--db", str(store.db_path), "regenerate", run_id, "--round", "0", "--plan", str(huge),
                 "--out", str(tmp_path / "fork.mp4")])
    line = one_error_line(capsys)
    assert code == 2 and "duration_s" in line and "3600" in line and str(huge) in line
    assert snapshot(store.db_path) == before and not (tmp_path / "fork.mp4").exists()


@pytest.mark.parametrize("case, code, needle", [
    ("bom", 0, None),  # a UTF-8 BOM (Windows editors) is fine
    ("within", 0, None),  # 4.4 s on a 4-s clip: inside ±0.5 s
    ("true_as_time", 2, "start_s"),  # `true` is not a time
    ("too_short", 2, "duration_s"),
    ("nan", 2, "NaN"),
    ("not_json", 2, "invalid JSON"),
    ("missing", 2, "cannot read the plan file"),
])
def test_regenerate_plan_file_doors(case, code, needle, done, tmp_path, capsys):
    store, run_id = done
    data = json.loads(first_plan(store, run_id).to_json())
    path = tmp_path / f"{case}.json"
    if case == "bom":
        plan_file(path, data, bom=True)
    elif case == "within":
        plan_file(path, {**data, "duration_s": 4.4})
    elif case == "true_as_time":
        plan_file(path, {**data, "events": [{"label": "x", "start_s": True, "end_s": 1.0}]})
    elif case == "too_short":
        plan_file(path, {**data, "duration_s": 1.0, "events": []})
    elif case == "nan":
        path.write_text(json.dumps(data).replace('"duration_s": 4.0', '"duration_s": NaN'))
    elif case == "not_json":
        path.write_text("{caption: thuds")
    before = snapshot(store.db_path)
    got = main(["--db", str(store.db_path), "regenerate", run_id, "--round", "0", "--plan", str(path),
                "--out", str(tmp_path / f"{case}.mp4")])
    assert got == code, capsys.readouterr().err
    if code == 2:
        assert needle in one_error_line(capsys) and snapshot(store.db_path) == before
    else:
        assert store.get_run(run_id).branches()["1"]["status"] == "done"


def test_resume_answer_plan_must_fit_the_video(tmp_path, clip, fake_backends, capsys):
    store = Store(tmp_path / "fl.db")
    run_id, _ = runs.dub(store, clip, CFG.model_copy(update={"review": True}))
    huge = plan_file(tmp_path / "p.json", first_plan(store, run_id).model_copy(update={"duration_s": 3600.0}))
    before = snapshot(store.db_path)
    assert main(["--db", str(store.db_path), "resume", run_id, "--plan", str(huge)]) == 2
    assert "duration_s" in one_error_line(capsys)
    assert snapshot(store.db_path) == before and runs.pending_review(store, run_id) is not None


def test_the_runs_service_checks_plans_built_in_code(done, tmp_path, fake_backends):
    """The studio and the worker call the service, not the CLI: it refuses a plan that does not fit before it
    records anything (a ``model_copy`` skips pydantic's validation, so the service re-checks every bound)."""
    store, run_id = done
    first = store.rounds(run_id)[0]
    plan = first_plan(store, run_id)
    before = snapshot(store.db_path)
    for bad in (plan.model_copy(update={"duration_s": 3600.0}), plan.model_copy(update={"duration_s": 1.0}),
                plan.model_copy(update={"semantic": "x" * 50_000})):
        with pytest.raises(PlanInvalid):
            runs.fork(store, run_id, first.id, bad)
        with pytest.raises(PlanInvalid):
            runs.regenerate(store, run_id, first.id, bad, out=tmp_path / "f.mp4")
    with pytest.raises(PlanInvalid, match="text-to-audio"):
        runs.text_to_audio(store, runs.plan_from_prompt("rain", 61.0), CFG, tmp_path / "r.wav")
    assert snapshot(store.db_path) == before

    review_id, _ = runs.dub(store, tiny_clip(tmp_path / "r.mp4", seconds=4), CFG.model_copy(update={"review": True}))
    before = snapshot(store.db_path)
    answer = {"action": "edit", "plan": first_plan(store, review_id).model_copy(
        update={"duration_s": 3600.0}).to_json()}
    with pytest.raises(PlanInvalid, match="duration_s"):
        runs.resume(store, review_id, answer)
    assert snapshot(store.db_path) == before and store.get_run(review_id).status == "review"


def test_a_worker_refuses_an_oversized_review_answer_and_keeps_the_run_paused(tmp_path, clip, fake_backends):
    from agent import worker

    store = Store(tmp_path / "fl.db")
    run_id, _ = runs.dub(store, clip, CFG.model_copy(update={"review": True}))
    bad = first_plan(store, run_id).model_copy(update={"duration_s": 3600.0}).to_json()
    store.enqueue("resume", run_id, answer={"action": "edit", "plan": bad})
    job = worker.Worker(store, worker.WorkerConfig(poll_s=0.05, heartbeat_s=0.1)).run_one()
    assert job.status == "failed" and job.error.startswith("PlanInvalid") and "duration_s" in job.error
    assert store.get_run(run_id).status == "review" and runs.pending_review(store, run_id) is not None
    assert len(store.rounds(run_id)) == 1


def test_text_duration_uses_the_text_cap(tmp_path, fake_backends, capsys):
    from contract.plan import MAX_TEXT_DURATION_S

    db = tmp_path / "fl.db"
    for bad in (MAX_TEXT_DURATION_S + 1, 3600.0, 1e9, float("inf")):
        assert main(["--db", str(db), "text", "rain", "--duration", str(bad), "--renderer", "fake", "--critic",
                     "fake", "--refiner", "fake", "--out", str(tmp_path / "r.wav")]) == 2
        line = one_error_line(capsys)
        assert "--duration" in line and f"{MAX_TEXT_DURATION_S:g} s" in line, line
    assert not db.exists() or Store(db).list_runs() == []
    assert not (tmp_path / "r.wav").exists()


def test_edit_plan_must_fit_the_audio(tmp_path, capsys):
    import soundfile as sf

    tone = tmp_path / "tone.wav"
    sf.write(tone, np.zeros((int(1.5 * 22050), 1)), 22050)
    plan = plan_file(tmp_path / "p.json", Plan(caption="birds", duration_s=5.0))
    assert main(["--db", str(tmp_path / "fl.db"), "edit", str(tone), "--plan", str(plan)]) == 2
    line = one_error_line(capsys)
    assert "duration_s" in line and "1.50 s" in line
    assert Store(tmp_path / "fl.db").list_runs() == []


# ---- stored plans: types only, and an unreadable row is one line ----------------------------------------------------
def test_stored_plans_are_read_without_the_size_bounds_and_unreadable_ones_are_exit_2(done, tmp_path, capsys):
    store, run_id = done
    rnd = store.rounds(run_id)[0]
    old = json.loads(rnd.plan_json)
    old["semantic"] = "s" * 5000  # over today's 2000-character bound: written before the bounds existed
    with store.session() as s:  # as an older foleyloop wrote it (the Store has no API to rewrite a plan)
        s.execute(__import__("sqlalchemy").text("UPDATE round SET plan_json=:p WHERE id=:i"),
                  {"p": json.dumps(old), "i": rnd.id})
        s.commit()
    assert main(["--db", str(store.db_path), "plan", run_id]) == 0
    assert json.loads(capsys.readouterr().out)["semantic"] == "s" * 5000
    assert main(["--db", str(store.db_path), "show", run_id]) == 0
    assert "s" * 5000 in capsys.readouterr().out.replace("\n", "").replace(" ", "")

    broken = store.create_run(id="brokenplan", video_path=str(tmp_path / "in.mp4"), status="done", duration_s=4.0)
    store.add_round(run_id=broken.id, plan_json='{"duration_s": null}', status="scored", score_overall=0.5)
    store.update_run(broken.id, best_round_id=store.rounds(broken.id)[0].id)
    ok = plan_file(tmp_path / "ok.json", first_plan(store, run_id))
    before = snapshot(store.db_path)
    for argv in (["plan", broken.id], ["show", broken.id],
                 ["regenerate", broken.id, "--round", "0", "--plan", str(ok), "--out", str(tmp_path / "b.mp4")]):
        assert main(["--db", str(store.db_path), *argv]) == 2, argv
        line = one_error_line(capsys)
        assert "duration_s" in line and "plan" in line, (argv, line)
    assert snapshot(store.db_path) == before


# ---- item 6: store problems are exit 2, before any work ---------------------------------------------------------------
def _deny_writes(monkeypatch, *paths: Path) -> None:
    """What a read-only file or folder looks like to the Store (tests run as root, which ignores chmod)."""
    real = os.access
    denied = {Path(p) for p in paths}
    monkeypatch.setattr(os, "access", lambda p, mode: False if (mode & os.W_OK and Path(p) in denied)
                        else real(p, mode))


def test_a_read_only_database_is_listable_and_every_writing_command_refuses_first(done, tmp_path, clip, capsys,
                                                                                  monkeypatch):
    from store import media

    store, run_id = done
    db = store.db_path
    plan = plan_file(tmp_path / "p.json", first_plan(store, run_id))
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a.mp4").write_bytes(clip.read_bytes())
    _deny_writes(monkeypatch, db)
    probes = []
    real_probe = media.probe
    monkeypatch.setattr(media, "probe", lambda *a, **k: probes.append(a) or real_probe(*a, **k))
    before = db.read_bytes()
    capsys.readouterr()
    assert main(["--db", str(db), "runs"]) == 0 and run_id in capsys.readouterr().out
    assert main(["--db", str(db), "show", run_id[:5]]) == 0 and f"run {run_id}" in capsys.readouterr().out
    assert main(["--db", str(db), "plan", run_id]) == 0 and json.loads(capsys.readouterr().out)["duration_s"]
    for argv in (["dub", str(clip), "--out", str(tmp_path / "o2.mp4"), *FAKE],
                 ["batch", str(tmp_path / "videos"), "--out-dir", str(tmp_path / "dubbed"), *FAKE],
                 ["resume", run_id],
                 ["regenerate", run_id, "--round", "0", "--plan", str(plan), "--out", str(tmp_path / "f.mp4")],
                 ["text", "rain", "--renderer", "fake", "--critic", "fake", "--refiner", "fake",
                  "--out", str(tmp_path / "r.wav")],
                 ["edit", run_id, "--prompt", "x", "--out", str(tmp_path / "e.wav")],
                 ["worker", "--once"]):
        assert main(["--db", str(db), *argv]) == 2, argv
        line = one_error_line(capsys)
        assert "read-only" in line and str(db) in line, (argv, line)
    assert probes == [] and db.read_bytes() == before
    assert not any((tmp_path / n).exists() for n in ("o2.mp4", "f.mp4", "r.wav", "e.wav", "dubbed"))


def test_unusable_databases_and_homes_are_exit_2(tmp_path, capsys, monkeypatch):
    notes = tmp_path / "notes.db"
    notes.write_text("my notes, not a database\n" * 100)
    assert main(["--db", str(notes), "runs"]) == 2
    line = one_error_line(capsys)
    assert "not a foleyloop database" in line and str(notes) in line
    assert notes.read_text().startswith("my notes")

    for special in ("/dev/null", str(tmp_path / "fifo")):
        if special.endswith("fifo"):
            os.mkfifo(special)
        assert main(["--db", special, "runs"]) == 2
        assert one_error_line(capsys) == f"error: --db {special} is not a regular file"

    home_file = tmp_path / "home-file"
    home_file.write_text("x")
    monkeypatch.setenv("FOLEYLOOP_HOME", str(home_file))
    assert main(["runs"]) == 2
    line = one_error_line(capsys)
    assert "is a file" in line and str(home_file) in line


def test_unwritable_home_is_exit_2(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("FOLEYLOOP_HOME", str(home))
    _deny_writes(monkeypatch, home)
    assert main(["runs"]) == 2
    line = one_error_line(capsys)
    assert str(home) in line and "not writable" in line
    assert not (home / "foleyloop.db").exists()


@pytest.mark.parametrize("run_id", ["a" * 100_000, "%", "_", "''", "'", "*", "\udcff\udcfe"])
def test_odd_run_ids_are_a_short_no_run_error(run_id, done, capsys):
    store, _ = done
    for argv in (["show", run_id], ["plan", run_id], ["resume", run_id]):
        assert main(["--db", str(store.db_path), *argv]) == 2
        line = one_error_line(capsys)
        assert line.startswith("error: no run") and len(line) < 64 * 4 + 200, (argv, len(line))


@pytest.mark.parametrize("argv", [
    ["dub", "{long}.mp4", *FAKE], ["edit", "{long}", "--prompt", "x"], ["check-oracle", "{long}.pt"],
    ["convert", "{long}.ckpt", "{tmp}/x.safetensors"], ["batch", "{long}", "--out-dir", "{tmp}/o"],
    ["text", "rain", "--out", "{long}.wav"], ["--db", "{long}.db", "runs"],
    ["regenerate", "{run}", "--round", "0", "--plan", "{long}.json"],
])
def test_a_100_kb_argument_is_a_short_exit_2(argv, done, tmp_path, capsys):
    """A path or id of 100 KB: exit 2 with a line that quotes at most a little of it (not an 'internal error'
    that echoes it all)."""
    store, run_id = done
    long = "a" * 100_000
    before = snapshot(store.db_path)
    args = [a.format(long=long, tmp=tmp_path, run=run_id) for a in argv]
    assert main(["--db", str(store.db_path), *args] if args[0] != "--db" else args) == 2
    line = one_error_line(capsys)
    assert len(line) < 400, line[:500]
    assert snapshot(store.db_path) == before


def test_concurrent_first_use_through_the_cli(tmp_path):
    db = tmp_path / "fresh" / "fl.db"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "agent.cli", "--db", str(db), "runs", "--json"], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in results]
    assert all(json.loads(out) == [] for out, _ in results)


# ---- item 5: credentials never in stderr or the database -----------------------------------------------------------
def _dump(db: Path) -> str:
    return "\n".join(sqlite3.connect(db).iterdump())


def test_an_unreachable_endpoint_with_credentials_leaks_nothing(tmp_path, clip, capsys, fake_backends):
    db = tmp_path / "fl.db"
    endpoint = f"http://user:{SECRET}@127.0.0.1:9/v1"
    code = main(["--db", str(db), "dub", str(clip), "--watcher", "openai", "--endpoint", endpoint,
                 "--watcher-model", "m", "--renderer", "fake", "--critic", "fake", "--refiner", "fake",
                 "--out", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert code in (1, 2) and SECRET not in err and err.strip().splitlines()[-1].startswith("error: ")
    store = Store(db)
    (run,) = store.list_runs()
    assert run.status == "failed" and run.error
    for text in (run.config_json, run.backends_json, run.error, _dump(db)):
        assert SECRET not in (text or "")

    # The same run queued for a worker: the job's error is written with a Core UPDATE, redacted too.
    from agent import worker

    store.enqueue("dub", run.id, endpoint=endpoint)
    worker.Worker(store, worker.WorkerConfig(poll_s=0.05, heartbeat_s=0.1)).run_one()
    assert SECRET not in _dump(db)


def test_error_text_with_credentials_is_redacted_on_stderr_and_in_job_rows(tmp_path, clip, capsys, fake_backends,
                                                                         monkeypatch):
    from agent import worker

    def leaky(self, plan, *a, **k):
        raise RuntimeError(f"upload to https://bob:{SECRET}@cdn.example/put?token={SECRET} failed")

    monkeypatch.setattr(fakes.FakeRenderer, "render", leaky)
    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "dub", str(clip), *FAKE, "--out", str(tmp_path / "o.mp4")]) == 1
    err = capsys.readouterr().err
    assert SECRET not in err and "https://***@cdn.example" in err
    store = Store(db)
    run_id = runs.create_dub_run(store, clip, CFG)
    store.enqueue("dub", run_id)
    job = worker.Worker(store, worker.WorkerConfig(poll_s=0.05, heartbeat_s=0.1)).run_one()
    assert job.status == "failed" and "https://***@cdn.example" in job.error
    assert SECRET not in _dump(db)


# ---- item 13: a full disk fails the run cleanly ---------------------------------------------------------------------
def _disk_full(monkeypatch):
    def full(path, audio, sr):
        raise OSError(errno.ENOSPC, f"cannot write {path}: no space left on the device (0.0 MB free, about 0.7 MB "
                                    "needed)")

    monkeypatch.setattr(fakes, "write_audio", full)


def test_a_full_disk_fails_the_dub_with_one_line(tmp_path, clip, capsys, fake_backends, monkeypatch):
    _disk_full(monkeypatch)
    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "dub", str(clip), *FAKE, "--out", str(tmp_path / "o.mp4")]) == 1
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith(("error", "internal"))]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write") and "no space left" in lines[0], lines
    store = Store(db)
    (run,) = store.list_runs()
    assert run.status == "failed" and "no space left" in run.error
    assert {e.status for e in store.node_events(run.id)} <= {"done", "failed"}
    assert not (tmp_path / "o.mp4").exists()


def test_a_full_disk_fails_a_fork_and_a_text_run_cleanly(done, tmp_path, capsys, monkeypatch):
    store, run_id = done
    before = {k: getattr(store.get_run(run_id), k) for k in ("status", "error", "best_round_id", "output_path")}
    plan = plan_file(tmp_path / "p.json", first_plan(store, run_id))
    _disk_full(monkeypatch)
    assert main(["--db", str(store.db_path), "regenerate", run_id, "--round", "0", "--plan", str(plan),
                 "--out", str(tmp_path / "f.mp4")]) == 1
    assert "no space left" in capsys.readouterr().err
    run = store.get_run(run_id)
    assert {k: getattr(run, k) for k in before} == before
    assert run.branches()["1"]["status"] == "failed" and "no space left" in run.branches()["1"]["error"]

    assert main(["--db", str(store.db_path), "text", "rain", "--duration", "2", "--renderer", "fake", "--critic",
                 "fake", "--refiner", "fake", "--out", str(tmp_path / "r.wav")]) == 1
    assert "no space left" in capsys.readouterr().err
    text_run = next(r for r in store.list_runs() if r.kind == "text")
    assert text_run.status == "failed" and "no space left" in text_run.error
    assert all(e.status != "started" for r in store.list_runs() for e in store.node_events(r.id))


# ---- missing weights: nothing recorded -------------------------------------------------------------------------------
def test_dub_with_missing_weights_records_no_run(tmp_path, clip, capsys, fake_backends):
    (tmp_path / "empty").mkdir()
    db = tmp_path / "fl.db"
    code = main(["--db", str(db), "dub", str(clip), "--watcher", "fake", "--critic", "fake", "--refiner", "fake",
                 "--renderer", "thinksound", "--weights", str(tmp_path / "empty"), "--out", str(tmp_path / "o.mp4")])
    assert code == 2
    assert "thinksound" in one_error_line(capsys).lower()
    assert Store(db).list_runs() == []


# ---- items 4 and 9 through the CLI ------------------------------------------------------------------------------------
def test_a_flooding_endpoint_fails_the_dub_with_one_line_and_a_capped_raw_reply(tmp_path, clip, capsys, raw,
                                                                              fake_backends):
    from reasoning.openai_backend.client import MAX_RESPONSE_BYTES
    from tests.test_openai_hardening import flood_chunked

    srv = raw(flood_chunked)
    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "dub", str(clip), "--watcher", "openai", "--endpoint", srv.url,
                 "--watcher-model", "m", "--renderer", "fake", "--critic", "fake", "--refiner", "fake",
                 "--out", str(tmp_path / "o.mp4")]) == 1
    line = one_error_line(capsys)
    assert f"over the {MAX_RESPONSE_BYTES}-byte limit" in line and len(line) < 600
    assert srv.sent < 8 * MAX_RESPONSE_BYTES  # it stopped reading: the server had 400 MB ready
    store = Store(db)
    (run,) = store.list_runs()
    (rnd,) = store.rounds(run.id)
    assert run.status == "failed" and rnd.status == "failed" and 0 < len(rnd.raw_output) <= 200_000


def test_a_worse_fork_through_the_cli_keeps_the_runs_best_and_output(tmp_path, clip, capsys, fake_backends):
    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "dub", str(clip), *FAKE, "--out", str(tmp_path / "o.mp4")]) == 0
    store = Store(db)
    (run,) = store.list_runs()
    worse = plan_file(tmp_path / "worse.json", first_plan(store, run.id).model_copy(update={"caption": "quiet"}))
    assert main(["--db", str(db), "regenerate", run.id, "--round", "0", "--plan", str(worse), "--rounds", "1",
                 "--out", str(tmp_path / "worse.mp4")]) == 0
    after = store.get_run(run.id)
    assert (after.best_round_id, after.best_overall, after.output_path) == \
        (run.best_round_id, run.best_overall, run.output_path)
    assert after.branches()["1"]["best_overall"] < run.best_overall and (tmp_path / "worse.mp4").is_file()
    capsys.readouterr()
    assert main(["--db", str(db), "show", run.id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["best_round_id"] == run.best_round_id


LEAKY_LOG = ("import logging, sys; from tests import fakes; fakes.install(); from agent.cli import main; "
             "fakes.FakeRenderer.render = lambda *a, **k: (logging.getLogger('leaky').warning("
             "'retrying https://bob:%s@cdn.example/put', sys.argv[1]), 1 / 0); sys.exit(main(sys.argv[2:]))")


def test_log_lines_are_redacted_too(tmp_path, clip):
    proc = subprocess.run([sys.executable, "-c", LEAKY_LOG, SECRET, "--db", str(tmp_path / "fl.db"), "dub", str(clip),
                           *FAKE, "--out", str(tmp_path / "o.mp4")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1 and "retrying https://***@cdn.example/put" in proc.stderr, proc.stderr[-2000:]
    assert SECRET not in proc.stderr + proc.stdout


# ---- item 6: bad option values are exit 2 with a sentence, before anything is recorded --------------------------
@pytest.mark.parametrize("args, needle", [
    (["--seed", "-5"], "--seed: Input should be greater than or equal to 0"),
    (["--seed", str(10 ** 24)], "--seed: Input should be less than or equal to 2147483647"),
    (["--dtype", "fp8"], "--dtype must be auto, fp32, fp16, bf16, got 'fp8'"),
    (["--keep-original", "maybe"], "--keep-original: keep_original must be 'drop' or 'mix'"),
    (["--max-duration", "-1"], "--max-duration: Input should be greater than 0"),
])
def test_bad_option_values_are_exit_2_with_a_sentence(args, needle, tmp_path, clip, capsys, fake_backends):
    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "dub", str(clip), *FAKE, "--out", str(tmp_path / "o.mp4"), *args]) == 2
    assert one_error_line(capsys) == f"error: {needle}"
    assert not db.exists() or Store(db).list_runs() == []


def test_runs_limit_out_of_range_is_exit_2(tmp_path, capsys):
    for limit in ("-1", str(10 ** 24)):
        assert main(["--db", str(tmp_path / "fl.db"), "runs", "--limit", limit]) == 2
        assert "--limit must be between 0 and" in one_error_line(capsys)
