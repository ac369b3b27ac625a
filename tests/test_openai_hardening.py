"""The OpenAI-compatible client is bounded and discreet (issue #11, items 4-5), against scripted servers on
127.0.0.1: a raw socket server for trickles and floods, and the chat-completions server of test_openai_backend."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import pytest

from agent.backends import options_for
from agent.config import RunConfig
from reasoning.openai_backend import watcher as oa_watcher
from reasoning.openai_backend.chat import api_key_from
from reasoning.openai_backend.client import EndpointError, OpenAIClient
from tests.qwen_fixtures import VALID_PLAN_REPLY, impact_clip  # noqa: F401
from tests.test_openai_backend import server  # noqa: F401  (the scripted chat-completions server fixture)

MESSAGES = [{"role": "user", "content": "hi"}]


class RawServer:
    """Accepts connections on 127.0.0.1 and hands each (socket, request head) to ``handler`` in a thread."""

    def __init__(self, handler):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.handler, self.sent, self.heads = handler, 0, []
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            head, _, body = head.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:  # read the whole request, so closing never resets the connection
                data = conn.recv(65536)
                if not data:
                    return
                body += data
            self.heads.append(head.decode("latin-1"))
            try:
                self.handler(self, conn)
            except OSError:
                pass  # the client hung up: what a bounded client does

    def send(self, conn, data: bytes):
        conn.sendall(data)
        self.sent += len(data)

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.fixture
def raw():
    servers = []

    def make(handler):
        servers.append(RawServer(handler))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def trickle_headers(srv, conn):
    for ch in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200:
        if srv.stop.is_set():
            return
        srv.send(conn, bytes([ch]))
        time.sleep(0.1)


def trickle_body(srv, conn):
    srv.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
    for _ in range(200):
        if srv.stop.is_set():
            return
        srv.send(conn, b" ")
        time.sleep(0.1)


@pytest.mark.parametrize("handler", [trickle_headers, trickle_body], ids=["headers", "body"])
def test_a_trickling_server_is_cut_off_at_the_deadline(raw, handler):
    srv = raw(handler)
    client = OpenAIClient(srv.url, timeout_s=0.8, retries=1, backoff_s=0.05)
    t0 = time.perf_counter()
    with pytest.raises(EndpointError, match=r"no reply within timeout_s=0.8 after 2 attempt"):
        client.chat("m", MESSAGES, 16)
    assert time.perf_counter() - t0 < 3.0  # 2 × 0.8 s and a back-off, not the 20 s the trickle lasts
    assert len(srv.heads) == 2


def test_the_call_deadline_covers_every_attempt(raw):
    srv = raw(trickle_body)
    client = OpenAIClient(srv.url, timeout_s=5.0, retries=5, backoff_s=0.05, deadline_s=1.2)
    t0 = time.perf_counter()
    with pytest.raises(EndpointError, match="deadline"):
        client.chat("m", MESSAGES, 16)
    assert time.perf_counter() - t0 < 2.5


def flood_chunked(srv, conn):
    srv.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"[" * 65536
    while srv.sent < 400 * 1024 * 1024 and not srv.stop.is_set():
        srv.send(conn, b"%x\r\n%s\r\n" % (len(chunk), chunk))


def test_a_huge_body_is_refused_while_streaming(raw):
    srv = raw(flood_chunked)
    client = OpenAIClient(srv.url, timeout_s=10, retries=2, max_response_bytes=1024 * 1024)
    with pytest.raises(EndpointError, match="over the 1048576-byte limit") as err:
        client.chat("m", MESSAGES, 16)
    assert len(srv.heads) == 1  # not retried
    assert err.value.raw_output.startswith("[[[") and len(err.value.raw_output) < 70_000
    assert srv.sent < 64 * 1024 * 1024  # stopped reading long before the 400 MB the server had ready


def test_a_declared_huge_body_is_refused_before_reading(raw):
    def declared(srv, conn):
        srv.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1500000000\r\n\r\n{}")

    client = OpenAIClient(raw(declared).url, retries=0, max_response_bytes=1024 * 1024)
    with pytest.raises(EndpointError, match="would be 1500000000 bytes"):
        client.chat("m", MESSAGES, 16)


@pytest.mark.parametrize("body, needle", [
    (b"<html>not json</html>", "not usable JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested"),
    (b'{"x": ' + b"[" * 80 + b"]" * 80 + b"}", "nested"),
    (b'{"choices": [{"message": "plain string"}]}', r"no choices\[0\]\.message"),
    (b'{"choices": [{"message": {"content": {"text": 1}}}]}', r"no choices\[0\]\.message"),
    (b'{"choices": []}', r"no choices\[0\]\.message"),
    (b"[1, 2]", "not a JSON object"),
])
def test_unusable_replies_carry_the_raw_body(raw, body, needle):
    def reply(srv, conn):
        srv.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(body), body))

    client = OpenAIClient(raw(reply).url, retries=0)
    with pytest.raises(EndpointError, match=needle) as err:
        client.chat("m", MESSAGES, 16)
    assert err.value.raw_output and body.decode()[:50] in err.value.raw_output
    assert len(err.value.raw_output) <= 64 * 1024 + 100


def test_an_unusable_reply_is_stored_as_the_rounds_raw_output(raw, impact_clip, tmp_path):  # noqa: F811
    """Through the graph: the failed watcher round keeps what the server said (capped), not nothing."""
    from agent import runs
    from contract.errors import BackendError
    from store.db import Store

    body = b'{"id": "x", "choices": [{"message": {"content": "' + b"[" * 50 + b'"}}], "usage": ' + \
        b"[" * 5000 + b"]" * 5000 + b"}"

    def reply(srv, conn):
        if "/models" in srv.heads[-1].split("\r\n")[0]:
            data = b'{"data": [{"id": "served"}]}'
        else:
            data = body
        srv.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))

    srv = raw(reply)
    store = Store(tmp_path / "fl.db")
    cfg = RunConfig(watcher="openai", renderer="offline", critic="offline", refiner="offline",
                    options={"watcher": {"endpoint": srv.url, "model": "m", "max_side": 64, "retries": 0}})
    with pytest.raises(BackendError, match="nested"):
        runs.dub(store, impact_clip[0], cfg, out=tmp_path / "out.mp4")
    (rnd,) = store.rounds(store.list_runs()[0].id)
    assert rnd.status == "failed" and "nested" in rnd.error
    assert rnd.raw_output.startswith('{"id": "x", "choices"') and len(rnd.raw_output) <= 64 * 1024 + 100


# ---- credentials --------------------------------------------------------------------------------------------------
def test_url_credentials_are_used_but_never_shown(server, impact_clip, monkeypatch):  # noqa: F811
    for k in ("FOLEYLOOP_OPENAI_KEY", "FOLEYLOOP_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    url = server.url.replace("http://", "http://alice:s3cr3t@")
    server.script = [(500, "boom at " + url, 0.0)]
    cfg = RunConfig(watcher="openai", options={"watcher": {"endpoint": url, "model": "m", "max_side": 64,
                                                           "retries": 0}})
    row = oa_watcher.describe(options_for("watcher", cfg))
    assert "s3cr3t" not in json.dumps(row) and row["where"].startswith("http://***@127.0.0.1")
    with pytest.raises(EndpointError) as err:
        oa_watcher.make(options_for("watcher", cfg)).watch(*impact_clip)
    assert "s3cr3t" not in str(err.value) and "alice" not in str(err.value)
    sent = server.chats()[0]["headers"]["Authorization"]
    assert base64.b64decode(sent.removeprefix("Basic ")) == b"alice:s3cr3t"  # still used, as Basic auth


def test_netrc_supplies_credentials(server, tmp_path, monkeypatch):  # noqa: F811
    for k in ("FOLEYLOOP_OPENAI_KEY", "FOLEYLOOP_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login bob password n3trc-pw\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    server.script = [(200, VALID_PLAN_REPLY, 0.0)]
    OpenAIClient(server.url).chat("m", MESSAGES, 16)
    sent = server.chats()[0]["headers"]["Authorization"]
    assert base64.b64decode(sent.removeprefix("Basic ")) == b"bob:n3trc-pw"


def test_a_stored_redacted_key_is_no_key(monkeypatch):
    monkeypatch.setenv("FOLEYLOOP_API_KEY", "sk-from-env")
    monkeypatch.delenv("FOLEYLOOP_OPENAI_KEY", raising=False)
    assert api_key_from({"api_key": "***"}) == "sk-from-env"
    assert api_key_from({"api_key": "sk-given"}) == "sk-given"
    client = OpenAIClient("http://***@127.0.0.1:9/v1")  # a URL read back from a stored config
    assert client.base_url == "http://127.0.0.1:9/v1" and client._http.auth is None
