"""Re-export: the MiniLM text embedder lives in ``models.text_embed`` (the renderer's bank and the offline critic
both use it, and reasoning may not import generator)."""

from models.text_embed import (MAX_TOKENS, MINILM_ID, HashingEmbedder, MiniLMEmbedder, TextEmbedder,  # noqa: F401
                               get_embedder, minilm_installed, word_stems)
