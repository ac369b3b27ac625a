"""One verifier = one model-based scorer filling one dimension of the critique.

Each verifier loads its model through the process's model cache (``contract.memory.SLOTS``, role ``critic``) only
for the call and releases it afterwards, so a critic with three verifiers never holds more than one model. The
score vector gets the value mapped to [0, 1]; ``ScorerInfo`` keeps the raw value (seconds, cosine, 1–10 rating) and
a note, so nobody has to trust the mapping to see what was measured.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from contract.memory import SLOTS
from contract.options import BackendOptions
from contract.plan import Critique, Finding, Plan, ScorerInfo
from models.weights import ModelUnavailable
from store.media import VideoInfo, read_audio

log = logging.getLogger(__name__)


def linear01(x: float, lo: float, hi: float) -> float:
    """``lo`` → 0, ``hi`` → 1, clipped (``lo`` > ``hi`` maps a lower-is-better raw value)."""
    return float(min(1.0, max(0.0, (x - lo) / (hi - lo))))


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Verifier:
    """Subclasses set the class attributes and implement ``scorer`` (unloaded), ``measure`` and ``to_score``."""

    name = ""  # registry name
    label = ""  # shown in findings and notes
    dimension = ""
    version = "1"
    param = ""  # the key in the critic's options that names the weights (``--critic`` options)
    default_ref = ""
    size_gb = 1.0
    model_license = ""

    def __init__(self, opts: BackendOptions):
        params = dict(opts.params)
        self.ref = str(params.get(self.param) or self.default_ref)
        self.device = resolve_device(opts.device)
        self.threshold = float(opts.thresholds.get(self.dimension, 0.5))

    # ---- subclass hooks ------------------------------------------------------------------------------------
    def scorer(self) -> Any:
        raise NotImplementedError

    def measure(self, scorer: Any, plan: Plan, audio: np.ndarray, sr: int, video: Path | None,
                info: VideoInfo | None) -> tuple[float, str]:
        """(raw value, note); raise ValueError when this clip cannot be measured (the note says why)."""
        raise NotImplementedError

    def to_score(self, raw: float) -> float:
        raise NotImplementedError

    def advice(self, raw: float) -> tuple[str, str]:
        """(problem, suggestion) for a failing score."""
        return f"{self.label} {raw:.3f} is below the {self.dimension} threshold", ""

    # ---- shared ---------------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return f"{self.label} {self.ref}"

    @property
    def cache_key(self) -> str:
        return f"critic:{self.name}:{self.ref}:{self.device}"

    def describe(self) -> dict:
        d = self.scorer().describe()
        return {**d, "model_id": self.ref, "license": self.model_license,
                "why": d["why"] if d["available"] else f"unavailable: {d['why']}"}

    def check(self) -> "Verifier":
        """Fail at backend load (exit 2, one line) rather than in the middle of a run when weights are absent."""
        self.scorer().path()  # raises ModelUnavailable
        return self

    def critique(self, plan: Plan, audio: Path, video: Path | None, info: VideoInfo | None) -> Critique:
        wave, sr = read_audio(audio)
        raw, note = None, ""
        try:
            model = SLOTS.get(self.cache_key, self.size_gb, lambda: self.scorer().load(), role="critic")
            raw, note = self.measure(model, plan, wave, sr, video, info)
        except ModelUnavailable as exc:
            note = f"unavailable: {exc}"
        except ValueError as exc:  # e.g. a clip shorter than the model's window, no caption to compare with
            note = f"not measured: {exc}"
        finally:
            model = None
            SLOTS.release(self.cache_key)
        score = None if raw is None else self.to_score(raw)
        findings = []
        if score is None:
            findings.append(Finding(target=self.dimension, dimension=self.dimension,
                                    problem=f"{self.label}: {note}"))
        elif score < self.threshold:
            problem, suggestion = self.advice(raw)
            findings.append(Finding(target=self.dimension, dimension=self.dimension, problem=problem,
                                    suggestion=suggestion))
        info_row = ScorerInfo(name=self.name, version=self.version, dimension=self.dimension, raw=raw,
                              note=note[:1000])
        return Critique(scores={self.dimension: score}, findings=findings, scorers=[info_row])
