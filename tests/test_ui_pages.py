"""Every studio page under Streamlit's AppTest, on seeded databases (empty, with a failed run, with forks),
plus the edit → regenerate and review flows carried out by a real `foleyloop worker` process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from contract.plan import Plan
from store.db import Store
from tests.browser import seed
from tests.browser.seed import fake_backends_module  # noqa: F401

APP = Path(__file__).resolve().parents[1] / "ui" / "app.py"
TIMEOUT = 60


@pytest.fixture(scope="module", autouse=True)
def _fakes(fake_backends_module):
    yield


@pytest.fixture
def use_db(monkeypatch):
    def use(store: Store, **env):
        monkeypatch.setenv("FOLEYLOOP_DB", str(store.db_path))
        for k, v in env.items():
            monkeypatch.setenv(k, str(v))
        return store

    return use


def app(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    for k, v in query.items():
        at.query_params[k] = v
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "error", "warning", "success", "title",
                                  "subheader") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """done, review, failed (renderer), failed (corrupt input) and forked runs, made by the real graph."""
    tmp = tmp_path_factory.mktemp("seeded")
    store = Store(tmp / "home" / "foleyloop.db")
    clip = seed.make_clip(tmp)
    ids = {"done": seed.done_run(store, clip), "review": seed.review_run(store, clip),
           "failed": seed.failed_render_run(store, clip), "corrupt": seed.corrupt_input_run(store, tmp)}
    ids["forked"], _ = seed.forked_run(store, clip)
    return store, ids


# ---- empty database ---------------------------------------------------------------------------------------------
def test_every_page_on_an_empty_database(store, use_db):
    use_db(store)
    at = app()
    assert "No runs yet" in texts(at)
    at = app("views/review.py")
    assert "No run is waiting for review" in texts(at)
    at = app("views/run.py")
    assert at.text_input(key="run:lookup") is not None
    at = app("views/run.py", run="nope")
    assert "There is no run 'nope'" in texts(at)
    at = app("views/new_run.py")
    assert at.file_uploader(key="new:file") is not None and "fake" in at.selectbox(key="new:watcher").options


# ---- runs page -----------------------------------------------------------------------------------------------------
def test_runs_page_lists_filters_and_paginates(seeded, use_db):
    store, ids = seeded
    use_db(store, FOLEYLOOP_UI_PAGE_SIZE=2)
    at = app()
    table = at.dataframe[0].value
    assert len(table) == 2 and at.pagination(key="runs:page").num_pages == 3
    assert "5 runs match" in texts(at)
    at.pagination(key="runs:page").set_value(3).run()
    last = at.dataframe[0].value
    assert len(last) == 1 and last.iloc[0]["run"] == f"/run?run={ids['done']}"  # oldest run on the last page

    at.selectbox(key="runs:status").set_value("failed").run()
    failed = at.dataframe[0].value
    assert sorted(failed["run"]) == sorted(f"/run?run={ids[k]}" for k in ("failed", "corrupt"))
    assert any("renderer ran out of patience" in e for e in failed["stop / error"])

    at.selectbox(key="runs:status").set_value("any")
    at.text_input(key="runs:text").input(ids["forked"][:8]).run()
    row = at.dataframe[0].value.iloc[0]
    run = store.get_run(ids["forked"])
    best = store.get_round(run.best_round_id)
    assert row["overall"] == pytest.approx(run.best_overall) and row["semantic"] == pytest.approx(best.score_semantic)
    assert row["backends"] == "fake / fake / fake / fake" and row["rounds"] == run.n_rounds

    at.text_input(key="runs:text").input("no-such-thing").run()
    assert "No run matches these filters" in texts(at)


# ---- run page ------------------------------------------------------------------------------------------------------
def test_run_page_of_a_finished_run(seeded, use_db):
    store, ids = seeded
    use_db(store)
    run = store.get_run(ids["done"])
    at = app("views/run.py", run=run.id)
    assert at.title[0].value == f"Run {run.id}"
    metrics = {m.label: m.value for m in at.metric}
    best = store.get_round(run.best_round_id)
    assert metrics["best overall"] == f"{best.score_overall:.3f}" and metrics["best round"] == "0.2"
    assert "stop reason:** passed" in texts(at)
    # Each round is playable on the video: the selected (best) round was muxed into the cache on demand.
    muxed = list((store.home / "cache" / "mux").glob(f"{run.id}-r{best.id}-*.mp4"))
    assert len(muxed) == 1 and len(at.get("video")) == 1 and len(at.get("audio")) == 1
    scores = at.table[0].value
    assert list(scores["round"]) == ["0.0", "0.1", "0.2"] and list(scores["overall"])[-1] == f"{best.score_overall:.3f}"
    assert len(at.get("vega_lite_chart")) == 3  # waveform, spectrogram, scores
    # The refiner's round shows its plan diff against the parent (the fake refiner appends " +").
    diffs = [c.value for c in at.code]
    assert any("-thuds +" in d and "+thuds + +" in d for d in diffs), diffs
    timings = at.table[1].value
    assert {"load", "node:render", "wall"} <= set(timings["step"])
    models = at.table[-1].value
    assert list(models["model id"]) == ["fake-watcher", "fake-renderer", "fake", "fake-refiner"]
    assert set(models["available now"]) == {"yes"}


def test_run_page_of_failed_runs_says_why_in_plain_words(seeded, use_db):
    store, ids = seeded
    use_db(store)
    at = app("views/run.py", run=ids["failed"])
    assert [e.value for e in at.error][0] == ("A backend could not do its job: the renderer ran out of patience "
                                             "(seeded failure)")
    assert "0.0 · watcher" in at.selectbox(key=f"run:{ids['failed']}:round").options[0]
    assert "has no audio yet" in texts(at)
    at = app("views/run.py", run=ids["corrupt"])
    assert "not a readable media file" in at.error[0].value
    assert "failed before it wrote a plan" in texts(at)


def test_run_page_with_forks_diffs_the_branch_against_its_parent(seeded, use_db):
    store, ids = seeded
    use_db(store)
    run_id = ids["forked"]
    at = app("views/run.py", run=run_id[:6])  # a unique prefix is enough
    box = at.selectbox(key=f"run:{run_id}:round")
    labels = box.options
    assert any(o.startswith("1.0 · human") for o in labels) and any(o.startswith("0.1 · refiner") for o in labels)
    box.select_index(next(i for i, o in enumerate(labels) if o.startswith("1.0"))).run()
    diffs = "\n".join(c.value for c in at.code)
    assert "+heavy wooden thuds" in diffs and "+music" in diffs and "+speech" in diffs
    assert "Parent: round 0.0 (watcher)" in texts(at)
    assert set(at.table[0].value["round"]) >= {"0.0", "0.1", "1.0", "1.1"}


def test_live_status_shows_queued_work(store, use_db, tmp_path):
    from agent import runs

    use_db(store)
    run_id = runs.create_dub_run(store, seed.make_clip(tmp_path), seed.fake_cfg(), status="queued")
    job = store.enqueue("dub", run_id)
    at = app("views/run.py", run=run_id)
    assert f"Job {job.id} (dub) is queued: waiting for a worker" in texts(at)
    assert "No round yet" in texts(at)


# ---- flows with a real worker -------------------------------------------------------------------------------------
def test_edit_then_regenerate_forks_a_branch_that_a_worker_renders(store, use_db, tmp_path):
    use_db(store)
    run_id = seed.done_run(store, seed.make_clip(tmp_path), rounds=2)
    before = {r.id: r.plan_json for r in store.rounds(run_id)}
    first = store.rounds(run_id)[0]
    at = app("views/run.py", run=run_id)
    at.selectbox(key=f"run:{run_id}:round").select_index(0).run()
    key = f"edit:{run_id}:{first.id}"
    at.text_input(key=f"{key}:caption").input("slow heavy thuds")
    at.text_area(key=f"{key}:negatives").input("music")
    at.session_state[f"{key}:events"] = {"edited_rows": {0: {"start_s": 0.7, "end_s": 0.8}},
                                         "added_rows": [{"label": "door slam", "start_s": 2.0, "end_s": 2.3}],
                                         "deleted_rows": []}
    at.run()
    assert not at.error, [e.value for e in at.error]
    assert any("CoT length" in p.proto.text for p in at.get("progress"))
    at.button(key=f"{key}:go").click().run()
    assert "Branch 1 queued" in texts(at)
    (job,) = [j for j in _jobs(store) if j.kind == "regenerate"]
    assert json.loads(job.payload_json)["branch"] == 1 and job.status == "queued"
    assert "This run is busy" in texts(at)  # no second regenerate while the first is pending

    done = seed.run_worker(store.db_path, "--drain", "--poll", "0.1")
    assert done.returncode == 0, done.stderr[-3000:]
    run = store.get_run(run_id)
    assert run.status == "done" and "1" in run.branches()
    branch = store.rounds(run_id, branch=1)
    human = Plan.from_json(branch[0].plan_json)
    assert branch[0].author == "human" and branch[0].parent_round_id == first.id
    assert human.caption == "slow heavy thuds" and human.negatives == ["music"]
    assert human.event("e0").start_s == 0.7 and any(e.label == "door slam" for e in human.events)
    assert all(r.audio_artifact_id and r.score_overall is not None for r in branch)
    assert {r.id: r.plan_json for r in store.rounds(run_id, branch=0)} == before  # nothing overwritten
    assert _jobs(store)[-1].status == "done"

    at = app("views/run.py", run=run_id)
    assert {"1.0", "1.1"} <= set(at.table[0].value["round"])
    assert "This run is busy" not in texts(at)


def test_review_queue_approve_and_edit_with_a_real_worker(store, use_db, tmp_path):
    use_db(store)
    clip = seed.make_clip(tmp_path)
    approve_id, edit_id = seed.review_run(store, clip), seed.review_run(store, clip)
    at = app("views/review.py")
    assert set(at.selectbox(key="review:run").options) == {approve_id, edit_id}
    assert list(at.table[0].value["answer"]) == ["needed", "needed"]

    at.selectbox(key="review:run").set_value(approve_id).run()
    at.button(key=f"review:{approve_id}:approve").click().run()
    assert f"Approved run {approve_id}" in texts(at)

    at.selectbox(key="review:run").set_value(edit_id).run()
    assert at.button(key=f"review:{edit_id}:edit").disabled  # nothing edited yet
    at.text_input(key=f"review:{edit_id}:caption").input("edited by a human")
    at.text_area(key=f"review:{edit_id}:spatial").input("far left")
    at.run()
    at.button(key=f"review:{edit_id}:edit").click().run()
    assert f"Edited plan for run {edit_id} queued" in texts(at)
    answers = {j.run_id: json.loads(j.payload_json)["answer"] for j in _jobs(store) if j.kind == "resume"}
    assert answers[approve_id] == {"action": "approve"} and answers[edit_id]["action"] == "edit"
    assert "queued (job" in " ".join(at.table[0].value["answer"])

    done = seed.run_worker(store.db_path, "--drain", "--poll", "0.1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "worker ran 2 job(s)" in done.stderr
    approved = store.get_run(approve_id)
    assert approved.status == "done" and all(r.author != "human" for r in store.rounds(approve_id))
    edited_rounds = store.rounds(edit_id)
    human = [r for r in edited_rounds if r.author == "human"]
    assert store.get_run(edit_id).status == "done" and len(human) == 1
    plan = Plan.from_json(human[0].plan_json)
    assert plan.caption == "edited by a human" and plan.spatial == "far left"
    assert [r.status for r in edited_rounds if r.author == "watcher"] == ["replaced"]
    at = app("views/review.py")
    assert "No run is waiting for review" in texts(at)


def _jobs(store):
    from sqlmodel import select

    from store.schema import Job

    with store.session() as s:
        return list(s.exec(select(Job).order_by(Job.id)).all())


# ---- new run (uploads) ----------------------------------------------------------------------------------------------
def _stored_nothing(store) -> bool:
    kept = [p for d in ("uploads", "tmp/uploads") for p in (store.home / d).rglob("*") if p.is_file()]
    return not kept and store.count_runs() == 0 and not _jobs(store)


@pytest.mark.parametrize("name, data, message", [
    ("notes.txt", b"not a video at all", "'notes.txt' is a .txt file; upload a video of type mp4"),
    ("big.mp4", b"\0" * (1024 * 1024 + 512 * 1024), "'big.mp4' is 1.5 MB; the limit is 1.0 MB."),
    ("broken.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 16, "'broken.mp4' could not be read as a video"),
])
def test_bad_uploads_get_a_clear_message_and_store_nothing(store, use_db, name, data, message):
    use_db(store, FOLEYLOOP_UPLOAD_MAX_MB=1)
    at = app("views/new_run.py")
    at.file_uploader(key="new:file").set_value((name, data, "application/octet-stream"))
    at.button(key="new:create").click().run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any(message in e and "Nothing was stored" in e for e in errors), errors
    assert _stored_nothing(store)


def test_good_upload_creates_a_queued_run_and_a_dub_job(store, use_db, tmp_path):
    use_db(store)
    clip = seed.make_clip(tmp_path, "street.mp4")
    at = app("views/new_run.py")
    at.file_uploader(key="new:file").set_value((clip.name, clip.read_bytes(), "video/mp4"))
    for role in ("watcher", "renderer", "critic"):
        at.selectbox(key=f"new:{role}").set_value("fake")
    at.number_input(key="new:rounds").set_value(2)
    at.checkbox(key="new:review").check()
    at.button(key="new:create").click().run()
    assert not at.error, [e.value for e in at.error]
    (run,) = store.list_runs()
    assert f"Run {run.id} is queued" in texts(at)
    cfg = json.loads(run.config_json)
    assert run.status == "queued" and cfg["watcher"] == "fake" and cfg["rounds"] == 2 and cfg["review"] is True
    assert Path(run.video_path).is_file() and Path(run.video_path).is_relative_to(store.home / "uploads")
    assert [(j.kind, j.run_id, j.status) for j in _jobs(store)] == [("dub", run.id, "queued")]
