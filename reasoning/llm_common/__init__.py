"""Backend-independent parts of the VLM roles: prompts, frames, JSON parsing and the watch/refine/judge logic.

A backend (local Qwen2.5-VL, an OpenAI-compatible server) only has to provide a ``ChatModel``; everything
that decides what is asked and what is accepted lives here, so both backends behave the same.
"""
