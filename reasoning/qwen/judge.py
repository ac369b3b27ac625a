"""Registry entry ``critic: qwen``: the offline metric critic's scores plus Qwen2.5-VL's plan ↔ video findings.

``make(cfg).judge(plan, video, info, metric_critique)`` runs the judge alone on a given metric critique;
``critique(plan, audio, video, info)`` (the Critic protocol) runs the offline metric critic first, then merges.
"""

from __future__ import annotations
from contract.options import BackendOptions
from reasoning.llm_common.judge import LLMJudge, offline_metric_critic
from reasoning.qwen.chat import QwenChat
from reasoning.qwen.options import chat_kwargs, describe_spec, role_kwargs, spec_from


def make(cfg: BackendOptions) -> LLMJudge:
    return LLMJudge(QwenChat(spec_from(cfg, "critic"), **chat_kwargs(cfg, "critic")), "qwen", cfg.thresholds,
                    metric_critic=offline_metric_critic(cfg), **role_kwargs(cfg, "critic"))


def describe(cfg: BackendOptions) -> dict:
    return describe_spec(spec_from(cfg, "critic"))
