"""Seeded studio databases for the UI, worker and browser tests: real graph runs with the fast fake backends."""

from __future__ import annotations

import pytest

import os
import subprocess
import sys
from pathlib import Path

from agent.config import RunConfig
from contract.plan import Plan
from contract.errors import BackendError
from store import media
from store.db import Store
from store.synthetic import make_impact_clip

ROOT = Path(__file__).resolve().parents[2]


def fake_cfg(**kw) -> RunConfig:
    return RunConfig(watcher="fake", renderer="fake", critic="fake", refiner="fake", **kw)


def install_fakes() -> None:
    """The fake backends plus a renderer that always fails (for failed-run pages)."""
    from agent import backends
    from tests import fakes

    fakes.install()
    sys.modules["tests_ui_broken_renderer"] = _BrokenModule()
    backends.REGISTRY["renderer"]["broken"] = "tests_ui_broken_renderer"


def remove_broken() -> None:
    """Undo the "broken" registration so that later tests see the registry they expect."""
    from agent import backends

    backends.REGISTRY["renderer"].pop("broken", None)
    sys.modules.pop("tests_ui_broken_renderer", None)


class _BrokenRenderer:
    name, model_id = "broken", "broken-renderer"

    def render(self, plan, video, info, seed, out_path):
        raise BackendError("the renderer ran out of patience (seeded failure)")


class _BrokenModule:
    def make(self, cfg):
        return _BrokenRenderer()

    def describe(self, cfg):
        return {"available": False, "why": "seeded failure", "model_id": "broken", "license": "none"}


def make_clip(folder: Path, name: str = "ball.mp4", duration_s: float = 3.0) -> Path:
    return make_impact_clip(folder / name, duration_s=duration_s, impacts=(0.8, 1.9), size=(160, 96)).path


def done_run(store: Store, clip: Path, rounds: int = 3) -> str:
    from agent import runs

    run_id = runs.create_dub_run(store, clip, fake_cfg(rounds=rounds), status="queued")
    runs.execute_dub(store, run_id, store.home / "outputs" / f"{run_id}.mp4")
    return run_id


def review_run(store: Store, clip: Path) -> str:
    from agent import runs

    run_id = runs.create_dub_run(store, clip, fake_cfg(rounds=2, review=True), status="queued")
    runs.execute_dub(store, run_id, store.home / "outputs" / f"{run_id}.mp4")
    assert store.get_run(run_id).status == "review"
    return run_id


def failed_render_run(store: Store, clip: Path) -> str:
    from agent import runs

    run_id = runs.create_dub_run(store, clip, RunConfig(watcher="fake", renderer="broken", critic="fake",
                                                         refiner="fake", rounds=2), status="queued")
    try:
        runs.execute_dub(store, run_id, None)
    except BackendError:
        pass
    assert store.get_run(run_id).status == "failed"
    return run_id


def corrupt_input_run(store: Store, folder: Path) -> str:
    """A dub whose input is not a video: create_dub_run records the failed Run and raises."""
    from agent import runs

    bad = folder / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    before = {r.id for r in store.list_runs(limit=1000)}
    try:
        runs.create_dub_run(store, bad, fake_cfg())
    except media.MediaError:
        pass
    (run_id,) = {r.id for r in store.list_runs(limit=1000)} - before
    return run_id


def forked_run(store: Store, clip: Path) -> tuple[str, int]:
    """A finished run plus a human-edited branch regenerated from its first round."""
    from agent import runs

    run_id = done_run(store, clip, rounds=2)
    first = store.rounds(run_id, branch=0)[0]
    plan = Plan.from_json(first.plan_json)
    edited = plan.derive("human", caption="heavy wooden thuds", negatives=["music", "speech"])
    branch, _ = runs.regenerate(store, run_id, first.id, edited, store.home / "outputs" / f"{run_id}.b1.mp4",
                                 rounds=2)
    return run_id, branch


def worker_cmd(db: Path, *args: str) -> list[str]:
    """argv for a real `foleyloop worker` process that uses the fake backends."""
    code = ("import sys; from tests.browser.seed import install_fakes; install_fakes(); "
            "from agent.cli import main; sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-c", code, "--db", str(db), "worker", *args]


def run_worker(db: Path, *args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(worker_cmd(db, *args), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


@pytest.fixture(scope="module")
def fake_backends_module():
    """Fast deterministic backends for a whole module (and the broken one the error pages need)."""
    from agent import backends

    install_fakes()
    yield
    remove_broken()
    backends.clear_cache()
