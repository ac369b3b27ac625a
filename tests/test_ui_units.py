"""Studio building blocks without a browser: queries, diffs, charts data, plan editing, uploads, launch argv."""

from __future__ import annotations

import io
import json
import time
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest

from contract.plan import Event, Plan
from ui import components, editor, errors, queries, uploads
from ui.settings import StudioSettings, parse_types


def _plan(**kw) -> Plan:
    base = dict(caption="thuds", semantic="wooden thuds", temporal="one per second", aesthetic="dry",
                spatial="centre", duration_s=3.0,
                events=[Event(id="e0", label="thud", start_s=0.5, end_s=0.6),
                        Event(id="e1", label="wind", kind="ambience", start_s=0.0, end_s=3.0)])
    return Plan(**{**base, **kw})


# ---- queries ------------------------------------------------------------------------------------------------
def _seed_runs(store, n: int) -> list[str]:
    ids = []
    t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
    for i in range(n):
        run = store.create_run(id=f"run{i:03d}", status=("done", "failed", "review")[i % 3],
                               video_path=f"/v/clip_{i}.mp4", created_at=t0 + timedelta(days=i),
                               backends_json={"watcher": "offline", "renderer": "thinksound"})
        r = store.add_round(run_id=run.id, index=0, score_semantic=0.1 * (i % 10), score_temporal=0.5,
                            score_overall=0.4)
        if i % 3 == 0:
            store.update_run(run.id, best_round_id=r.id, best_overall=0.4, n_rounds=1)
        ids.append(run.id)
    return ids


def test_runs_page_filters_paginates_and_joins_best_scores(store):
    _seed_runs(store, 12)
    assert queries.count_runs(store, queries.RunFilter()) == 12
    page1 = queries.runs_page(store, queries.RunFilter(), page=1, size=5)
    page3 = queries.runs_page(store, queries.RunFilter(), page=3, size=5)
    assert [r.id for r in page1] == [f"run{i:03d}" for i in range(11, 6, -1)]  # newest first
    assert [r.id for r in page3] == ["run001", "run000"]
    done = queries.runs_page(store, queries.RunFilter(status="done"), size=50)
    assert {r.id for r in done} == {"run000", "run003", "run006", "run009"}
    r9 = next(r for r in done if r.id == "run009")
    assert r9.scores["semantic"] == pytest.approx(0.9) and r9.scores["temporal"] == 0.5
    assert r9.best_overall == 0.4 and r9.source == "clip_9.mp4" and r9.backends == "offline / thinksound"
    failed = queries.runs_page(store, queries.RunFilter(status="failed"))
    assert all(r.scores == {d: None for d in queries.SCORE_COLUMNS} for r in failed)  # no best round
    assert [r.id for r in queries.runs_page(store, queries.RunFilter(text="clip_1"))] == \
        ["run011", "run010", "run001"]
    week = queries.RunFilter(since=date(2026, 3, 2), until=date(2026, 3, 4))
    assert {r.id for r in queries.runs_page(store, week)} == {"run001", "run002", "run003"}
    assert queries.status_counts(store) == {"done": 4, "failed": 4, "review": 4}
    assert [r.id for r in queries.review_queue(store)] == ["run002", "run005", "run008", "run011"]


def test_runs_page_issues_two_statements_regardless_of_page_size(store):
    """No N+1: the count and the page are one statement each, whatever the number of rows."""
    from sqlalchemy import event

    _seed_runs(store, 30)
    seen = []
    listener = lambda *a: seen.append(a[2])  # noqa: E731 (conn, cursor, statement, ...)
    event.listen(store.engine, "before_cursor_execute", listener)
    try:
        queries.count_runs(store, queries.RunFilter())
        rows = queries.runs_page(store, queries.RunFilter(), size=30)
    finally:
        event.remove(store.engine, "before_cursor_execute", listener)
    assert len(rows) == 30
    assert len([s for s in seen if s.lstrip().upper().startswith("SELECT")]) == 2


def test_bench_runs_page_with_10k_runs_meets_target(tmp_path):
    from bench import ui_db
    from store.db import Store

    store = Store(tmp_path / "bench.db")
    t0 = time.perf_counter()
    ui_db.seed(store, runs=10_000, rounds_per_run=3)
    seeded = time.perf_counter() - t0
    assert queries.count_runs(store, queries.RunFilter()) == 10_000
    ms = ui_db.measure(store, repeat=3)
    print(f"seed {seeded:.2f} s; runs page ms: {json.dumps({k: round(v, 1) for k, v in ms.items()})}")
    # The target is 100 ms; allow slack for a loaded CI machine, the bench prints the real figure.
    assert max(ms.values()) < 250


