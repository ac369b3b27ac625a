"""The options every LLM role takes, read the same way for every backend (``dict(cfg.params)`` keys)."""

from __future__ import annotations


def role_kwargs(opts: dict, defaults: dict, max_side: int) -> dict:
    """Keys: fps, max_frames, max_side, max_new_tokens, max_attempts, prompt_version, prompt_dir."""
    return {"fps": float(opts.get("fps", defaults["fps"])),
            "max_frames": int(opts.get("max_frames", defaults["max_frames"])),
            "max_side": int(opts.get("max_side", max_side)),
            "max_new_tokens": int(opts.get("max_new_tokens", defaults["max_new_tokens"])),
            "max_attempts": int(opts.get("max_attempts", 3)),
            "prompt_version": opts.get("prompt_version"), "prompt_dir": opts.get("prompt_dir")}
