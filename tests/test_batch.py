"""`foleyloop batch` and agent.batch without Ray: manifests, up-front refusals, resume keys, failures, the one
recording path (worker result → driver rows), a killed driver, and models kept loaded between clips."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from agent import batch, runs
from agent.cli import main
from agent.config import RunConfig
from tests import fakes
from tests.helpers import FAKE, cli_subprocess, tiny_clip

FAKE_CFG = RunConfig(watcher="fake", renderer="fake", critic="fake", refiner="fake")


def make_clips(folder: Path, n: int, seconds: float = 1.0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [tiny_clip(folder / f"c{i}.mp4", seconds=seconds, size=32, seed=i) for i in range(n)]


def store_at(db: Path):
    from store.db import Store

    return Store(db)


def by_sha(st) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in st.list_runs(limit=1000):
        out.setdefault(r.video_sha256, []).append(r)
    return out


def out_name(p: Path) -> str:
    return f"{p.stem}.foley.mp4"


# ---- manifests ------------------------------------------------------------------------------------------------
def test_a_csv_manifest_sets_paths_outputs_and_per_clip_options(tmp_path, capsys, fake_backends):
    make_clips(tmp_path / "in", 2)
    (tmp_path / "in" / "sub").mkdir()
    os.replace(tmp_path / "in" / "c1.mp4", tmp_path / "in" / "sub" / "c1.mp4")
    manifest = tmp_path / "in" / "clips.csv"
    manifest.write_text("path, out ,rounds,seed,watcher\nc0.mp4,,1,5,\n\n\"sub/c1.mp4\",custom/one.mkv,,,fake\n")
    db, out_dir = tmp_path / "fl.db", tmp_path / "out"
    assert main(["--db", str(db), "batch", str(manifest), "--out-dir", str(out_dir), "--rounds", "2", *FAKE]) == 0
    assert "2 done, 0 failed, 0 skipped" in capsys.readouterr().out
    assert (out_dir / "c0.foley.mp4").is_file() and (out_dir / "custom" / "one.mkv").is_file()
    runs_by_name = {Path(r.video_path).name: r for r in store_at(db).list_runs()}
    c0, c1 = (json.loads(runs_by_name[n].config_json) for n in ("c0.mp4", "c1.mp4"))
    assert (c0["rounds"], c0["seed"], c1["rounds"], c1["seed"]) == (1, 5, 2, 0)
    assert runs_by_name["c0.mp4"].n_rounds == 1 and runs_by_name["c1.mp4"].n_rounds == 2


def test_a_jsonl_manifest_resolves_relative_paths_and_typed_values(tmp_path, fake_backends):
    clips = make_clips(tmp_path / "in", 2)
    manifest = tmp_path / "in" / "m.jsonl"
    manifest.write_text(json.dumps({"path": "c0.mp4", "rounds": 2, "keep_original": "mix"}) + "\n\n"
                        + json.dumps({"path": str(clips[1]), "out": "x/y.mp4", "max_duration": 30}) + "\n")
    got = batch.collect(manifest, tmp_path / "o", FAKE_CFG, out_name, {".mp4"})
    assert [c.path for c in got] == clips
    assert [c.out for c in got] == [tmp_path / "o" / "c0.foley.mp4", tmp_path / "o" / "x" / "y.mp4"]
    assert (got[0].cfg.rounds, got[0].cfg.keep_original, got[1].cfg.max_duration_s) == (2, "mix", 30.0)
    assert got[1].cfg == FAKE_CFG.model_copy(update={"max_duration_s": 30.0})
    assert got[0].where == "m.jsonl line 1" and got[1].where == "m.jsonl line 3"


BAD_MANIFESTS = [
    ("m.csv", "path,rounds,colour\nc0.mp4,1,red\n", "m.csv line 1: unknown column 'colour'"),
    ("m.csv", "out\nx.mp4\n", "no 'path' column"),
    ("m.csv", "path,path\nc0.mp4,c0.mp4\n", "a column named twice"),
    ("m.csv", "path,rounds\nc0.mp4,abc\n", "m.csv line 2: rounds must be an integer"),
    ("m.csv", "path,rounds\nc0.mp4,1.5\n", "m.csv line 2: rounds must be an integer"),
    ("m.csv", "path,rounds\nc0.mp4,99\n", "m.csv line 2: rounds"),
    ("m.csv", "path,max_duration\nc0.mp4,nan\n", "max_duration must be a number"),
    ("m.csv", "path,watcher\nc0.mp4,gpt9\n", "m.csv line 2: unknown watcher backend 'gpt9'"),
    ("m.csv", "path,keep_original\nc0.mp4,keep\n", "m.csv line 2: keep_original"),
    ("m.csv", "path\nc0.mp4\nnope.mp4\n", "m.csv line 3:"),
    ("m.csv", "path\nc0.mp4,extra\n", "more cells than columns"),
    ("m.csv", "path,out\nc0.mp4,o.mp4\nc1.mp4,o.mp4\n", "m.csv line 3: output"),
    ("m.csv", "path,out\nc0.mp4,../in/c1.mp4\nc1.mp4,\n", "is an input of this batch"),
    ("m.csv", "path,out\nc0.mp4,o.avi\n", "unknown container extension"),
    ("m.csv", "path\n", "lists no clips"),
    ("m.csv", "", "empty manifest"),
    ("m.jsonl", '{"path": \n', "m.jsonl line 1: not JSON"),
    ("m.jsonl", '["c0.mp4"]\n', "must be a JSON object"),
    ("m.jsonl", '{"path": "c0.mp4", "colour": "red"}\n', "unknown key 'colour'"),
    ("m.jsonl", '{"path": "c0.mp4", "rounds": true}\n', "rounds must be an integer"),
    ("m.jsonl", '{"path": 7}\n', "path must be a non-empty path"),
    ("m.jsonl", '{"path": "c0.mp4", "watcher": 3}\n', "watcher must be text"),
    ("m.txt", "c0.mp4\n", "a manifest must be .csv or .jsonl"),
    ("m.csv", b"path\n\xff\xfe.mp4\n", "not UTF-8"),
]


@pytest.mark.parametrize("name,content,expected", BAD_MANIFESTS, ids=[m[2][:30] for m in BAD_MANIFESTS])
def test_a_bad_manifest_is_exit_2_before_any_work(tmp_path, capsys, fake_backends, name, content, expected):
    make_clips(tmp_path / "in", 2)
    manifest = tmp_path / "in" / name
    manifest.write_bytes(content if isinstance(content, bytes) else content.encode())
    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "batch", str(manifest), "--out-dir", str(tmp_path / "out"), *FAKE]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert not db.exists() and not (tmp_path / "out").exists()


def test_bad_options_are_exit_2_before_any_work(tmp_path, capsys, fake_backends):
    make_clips(tmp_path / "in", 1)
    (tmp_path / "in" / "m.csv").write_text("path\nc0.mp4\n")
    db = tmp_path / "fl.db"
    base = ["--db", str(db), "batch", str(tmp_path / "in"), *FAKE]
    cases = [(["--out-dir", str(tmp_path / "o"), "--engine", "spark"], "--engine must be local or ray"),
             (["--out-dir", str(tmp_path / "o"), "--address", "127.0.0.1:6379"], "--address needs --engine ray"),
             (["--out-dir", str(tmp_path / "o"), "--workers", "2"], "--workers needs --engine ray"),
             (["--out-dir", str(tmp_path / "o"), "--worker-setup", "os.system('x')"], "expected MODULE:FUNCTION"),
             (["--out-dir", str(tmp_path / "o"), "--engine", "ray", "--address", "nowhere"], "expected HOST:PORT"),
             (["--out-dir", str(tmp_path / "o"), "--engine", "ray", "--address", "127.0.0.2:1"],
              "no Ray cluster answers there"),
             ([], "--out-dir is required with a folder"),
             (["--out-dir", str(tmp_path / "in" / "c0.mp4")], "is a file, not a folder")]
    for extra, expected in cases:
        assert main(base + extra) == 2, extra
        assert expected in capsys.readouterr().err, extra
    assert main(["--db", str(db), "batch", str(tmp_path / "in" / "m.csv"), *FAKE]) == 2
    assert "no out, and no --out-dir" in capsys.readouterr().err
    assert not db.exists()


# ---- resume -------------------------------------------------------------------------------------------------------
def test_resume_skips_what_is_done_for_the_same_config_only(tmp_path, capsys, fake_backends):
    clips = make_clips(tmp_path / "in", 3)
    db, out = tmp_path / "fl.db", tmp_path / "out"
    args = ["--db", str(db), "batch", str(tmp_path / "in"), "--out-dir", str(out), "--rounds", "1", *FAKE]
    assert main(args) == 0
    capsys.readouterr()
    st = store_at(db)
    first = {r.id for r in st.list_runs()}
    assert len(first) == 3

    assert main(args) == 2  # the outputs exist: not without --resume or --force
    assert "already exists (and 2 more); pass --force to overwrite, or --resume" in capsys.readouterr().err

    (out / "c1.foley.mp4").unlink()
    assert main(args + ["--resume"]) == 0
    text = capsys.readouterr().out
    assert "0 done, 0 failed, 3 skipped" in text and "c1.mp4: skipped, done in run" in text
    assert "output copied to" in text and (out / "c1.foley.mp4").is_file()
    assert {r.id for r in st.list_runs()} == first

    # Another config is another key: nothing of it is done, and the files there are not its own.
    assert main(args[:-len(FAKE)] + ["--rounds", "2", *FAKE, "--resume"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--seed", "7", "--resume", "--force"]) == 0
    assert "3 done, 0 failed, 0 skipped" in capsys.readouterr().out
    assert {len(v) for v in by_sha(st).values()} == {2} and len(by_sha(st)) == len(clips)


def test_a_batch_run_can_be_forked_like_any_other(tmp_path, fake_backends):
    """The driver writes the worker's rounds itself (no graph checkpoint of branch 0): regenerate still works."""
    from contract.plan import Plan

    make_clips(tmp_path / "in", 1)
    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "batch", str(tmp_path / "in"), "--out-dir", str(tmp_path / "o"), *FAKE]) == 0
    st = store_at(db)
    run = st.list_runs()[0]
    first = st.rounds(run.id)[0]
    assert st.artifact_path(first.audio_artifact_id).is_file()
    assert [e.status for e in st.node_events(run.id)] and all(e.status == "done" for e in st.node_events(run.id))
    branch, _ = runs.regenerate(st, run.id, first.id, Plan.from_json(first.plan_json), out=tmp_path / "fork.mp4")
    assert branch == 1 and (tmp_path / "fork.mp4").is_file()
    assert runs.branch_status(st.get_run(run.id).branches()["1"]) == "done"


