"""`foleyloop dub --watcher qwen|openai` end to end with the offline renderer and critic (issue 4).

The tiny random Qwen2.5-VL writes noise, so its token choice is scripted (the real processor, video path and
forward still run); the openai backend talks to a scripted chat-completions server on 127.0.0.1.
"""

from __future__ import annotations

import pytest
from transformers import Qwen2_5_VLForConditionalGeneration

from agent import backends
from agent.cli import main
from store.db import Store
from tests.qwen_fixtures import IMPACT_TIMES, VALID_PLAN_REPLY, impact_clip, tiny_qwen_dir  # noqa: F401
from tests.test_openai_backend import Server
from tests.test_qwen_backend import _script_generate

OFFLINE_REST = ["--renderer", "offline", "--critic", "offline", "--refiner", "offline", "--rounds", "2"]


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield
    backends.clear_cache()


def _check_rounds(db, model_id: str):
    store = Store(db)
    run = store.list_runs()[0]
    rounds = store.rounds(run.id)
    assert run.status == "done", run.error
    first = rounds[0]
    assert first.author == "watcher" and first.model_id == model_id and first.prompt_version == "watch_v1"
    assert '"box hit"' in first.raw_output
    assert [e["start_s"] for e in __import__("json").loads(first.plan_json)["events"]] == list(IMPACT_TIMES)
    assert first.score_temporal is not None and all(r.audio_artifact_id for r in rounds if r.status == "scored")
    assert run.backends()["watcher"] in ("qwen", "openai")
    return run


def test_dub_with_qwen_watcher(tiny_qwen_dir, impact_clip, monkeypatch, tmp_path):
    replies, seen, _ = _script_generate(monkeypatch, Qwen2_5_VLForConditionalGeneration, tiny_qwen_dir)
    replies.append(VALID_PLAN_REPLY)
    path, _ = impact_clip
    db = tmp_path / "fl.db"
    code = main(["--db", str(db), "dub", str(path), "--out", str(tmp_path / "o.mp4"), "--watcher", "qwen",
                 "--watcher-model", str(tiny_qwen_dir), *OFFLINE_REST])
    assert code == 0
    assert seen and "pixel_values_videos" in seen[0]["kw"]  # the video really went through the processor
    _check_rounds(db, str(tiny_qwen_dir))
    assert (tmp_path / "o.mp4").exists()


def test_dub_with_openai_endpoint(impact_clip, tmp_path):
    server = Server()
    server.script = [(200, VALID_PLAN_REPLY, 0.0)]
    path, _ = impact_clip
    db = tmp_path / "fl.db"
    try:
        code = main(["--db", str(db), "dub", str(path), "--out", str(tmp_path / "o.mp4"), "--watcher", "openai",
                     "--endpoint", server.url, *OFFLINE_REST])
    finally:
        server.httpd.shutdown()
    assert code == 0
    run = _check_rounds(db, "served-qwen")
    chats = server.chats()
    assert chats and any(part.get("type") == "image_url" for m in chats[0]["json"]["messages"]
                         for part in (m["content"] if isinstance(m["content"], list) else []))
    assert run.backends()["watcher_model_id"]
