"""The bottom contract every backend and the orchestrator speak: the sound plan, the backend protocols,
the shared errors, backend options and the model cache. Depends only on ``store`` (media types)."""