# ---- failures ------------------------------------------------------------------------------------------------------
def test_a_failing_clip_is_a_failed_run_and_the_batch_goes_on(tmp_path, capsys, fake_backends, monkeypatch):
    real = fakes.FakeRenderer.render

    def render(self, plan, video, *a, **k):
        if video is not None and "c1" in Path(video).name:
            raise RuntimeError("the GPU caught fire\nsecond line")
        return real(self, plan, video, *a, **k)

    monkeypatch.setattr(fakes.FakeRenderer, "render", render)
    make_clips(tmp_path / "in", 3)
    db = tmp_path / "fl.db"
    args = ["--db", str(db), "batch", str(tmp_path / "in"), "--rounds", "1", *FAKE]
    assert main(args + ["--out-dir", str(tmp_path / "o1")]) == 0
    text = capsys.readouterr().out
    assert "2 done, 1 failed, 0 skipped" in text
    assert "c1.mp4: failed (run " in text and "RuntimeError: the GPU caught fire second line" in text
    failed = [r for r in store_at(db).list_runs() if r.status == "failed"]
    assert len(failed) == 1 and failed[0].error == "RuntimeError: the GPU caught fire second line"
    rounds = store_at(db).rounds(failed[0].id)  # what the worker recorded before failing comes back too
    assert [(r.author, r.status) for r in rounds] == [("watcher", "planned")]  # as a plain dub leaves it
    assert [e.node for e in store_at(db).node_events(failed[0].id)][-1] == "render"
    assert not (tmp_path / "o1" / "c1.foley.mp4").exists()

    assert main(args + ["--out-dir", str(tmp_path / "o2"), "--strict"]) == 1
    assert "1 of 3 clips failed" in capsys.readouterr().err
    for p in (tmp_path / "in").glob("*.mp4"):
        p.write_bytes(b"not a video")
    assert main(args + ["--out-dir", str(tmp_path / "o3")]) == 1  # every clip failed
    assert "3 of 3 clips failed" in capsys.readouterr().err


