"""Audiobox Aesthetics (Meta): predicted PQ / PC / CE / CU scores of a track, as in recent V2A papers.

Real weights: ``facebook/audiobox-aesthetics`` from the HF cache or a local folder saved with ``save_pretrained``.
The model gets tensors, never paths: the package's path loader needs TorchCodec, which the pins lack.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.weights import ModelUnavailable, describe, resolve
from store.media import resample

DEFAULT_REF = "facebook/audiobox-aesthetics"
NAME = "Audiobox Aesthetics"
AXES = ("PQ", "PC", "CE", "CU")  # production quality, production complexity, content enjoyment, content usefulness
SR = 16000
WINDOW_S = 10  # the package scores 10-s windows (hop 10 s) and averages them weighted by their length


class AestheticsScorer:
    """Scores on the model's native 1–10 scale, de-normalised with the checkpoint's own target transform."""

    def __init__(self, ref: str | Path | None = None, device: str = "cpu"):
        self.ref = str(ref or DEFAULT_REF)
        self.device = device
        self.model = None

    def describe(self) -> dict:
        return describe(self.ref, name=NAME, default_repo=DEFAULT_REF)

    def path(self) -> Path:
        """The local model folder (raises ``ModelUnavailable``)."""
        return resolve(self.ref, name=NAME, default_repo=DEFAULT_REF)

    def load(self) -> "AestheticsScorer":
        if self.model is None:
            from audiobox_aesthetics.model.aes import AesMultiOutput

            path = self.path()
            model = AesMultiOutput.from_pretrained(str(path))
            tt = model.target_transform or {}
            if any(ax not in tt or not {"mean", "std"} <= set(tt[ax]) for ax in AXES):
                raise ModelUnavailable(f"{NAME} {self.ref}", f"checkpoint in {path} has no target_transform "
                                       f"(mean/std for {', '.join(AXES)}); it cannot give scores on the 1–10 scale")
            self.model = model.to(self.device).eval()
        return self

    def score(self, audio: np.ndarray, sr: int) -> dict:
        """{"PQ","PC","CE","CU"} floats for (C, n) or (n,) float audio at ``sr`` Hz."""
        import torch

        self.load()
        a = np.asarray(audio, dtype=np.float32)
        a = a.mean(axis=0) if a.ndim == 2 else a
        a = resample(a, int(sr), SR)
        if a.size == 0:
            raise ValueError("Audiobox Aesthetics: empty audio")
        win = WINDOW_S * SR
        n_win = -(-a.size // win)
        wav = np.zeros((n_win, 1, win), dtype=np.float32)
        mask = np.zeros((n_win, 1, win), dtype=bool)
        weights = np.zeros(n_win)
        for k in range(n_win):
            seg = a[k * win:(k + 1) * win]
            wav[k, 0, :seg.size], mask[k, 0, :seg.size], weights[k] = seg, True, seg.size / win
        if n_win == 1:  # a single short window: no padding needed, so none is fed
            wav, mask = wav[:, :, :a.size], mask[:, :, :a.size]
        batch = {"wav": torch.from_numpy(wav).to(self.device), "mask": torch.from_numpy(mask).to(self.device)}
        with torch.inference_mode():
            preds = self.model(batch)
        tt = self.model.target_transform
        out = {}
        for ax in AXES:
            p = preds[ax].float().cpu().numpy() * tt[ax]["std"] + tt[ax]["mean"]
            out[ax] = float((p * weights).sum() / weights.sum())
        return out

    def release(self) -> None:
        self.model = None
        import gc

        gc.collect()
