"""Qwen2.5-VL backend on a tiny random model: real loading, chat template, qwen-vl-utils video, generate.

The tiny model writes noise, so the real generate path is checked by its failure being reported with the
raw text kept; success is checked with the same path where only ``generate``'s token choice is scripted.
"""

from __future__ import annotations

import json
import shutil
import weakref

import pytest
import torch
from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration, Qwen2_5OmniThinkerForConditionalGeneration

from agent import backends
from agent.backends import options_for
from agent.config import RunConfig
from reasoning.llm_common.parse import ReplyInvalid
from contract.plan import Critique
from contract.errors import BackendError, ModelMissing
from reasoning.qwen import judge as qwen_judge
from reasoning.qwen import loader, omni
from reasoning.qwen import refiner as qwen_refiner
from reasoning.qwen import watcher as qwen_watcher
from contract import memory
from contract.memory import ModelSlots
from tests.qwen_fixtures import (CLIP_S, IMPACT_TIMES, VALID_PLAN_REPLY, impact_clip, impact_wav,  # noqa: F401
                                 sample_plan, tiny_omni_dir, tiny_qwen_dir)

PIX = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield
    backends.clear_cache()


@pytest.fixture(autouse=True, scope="module")
def _release_at_end():
    yield
    loader.release()


def _cfg(model, role="watcher", **opts) -> RunConfig:
    return RunConfig(watcher="qwen", critic="qwen", options={role: {"model": str(model), **PIX, **opts}})


def _script_generate(monkeypatch, model_cls, model_dir):
    """Replace only the token choice: run the real forward on the real inputs, then emit scripted text."""
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    seen = []
    replies: list[str] = []

    def fake_generate(self, input_ids=None, max_new_tokens=8, **kw):
        with torch.inference_mode():
            logits = self(input_ids=input_ids, **kw).logits  # the multimodal inputs must really be consumable
        seen.append({"input_ids": input_ids, "logits_shape": tuple(logits.shape), "kw": kw})
        text = replies.pop(0) if len(replies) > 1 else replies[0]
        new = torch.tensor([tok.encode(text, add_special_tokens=False) + [2]])  # 2 = <|im_end|>
        return torch.cat([input_ids, new[:, :max_new_tokens]], dim=1)

    monkeypatch.setattr(model_cls, "generate", fake_generate)
    return replies, seen, tok


@pytest.fixture
def scripted_generate(monkeypatch, tiny_qwen_dir):
    return _script_generate(monkeypatch, Qwen2_5_VLForConditionalGeneration, tiny_qwen_dir)


def test_real_generate_on_mp4_reports_parse_failure_with_raw_text(tiny_qwen_dir, impact_clip):
    path, info = impact_clip
    w = qwen_watcher.make(options_for("watcher", _cfg(tiny_qwen_dir, max_new_tokens=12, max_attempts=2, max_side=96)))
    with pytest.raises(ReplyInvalid) as err:
        w.watch(path, info)
    exc = err.value
    assert exc.prompt_version == "watch_v1" and exc.model_id == str(tiny_qwen_dir)
    assert len(exc.attempts) == 2 and all(a["raw"] for a in exc.attempts)
    assert all(a["raw"] in exc.raw_output for a in exc.attempts)  # noise kept verbatim for the Round
    # the prompt carried the video: far more tokens than the text alone, and the re-ask grew it
    assert exc.attempts[0]["prompt_tokens"] > 300
    assert exc.attempts[1]["prompt_tokens"] > exc.attempts[0]["prompt_tokens"]
    assert exc.attempts[0]["completion_tokens"] <= 12
    assert w.chat.spec.key in loader.SLOTS.loaded()  # loaded lazily into the shared slot


def test_watch_success_through_the_real_path(tiny_qwen_dir, impact_clip, scripted_generate):
    replies, seen, tok = scripted_generate
    replies.append("```json\n" + VALID_PLAN_REPLY + "\n```")
    path, info = impact_clip
    res = qwen_watcher.make(options_for("watcher", _cfg(tiny_qwen_dir, fps=2.0, max_side=96))).watch(path, info)
    assert [e.start_s for e in res.plan.events] == list(IMPACT_TIMES)
    assert res.model_id == str(tiny_qwen_dir) and res.prompt_version == "watch_v1"
    assert res.plan.provenance.backend == "qwen" and VALID_PLAN_REPLY in res.raw_output
    assert res.meta["frames_sent"] == int(CLIP_S * 2.0)
    kw = seen[0]["kw"]
    # 6 frames → 3 temporal patches; 2 fps with temporal patch 2 → 1 s per grid step (absolute time for MRoPE)
    assert kw["video_grid_thw"][0, 0].item() == 3
    assert kw["second_per_grid_ts"].tolist() == pytest.approx([1.0])
    prompt = tok.decode(seen[0]["input_ids"][0])
    assert "0.00, 0.50, 1.00, 1.50, 2.00, 2.50" in prompt
    n_video = int((seen[0]["input_ids"] == 7).sum())
    grid = kw["video_grid_thw"][0]
    assert n_video == int(grid.prod()) // 4  # one <|video_pad|> per merged 2x2 patch


