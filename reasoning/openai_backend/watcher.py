"""Registry entry ``watcher: openai``: a served VLM writes the sound plan from timestamped frames."""

from __future__ import annotations
from contract.options import BackendOptions
from reasoning.llm_common.watch import LLMWatcher
from reasoning.openai_backend.options import chat_from, describe_role, role_kwargs


def make(cfg: BackendOptions) -> LLMWatcher:
    return LLMWatcher(chat_from(cfg, "watcher"), "openai", **role_kwargs(cfg, "watcher"))


def describe(cfg: BackendOptions) -> dict:
    return describe_role(cfg, "watcher")
