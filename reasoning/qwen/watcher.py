"""Registry entry ``watcher: qwen``: Qwen2.5-VL writes the sound plan from the video."""

from __future__ import annotations
from contract.options import BackendOptions
from reasoning.llm_common.watch import LLMWatcher
from reasoning.qwen.chat import QwenChat
from reasoning.qwen.options import chat_kwargs, describe_spec, role_kwargs, spec_from


def make(cfg: BackendOptions) -> LLMWatcher:
    return LLMWatcher(QwenChat(spec_from(cfg, "watcher"), **chat_kwargs(cfg, "watcher")), "qwen",
                      **role_kwargs(cfg, "watcher"))


def describe(cfg: BackendOptions) -> dict:
    return describe_spec(spec_from(cfg, "watcher"))