def test_refiner_and_judge_share_the_loaded_model(tiny_qwen_dir, impact_clip, scripted_generate):
    replies, _, _ = scripted_generate
    path, info = impact_clip
    plan = sample_plan(info.duration_s)
    opts = {"model": str(tiny_qwen_dir), **PIX, "max_side": 96}
    cfg = RunConfig(watcher="qwen", critic="qwen", options={"refiner": opts, "critic": opts})
    replies.append(json.dumps({"temporal": "hits at 0.95 s and 1.95 s", "semantic": "IGNORED", "events": [
        {"id": "e1", "label": "ball hits floor", "kind": "impact", "start_s": 0.95, "end_s": 1.05}]}))
    crit = Critique(scores={"semantic": 0.9, "temporal": 0.2, "aesthetic": 0.9, "spatial": 0.9})
    res = qwen_refiner.make(options_for("refiner", cfg)).refine(plan, crit, ["temporal"], 1, 3, video=path, info=info)
    assert res.plan.temporal == "hits at 0.95 s and 1.95 s" and res.plan.semantic == plan.semantic
    assert any("dropped event e2" in c for c in res.changes)
    replies[:] = [json.dumps({"consistency": 0.5, "findings": [
        {"target": "events", "dimension": "temporal", "problem": "second bounce at 2.0 s is missing"}]})]
    out = qwen_judge.make(options_for("critic", cfg)).judge(res.plan, path, info, crit)
    assert out.scores == crit.scores and out.findings[0].target == "events" and out.scorers[-1].name == "qwen-judge"
    assert len(loader.SLOTS.loaded()) == 1  # same spec → one model for both roles


def test_registry_builds_qwen_backends(tiny_qwen_dir, monkeypatch):
    def no_loading(*a, **k):
        raise AssertionError("making or describing a backend must not load weights")

    monkeypatch.setattr(loader, "_load", no_loading)
    cfg = _cfg(tiny_qwen_dir)
    w = backends.get("watcher", cfg)
    assert w.name == "qwen" and w.model_id == str(tiny_qwen_dir)
    assert backends.get("refiner", cfg).name == "qwen"  # refiner follows the watcher family
    row = qwen_watcher.describe(options_for("watcher", cfg))
    assert row["available"] and row["where"] == str(tiny_qwen_dir)


def test_missing_weights_are_reported_not_loaded(tmp_path):
    cfg = RunConfig(watcher="qwen", options={"watcher": {"hf_cache_dir": str(tmp_path / "empty")}})
    row = qwen_watcher.describe(options_for("watcher", cfg))
    assert row["available"] is False and row["model_id"] == loader.DEFAULT_MODEL
    assert "huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct" in row["why"] and row["license"] == "Apache-2.0"
    with pytest.raises(ModelMissing) as err:
        qwen_watcher.make(options_for("watcher", cfg)).chat.chat([{"role": "user", "content": "hi"}], 4)
    msg = str(err.value)
    assert "\n" not in msg and "Qwen/Qwen2.5-VL-7B-Instruct" in msg and "--watcher-model PATH" in msg
    with pytest.raises(ModelMissing, match="at that path"):
        loader.resolve(str(tmp_path / "nope"))


