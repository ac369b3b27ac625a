"""Reference-free, model-based measures of a generated track: DeSync (Synchformer), CLAP (audio ↔ caption) and
Audiobox Aesthetics (PQ/PC/CE/CU) — the numbers V2A papers report.

A model whose weights are absent gives ``{<keys>: None, <why_key>: "unavailable: <model> not found — <how>"}``
for every clip, never a number; a clip the model cannot judge (shorter than DeSync's 4.8 s, no caption) gives
``"not measured: <why>"``. Models are loaded one at a time through the model cache and released after their pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from contract.memory import SLOTS
from models.weights import ModelUnavailable


@dataclass(frozen=True)
class Item:
    """One track to score: the generated audio, the (silent) video it goes with, and a caption for CLAP."""

    audio: np.ndarray  # (C, n) float32
    sr: int
    video: Path | None
    caption: str = ""
    caption_source: str = ""


@dataclass(frozen=True)
class ModelMetric:
    name: str  # desync | clap | aesthetics
    label: str
    keys: tuple[str, ...]
    why_key: str
    size_gb: float
    make: Callable[[str | None, str], Any]  # (weights ref or None = default, device) → unloaded scorer
    measure: Callable[[Any, Item], dict]

    def unavailable(self, why: str) -> dict:
        return {k: None for k in self.keys} | {self.why_key: f"unavailable: {why}"}

    def not_measured(self, why: str) -> dict:
        return {k: None for k in self.keys} | {self.why_key: f"not measured: {why}"}


def _desync(scorer, item: Item) -> dict:
    if item.video is None:
        raise ValueError("no video")
    r = scorer.score(item.video, item.audio, item.sr)
    return {"desync_s": r["desync_s"], "desync_first_s": r["offset_first_s"], "desync_last_s": r["offset_last_s"],
            "desync_seconds": r["seconds"], "desync_why": None}


def _clap(scorer, item: Item) -> dict:
    if not item.caption.strip():
        raise ValueError("no caption (neither clip notes nor a plan caption)")
    return {"clap": scorer.score(item.audio, item.sr, item.caption), "clap_caption": item.caption,
            "clap_caption_source": item.caption_source, "clap_why": None}


def _aes(scorer, item: Item) -> dict:
    r = scorer.score(item.audio, item.sr)
    return {f"aes_{k}": float(v) for k, v in r.items()} | {"aes_why": None}


def _make_desync(ref, device):
    from models.desync import DesyncScorer

    return DesyncScorer(ref, device=device)


def _make_clap(ref, device):
    from models.clap import ClapScorer

    return ClapScorer(ref, device=device)


def _make_aes(ref, device):
    from models.aesthetics import AestheticsScorer

    return AestheticsScorer(ref, device=device)


MODEL_METRICS: dict[str, ModelMetric] = {
    "desync": ModelMetric("desync", "DeSync (Synchformer)", ("desync_s", "desync_first_s", "desync_last_s"),
                          "desync_why", 1.0, _make_desync, _desync),
    "clap": ModelMetric("clap", "CLAP", ("clap",), "clap_why", 0.8, _make_clap, _clap),
    "aesthetics": ModelMetric("aesthetics", "Audiobox Aesthetics", ("aes_PQ", "aes_PC", "aes_CE", "aes_CU"),
                              "aes_why", 0.4, _make_aes, _aes),
}


def describe(name: str, ref: str | None = None, device: str = "cpu") -> dict:
    return MODEL_METRICS[name].make(ref, device).describe()


def score_pass(name: str, items: dict[Any, Item], ref: str | None = None, device: str = "cpu",
               on_item: Callable[[Any, dict], None] | None = None) -> dict[Any, dict]:
    """Score every item with one model: load it once (model cache, role ``eval``), release it at the end.

    ``on_item(key, result)`` is called after each item (to store it at once); results carry
    ``<name>_seconds_compute``.
    """
    mm = MODEL_METRICS[name]
    proto = mm.make(ref, device)
    d = proto.describe()
    results: dict[Any, dict] = {}
    if not d["available"]:
        for k in items:
            results[k] = mm.unavailable(d["why"])
            if on_item:
                on_item(k, results[k])
        return results
    key = f"eval:{name}:{proto.ref}:{device}"
    try:
        try:
            scorer = SLOTS.get(key, mm.size_gb, proto.load, role="eval")
        except ModelUnavailable as exc:  # present but unusable (incomplete folder, wrong checkpoint)
            for k in items:
                results[k] = mm.unavailable(str(exc))
                if on_item:
                    on_item(k, results[k])
            return results
        for k, item in items.items():
            t = time.perf_counter()
            try:
                r = mm.measure(scorer, item)
            except ValueError as exc:
                r = mm.not_measured(str(exc))
            r[f"{name}_seconds_compute"] = round(time.perf_counter() - t, 4)
            results[k] = r
            if on_item:
                on_item(k, r)
    finally:
        scorer = None
        proto.release()
        SLOTS.release(key)
    return results
