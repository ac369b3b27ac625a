"""Cross-clip batched rendering in `foleyloop batch --batch-size N` (local engine) on a tiny random ThinkSound:
fewer MM-DiT forwards than clip-by-clip, the same audio within a stated tolerance, and the batcher's rules."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from agent import backends, batch
from agent.batching import BatchingRenderer, RenderBatcher
from agent.cli import main
from agent.config import RunConfig
from contract import memory
from generator.thinksound.mmdit import MMDiT
from generator.thinksound.weights import TINY_MMDIT, write_tiny_weights
from tests.helpers import FAKE, tiny_clip

N_CLIPS = 8
# Batched and clip-by-clip renders differ only by fp32 GEMM blocking (batch 16 vs 2 rows): the peak-normalised
# 16-bit WAVs agree to within 2e-3 of full scale.
TOLERANCE = 2e-3


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    yield
    backends.clear_cache()
    memory.SLOTS.release_roles({"renderer"})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny weights with a 64-wide Synchformer (only shapes matter here), MetaCLIP, T5, and 8 equal clips."""
    from tests.tiny_models import build_tiny_metaclip, build_tiny_t5

    root = tmp_path_factory.mktemp("batchrender")
    weights = write_tiny_weights(root / "weights", mmdit=dataclasses.replace(TINY_MMDIT, sync_dim=64), sync_dim=64)
    opts = {"weights": str(weights.root), "metaclip": str(build_tiny_metaclip(root / "metaclip")),
            "t5": str(build_tiny_t5(root / "t5")), "cache_dir": str(root / "cache"), "steps": 2}
    (root / "in").mkdir()
    for i in range(N_CLIPS):
        tiny_clip(root / "in" / f"c{i}.mp4", seconds=1.0, size=32, seed=i)
    return {"root": root, "opts": opts}


def _cfg(tiny) -> RunConfig:
    return RunConfig(watcher="fake", renderer="thinksound", critic="fake", refiner="fake", rounds=1, dtype="fp32",
                     options={"renderer": tiny["opts"]})


def _count_forwards(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = MMDiT.predict_flow

    def counted(self, x, t, cond):
        calls.append(x.shape[0])
        return real(self, x, t, cond)

    monkeypatch.setattr(MMDiT, "predict_flow", counted)
    return calls


def _audio(st, report) -> dict[str, np.ndarray]:
    out = {}
    for o in report.outcomes:
        (rnd,) = st.rounds(o.run_id)
        out[o.clip.path.name] = sf.read(st.artifact_path(rnd.audio_artifact_id), always_2d=True)[0]
    return out


def test_eight_equal_clips_share_forwards_and_match_clip_by_clip(tiny, fake_backends, tmp_path, monkeypatch):
    from store.db import Store

    calls = _count_forwards(monkeypatch)
    results, forwards = {}, {}
    for size in (1, N_CLIPS):
        st = Store(tmp_path / f"b{size}" / "fl.db")
        clips = batch.collect(tiny["root"] / "in", tmp_path / f"out{size}", _cfg(tiny), lambda p: f"{p.stem}.mp4",
                              {".mp4"})
        calls.clear()
        engine = batch.LocalEngine(scratch_root=tmp_path / f"scratch{size}", batch_size=size)
        report = batch.run(st, clips, engine)
        assert [o.status for o in report.outcomes] == ["done"] * N_CLIPS, [o.error for o in report.outcomes]
        forwards[size] = list(calls)
        results[size] = _audio(st, report)
        if size > 1:
            assert engine.render_batches() == [N_CLIPS]  # every clip's render in one render_batch call
    assert forwards[1] == [2] * (N_CLIPS * 2)  # clip by clip: 2 steps × one CFG pair per clip
    assert forwards[N_CLIPS] == [2 * N_CLIPS] * 2  # batched: 2 steps × all 8 CFG pairs in one forward
    assert len(forwards[N_CLIPS]) < len(forwards[1])
    for name, one in results[1].items():
        many = results[N_CLIPS][name]
        assert many.shape == one.shape and np.abs(one).max() > 0.5
        assert np.abs(many - one).max() <= TOLERANCE, name
    assert not np.allclose(results[1]["c0.mp4"], results[1]["c1.mp4"])  # different videos, different audio
    # the registry has its plain renderer back once the batch is over
    assert not isinstance(backends.get("renderer", _cfg(tiny)), BatchingRenderer)


def test_batch_size_needs_the_local_engine(tmp_path, capsys, fake_backends):
    (tmp_path / "in").mkdir()
    tiny_clip(tmp_path / "in" / "c.mp4", seconds=1.0, size=32)
    args = ["--db", str(tmp_path / "fl.db"), "batch", str(tmp_path / "in"), "--out-dir", str(tmp_path / "o"), *FAKE]
    assert main(args + ["--engine", "ray", "--batch-size", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch-size > 1 needs --engine local" in err[0]
    assert main(args + ["--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(args + ["--batch-size", "3", "--rounds", "1"]) == 0  # a renderer without render_batch: threads only
    assert "1 done, 0 failed, 0 skipped" in capsys.readouterr().out


class _Recorder:
    def __init__(self, fail_batch: bool = False):
        self.batches: list[list] = []
        self.fail_batch = fail_batch

    def render_batch(self, jobs):
        self.batches.append([j[0] for j in jobs])
        if self.fail_batch:
            raise RuntimeError("one plan is bad")
        return [f"audio of {j[0]}" for j in jobs]

    def render(self, plan, video, info, seed, out_path):
        if plan == "bad":
            raise ValueError("bad plan")
        return f"alone {plan}"


def _threads(batcher: RenderBatcher, plans: list[str], delays: list[float]) -> dict:
    """Clip threads as the local engine runs them: each counted (``enter``) before its thread starts."""
    out: dict = {}

    def clip(plan, delay):
        try:
            time.sleep(delay)
            out[plan] = batcher.submit((plan, None, None, 0, "x.wav"))
        except Exception as exc:
            out[plan] = exc
        finally:
            batcher.leave()

    ts = [threading.Thread(target=clip, args=a) for a in zip(plans, delays)]
    for _ in ts:
        batcher.enter()
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=30)
    return out


def test_the_batcher_waits_for_every_live_clip_and_caps_the_batch():
    rec = _Recorder()
    out = _threads(RenderBatcher(rec, max_batch=4), list("abcdef"), [0.0, 0.05, 0.1, 0.15, 0.2, 0.25])
    assert out == {p: f"audio of {p}" for p in "abcdef"}
    assert sorted(len(b) for b in rec.batches) == [2, 4]  # 4 (the cap), then the 2 left


def test_a_clip_that_never_renders_does_not_hold_the_others():
    rec = _Recorder()
    batcher = RenderBatcher(rec, max_batch=8)
    batcher.enter()  # a clip that fails before its render and leaves late
    done = threading.Timer(0.3, batcher.leave)
    done.start()
    t0 = time.monotonic()
    out = _threads(batcher, ["a", "b"], [0.0, 0.0])
    assert out == {"a": "audio of a", "b": "audio of b"} and time.monotonic() - t0 < 10
    assert rec.batches == [["a", "b"]] or sorted(map(len, rec.batches)) == [1, 1]


def test_a_failing_batch_is_rendered_clip_by_clip():
    out = _threads(RenderBatcher(_Recorder(fail_batch=True), max_batch=3), ["a", "bad", "c"], [0, 0, 0])
    assert out["a"] == "alone a" and out["c"] == "alone c" and isinstance(out["bad"], ValueError)
