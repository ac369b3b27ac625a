"""CLAP audio–text similarity (transformers ``ClapModel``), the CLAP score of the V2A papers.

Real weights: ``laion/larger_clap_general`` from the HF cache or a local folder; never downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.weights import ModelUnavailable, describe, resolve
from store.media import resample

DEFAULT_REF = "laion/larger_clap_general"
NAME = "CLAP"
# transformers 5 saves the processor as processor_config.json; hub repos of the 4.x era have preprocessor_config.json
REQUIRED = ("config.json", "preprocessor_config.json|processor_config.json")


class ClapScorer:
    """Cosine similarity between a track's and a caption's projected CLAP embeddings, in [-1, 1].

    Audio longer than the extractor's window (10 s) is cut into consecutive windows whose embeddings are averaged
    by duration: this keeps the score deterministic (the extractor's own truncation picks a random crop).
    """

    def __init__(self, ref: str | Path | None = None, device: str = "cpu"):
        self.ref = str(ref or DEFAULT_REF)
        self.device = device
        self.model = self.processor = None

    def path(self) -> Path:
        """The local model folder (raises ``ModelUnavailable``)."""
        return self._resolve()

    def _resolve(self) -> Path:
        return resolve(self.ref, name=NAME, default_repo=DEFAULT_REF,
                       required=REQUIRED)

    def describe(self) -> dict:
        return describe(self.ref, name=NAME, default_repo=DEFAULT_REF,
                        required=REQUIRED)

    def load(self) -> "ClapScorer":
        if self.model is None:
            from transformers import ClapModel, ClapProcessor

            path = self._resolve()
            try:
                self.processor = ClapProcessor.from_pretrained(str(path), local_files_only=True)
                self.model = ClapModel.from_pretrained(str(path), local_files_only=True).to(self.device).eval()
            except OSError as exc:  # e.g. tokenizer files missing from an otherwise complete folder
                raise ModelUnavailable(f"{NAME} {self.ref}", f"folder {path} is incomplete ({exc})") from None
        return self

    @property
    def sampling_rate(self) -> int:
        return int(self.load().processor.feature_extractor.sampling_rate)

    def audio_embedding(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """Unit-norm projected audio embedding (D,) of (C, n) or (n,) float audio at ``sr`` Hz."""
        import torch

        self.load()
        fe = self.processor.feature_extractor
        a = np.asarray(audio, dtype=np.float32)
        a = a.mean(axis=0) if a.ndim == 2 else a
        a = resample(a, int(sr), fe.sampling_rate)
        if a.size == 0:
            raise ValueError("CLAP: empty audio")
        win = int(fe.nb_max_samples)
        chunks = [a[i:i + win] for i in range(0, a.size, win)]
        feats = fe(chunks, sampling_rate=fe.sampling_rate, return_tensors="pt")
        with torch.inference_mode():
            out = self.model.get_audio_features(**{k: v.to(self.device) for k, v in feats.items()})
        emb = out.pooler_output.float().cpu().numpy()  # (chunks, D), each already L2-normalised
        w = np.array([len(c) for c in chunks], dtype=np.float64)
        v = (emb * w[:, None]).sum(axis=0)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def text_embedding(self, caption: str) -> np.ndarray:
        """Unit-norm projected text embedding (D,)."""
        import torch

        self.load()
        tokenizer = self.processor.tokenizer
        # RoBERTa positions start after the padding index: a checkpoint with P positions reads P - 2 tokens. A
        # tokenizer saved without model_max_length would otherwise let a long caption run past the table.
        limit = int(self.model.config.text_config.max_position_embeddings) - 2
        tok = tokenizer(caption, padding=True, truncation=True, return_tensors="pt",
                        max_length=min(limit, int(tokenizer.model_max_length or limit)))
        with torch.inference_mode():
            out = self.model.get_text_features(**{k: v.to(self.device) for k, v in tok.items()})
        return out.pooler_output[0].float().cpu().numpy()

    def score(self, audio: np.ndarray, sr: int, caption: str) -> float:
        """Cosine similarity of the audio and caption embeddings (no logit scale)."""
        return float(np.dot(self.audio_embedding(audio, sr), self.text_embedding(caption)))

    def release(self) -> None:
        """Drop the model so its memory can go back (the evaluator loads one scorer at a time)."""
        self.model = self.processor = None
        import gc

        gc.collect()