def test_an_output_that_appears_meanwhile_is_never_overwritten(tmp_path, fake_backends):
    clips = make_clips(tmp_path / "in", 1)
    st = store_at(tmp_path / "fl.db")
    todo = batch.collect(tmp_path / "in", tmp_path / "o", FAKE_CFG, out_name, {".mp4"})

    class Sneaky(batch.LocalEngine):
        def wait(self):
            todo[0].out.parent.mkdir(parents=True, exist_ok=True)
            todo[0].out.write_bytes(b"the user's file")
            return super().wait()

    report = batch.run(st, todo, Sneaky())
    assert [o.status for o in report.outcomes] == ["failed"]
    assert "appeared while run" in report.outcomes[0].error and "nothing was overwritten" in report.outcomes[0].error
    assert todo[0].out.read_bytes() == b"the user's file"
    assert st.get_run(report.outcomes[0].run_id).status == "failed" and clips


def test_clips_on_cuda_are_refused_before_any_work_by_a_cluster_without_gpu(tmp_path, fake_backends):
    make_clips(tmp_path / "in", 1)
    st = store_at(tmp_path / "fl.db")
    todo = batch.collect(tmp_path / "in", tmp_path / "o", FAKE_CFG.model_copy(update={"device": "cuda"}), out_name,
                         {".mp4"})

    class NoGpu(batch.LocalEngine):
        def start(self):
            return {"gpus": 0}

        def launch(self, needs_gpu, n_clips):
            raise AssertionError("no worker may start")

    with pytest.raises(batch.UserError, match="the Ray cluster has no GPU"):
        batch.run(st, todo, NoGpu())
    assert st.list_runs() == []


