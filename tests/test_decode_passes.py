"""Each video is decoded once per offline dub (issue 13): the watcher's analysis pass also collects the keyframes,
and the critic reuses that analysis. Counted with a wrapper around ``av.open``."""

from __future__ import annotations

import pytest

from agent import backends
from agent.config import RunConfig
from store.synthetic import make_impact_clip
from tests.helpers import DecodeCounter


@pytest.fixture(scope="module")
def ball(tmp_path_factory):
    return make_impact_clip(tmp_path_factory.mktemp("once") / "ball.mp4", duration_s=3.0, impacts=(0.8, 1.7, 2.4),
                            size=(160, 90))


def test_an_offline_dub_decodes_the_video_once(ball, store, tmp_path, monkeypatch):
    from agent import runs
    from reasoning.offline import motion

    monkeypatch.setattr(motion, "_MEMO", type(motion._MEMO)())  # nothing analysed before this dub
    backends.clear_cache()
    counter = DecodeCounter(monkeypatch)
    # Unreachable thresholds: every round is rendered and critiqued, so a per-round decode would show.
    cfg = RunConfig(rounds=2, thresholds={d: 1.0 for d in ("semantic", "temporal", "aesthetic", "spatial")},
                    patience=3, min_improvement=0.0)
    try:
        run_id, _ = runs.dub(store, ball.path, cfg, out=tmp_path / "out.mp4")
    finally:
        backends.clear_cache()
    assert len(store.rounds(run_id)) == 2
    passes = counter.passes(ball.path)
    assert len(passes) == 1, counter.opens  # motion analysis + keyframes together; the critic reuses it
    assert passes[0]["frames"] <= 75  # 3 s at 25 fps: every frame at most once


def test_watcher_keyframes_need_no_second_decode(ball, monkeypatch):
    from reasoning.offline import motion
    from reasoning.offline.watcher import OfflineWatcher

    class Labels:
        def top_labels(self, frames, k=5):
            assert all(f is not None and f.ndim == 3 for f in frames)
            from reasoning.offline.labels import Label

            return [[Label(0, "tench", ("tench",), 0.9)] for _ in frames]

    monkeypatch.setattr(motion, "_MEMO", type(motion._MEMO)())
    counter = DecodeCounter(monkeypatch)
    OfflineWatcher(classifier=Labels()).watch(ball.path)
    assert len(counter.passes(ball.path)) == 1