def test_hf_cache_layout_is_found_offline(tiny_qwen_dir, tmp_path):
    repo = tmp_path / "hub" / "models--someone--tiny-qwen"
    snap = repo / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_qwen_dir, snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    assert loader.find_weights("someone/tiny-qwen", str(tmp_path / "hub")) == snap
    assert loader.find_weights("someone/other", str(tmp_path / "hub")) is None
    (snap / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    assert loader.model_license(snap, "someone/tiny-qwen") == "apache-2.0"


def test_release_really_frees_the_model(tiny_qwen_dir):
    spec = loader.ModelSpec(ref=str(tiny_qwen_dir), attn_implementation="eager")  # its own slot
    ref = weakref.ref(loader.acquire(spec).model)
    assert ref() is not None
    assert loader.release(spec.key) == [spec.key]
    assert ref() is None and spec.key not in loader.SLOTS.loaded()
    assert loader.acquire(spec).model is not None  # lazily reloaded on the next use
    loader.release(spec.key)


def test_slots_budget_evicts_lru_and_refuses_oversize(monkeypatch):
    emptied = []
    monkeypatch.setattr(memory, "_empty_device_cache", lambda refs=None: emptied.append(1))
    slots = ModelSlots(budget_gb=10.0)
    loads = []
    mk = lambda name: (lambda: loads.append(name) or object())  # noqa: E731
    slots.get("a", 4.0, mk("a"))
    slots.get("b", 4.0, mk("b"))
    slots.get("a", 4.0, mk("a"))  # cached: no load, and "a" becomes most recent
    slots.get("c", 4.0, mk("c"))  # 12 > 10: evicts the least recently used ("b")
    assert loads == ["a", "b", "c"] and list(slots.loaded()) == ["a", "c"]
    with pytest.raises(BackendError, match="budget is 10.0 GB"):
        slots.get("huge", 11.0, mk("huge"))
    assert slots.make_room(5.0) == ["a"] and list(slots.loaded()) == ["c"]  # the graph's call before a generator
    assert slots.make_room(1.0) == [] and slots.release() == ["c"]
    assert len(emptied) == 3  # every release collected and emptied the device cache; a no-op did not


def test_estimate_scales_with_dtype(tiny_qwen_dir):
    fp32 = loader.estimate_gb(tiny_qwen_dir, "fp32")
    assert fp32 > 0 and loader.estimate_gb(tiny_qwen_dir, "bf16") == pytest.approx(fp32 / 2)


def test_omni_judge_is_selectable_and_reports_missing_weights(tmp_path):
    cfg = RunConfig(critic="qwen", options={"critic": {"hf_cache_dir": str(tmp_path)}})
    row = omni.describe(options_for("critic", cfg))
    assert row["model_id"] == omni.DEFAULT_OMNI_MODEL and not row["available"]
    assert "--watcher-model PATH" in row["why"]  # the CLI maps that flag to every role
    j = omni.make(options_for("critic", cfg))
    assert j.chat.hears and j.prompt.id == "judge_av_v1"  # the audio-aware prompt


def test_omni_judge_hears_the_audio_on_the_real_path(tiny_omni_dir, impact_clip, impact_wav, monkeypatch):
    path, info = impact_clip
    plan = sample_plan(info.duration_s)
    opts = {"model": str(tiny_omni_dir), **PIX, "max_side": 96, "max_new_tokens": 8, "max_attempts": 1}
    cfg = RunConfig(critic="qwen", options={"critic": opts})
    metric = Critique(scores={"semantic": 0.8, "temporal": 0.3, "aesthetic": 0.7, "spatial": 0.6})
    with pytest.raises(ReplyInvalid) as err:  # real generate: noise, reported with the raw text
        omni.make(options_for("critic", cfg)).judge(plan, path, info, metric, audio=impact_wav)
    assert err.value.raw_output and err.value.prompt_version == "judge_av_v1"
    replies, seen, _ = _script_generate(monkeypatch, Qwen2_5OmniThinkerForConditionalGeneration, tiny_omni_dir)
    replies.append(json.dumps({"consistency": 0.4, "findings": [
        {"target": "e1", "dimension": "temporal", "problem": "the first knock is heard 0.1 s late"}]}))
    judge = omni.make(options_for("critic", cfg.model_copy(update={"options": {"critic": {**opts, "max_new_tokens": 256}}})))
    judge._metric_critic = lambda: type("Fixed", (), {"critique": lambda self, *a: metric})()
    out = judge.critique(plan, impact_wav, path, info)
    ids = seen[0]["input_ids"]
    assert int((ids == 7).sum()) > 0 and int((ids == 9).sum()) > 0  # <|AUDIO|> and <|VIDEO|> tokens both fed
    assert seen[0]["kw"]["input_features"].shape[1] == 128  # the Whisper mel front end ran on the render
    assert out.scores == metric.scores and out.findings[0].problem.startswith("the first knock")
    assert out.scorers[-1].name == "qwen-omni-judge" and out.scorers[-1].raw == 0.4
