"""A real browser against `foleyloop ui`: headless Chromium screenshots (kept under screenshots/ for people to
look at) and the rendered DOM of a run page."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.db import Store
from tests.browser import chromium, seed

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "screenshots"
pytestmark = pytest.mark.skipif(not chromium.CHROMIUM.exists(),
                                reason="needs /usr/bin/chromium (install it with .ci/browser.sh)")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from agent import backends

    seed.install_fakes()
    tmp = tmp_path_factory.mktemp("browser")
    store = Store(tmp / "home" / "foleyloop.db")
    clip = seed.make_clip(tmp)
    seed.failed_render_run(store, clip)
    run_id, _ = seed.forked_run(store, clip)
    seed.remove_broken()
    backends.clear_cache()
    with chromium.studio(store.db_path, tmp / "studio.log") as server:
        yield store, run_id, server


def test_run_page_renders_the_seeded_run_and_its_scores(served):
    store, run_id, server = served
    run = store.get_run(run_id)
    best = store.get_round(run.best_round_id)
    cap = chromium.capture(server, f"/run?run={run_id}", SHOTS / "run.png", [f"Run {run_id}"])
    print(f"run page captured via {cap.method}")
    text = cap.text()
    assert cap.finished and f"Run {run_id}" in text, cap.dom[-2000:]
    assert f"best overall {best.score_overall:.3f}" in text
    for dim, value in best.scores().items():
        assert f"{dim} {value:.3f}" in text, f"{dim} score missing from the rendered page"
    assert f"stop reason: {run.stop_reason}" in text
    assert chromium.ink_fraction(cap.png) >= 0.002


def test_runs_page_renders_in_chromium(served):
    store, run_id, server = served
    cap = chromium.capture(server, "/", SHOTS / "runs.png", ["2 runs match"])
    print(f"runs page captured via {cap.method}")
    assert cap.finished and "Runs" in cap.text()
    assert chromium.ink_fraction(cap.png) >= 0.002
