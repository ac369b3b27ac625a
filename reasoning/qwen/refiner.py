"""Registry entry ``refiner: qwen``: Qwen2.5-VL rewrites the weakest plan sections from the critique."""

from __future__ import annotations
from contract.options import BackendOptions
from reasoning.llm_common.refine import LLMRefiner
from reasoning.qwen.chat import QwenChat
from reasoning.qwen.options import chat_kwargs, describe_spec, role_kwargs, spec_from


def make(cfg: BackendOptions) -> LLMRefiner:
    o = dict(cfg.params)
    return LLMRefiner(QwenChat(spec_from(cfg, "refiner"), **chat_kwargs(cfg, "refiner")), "qwen", cfg.thresholds,
                      max_sections=int(o.get("max_sections", 2)), **role_kwargs(cfg, "refiner"))


def describe(cfg: BackendOptions) -> dict:
    return describe_spec(spec_from(cfg, "refiner"))
