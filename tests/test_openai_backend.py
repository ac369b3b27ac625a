"""The openai backend against a scripted chat-completions server on 127.0.0.1 (stdlib http.server)."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from agent import backends
from agent.config import RunConfig
from reasoning.llm_common.parse import ReplyInvalid
from reasoning.openai_backend import judge as oa_judge
from reasoning.openai_backend import refiner as oa_refiner
from reasoning.openai_backend import watcher as oa_watcher
from reasoning.openai_backend.client import EndpointError
from contract.plan import Critique
from tests.qwen_fixtures import CLIP_S, IMPACT_TIMES, VALID_PLAN_REPLY, impact_clip, sample_plan  # noqa: F401
from agent.backends import options_for


class Server:
    """Replies to /chat/completions from a script of (status, text or body, delay_s); records requests."""

    def __init__(self):
        self.script: list[tuple] = []
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def do_GET(self):
                server.requests.append({"path": self.path, "headers": dict(self.headers)})
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "served-qwen", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "no route"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                status, reply, delay = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                time.sleep(delay)
                if status != 200:
                    return self._send(status, {"error": {"message": str(reply)}})
                text, finish = reply if isinstance(reply, tuple) else (reply, "stop")
                self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": finish,
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def chats(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()
    backends.clear_cache()


def _cfg(url, role="watcher", **opts):
    return RunConfig(watcher="openai", critic="openai",
                     options={role: {"endpoint": url, "backoff_s": 0.01, "max_side": 64, **opts}})


def test_watch_sends_timestamped_base64_frames(server, impact_clip, monkeypatch):
    monkeypatch.setenv("FOLEYLOOP_OPENAI_KEY", "sk-test")
    server.script = [(200, "Here:\n```json\n" + VALID_PLAN_REPLY + "\n```", 0.0)]
    path, info = impact_clip
    w = backends.get("watcher", _cfg(server.url, fps=2.0))
    res = w.watch(path, info)
    assert [e.start_s for e in res.plan.events] == list(IMPACT_TIMES)
    assert res.model_id == "served-qwen" and res.plan.provenance.backend == "openai"  # from GET /models
    assert res.meta["attempts"][0]["prompt_tokens"] == 1234
    req = server.chats()[0]
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    body = req["json"]
    assert body["model"] == "served-qwen" and body["max_tokens"] == 1024 and body["temperature"] == 0
    parts = body["messages"][1]["content"]
    images = [p for p in parts if p["type"] == "image_url"]
    assert len(images) == int(CLIP_S * 2.0) == res.meta["frames_sent"]
    for i, p in enumerate(parts):
        if p["type"] == "image_url":  # every image is preceded by its timestamp
            assert re.fullmatch(r"Frame \d+ at t=\d+\.\d\d s:", parts[i - 1]["text"])
    stamps = [float(re.search(r"t=([\d.]+)", parts[i - 1]["text"]).group(1))
              for i, p in enumerate(parts) if p["type"] == "image_url"]
    assert stamps == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    url = images[0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert img.format == "JPEG" and max(img.size) <= 64
    assert "0.00, 0.50, 1.00" in parts[-1]["text"]  # and the prompt lists them too


def test_5xx_then_success_is_retried(server, impact_clip):
    server.script = [(503, "overloaded", 0.0), (500, "oops", 0.0), (200, VALID_PLAN_REPLY, 0.0)]
    res = oa_watcher.make(options_for("watcher", _cfg(server.url, model="m", retries=2))).watch(*impact_clip)
    assert len(server.chats()) == 3 and len(res.plan.events) == 2


def test_5xx_exhausts_retries_with_a_clear_error(server, impact_clip):
    server.script = [(502, "bad gateway", 0.0)]
    with pytest.raises(EndpointError, match=r"HTTP 502: bad gateway after 2 attempt\(s\)"):
        oa_watcher.make(options_for("watcher", _cfg(server.url, model="m", retries=1))).watch(*impact_clip)
    assert len(server.chats()) == 2


def test_timeout_is_retried_then_reported(server, impact_clip):
    server.script = [(200, VALID_PLAN_REPLY, 1.5)]
    t0 = time.perf_counter()
    with pytest.raises(EndpointError, match=r"no reply within timeout_s=0.3 after 2 attempt"):
        oa_watcher.make(options_for("watcher", _cfg(server.url, model="m", retries=1, timeout_s=0.3))).watch(*impact_clip)
    assert time.perf_counter() - t0 < 1.5 * 2  # gave up on time, did not wait for the slow server
    assert len(server.chats()) == 2


def test_timeout_then_success(server, impact_clip):
    server.script = [(200, VALID_PLAN_REPLY, 1.0), (200, VALID_PLAN_REPLY, 0.0)]
    res = oa_watcher.make(options_for("watcher", _cfg(server.url, model="m", retries=1, timeout_s=0.3))).watch(*impact_clip)
    assert len(res.plan.events) == 2


def test_401_is_not_retried_and_names_the_fix(server, impact_clip, monkeypatch):
    monkeypatch.delenv("FOLEYLOOP_OPENAI_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.script = [(401, "invalid api key", 0.0)]
    with pytest.raises(EndpointError, match="rejected the API key .*OPENAI_API_KEY") as err:
        oa_watcher.make(options_for("watcher", _cfg(server.url, model="m", retries=3))).watch(*impact_clip)
    assert err.value.status == 401 and len(server.chats()) == 1
    assert "Authorization" not in server.chats()[0]["headers"]  # no key configured → none sent


def test_wrong_path_404_and_refused_connection(server, impact_clip):
    w = oa_watcher.make(options_for("watcher", _cfg(server.url.removesuffix("/v1") + "/api", model="m")))
    with pytest.raises(EndpointError, match="404.*ends in /v1"):
        w.watch(*impact_clip)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # bound, not listening: refused
        with pytest.raises(EndpointError, match="cannot connect"):
            oa_watcher.make(options_for("watcher", _cfg(dead, model="m", retries=1))).watch(*impact_clip)


def test_truncated_reply_reasked_then_clear_failure(server, impact_clip):
    server.script = [(200, ('{"caption": "' + "tap " * 300, "length"), 0.0)]
    with pytest.raises(ReplyInvalid, match="cut off") as err:
        oa_watcher.make(options_for("watcher", _cfg(server.url, model="m", max_attempts=2))).watch(*impact_clip)
    assert err.value.raw_output.count("tap tap") > 100 and len(server.chats()) == 2
    second = server.chats()[1]["json"]["messages"]
    assert second[-2]["role"] == "assistant" and "token limit" in second[-1]["content"]


def test_endpoint_and_key_from_environment(server, impact_clip, monkeypatch):
    monkeypatch.setenv("FOLEYLOOP_OPENAI_BASE_URL", server.url)
    monkeypatch.delenv("FOLEYLOOP_OPENAI_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    server.script = [(200, VALID_PLAN_REPLY, 0.0)]
    cfg = RunConfig(watcher="openai", options={"watcher": {"model": "m", "max_side": 64}})
    assert oa_watcher.describe(options_for("watcher", cfg))["where"] == server.url
    oa_watcher.make(options_for("watcher", cfg)).watch(*impact_clip)
    assert server.chats()[0]["headers"]["Authorization"] == "Bearer sk-env"
    monkeypatch.delenv("FOLEYLOOP_OPENAI_BASE_URL")
    row = oa_watcher.describe(options_for("watcher", cfg))
    assert row["available"] is False and "--endpoint" in row["why"]
    with pytest.raises(EndpointError, match="no endpoint"):
        oa_watcher.make(options_for("watcher", cfg))


def test_refiner_and_judge_over_http(server, impact_clip):
    path, info = impact_clip
    plan = sample_plan(info.duration_s)
    crit = Critique(scores={"semantic": 0.9, "temporal": 0.2, "aesthetic": 0.9, "spatial": 0.9})
    server.script = [(200, json.dumps({"temporal": "two hits, at 1 s and 2 s", "aesthetic": "WET"}), 0.0)]
    res = oa_refiner.make(options_for("refiner", _cfg(server.url, "refiner", model="m"))).refine(plan, crit, ["temporal"], 1, 0, path, info)
    assert res.plan.temporal == "two hits, at 1 s and 2 s" and res.plan.aesthetic == plan.aesthetic
    server.script = [(200, json.dumps({"consistency": 0.8, "findings": [
        {"target": "e1", "dimension": "temporal", "problem": "hit lands at 1.0 s", "suggestion": "keep"}]}), 0.0)]
    out = oa_judge.make(options_for("critic", _cfg(server.url, "critic", model="m"))).judge(plan, path, info, crit)
    assert out.scores == crit.scores and out.findings[0].target == "e1" and out.scorers[-1].raw == 0.8
    sent = server.chats()[-1]["json"]["messages"][1]["content"]
    assert any(p["type"] == "image_url" for p in sent) and "temporal: 0.20" in sent[-1]["text"]
