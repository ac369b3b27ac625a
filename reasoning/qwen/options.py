"""Backend options → Qwen model spec and chat, shared by the three role modules (one place reads the options)."""

from __future__ import annotations
from contract.options import BackendOptions
from reasoning.llm_common.options import role_kwargs as common_role_kwargs
from reasoning.qwen.loader import DEFAULT_MODEL, ModelSpec, find_weights, how_to_get, model_license

ROLE_DEFAULTS = {  # the watcher needs the densest view; refiner and judge get fewer frames
    "watcher": {"fps": 2.0, "max_frames": 64, "max_new_tokens": 1024},
    "refiner": {"fps": 1.0, "max_frames": 16, "max_new_tokens": 1024},
    "critic": {"fps": 1.0, "max_frames": 24, "max_new_tokens": 768},
}


def spec_from(cfg: BackendOptions, role: str, kind: str = "vl", default_model: str = DEFAULT_MODEL) -> ModelSpec:
    o = dict(cfg.params)
    return ModelSpec(ref=str(o.get("model", default_model)), device=cfg.device, dtype=cfg.dtype,
                     attn_implementation=str(o.get("attn_implementation", "sdpa")),
                     cache_dir=o.get("hf_cache_dir"), kind=kind)


def chat_kwargs(cfg: BackendOptions, role: str) -> dict:
    o = dict(cfg.params)
    kw = {"min_pixels": int(o.get("min_pixels", 128 * 28 * 28)), "max_pixels": int(o.get("max_pixels", 360 * 420)),
          "seed": cfg.seed}
    if o.get("gpu_memory_gb") is not None:
        kw["budget_gb"] = float(o["gpu_memory_gb"])
    return kw


def role_kwargs(cfg: BackendOptions, role: str) -> dict:
    return common_role_kwargs(dict(cfg.params), ROLE_DEFAULTS[role], max_side=640)


def describe_spec(spec: ModelSpec) -> dict:
    """Whether the weights are on this machine, without loading them."""
    path = find_weights(spec.ref, spec.cache_dir)
    return {"available": path is not None, "where": str(path) if path else "",
            "why": "" if path else f"weights not found locally; {how_to_get(spec.ref)}",
            "model_id": spec.ref, "license": model_license(path, spec.ref)}
