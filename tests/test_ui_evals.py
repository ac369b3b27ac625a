"""The studio's Evaluations page under Streamlit's AppTest: the list, one evaluation clip by clip with links to its
runs, and two evaluations compared (mean Δ, paired sign counts)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from store import evals as E
from store.db import Store

APP = Path(__file__).resolve().parents[1] / "ui" / "app.py"
PAGE = "views/evaluations.py"


def frame(at: AppTest, *columns: str):
    """The (first) table that has these columns (AppTest does not expose a dataframe's key)."""
    return next(d.value for d in at.dataframe if set(columns) <= set(d.value.columns))


def page(store: Store, monkeypatch) -> AppTest:
    monkeypatch.setenv("FOLEYLOOP_DB", str(store.db_path))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _eval(store: Store, values: dict, code: str, error_clip: str | None = None, noise: bool = False) -> str:
    """``noise``: recorded with the verdict within the measures' seed noise (else as before the tolerances)."""
    summary = {"n_scored": len(values), "failed": [], "kept_later": {"n": 1, "of": 2},
               "no_worse": {"n": 2, "of": 2}, "later_no_worse": {"n": 0, "of": 1}}
    if noise:
        summary["later_no_worse_noise"] = {"n": 1, "of": 1, "share": 1.0}
    ev = E.create_eval(store, [{"name": n, "content_group": "foley"} for n in values], corpus_path="/c/manifest.json",
                       corpus_hash="abc", code_version=code,
                       config_json={"run": {"critic": "offline", "renderer": "offline", "rounds": 3}},
                       summary_json=summary)
    for row in E.clips(store, ev.id):
        run = store.create_run(video_path=f"/c/{row.name}.mp4", status="done")
        if row.name == error_clip:
            E.update_clip(store, row.id, status="failed", run_id=run.id,
                          error="BackendError: **model said** <b>no</b> [link](http://x)")
            continue
        f1 = values[row.name]
        m = {"onset_f1": f1, "onset_f1_chance": 0.1, "desync_s": None,
             "desync_why": "unavailable: Synchformer liuhuadai/ThinkSound not found — copy it"}
        metrics = {"round0": m, "kept": m}
        if noise:
            metrics["comparison_noise"] = {"no_worse": True, "worse_on": []}
            metrics["reference_content"] = {"periodic_energy_share": f1}
        E.update_clip(store, row.id, status="scored", run_id=run.id, kept_index=0, kept_later=False, no_worse=True,
                      metrics_json=metrics)
    return ev.id


def test_empty_database(store, monkeypatch):
    at = page(store, monkeypatch)
    assert "No evaluations yet" in at.info[0].value


def test_list_clips_with_run_links_and_a_comparison(store, monkeypatch):
    a = _eval(store, {"x": 0.2, "y": 0.5, "z": 0.3}, "v1", error_clip="z")
    b = _eval(store, {"x": 0.4, "y": 0.5, "z": 0.1}, "v2", noise=True)
    at = page(store, monkeypatch)
    listing = frame(at, "eval", "corpus hash")
    assert set(listing["eval"]) == {a, b} and set(listing["code"]) == {"v1", "v2"}
    assert list(listing.loc[listing["eval"] == a, "kept later round"]) == ["1/2"]
    assert list(listing.loc[listing["eval"] == a, "kept later round no worse"]) == ["0/1"]
    # within the measures' seed noise: counted where recorded, a dash for an evaluation older than the tolerances
    assert list(listing.loc[listing["eval"] == b, "kept later round no worse within noise"]) == ["1/1"]
    assert list(listing.loc[listing["eval"] == a, "kept later round no worse within noise"]) == ["—"]

    at.selectbox(key="evals:one").set_value(b).run()
    assert list(frame(at, "clip", "run", "error")["no worse within noise"]) == [True, True, True]
    # what the original soundtrack is made of, as measured (the foley targets' criterion)
    assert list(frame(at, "clip", "run", "error")["reference pitched energy"]) == [0.4, 0.5, 0.1]

    at.selectbox(key="evals:one").set_value(a).run()
    clips = frame(at, "clip", "run", "error")
    assert "no worse within noise" not in clips.columns  # an old evaluation: no column of dashes
    assert "reference pitched energy" not in clips.columns
    assert list(clips["clip"]) == ["x", "y", "z"] and list(clips["status"]) == ["scored", "scored", "failed"]
    runs = {r.video_path: r.id for r in store.list_runs(limit=10)}
    assert clips.loc[0, "run"] == f"/run?run={runs['/c/x.mp4']}"
    # A model's error text is shown verbatim in a table cell, not rendered as markup.
    assert clips.loc[2, "error"] == "BackendError: **model said** <b>no</b> [link](http://x)"
    assert "DeSync s" not in clips.columns  # a measure no clip has is not a column of dashes...
    assert any("unavailable: Synchformer" in t.value for t in at.text)  # ...its reason is said once, as text

    at.selectbox(key="evals:a").set_value(a)
    at.selectbox(key="evals:b").set_value(b).run()
    assert not at.exception
    cmp = [d.value for d in at.dataframe if "Δ mean" in d.value.columns][1]  # round 0, then kept
    f1 = cmp[cmp["measure"] == "onset F1"].iloc[0]
    assert f1["clips"] == 2 and (f1["B better"], f1["B worse"], f1["tied"]) == (1, 0, 1)  # z failed in A
    assert f1["Δ mean"] == pytest.approx(0.1)
    assert any("z" in c.value and "Left out" in c.value for c in at.caption)
