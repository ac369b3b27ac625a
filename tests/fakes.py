"""Small deterministic backends for testing graph logic (resume, fork, review, concurrency) quickly.

They are registered under the name "fake" in agent.backends.REGISTRY by ``install()``; real-backend
tests use the offline default instead.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from agent import backends
from contract.protocols import RenderResult
from contract.plan import Critique, Event, Finding, Plan
from contract.protocols import RefineResult, WatchResult
from store.media import write_audio

SR = 44100


class FakeWatcher:
    name, model_id = "fake", "fake-watcher"

    def watch(self, video, info):
        dur = info.duration_s
        events = [Event(id=f"e{i}", label="thud", kind="impact", start_s=t, end_s=t + 0.1)
                  for i, t in enumerate(np.arange(0.5, dur, 1.0))]
        plan = Plan(caption="thuds", semantic="wooden thuds", temporal="one per second", aesthetic="dry",
                    spatial="centre", events=events, duration_s=dur)
        return WatchResult(plan=plan, model_id=self.model_id, prompt_version="fake-v1", raw_output="{fake}")


class FakeRenderer:
    name, model_id = "fake", "fake-renderer"

    def render(self, plan, video, info, seed, out_path):
        delay = float(os.environ.get("FOLEYLOOP_FAKE_RENDER_DELAY", "0"))
        time.sleep(delay)
        n = int(plan.duration_s * SR)
        audio = np.zeros((2, n), np.float32)
        rng = np.random.default_rng(seed)
        for e in plan.events:
            i = int(e.start_s * SR)
            burst = rng.standard_normal(2000).astype(np.float32) * np.exp(-np.arange(2000) / 300)
            audio[:, i:i + 2000] += 0.5 * burst[: max(0, n - i)]
        write_audio(out_path, audio, SR)
        return RenderResult(Path(out_path), SR, plan.duration_s, {"events": len(plan.events)})


class FakeCritic:
    """Scores rise with the number of refinements recorded in the plan caption ('+' marks)."""

    name = "fake"

    def critique(self, plan, audio, video, info):
        k = plan.caption.count("+")
        base = float(os.environ.get("FOLEYLOOP_FAKE_BASE", "0.3"))
        s = min(1.0, base + 0.2 * k)
        return Critique(scores={"semantic": s, "temporal": s, "aesthetic": s, "spatial": s},
                        findings=[Finding(target="temporal", problem="fake", suggestion="more")])


class FakeRefiner:
    name, model_id = "fake", "fake-refiner"

    def refine(self, plan, critique, failing, round_index, seed, video=None, info=None):
        new = plan.derive("refiner", caption=plan.caption + " +")
        return RefineResult(plan=new, seed=seed + 1, changes=[f"round {round_index}: +"])


class _Module:
    def __init__(self, cls):
        self.cls = cls

    def make(self, cfg):
        return self.cls()

    def describe(self, cfg):
        return {"available": True, "model_id": "fake"}


MODULES = {"watcher": FakeWatcher, "renderer": FakeRenderer, "critic": FakeCritic, "refiner": FakeRefiner}


def install() -> None:
    import sys

    for role, cls in MODULES.items():
        mod_name = f"tests_fake_{role}"
        sys.modules[mod_name] = _Module(cls)
        backends.REGISTRY[role]["fake"] = mod_name
