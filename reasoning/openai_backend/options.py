"""Backend options → OpenAI-compatible chat, shared by the three role modules."""

from __future__ import annotations
from contract.options import BackendOptions
from reasoning.llm_common.options import role_kwargs as common_role_kwargs
from reasoning.openai_backend.chat import ENV_BASE_URL, OpenAIChat, api_key_from, endpoint_from
from reasoning.openai_backend.client import MAX_RESPONSE_BYTES, OpenAIClient
from store.redact import redact_url

ROLE_DEFAULTS = {  # servers often cap images per request; keep the counts modest
    "watcher": {"fps": 1.0, "max_frames": 32, "max_new_tokens": 1024},
    "refiner": {"fps": 0.5, "max_frames": 8, "max_new_tokens": 1024},
    "critic": {"fps": 1.0, "max_frames": 16, "max_new_tokens": 768},
}


def chat_from(cfg: BackendOptions, role: str) -> OpenAIChat:
    o = dict(cfg.params)
    client = OpenAIClient(endpoint_from(o), api_key_from(o), timeout_s=float(o.get("timeout_s", 120.0)),
                          retries=int(o.get("retries", 2)), backoff_s=float(o.get("backoff_s", 1.0)),
                          deadline_s=float(o["deadline_s"]) if o.get("deadline_s") else None,
                          max_response_bytes=int(o.get("max_response_bytes", MAX_RESPONSE_BYTES)))
    return OpenAIChat(client, o.get("model"), jpeg_quality=int(o.get("jpeg_quality", 85)), seed=cfg.seed)


def role_kwargs(cfg: BackendOptions, role: str) -> dict:
    return common_role_kwargs(dict(cfg.params), ROLE_DEFAULTS[role], max_side=448)


def describe_role(cfg: BackendOptions, role: str) -> dict:
    """Configuration only: nothing is sent to the server (``foleyloop models`` must stay fast and offline)."""
    o = dict(cfg.params)
    url = endpoint_from(o)
    return {"available": bool(url), "where": redact_url(url),  # stored in backends_json and printed
            "why": "" if url else f"no endpoint: pass --endpoint URL or set {ENV_BASE_URL}",
            "model_id": str(o.get("model") or "(first model the server lists)"),
            "license": "that of the served model"}
