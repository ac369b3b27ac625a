"""Registry entry ``critic: openai``: the offline metric critic's scores plus a served VLM's findings."""

from __future__ import annotations
from contract.options import BackendOptions
from reasoning.llm_common.judge import LLMJudge, offline_metric_critic
from reasoning.openai_backend.options import chat_from, describe_role, role_kwargs


def make(cfg: BackendOptions) -> LLMJudge:
    return LLMJudge(chat_from(cfg, "critic"), "openai", cfg.thresholds, metric_critic=offline_metric_critic(cfg),
                    **role_kwargs(cfg, "critic"))


def describe(cfg: BackendOptions) -> dict:
    return describe_role(cfg, "critic")
