"""The studio on the hardened store and runs service: a database that cannot be opened is a sentence, not a
traceback; a read-only one can be browsed with its writing buttons off; a failed fork says why, as plain text; a
plan that does not fit its video is refused by the page before anything is recorded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import runs
from contract.plan import Plan
from store.db import Store
from tests import fakes
from tests.browser import seed
from tests.browser.seed import fake_backends_module  # noqa: F401
from tests.test_ui_plain_text import BEACON, _check_page
from tests.test_ui_pages import app, texts

PAGES = (None, "views/run.py", "views/review.py", "views/new_run.py")


@pytest.fixture(scope="module", autouse=True)
def _fakes(fake_backends_module):
    yield




def test_a_database_that_cannot_be_opened_is_a_sentence_on_every_page(tmp_path, monkeypatch):
    notes = tmp_path / "notes.db"
    notes.write_text("my notes, not a database\n" * 100)
    monkeypatch.setenv("FOLEYLOOP_DB", str(notes))
    for page in PAGES:
        at = app(page, run="abc")
        errors = [e.value for e in at.error]
        assert any("The database cannot be used" in e and "not a foleyloop database" in e for e in errors), \
            (page, errors)
    assert notes.read_text().startswith("my notes")


def test_a_read_only_database_is_browsable_with_writing_turned_off(tmp_path, monkeypatch):
    store = Store(tmp_path / "home" / "foleyloop.db")
    clip = seed.make_clip(tmp_path)
    run_id = seed.done_run(store, clip, rounds=1)
    review_id = seed.review_run(store, clip)
    db = store.db_path
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if (mode & os.W_OK and Path(p) == db)
                        else real(p, mode))
    monkeypatch.setenv("FOLEYLOOP_DB", str(db))
    before = db.read_bytes()

    at = app()
    assert run_id in " ".join(at.dataframe[0].value["run"])
    at = app("views/run.py", run=run_id)
    rnd = store.rounds(run_id)[0]
    assert "is read-only" in texts(at) and at.button(key=f"edit:{run_id}:{rnd.id}:go").disabled
    at = app("views/review.py")
    assert at.button(key=f"review:{review_id}:approve").disabled
    at = app("views/new_run.py")
    assert "new runs cannot be created" in texts(at) and at.button(key="new:create").disabled
    assert db.read_bytes() == before


def test_the_run_page_says_why_a_fork_failed_as_plain_text(tmp_path, monkeypatch):
    store = Store(tmp_path / "home" / "foleyloop.db")
    run_id = seed.done_run(store, seed.make_clip(tmp_path), rounds=1)
    first = store.rounds(run_id)[0]
    real = fakes.FakeRenderer.render

    def failing(self, plan, *a, **k):
        if plan.caption == "doomed":
            raise RuntimeError(f"the renderer choked on {BEACON}")
        return real(self, plan, *a, **k)

    monkeypatch.setattr(fakes.FakeRenderer, "render", failing)
    with pytest.raises(RuntimeError):
        runs.regenerate(store, run_id, first.id, Plan.from_stored(first.plan_json).derive("human", caption="doomed"))
    assert store.get_run(run_id).status == "done"
    monkeypatch.setenv("FOLEYLOOP_DB", str(store.db_path))
    at = app("views/run.py", run=run_id)
    warnings = [w.value for w in at.warning]
    shown = [w for w in warnings if w.startswith("Branch 1 failed")]
    assert shown and "the renderer choked on" in shown[0] and "unchanged" in shown[0], warnings
    assert not at.error  # the run itself did not fail
    _check_page(at, "failed fork")  # the error quotes a Markdown image: shown literally, never fetched


def test_the_run_page_refuses_a_plan_the_service_refuses(tmp_path, monkeypatch):
    """A stored plan may be older than the bounds: the editor starts from it, and the service's check (the one the
    CLI and the worker get) is shown on the page instead of crashing it; nothing is recorded."""
    store = Store(tmp_path / "home" / "foleyloop.db")
    run_id = seed.done_run(store, seed.make_clip(tmp_path), rounds=1)
    rnd = store.rounds(run_id)[0]
    store.update_run(run_id, duration_s=30.0)  # as if the plan no longer matched its video
    monkeypatch.setenv("FOLEYLOOP_DB", str(store.db_path))
    at = app("views/run.py", run=run_id)
    at.text_input(key=f"edit:{run_id}:{rnd.id}:caption").input("louder thuds").run()
    at.button(key=f"edit:{run_id}:{rnd.id}:go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("cannot be regenerated" in e and "duration" in e for e in errors), errors
    assert store.rounds(run_id, branch=1) == [] and "1" not in store.get_run(run_id).branches()


def test_the_studio_imports_with_ui_first_on_the_path_as_streamlit_puts_it():
    """`streamlit run ui/app.py` puts ui/ first on sys.path: a ui module named like a top-level package
    (ui/models.py beside models/) shadowed it and the run page died with a circular ImportError in the browser."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    packages = {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
    assert not {p.stem for p in (root / "ui").glob("*.py")} & packages
    code = "import sys; sys.path.insert(0, sys.argv[1]); import agent.config, agent.backends, models.precision"
    res = subprocess.run([sys.executable, "-c", code, str(root / "ui")], cwd=root, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-800:]
