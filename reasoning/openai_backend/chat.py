"""An OpenAI-compatible server as a ``ChatModel``: each key frame becomes a base64 JPEG after a line with its
timestamp, so any server that takes images (not only video) can time events."""

from __future__ import annotations

import logging
import os
import threading
import time

from reasoning.llm_common.chat import Generation, frames_sent
from reasoning.llm_common.frames import jpeg_base64
from reasoning.openai_backend.client import EndpointError, OpenAIClient
from store.redact import MASK

log = logging.getLogger(__name__)
ENV_BASE_URL = "FOLEYLOOP_OPENAI_BASE_URL"
ENV_KEYS = ("FOLEYLOOP_OPENAI_KEY", "FOLEYLOOP_API_KEY", "OPENAI_API_KEY")


def endpoint_from(opts: dict) -> str:
    return str(opts.get("endpoint") or os.environ.get(ENV_BASE_URL, "")).strip()


def api_key_from(opts: dict) -> str | None:
    """options api_key, else the environment; a stored, redacted key ("***") is no key. Prefer the environment
    (or ~/.netrc): run configs are stored, and the Store masks secrets in them."""
    key = opts.get("api_key")
    if key and key != MASK:
        return str(key)
    return next((os.environ[k] for k in ENV_KEYS if os.environ.get(k)), None)


def frame_parts(kf, quality: int = 85) -> list[dict]:
    parts = [{"type": "text", "text": f"{len(kf)} video frames of a {kf.duration_s:.2f} s clip follow, each after "
                                      "its time."}]
    for i, (t, img) in enumerate(zip(kf.times, kf.frames)):
        parts.append({"type": "text", "text": f"Frame {i + 1} at t={t:.2f} s:"})
        parts.append({"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{jpeg_base64(img, quality)}"}})
    return parts


def to_openai(messages: list[dict], quality: int = 85) -> list[dict]:
    out = []
    for m in messages:
        if isinstance(m["content"], str):
            out.append({"role": m["role"], "content": m["content"]})
            continue
        parts: list[dict] = []
        for p in m["content"]:
            if p["type"] == "video":
                parts += frame_parts(p["frames"], quality)
            elif p["type"] == "text":
                parts.append({"type": "text", "text": p["text"]})
        out.append({"role": m["role"], "content": parts})
    return out


class OpenAIChat:
    hears = False

    def __init__(self, client: OpenAIClient, model: str | None = None, jpeg_quality: int = 85, seed: int | None = 0):
        self.client, self._model, self.jpeg_quality, self.seed = client, model, jpeg_quality, seed
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        """The configured model, else the first one the server lists (vLLM serves one)."""
        with self._lock:
            if not self._model:
                names = self.client.models()
                if not names:
                    raise EndpointError(f"{self.client.base_url}/models lists no model; set options model")
                self._model = names[0]
                log.info("%s: using served model %s", self.client.base_url, self._model)
            return self._model

    def chat(self, messages: list[dict], max_new_tokens: int) -> Generation:
        t0 = time.perf_counter()
        data = self.client.chat(self.model_id, to_openai(messages, self.jpeg_quality), max_new_tokens, seed=self.seed)
        choice = data["choices"][0]  # the client checked choices[0].message and its content's type
        content = choice["message"].get("content") or ""
        if isinstance(content, list):  # some servers return content parts
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        usage = data.get("usage") or {}
        count = lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None  # noqa: E731
        return Generation(text=str(content), truncated=choice.get("finish_reason") == "length",
                          prompt_tokens=count(usage.get("prompt_tokens")),
                          completion_tokens=count(usage.get("completion_tokens")),
                          frames_sent=frames_sent(messages), wall_s=time.perf_counter() - t0,
                          meta={"finish_reason": choice.get("finish_reason")})
