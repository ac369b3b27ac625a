"""Registry entry ``refiner: openai``: a served VLM rewrites the weakest plan sections."""

from __future__ import annotations

from agent.config import RunConfig
from reasoning.llm_common.refine import LLMRefiner
from reasoning.openai_backend.options import chat_from, describe_role, role_kwargs


def make(cfg: RunConfig) -> LLMRefiner:
    return LLMRefiner(chat_from(cfg, "refiner"), "openai", cfg.thresholds,
                      max_sections=int(cfg.opts("refiner").get("max_sections", 2)), **role_kwargs(cfg, "refiner"))


def describe(cfg: RunConfig) -> dict:
    return describe_role(cfg, "refiner")
