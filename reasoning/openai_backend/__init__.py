"""The watcher, refiner and judge against any OpenAI-compatible chat-completions server (vLLM, SGLang, Ollama,
LM Studio) serving Qwen2.5-VL: frames go as base64 JPEG images, each preceded by its timestamp."""