# ---- one recording path: a killed driver, a half-written clip, a worker that cannot see the file ---------------
def test_a_killed_driver_then_resume_stores_every_clip_once(tmp_path, capsys):
    make_clips(tmp_path / "in", 5)
    db, out = tmp_path / "fl.db", tmp_path / "out"
    args = ["--db", str(db), "batch", str(tmp_path / "in"), "--out-dir", str(out), "--rounds", "2", *FAKE]
    proc = cli_subprocess(args, env={"FOLEYLOOP_FAKE_RENDER_DELAY": "0.4"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists() and sum(r.status == "done" for r in store_at(db).list_runs()) >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    st = store_at(db)
    done_before = {r.id for r in st.list_runs() if r.status == "done"}
    assert 2 <= len(done_before) < 5

    fakes.install()
    assert main(args + ["--resume"]) == 0
    text = capsys.readouterr().out
    assert f"{len(done_before)} skipped" in text and "0 failed" in text
    groups = by_sha(st)
    assert len(groups) == 5 and all(len(v) == 1 and v[0].status == "done" for v in groups.values())
    assert done_before <= {v[0].id for v in groups.values()}
    assert sorted(p.name for p in out.iterdir()) == [f"c{i}.foley.mp4" for i in range(5)]
    assert not (st.home / "tmp" / "foleyloop-batch").exists()  # the killed driver's scratch space is gone too


def test_a_run_killed_while_publishing_is_taken_over_not_duplicated(tmp_path, fake_backends):
    from store.schema import Artifact
    from sqlmodel import select

    make_clips(tmp_path / "in", 1)
    st = store_at(tmp_path / "fl.db")
    (clip,) = batch.collect(tmp_path / "in", tmp_path / "o", FAKE_CFG, out_name, {".mp4"})
    # What a driver killed between publishing the output and writing the rows leaves behind:
    run_id = runs.create_dub_run(st, clip.path, clip.cfg, status="running", out=clip.out)
    st.put_file(clip.path, kind="video", run_id=run_id)  # an artifact row that no round or run refers to
    runs.nodes.update_branch(st, run_id, 0, publishing=str(clip.out))
    clip.out.parent.mkdir(parents=True)
    clip.out.write_bytes(b"half of a dub")

    with pytest.raises(batch.UserError, match="already exists"):  # not without --resume: maybe not ours
        batch.run(st, [clip], batch.LocalEngine())
    report = batch.run(st, [clip], batch.LocalEngine(), resume=True)
    assert [(o.status, o.run_id) for o in report.outcomes] == [("done", run_id)]
    assert [r.id for r in st.list_runs()] == [run_id]
    run = st.get_run(run_id)
    assert clip.out.read_bytes() == st.artifact_path(run.output_artifact_id).read_bytes()
    with st.session() as s:
        arts = {a.id for a in s.exec(select(Artifact).where(Artifact.run_id == run_id)).all()}
    used = {r.audio_artifact_id for r in st.rounds(run_id)} | {run.output_artifact_id}
    assert arts == used


def test_a_worker_that_cannot_see_the_video_is_sent_its_bytes(tmp_path, fake_backends):
    clips = make_clips(tmp_path / "in", 2)
    st = store_at(tmp_path / "fl.db")
    todo = batch.collect(tmp_path / "in", tmp_path / "o", FAKE_CFG, out_name, {".mp4"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "c1.mp4").write_bytes(clips[0].read_bytes())  # a different file at the worker's path
    shipped = []

    class Far(batch.LocalEngine):
        """A worker on another machine: the driver's paths mean other files there."""

        def submit(self, key, task, ship=False):
            shipped.append((Path(task["video"]).name, ship))
            data = Path(task["video"]).read_bytes() if ship else None
            self.queue.append((key, dict(task, video=str(elsewhere / Path(task["video"]).name)), data))

        def wait(self):
            key, task, data = self.queue.popleft()
            return [(key, self.worker.dub(task, data))]

    report = batch.run(st, todo, Far())
    assert [o.status for o in report.outcomes] == ["done", "done"]
    assert shipped == [("c0.mp4", False), ("c0.mp4", True), ("c1.mp4", False), ("c1.mp4", True)]
    assert sorted(r.video_path for r in st.list_runs()) == [str(c) for c in clips]
    assert all(c.out.is_file() for c in todo)


# ---- the worker keeps its models ---------------------------------------------------------------------------------
def test_a_batch_worker_loads_its_models_once_for_all_clips(tmp_path, fake_backends, monkeypatch):
    from agent import backends
    from contract.memory import SLOTS

    loads = []

    class SlottedRenderer(fakes.FakeRenderer):
        """Holds a model in the process's model cache, as the neural backends do."""

        def render(self, plan, *a, **k):
            SLOTS.get("batch-test-model", 0.0, lambda: loads.append(1) or object(), role="renderer")
            return super().render(plan, *a, **k)

    monkeypatch.setitem(sys.modules, "tests_batch_slotted", fakes._Module(SlottedRenderer))
    monkeypatch.setitem(backends.REGISTRY["renderer"], "slotted", "tests_batch_slotted")
    cfg = FAKE_CFG.model_copy(update={"renderer": "slotted", "rounds": 1})
    clips = make_clips(tmp_path / "in", 3)
    st = store_at(tmp_path / "fl.db")
    try:
        for i in range(2):  # a plain dub frees every model when it ends: each run loads again
            runs.dub(st, clips[i], cfg, out=tmp_path / f"plain{i}.mp4")
        assert len(loads) == 2
        loads.clear()
        todo = batch.collect(tmp_path / "in", tmp_path / "o", cfg, out_name, {".mp4"})
        report = batch.run(st, todo, batch.LocalEngine())
        assert [o.status for o in report.outcomes] == ["done"] * 3 and len(loads) == 1
    finally:
        SLOTS.release()


def test_batch_picks_the_same_default_critic_as_dub(tmp_path, monkeypatch, capsys):
    """No --critic: thinksound + qwen is judged by the verified critic in a batch too, as in `dub`."""
    from agent.cli.common import UserError

    make_clips(tmp_path / "in", 1)
    seen = []

    def stop(source, out_dir, cfg, *args):
        seen.append(cfg.critic)
        raise UserError("stopped after the config")

    monkeypatch.setattr(batch, "collect", stop)
    for extra in ([], ["--renderer", "thinksound", "--watcher", "qwen"]):
        assert main(["--db", str(tmp_path / "fl.db"), "batch", str(tmp_path / "in"), "--out-dir",
                     str(tmp_path / "o"), *extra]) == 2
    assert seen == ["offline", "verified"]
