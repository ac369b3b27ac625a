"""A small chat-completions client on httpx: timeouts, bounded retries with backoff, and errors that say
what to do (wrong URL, rejected key, unknown model, overloaded server).

Every call is bounded: a wall-clock deadline per attempt and per call (enforced on every socket read, so a
server that trickles one byte at a time is cut off on time, headers included), a cap on the reply's size
(read streamed, never buffered whole), and a depth-guarded JSON parse. Whatever the server sent is kept,
capped, as ``raw_output`` of the error. Credentials never appear in messages: URLs are shown redacted;
``user:password@`` in the endpoint is used as Basic auth but stripped from the URL; a key comes from the
options or the environment, and otherwise httpx reads ``~/.netrc`` (or ``$NETRC``) for the host.
"""

from __future__ import annotations

import logging
import netrc
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import httpcore

from contract.errors import BackendError
from contract.plan import JSONRejected, loads_bounded
from store.redact import redact_text, split_userinfo

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 30.0
MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # a chat reply is kB; images go up, not down
RAW_KEEP_BYTES = 64 * 1024  # what an error keeps of a bad body
MAX_REPLY_DEPTH = 64


class EndpointError(BackendError):
    """The server could not be used; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None, raw_output: str = ""):
        super().__init__(redact_text(message), raw_output=raw_output)
        self.status = status


class _DeadlineHit(Exception):
    pass


# ---- a wall-clock deadline on every socket operation -----------------------------------------------------------
class _Deadline(threading.local):
    at: float | None = None

    def clip(self, timeout: float | None) -> float | None:
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("deadline passed")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """httpcore's per-read timeout, shortened to what is left before the deadline (a trickle cannot reset it)."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline):
        self._inner, self._deadline = inner, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.clip(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.clip(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> "_DeadlineStream":
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, self._deadline.clip(timeout)),
                               self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, deadline: _Deadline):
        self._inner, self._deadline = httpcore.SyncBackend(), deadline

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return _DeadlineStream(self._inner.connect_tcp(host, port, self._deadline.clip(timeout), local_address,
                                                       socket_options), self._deadline)

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _DeadlineStream(self._inner.connect_unix_socket(path, self._deadline.clip(timeout), socket_options),
                               self._deadline)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")


def _deadline_transport(deadline: _Deadline) -> httpx.HTTPTransport | None:
    """httpx's own transport with the deadline-aware network backend. None (httpx's default transport, which
    honours proxy variables) when a proxy is configured: the deadline is then checked between body chunks."""
    if any(os.environ.get(v) or os.environ.get(v.upper()) for v in _PROXY_VARS):
        return None
    transport = httpx.HTTPTransport()
    transport._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(),
                                              network_backend=_DeadlineBackend(deadline))
    return transport


def _netrc_auth(url: str) -> httpx.Auth | None:
    """Basic auth from ``$NETRC`` or ``~/.netrc`` when it has an entry for the endpoint's host."""
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    if not path.is_file():
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(httpx.URL(url).host)
    except (OSError, netrc.NetrcParseError) as exc:
        log.warning("%s: not used (%s)", path, " ".join(str(exc).split())[:200])
        return None
    return httpx.BasicAuth(entry[0], entry[2] or "") if entry else None


def _detail(status: int, body: bytes) -> str:
    text = body[:4096].decode("utf-8", "replace")
    try:
        data = loads_bounded(text, max_bytes=None, max_depth=MAX_REPLY_DEPTH)
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message", err) if isinstance(err, dict) else err
        return redact_text(str(msg))[:300]
    except ValueError:
        return redact_text(text)[:300]


def _raw(body: bytes) -> str:
    text = body[:RAW_KEEP_BYTES].decode("utf-8", "replace")
    return text if len(body) <= RAW_KEEP_BYTES else text + f"\n…[cut: {len(body) - RAW_KEEP_BYTES} more bytes]"


class OpenAIClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 120.0, retries: int = 2,
                 backoff_s: float = 1.0, transport: httpx.BaseTransport | None = None,
                 deadline_s: float | None = None, max_response_bytes: int = MAX_RESPONSE_BYTES):
        if not base_url:
            raise EndpointError("no endpoint: pass --endpoint URL or set FOLEYLOOP_OPENAI_BASE_URL "
                                "(e.g. http://127.0.0.1:8000/v1 for vLLM)")
        url, user, password = split_userinfo(base_url.rstrip("/"))
        self.base_url = url  # never holds credentials, so it can be logged and stored
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), max(0, int(retries)), float(backoff_s)
        # The whole call (every attempt and back-off) ends by this many seconds.
        self.deadline_s = float(deadline_s) if deadline_s else self.timeout_s * (self.retries + 1) + sum(
            min(self.backoff_s * 2 ** a, MAX_RETRY_AFTER_S) for a in range(self.retries))
        self.max_response_bytes = int(max_response_bytes)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        auth = httpx.BasicAuth(user, password or "") if user else None if api_key else _netrc_auth(url)
        self._deadline = _Deadline()
        self._http = httpx.Client(base_url=self.base_url, headers=headers, auth=auth,
                                  timeout=httpx.Timeout(self.timeout_s),
                                  transport=transport or _deadline_transport(self._deadline))

    def close(self) -> None:
        self._http.close()

    def _read(self, method: str, path: str, **kwargs) -> tuple[int, httpx.Headers, bytes]:
        """One attempt: status, headers and the body, read streamed under the size cap."""
        with self._http.stream(method, path, **kwargs) as resp:
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_response_bytes:
                raise EndpointError(f"{self.base_url}{path}: the reply would be {int(declared)} bytes, over the "
                                    f"{self.max_response_bytes}-byte limit (max_response_bytes)", resp.status_code)
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                chunks.append(chunk)
                if size > self.max_response_bytes:
                    raise EndpointError(f"{self.base_url}{path}: the reply is over the {self.max_response_bytes}-byte "
                                        "limit (max_response_bytes); is this a chat-completions endpoint?",
                                        resp.status_code, raw_output=_raw(b"".join(chunks)))
                self._deadline.clip(None)  # a body trickling in between reads
            return resp.status_code, resp.headers, b"".join(chunks)

    def _request(self, method: str, path: str, **kwargs) -> tuple[dict, bytes]:
        """The reply as a JSON object, and its body (for errors about its shape)."""
        url = f"{self.base_url}{path}"
        last = ""
        call_ends = time.monotonic() + self.deadline_s
        for attempt in range(self.retries + 1):
            wait = self.backoff_s * (2 ** attempt)
            self._deadline.at = min(time.monotonic() + self.timeout_s, call_ends)
            try:
                status, headers, body = self._read(method, path, **kwargs)
            except httpx.TimeoutException:
                last = f"no reply within timeout_s={self.timeout_s:g}"
            except httpx.TransportError as exc:
                last = f"cannot connect ({type(exc).__name__}: {redact_text(str(exc))})"
            else:
                if status < 300:
                    return self._json(url, status, body), body
                if status in (401, 403):
                    raise EndpointError(f"{url}: the server rejected the API key ({status}: "
                                        f"{_detail(status, body)}); set options api_key, FOLEYLOOP_OPENAI_KEY or "
                                        "OPENAI_API_KEY (or a ~/.netrc entry for the host)", status)
                if status == 404:
                    raise EndpointError(f"{url}: not found (404: {_detail(status, body)}); check the endpoint (it "
                                        "usually ends in /v1) and the model name", 404)
                if status not in RETRY_STATUS:
                    raise EndpointError(f"{url}: HTTP {status}: {_detail(status, body)}", status,
                                        raw_output=_raw(body))
                last = f"HTTP {status}: {_detail(status, body)}"
                ra = headers.get("retry-after", "")
                if ra.replace(".", "", 1).isdigit():
                    wait = min(float(ra), MAX_RETRY_AFTER_S)
            finally:
                self._deadline.at = None
            left = call_ends - time.monotonic()
            if attempt < self.retries and left > wait:
                log.warning("%s: %s; retry %d/%d in %.1f s", url, last, attempt + 1, self.retries, wait)
                time.sleep(wait)
            elif attempt < self.retries:
                raise EndpointError(f"{url}: {last}; gave up after {attempt + 1} attempt(s) at the "
                                    f"{self.deadline_s:g} s deadline for the call (deadline_s)")
        raise EndpointError(f"{url}: {last} after {self.retries + 1} attempt(s); the server may be overloaded or "
                            "the model too slow (raise timeout_s / retries)")

    def _json(self, url: str, status: int, body: bytes) -> dict:
        try:
            data = loads_bounded(body, max_bytes=None, max_depth=MAX_REPLY_DEPTH)
        except JSONRejected as exc:
            raise EndpointError(f"{url}: the reply is not usable JSON ({exc}); is this an OpenAI-compatible "
                                "endpoint (URL usually ends in /v1)?", status, raw_output=_raw(body)) from None
        if not isinstance(data, dict):
            raise EndpointError(f"{url}: the reply is not a JSON object", status, raw_output=_raw(body))
        return data

    def models(self) -> list[str]:
        data, _ = self._request("GET", "/models")
        items = data.get("data")
        return [m["id"] for m in items if isinstance(m, dict) and isinstance(m.get("id"), str)
                and 0 < len(m["id"]) <= 256] if isinstance(items, list) else []

    def chat(self, model: str, messages: list[dict], max_tokens: int, temperature: float = 0.0,
             seed: int | None = None) -> dict:
        """The reply, checked to have ``choices[0].message`` with text content (or content parts)."""
        body: dict = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if seed is not None:
            body["seed"] = seed
        data, raw = self._request("POST", "/chat/completions", json=body)
        choices = data.get("choices")
        message = choices[0].get("message") if isinstance(choices, list) and choices and \
            isinstance(choices[0], dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(message, dict) or not (content is None or isinstance(content, (str, list))):
            raise EndpointError(f"{self.base_url}/chat/completions: the reply has no choices[0].message with text "
                                "content", raw_output=_raw(raw))
        usage = data.get("usage")
        if not isinstance(usage, dict):
            data["usage"] = {}
        return data
