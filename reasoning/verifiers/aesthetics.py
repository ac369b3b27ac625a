"""Registry entry ``critic: aesthetics``: aesthetic score from Audiobox Aesthetics' production quality (PQ).

Raw value: PQ on the model's 1–10 scale (all four axes PQ/PC/CE/CU are in the note). Score: PQ 4 → 0 and 8 → 1,
clipped — studio recordings rate about 7–8, current V2A output about 5.5–6.5.
"""

from __future__ import annotations

from contract.options import BackendOptions
from models.aesthetics import DEFAULT_REF, AestheticsScorer
from reasoning.verifiers.base import Verifier, linear01

PQ_LO, PQ_HI = 4.0, 8.0


class AestheticsVerifier(Verifier):
    name, label, dimension, version = "aesthetics", "Audiobox Aesthetics", "aesthetic", "1"
    param, default_ref, size_gb = "aesthetics", DEFAULT_REF, 0.4
    model_license = "CC-BY-4.0 (facebook/audiobox-aesthetics model card)"

    def scorer(self) -> AestheticsScorer:
        return AestheticsScorer(self.ref, device=self.device)

    def measure(self, scorer, plan, audio, sr, video, info):
        r = scorer.score(audio, sr)
        return r["PQ"], "PQ {PQ:.2f}, PC {PC:.2f}, CE {CE:.2f}, CU {CU:.2f} (1–10)".format(**r)

    def to_score(self, raw: float) -> float:
        return linear01(raw, PQ_LO, PQ_HI)

    def advice(self, raw: float) -> tuple[str, str]:
        return (f"Audiobox Aesthetics rates the production quality low (PQ {raw:.1f} of 10)",
                "clean up the mix: less noise and distortion, balanced levels")


def make(opts: BackendOptions) -> AestheticsVerifier:
    return AestheticsVerifier(opts).check()


def describe(opts: BackendOptions) -> dict:
    return AestheticsVerifier(opts).describe()
