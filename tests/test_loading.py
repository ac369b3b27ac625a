"""Loading is explicit and timed: the run service calls every backend's ``load()`` before round 0 (the recorded
``load`` is the truth, round 0 pays none of it), and a worker keeps its models warm across jobs of one
configuration."""

from __future__ import annotations

import json
import sys
import time

import pytest

from agent import backends, runs
from agent import worker as w
from agent.config import RunConfig
from contract.memory import SLOTS
from tests import fakes
from tests.helpers import tiny_clip

LOAD_S = 0.3
CALLS: dict[str, int] = {}


class SlowLoadWatcher(fakes.FakeWatcher):
    """Loads a model for LOAD_S on ``load()``, or lazily on its first watch, as the offline watcher does."""

    name, model_id = "slowload", "slowload-watcher"

    def __init__(self):
        self.model = None

    def load(self):
        CALLS["load"] = CALLS.get("load", 0) + 1
        if self.model is None:
            time.sleep(LOAD_S)
            self.model = object()

    def watch(self, video, info):
        if self.model is None:
            self.load()
        return super().watch(video, info)


class SlottedRenderer(fakes.FakeRenderer):
    """Holds its model in the process's model cache (and says whether it is there), as ThinkSound does."""

    name, model_id = "slotted", "slotted-renderer"
    KEY = "test-loading-renderer-model"

    @property
    def loaded(self) -> bool:
        return self.KEY in SLOTS.loaded()

    def load(self):
        CALLS["renderer"] = CALLS.get("renderer", 0) + 1
        SLOTS.get(self.KEY, 0.0, object, role="renderer")

    def render(self, plan, *a, **k):
        SLOTS.get(self.KEY, 0.0, lambda: CALLS.__setitem__("lazy", CALLS.get("lazy", 0) + 1) or object(),
                  role="renderer")
        return super().render(plan, *a, **k)


@pytest.fixture
def slow(monkeypatch, fake_backends):
    CALLS.clear()
    monkeypatch.setitem(sys.modules, "tests_loading_slow", fakes._Module(SlowLoadWatcher))
    monkeypatch.setitem(backends.REGISTRY["watcher"], "slowload", "tests_loading_slow")
    monkeypatch.setitem(sys.modules, "tests_loading_slotted", fakes._Module(SlottedRenderer))
    monkeypatch.setitem(backends.REGISTRY["renderer"], "slotted", "tests_loading_slotted")
    backends.clear_cache()
    yield
    backends.clear_cache()
    SLOTS.release()


CFG = RunConfig(watcher="slowload", renderer="slotted", critic="fake", refiner="fake", rounds=1)


def test_the_recorded_load_is_the_loading_and_round_0_pays_none_of_it(store, slow, tmp_path):
    clip = tiny_clip(tmp_path / "c.mp4", seconds=1.0, size=32)
    run_id, _ = runs.dub(store, clip, CFG, out=tmp_path / "o.mp4")
    t = store.get_run(run_id).timings()
    assert t["load"] >= LOAD_S, t
    assert t["node:watch"] < LOAD_S, t
    assert CALLS == {"load": 1, "renderer": 1}  # loaded explicitly, once each; nothing loaded lazily in a node
    ids = store.get_run(run_id).backends()
    assert ids["watcher_model_id"] == "slowload-watcher"


def test_a_released_backend_is_loaded_again_before_the_next_run(store, slow, tmp_path):
    """A plain dub frees its models at the end; the next run's ``load`` reloads them (not its render node)."""
    clip = tiny_clip(tmp_path / "c.mp4", seconds=1.0, size=32)
    for i in range(2):
        runs.dub(store, clip, CFG, out=tmp_path / f"o{i}.mp4")
    assert CALLS.get("renderer") == 2 and "lazy" not in CALLS
    assert CALLS["load"] == 1  # the watcher's instance kept its model: load() is not called again


def _queue_dubs(store, tmp_path, cfgs) -> list[str]:
    ids = []
    for i, cfg in enumerate(cfgs):
        clip = tiny_clip(tmp_path / f"c{i}.mp4", seconds=1.0, size=32, seed=i)
        run_id = runs.create_dub_run(store, clip, cfg, status="queued")
        store.enqueue("dub", run_id)
        ids.append(run_id)
    return ids


def test_a_worker_keeps_models_warm_across_jobs_of_one_config(store, slow, tmp_path):
    ids = _queue_dubs(store, tmp_path, [CFG, CFG])
    assert w.Worker(store, w.WorkerConfig(poll_s=0.01)).loop(drain=True) == 2
    assert [store.get_run(i).status for i in ids] == ["done", "done"]
    assert CALLS == {"load": 1, "renderer": 1}  # one load() per backend for both jobs; no lazy reload
    second = store.get_run(ids[1]).timings()
    assert second["load"] < LOAD_S / 3, second


def test_a_worker_frees_what_a_new_config_no_longer_uses(store, slow, tmp_path):
    other = CFG.model_copy(update={"renderer": "fake"})
    ids = _queue_dubs(store, tmp_path, [CFG, other, CFG])
    worker = w.Worker(store, w.WorkerConfig(poll_s=0.01))
    assert worker.run_one() is not None and SlottedRenderer.KEY in SLOTS.loaded()
    assert worker.run_one() is not None and SlottedRenderer.KEY not in SLOTS.loaded()  # renderer changed: freed
    assert worker.run_one() is not None
    assert [store.get_run(i).status for i in ids] == ["done"] * 3
    assert CALLS == {"load": 1, "renderer": 2}  # the watcher never changed; the renderer came back and reloaded
    assert json.loads(store.get_run(ids[1]).config_json)["renderer"] == "fake"


def test_fixed_text_embeddings_are_computed_once_per_model_and_texts(tmp_path):
    """The offline renderer's preset embeddings: one MiniLM forward the first time, a file read afterwards."""
    import numpy as np

    from generator.offline.bank import cached_embeddings

    class Counting:
        model_id = "counting-v1"

        def __init__(self):
            self.calls = 0

        def encode(self, texts):
            self.calls += 1
            return np.arange(len(texts) * 3, dtype=np.float32).reshape(len(texts), 3) / (1 + self.calls)

    emb = Counting()
    first = cached_embeddings(emb, ["rain", "wind"], tmp_path, "presets")
    again = cached_embeddings(emb, ["rain", "wind"], tmp_path, "presets")
    assert emb.calls == 1 and np.array_equal(first, again) and again.dtype == np.float32
    cached_embeddings(emb, ["rain", "thunder"], tmp_path, "presets")  # other texts: another entry
    other = Counting()
    other.model_id = "counting-v2"
    cached_embeddings(other, ["rain", "wind"], tmp_path, "presets")  # another model: another entry
    assert emb.calls == 2 and other.calls == 1
