"""Model- and user-written text is shown as text, never as Markdown (issue #11, item 12): a Markdown image or an
<img> tag in a plan must not turn into a request to some URL each time a run page is viewed."""

from __future__ import annotations

import json
import re

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from contract.plan import Critique, Finding, Plan
from store.db import Store
from tests.test_ui_pages import app as _app
from ui.components import md_escape, md_table

BEACON = "![x](http://127.0.0.1:9/beacon.png)"
IMG = '<img src="http://127.0.0.1:9/img.png">'
LINK = "[click](http://127.0.0.1:9/link) <http://127.0.0.1:9/auto> www.example.com/w a@example.com"
EVIL = f"{BEACON} {IMG} {LINK}"
MD = MarkdownIt("commonmark")  # links, images, autolinks and raw HTML, as Streamlit's renderer has them


def assert_inert(markdown: str, where: str) -> None:
    html = MD.render(markdown)
    assert "<img" not in html and "<a " not in html, (where, markdown, html)
    unescaped = re.sub(r"\\.", "", markdown)  # what is left outside backslash escapes
    assert not re.search(r"(?i)https?://|www\.|\w@\w", unescaped), (where, markdown)  # nothing GFM would autolink


def markdown_bodies(at: AppTest):
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "title", "subheader", "header"):
        for el in getattr(at, kind):
            yield kind, str(el.value)
    for table in at.table:  # st.table renders Markdown in its cells
        for col in table.value.columns:
            for v in table.value[col]:
                yield "table", str(v)


def test_md_escape_keeps_the_characters_and_makes_nothing():
    for text in (EVIL, "plain: (ok) 1.5 s - fine", "a\\b `code` **bold** :red[x] $x$"):
        out = md_escape(text)
        assert_inert(out, "md_escape")
        assert re.sub(r"\\(.)", r"\1", out) == text  # only backslashes were added
    assert md_escape("A backend could not do its job: the renderer ran out (seeded)") == \
        "A backend could not do its job: the renderer ran out (seeded)"
    frame = md_table(__import__("pandas").DataFrame([{"video": EVIL, "n": 1}]))
    assert_inert(frame.iloc[0]["video"], "md_table") and frame.iloc[0]["n"] == 1


@pytest.fixture
def evil_store(tmp_path, monkeypatch):
    store = Store(tmp_path / "home" / "foleyloop.db")
    monkeypatch.setenv("FOLEYLOOP_DB", str(store.db_path))
    plan = Plan(caption=f"{BEACON} {IMG}", semantic=EVIL, temporal=EVIL, aesthetic=EVIL, spatial=EVIL,
                negatives=[BEACON, IMG], duration_s=3.0,
                events=[{"id": "e1", "label": BEACON[:60], "start_s": 0.5, "end_s": 0.6}])
    store.create_run(id="evil1", kind="text", status="failed", prompt=EVIL, duration_s=3.0,
                     error=f"BackendError: the model said {EVIL}", stop_reason=f"refiner_failed: {BEACON}")
    parent = store.add_round(run_id="evil1", index=0, plan_json=plan.to_json(), status="scored",
                             critique_json=Critique(scores={"semantic": 0.5}, findings=[
                                 Finding(target="e1", problem=EVIL, suggestion=BEACON)]).to_json())
    child = plan.derive("refiner", semantic=f"{EVIL} again")
    store.add_round(run_id="evil1", index=1, plan_json=child.to_json(), parent_round_id=parent.id,
                    author="refiner", changes_json=json.dumps([f"rewrote semantic: {EVIL}"]),
                    critique_json=Critique(scores={"semantic": 0.6}, findings=[
                        Finding(target="semantic", problem=IMG)]).to_json())
    store.create_run(id="evil2", status="review", video_path=f"/videos/{BEACON}.mp4", duration_s=3.0)
    return store, plan




def _check_page(at: AppTest, page: str) -> None:
    seen = 0
    for kind, body in markdown_bodies(at):
        assert_inert(body, f"{page}: {kind}")
        seen += 1
    assert seen and not at.get("imgs") and not at.get("image")


def test_run_page_shows_plan_text_as_text_in_every_round(evil_store):
    store, plan = evil_store
    at = _app("views/run.py", run="evil1")
    for index in range(2):
        at.selectbox(key="run:evil1:round").select_index(index).run()
        assert not at.exception, [e.value for e in at.exception]
        _check_page(at, f"run round {index}")
        plain = "\n".join(str(t.value) for t in at.text)
        assert BEACON in plain and IMG in plain  # shown, literally, as text
    assert any("rewrote semantic" in str(t.value) and BEACON in str(t.value) for t in at.text)
    assert any(IMG in str(t.value) for t in at.text)  # a finding of the second round
    assert any("the model said" in e.value for e in at.error)


def test_run_lookup_and_review_and_runs_pages_escape_user_text(evil_store, monkeypatch):
    store, plan = evil_store
    at = _app("views/run.py", run=BEACON)  # an address bar is user text too
    _check_page(at, "run lookup")
    assert "There is no run" in at.error[0].value

    from agent import runs

    monkeypatch.setattr(runs, "pending_review", lambda s, run_id: {"plan": plan.to_json(), "round_id": 7})
    at = _app("views/review.py")
    _check_page(at, "review")
    assert any(BEACON in str(t.value) for t in at.text)

    at = _app()
    _check_page(at, "runs")


def test_editor_errors_quote_the_user_text_escaped(evil_store):
    store, plan = evil_store
    at = _app("views/run.py", run="evil1")
    rnd = store.rounds("evil1")[-1]  # the page opens on the latest round
    key = f"edit:evil1:{rnd.id}"
    at.session_state[f"{key}:events"] = {"edited_rows": {}, "deleted_rows": [],
                                         "added_rows": [{"label": BEACON, "start_s": None, "end_s": 1.0}]}
    at.run()
    assert any("needs a start time" in e.value for e in at.error)
    _check_page(at, "editor")
