"""The one thing a VLM backend must provide: turn a neutral conversation into text.

Messages are plain dicts so that prompts can be built once for every backend::

    {"role": "system" | "user" | "assistant", "content": str | [part, ...]}
    part = {"type": "text", "text": str} | {"type": "video", "frames": KeyFrames} | {"type": "audio", "path": str}

Each backend translates ``video`` parts its own way (qwen-vl-utils frames, base64 images with timestamps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass
class Generation:
    text: str
    truncated: bool = False  # stopped by the token limit, not by the model
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    frames_sent: int = 0
    wall_s: float = 0.0
    meta: dict = field(default_factory=dict)


@runtime_checkable
class ChatModel(Protocol):
    model_id: str
    hears: bool  # True when audio parts reach the model (Qwen2.5-Omni); VL models drop them

    def chat(self, messages: list[dict], max_new_tokens: int) -> Generation: ...


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def frames_sent(messages: list[dict]) -> int:
    return sum(len(p["frames"].times) for m in messages if isinstance(m["content"], list)
               for p in m["content"] if p.get("type") == "video")
