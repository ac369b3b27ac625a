"""Registry entry ``critic: desync``: temporal score from Synchformer's DeSync (av-benchmark protocol).

Raw value: DeSync in seconds (0 = in sync; the grid steps by 0.2 s up to 2 s; MMAudio-L scores 0.44 on VGGSound).
Score: 1 − DeSync / 1 s, clipped — 0.4 s (the default temporal threshold 0.6) is about where lip-sync and impact
offsets become plainly audible (ITU-R BT.1359 detectability: +45 ms / −125 ms; acceptability ≈ +90 / −185 ms).
Needs the video and at least 4.8 s of it; otherwise temporal is left to the other critics.
"""

from __future__ import annotations

from contract.options import BackendOptions
from models.desync import DEFAULT_REF, SIZE_GB, DesyncScorer
from reasoning.verifiers.base import Verifier, linear01

WORST_S = 1.0


class DesyncVerifier(Verifier):
    name, label, dimension, version = "desync", "DeSync", "temporal", "1"
    param, default_ref, size_gb = "synchformer", DEFAULT_REF, SIZE_GB
    model_license = "Synchformer code MIT (v-iashin/Synchformer); the file follows the terms of the repo it comes from"

    def scorer(self) -> DesyncScorer:
        return DesyncScorer(self.ref, device=self.device)

    def measure(self, scorer, plan, audio, sr, video, info):
        if video is None:
            raise ValueError("no video (text-to-audio): nothing to be in sync with")
        r = scorer.score(video, audio, sr)
        note = (f"DeSync {r['desync_s']:.2f} s over the first {r['seconds']:.1f} s (offset first 4.8 s "
                f"{r['offset_first_s']:+.1f} s, last 4.8 s {r['offset_last_s']:+.1f} s)")
        return float(r["desync_s"]), note

    def to_score(self, raw: float) -> float:
        return linear01(raw, WORST_S, 0.0)

    def advice(self, raw: float) -> tuple[str, str]:
        return (f"Synchformer hears the audio {raw:.1f} s out of sync with the picture (DeSync)",
                "align the impacts with the visible contacts")


def make(opts: BackendOptions) -> DesyncVerifier:
    return DesyncVerifier(opts).check()


def describe(opts: BackendOptions) -> dict:
    return DesyncVerifier(opts).describe()
