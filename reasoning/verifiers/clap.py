"""Registry entry ``critic: clap``: semantic score from CLAP audio ↔ plan caption similarity.

Raw value: the cosine of the projected CLAP embeddings (LAION ``larger_clap_general`` by default) of the rendered
track and the plan's caption (its semantic section when the caption is empty). Score: cosine 0.05 → 0 and
0.45 → 1, clipped — an uncalibrated linear map: matching pairs of this model typically land at 0.3–0.5 and
unrelated ones near 0–0.1.
"""

from __future__ import annotations

from contract.options import BackendOptions
from models.clap import DEFAULT_REF, ClapScorer
from reasoning.verifiers.base import Verifier, linear01

COS_LO, COS_HI = 0.05, 0.45


class ClapVerifier(Verifier):
    name, label, dimension, version = "clap", "CLAP", "semantic", "1"
    param, default_ref, size_gb = "clap", DEFAULT_REF, 0.8
    model_license = "Apache-2.0 (laion/larger_clap_general model card)"

    def scorer(self) -> ClapScorer:
        return ClapScorer(self.ref, device=self.device)

    def measure(self, scorer, plan, audio, sr, video, info):
        caption, which = (plan.caption, "caption") if plan.caption.strip() else (plan.semantic, "semantic section")
        if not caption.strip():
            raise ValueError("the plan has no caption or semantic section to compare the audio with")
        cos = scorer.score(audio, sr, caption)
        return cos, f"cosine {cos:.3f} with the plan {which}: {caption[:200]}"

    def to_score(self, raw: float) -> float:
        return linear01(raw, COS_LO, COS_HI)

    def advice(self, raw: float) -> tuple[str, str]:
        return (f"CLAP finds the track unlike the caption (cosine {raw:.2f})",
                "render the sounds the caption names; drop unrelated layers")


def make(opts: BackendOptions) -> ClapVerifier:
    return ClapVerifier(opts).check()


def describe(opts: BackendOptions) -> dict:
    return ClapVerifier(opts).describe()
