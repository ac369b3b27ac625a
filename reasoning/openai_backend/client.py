"""A small chat-completions client on httpx: timeouts, bounded retries with backoff, and errors that say
what to do (wrong URL, rejected key, unknown model, overloaded server)."""

from __future__ import annotations

import logging
import time

import httpx

from contract.errors import BackendError

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 30.0


class EndpointError(BackendError):
    """The server could not be used; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None, raw_output: str = ""):
        super().__init__(message, raw_output=raw_output)
        self.status = status


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message", err) if isinstance(err, dict) else err
        return str(msg)[:300]
    except ValueError:
        return resp.text[:300]


class OpenAIClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 120.0, retries: int = 2,
                 backoff_s: float = 1.0, transport: httpx.BaseTransport | None = None):
        if not base_url:
            raise EndpointError("no endpoint: pass --endpoint URL or set FOLEYLOOP_OPENAI_BASE_URL "
                                "(e.g. http://127.0.0.1:8000/v1 for vLLM)")
        self.base_url = base_url.rstrip("/")
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), max(0, int(retries)), float(backoff_s)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(self.timeout_s),
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs) -> dict:
        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.retries + 1):
            wait = self.backoff_s * (2 ** attempt)
            try:
                resp = self._http.request(method, path, **kwargs)
            except httpx.TimeoutException:
                last = f"no reply within timeout_s={self.timeout_s:g}"
            except httpx.TransportError as exc:
                last = f"cannot connect ({type(exc).__name__}: {exc})"
            else:
                if resp.status_code < 300:
                    try:
                        return resp.json()
                    except ValueError:
                        raise EndpointError(f"{url}: the reply is not JSON ({resp.text[:120]!r}); is this an "
                                            "OpenAI-compatible endpoint (URL usually ends in /v1)?",
                                            resp.status_code) from None
                if resp.status_code in (401, 403):
                    raise EndpointError(f"{url}: the server rejected the API key ({resp.status_code}: "
                                        f"{_detail(resp)}); set options api_key, FOLEYLOOP_OPENAI_KEY or "
                                        "OPENAI_API_KEY", resp.status_code)
                if resp.status_code == 404:
                    raise EndpointError(f"{url}: not found (404: {_detail(resp)}); check the endpoint (it usually "
                                        "ends in /v1) and the model name", 404)
                if resp.status_code not in RETRY_STATUS:
                    raise EndpointError(f"{url}: HTTP {resp.status_code}: {_detail(resp)}", resp.status_code)
                last = f"HTTP {resp.status_code}: {_detail(resp)}"
                ra = resp.headers.get("retry-after", "")
                if ra.replace(".", "", 1).isdigit():
                    wait = min(float(ra), MAX_RETRY_AFTER_S)
            if attempt < self.retries:
                log.warning("%s: %s; retry %d/%d in %.1f s", url, last, attempt + 1, self.retries, wait)
                time.sleep(wait)
        raise EndpointError(f"{url}: {last} after {self.retries + 1} attempt(s); the server may be overloaded or "
                            "the model too slow (raise timeout_s / retries)")

    def models(self) -> list[str]:
        data = self._request("GET", "/models")
        return [m["id"] for m in data.get("data", []) if isinstance(m, dict) and "id" in m]

    def chat(self, model: str, messages: list[dict], max_tokens: int, temperature: float = 0.0,
             seed: int | None = None) -> dict:
        body: dict = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if seed is not None:
            body["seed"] = seed
        data = self._request("POST", "/chat/completions", json=body)
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices[0], dict) or "message" not in choices[0]:
            raise EndpointError(f"{self.base_url}/chat/completions: reply has no choices[0].message "
                                f"({str(data)[:200]})")
        return data
