"""Registry entry ``refiner: openai``: a served VLM rewrites the weakest plan sections."""

from __future__ import annotations
from contract.options import BackendOptions
from reasoning.llm_common.refine import LLMRefiner
from reasoning.openai_backend.options import chat_from, describe_role, role_kwargs


def make(cfg: BackendOptions) -> LLMRefiner:
    return LLMRefiner(chat_from(cfg, "refiner"), "openai", cfg.thresholds,
                      max_sections=int(dict(cfg.params).get("max_sections", 2)), **role_kwargs(cfg, "refiner"))


def describe(cfg: BackendOptions) -> dict:
    return describe_role(cfg, "refiner")