# ---- components ----------------------------------------------------------------------------------------------
def test_plan_diff_reports_only_changed_sections():
    parent = _plan()
    child = parent.derive("human", caption="heavy thuds", negatives=["music"],
                          events=[e.model_dump() for e in parent.events[:1]])
    diff = components.plan_diff(parent, child)
    assert set(diff) == {"caption", "events", "negatives"}
    assert "-thuds" in diff["caption"] and "+heavy thuds" in diff["caption"]
    assert "-e1  wind" in diff["events"] and "+music" in diff["negatives"]
    assert components.plan_diff(parent, parent.derive("human")) == {}
    assert components.plan_diff(None, child) == {}


def test_audio_views_place_events_and_energy_where_they_are():
    sr = 8000
    audio = np.zeros((2, 3 * sr), np.float32)
    audio[:, sr // 2: sr // 2 + 400] = np.random.default_rng(0).uniform(-0.9, 0.9, 400)  # a burst at 0.5 s
    env = components.envelope(audio, sr, bins=300)
    assert len(env) == 300
    loud = env[env["hi"] > 0.5]["t"]
    assert 0.45 < loud.min() and loud.max() < 0.6
    spec = components.spectrogram(audio, sr)
    assert {"t0", "t1", "f0", "f1", "db"} <= set(spec.columns) and len(spec) > 100
    hot = spec.loc[spec["db"].idxmax()]
    assert hot["t0"] <= 0.55 and hot["t1"] >= 0.45
    ev = components.events_frame(_plan())
    assert list(ev["span"]) == [False, True]  # impacts are lines, ambience is a band
    chart = components.waveform_chart(env, _plan()).to_dict()
    assert len(chart["layer"]) == 4  # wave + spans + impacts + labels


def test_score_frames_skip_missing_dimensions(store):
    store.create_run(id="r")
    a = store.add_round(run_id="r", index=0, score_semantic=0.4, score_overall=0.4)
    b = store.add_round(run_id="r", index=1, score_semantic=0.6, score_temporal=0.7, score_overall=0.65)
    df = components.scores_frame([a, b])
    assert len(df) == 2 + 3 and set(df["round"]) == {"0.0", "0.1"}
    table = components.scores_table([a, b])
    assert list(table["temporal"]) == ["—", "0.700"]
    assert components.score_chart([], None) is None


# ---- plan editing -----------------------------------------------------------------------------------------------
def test_build_plan_from_edited_rows_makes_a_human_child_plan():
    base = _plan()
    rows = editor.events_table(base).to_dict("records")
    rows[0]["start_s"], rows[0]["end_s"] = 1.25, 1.35
    rows.append({"id": None, "label": "door slam", "kind": None, "start_s": 2.0, "end_s": float("nan")})
    rows.append({"id": None, "label": None, "kind": None, "start_s": float("nan"), "end_s": None})  # blank row
    new = editor.build_plan(base, "louder thuds", {"semantic": "oak thuds", "temporal": "", "aesthetic": "dry",
                                                   "spatial": "left"}, editor.event_rows(rows), ["music", " "])
    assert new.provenance.author == "human" and new.provenance.parent_plan_id == base.plan_id
    assert new.plan_id != base.plan_id and new.negatives == ["music"]
    assert new.event("e0").start_s == 1.25
    slam = next(e for e in new.events if e.label == "door slam")
    assert slam.kind.value == "impact" and slam.end_s == 2.0 and len(slam.id) == 8


def test_build_plan_explains_what_is_wrong():
    base = _plan()
    with pytest.raises(editor.PlanInvalid) as exc:
        editor.build_plan(base, "x", {}, [{"id": "a", "label": "hit", "kind": "impact", "start_s": 2.0,
                                            "end_s": 1.0}], [])
    assert "end_s 1.0 < start_s 2.0" in str(exc.value)
    with pytest.raises(editor.PlanInvalid, match="starts at 9.0s, after the clip ends"):
        editor.build_plan(base, "x", {}, [{"id": "a", "label": "hit", "start_s": 9.0, "end_s": 9.5}], [])
    with pytest.raises(editor.PlanInvalid, match="needs a start time"):
        editor.event_rows([{"label": "hit", "start_s": None, "end_s": 1.0}])


def test_cot_budget_counts_the_edited_text_live():
    base = _plan()
    short = editor.cot_budget(base, {"semantic": "thuds"}, [])
    long = editor.cot_budget(base, {"semantic": "wooden thuds on a hollow floor " * 12}, ["music"])
    assert short["fits"] and short["tokens"] < 10
    assert not long["fits"] and long["overflow"] == long["tokens"] - 77


# ---- errors, settings, launch --------------------------------------------------------------------------------------
def test_errors_read_as_sentences():
    assert errors.plain("BackendError: renderer failed") == "A backend could not do its job: renderer failed"
    assert "weights are not on this machine" in errors.plain("ModelMissing: get them with X")
    assert errors.plain("KeyError: 'x'").startswith("The run stopped with an internal error (KeyError)")
    assert errors.plain("/a.mp4: file is empty") == "/a.mp4: file is empty"
    assert errors.plain(None) == ""


def test_launch_argv_binds_localhost_without_a_shell(tmp_path):
    from ui import launch

    s = StudioSettings(db=tmp_path / "x.db", upload_max_mb=7, upload_types=parse_types(".MP4, webm"))
    argv = launch.streamlit_argv(8600, "127.0.0.1", s)
    assert argv[:4] == [argv[0], "-m", "streamlit", "run"] and argv[0].endswith(("python", "python3"))
    opts = dict(zip(argv[5::2], argv[6::2]))
    assert opts["--server.address"] == "127.0.0.1" and opts["--server.port"] == "8600"
    assert opts["--server.maxUploadSize"] == "7" and opts["--browser.gatherUsageStats"] == "false"
    assert opts["--server.headless"] == "true"
    env = launch.child_env(s)
    assert env["FOLEYLOOP_DB"] == str(tmp_path / "x.db") and env["FOLEYLOOP_UPLOAD_TYPES"] == "mp4,webm"


# ---- uploads ---------------------------------------------------------------------------------------------------------
LIMITS = uploads.UploadLimits(max_bytes=2 * 1024 * 1024, types=("mp4", "mov"), max_duration_s=60)


def _nothing_stored(store) -> bool:
    kept = [p for d in ("uploads", "tmp/uploads") for p in (store.home / d).rglob("*") if p.is_file()]
    return not kept and store.count_runs() == 0


def test_upload_rejections_store_nothing(store, tmp_path):
    with pytest.raises(uploads.UploadRejected, match=r"'notes.txt' is a \.txt file; upload a video of type mp4, mov"):
        uploads.accept(io.BytesIO(b"hello"), "notes.txt", 5, store, LIMITS)
    big = b"\0" * (3 * 1024 * 1024)
    with pytest.raises(uploads.UploadRejected, match=r"is 3.0 MB; the limit is 2.0 MB"):
        uploads.accept(io.BytesIO(big), "big.mp4", len(big), store, LIMITS)
    # A client that lies about the size is still cut off at the limit.
    with pytest.raises(uploads.UploadRejected, match="larger than the limit"):
        uploads.accept(io.BytesIO(big), "liar.mp4", 10, store, LIMITS)
    junk = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20
    with pytest.raises(uploads.UploadRejected, match=r"'junk.mp4' could not be read as a video: .*") as exc:
        uploads.accept(io.BytesIO(junk), "junk.mp4", len(junk), store, LIMITS)
    assert "/tmp" not in str(exc.value) and str(store.home) not in str(exc.value)  # no server paths leak
    assert _nothing_stored(store)


def test_upload_of_a_real_video_is_kept_under_the_store_home(store, tmp_path):
    from tests.browser.seed import make_clip

    clip = make_clip(tmp_path, "my clip (1).mp4")
    data = clip.read_bytes()
    acc = uploads.accept(io.BytesIO(data), clip.name, len(data), store, LIMITS)
    assert acc.path.is_file() and acc.path.read_bytes() == data
    assert acc.path.parent.parent == store.home / "uploads" and acc.path.name == "my_clip_1.mp4"
    assert acc.info.duration_s == pytest.approx(3.0, abs=0.1) and acc.info.path == str(acc.path)
    too_long = uploads.UploadLimits(LIMITS.max_bytes, LIMITS.types, max_duration_s=1.0)
    with pytest.raises(uploads.UploadRejected, match=r"is 3.0 s long; the limit is 1 s"):
        uploads.accept(io.BytesIO(data), "again.mp4", len(data), store, too_long)


def test_segment_boundaries_are_on_the_timeline():
    from contract import segments as cs
    from contract.plan import Critique, SegmentScore

    sr = 8000
    env = components.envelope(np.zeros((2, 70 * sr), np.float32), sr, bins=100)
    one = _plan()
    assert components.segments_frame(one).empty
    assert len(components.waveform_chart(env, one).to_dict()["layer"]) == 4  # no boundary layers
    plan = _plan(duration_s=70.0, segments=cs.split(70.0, [30.0], 40.0))
    crit = Critique(scores={"semantic": 0.5}, segments=[
        SegmentScore(index=s.index, start_s=s.start_s, end_s=s.end_s, scores={"semantic": 0.5}, overall=0.5,
                     rendered=s.index == 0) for s in plan.segments])
    rows = components.segments_frame(plan, crit.to_json())
    assert list(rows["segment"]) == [s.index for s in plan.segments]
    assert list(rows["rendered"]) == ["rendered"] + ["reused"] * (len(plan.segments) - 1)
    assert rows["starts_at"].iloc[1] == "cut"
    chart = components.waveform_chart(env, plan).to_dict()
    assert len(chart["layer"]) == 6  # wave + spans + impacts + labels + boundary rules + their names
    boundaries = chart["layer"][4]
    values = chart["datasets"][boundaries["data"]["name"]]
    assert [v["start_s"] for v in values] == [s.start_s for s in plan.segments[1:]]
    assert len(components.spectrogram_chart(components.spectrogram(np.zeros((2, sr), np.float32), sr),
                                            plan).to_dict()["layer"]) == 6
