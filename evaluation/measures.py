"""The measures an evaluation reports for each clip and condition, which way is better, and the per-clip scoring
that does not need a model (reference metrics + the cross-clip control).

Conditions: ``round0`` (the single shot: the watcher's plan rendered once) and ``kept`` (the round the loop kept).
A measure that could not be computed is None with a ``<key>_why`` saying why, never a made-up number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from evaluation.metrics import ClipAudio, compare, cross_clip_control, silence_dropouts

CONDITIONS = ("round0", "kept")
CONDITION_LABEL = {"round0": "single shot (round 0)", "kept": "loop (kept round)"}
TIE_EPS = 1e-6  # |Δ| at or below this counts as tied


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    better: str = ""  # "higher" | "lower" | "" (context only, e.g. the chance level)
    digits: int = 3
    kind: str = "reference"  # reference | control | model

    def delta_sign(self, a: float | None, b: float | None, tolerance: float = 0.0) -> int | None:
        """+1 when ``b`` is better than ``a``, -1 worse, 0 tied (|Δ| within ``tolerance``, at least TIE_EPS); None
        when either is missing or the measure is not directional."""
        if a is None or b is None or not self.better:
            return None
        d = (b - a) if self.better == "higher" else (a - b)
        return 0 if abs(d) <= max(TIE_EPS, tolerance) else (1 if d > 0 else -1)


MEASURES: tuple[Measure, ...] = (
    Measure("onset_f1", "onset F1", "higher"),
    Measure("onset_f1_chance", "F1 chance"),
    Measure("onset_f1_above_chance", "F1 − chance", "higher"),
    Measure("xcorr_max", "env xcorr", "higher"),
    Measure("rms_r_1000ms", "RMS r 1 s", "higher"),
    Measure("rms_r_250ms", "RMS r 250 ms", "higher"),
    Measure("logmel_profile_r", "log-mel r", "higher"),
    Measure("logmel_frame_r", "log-mel frame r", "higher"),
    Measure("control_other_r", "ctl other r", kind="control"),
    Measure("control_margin", "ctl own−other", "higher", kind="control"),
    Measure("control_rank", "ctl rank", "lower", 0, kind="control"),
    Measure("gen_dropout_s", "dropout s", "lower", 2),
    Measure("desync_s", "DeSync s", "lower", 2, kind="model"),
    Measure("clap", "CLAP", "higher", kind="model"),
    Measure("aes_PQ", "PQ", "higher", 2, kind="model"),
    Measure("aes_PC", "PC", "", 2, kind="model"),
    Measure("aes_CE", "CE", "higher", 2, kind="model"),
    Measure("aes_CU", "CU", "higher", 2, kind="model"),
)
BY_KEY = {m.key: m for m in MEASURES}
# How far each reference measure moves between two renders of the same plan that differ only in the renderer seed
# (other takes among near-equal bank samples, other offsets): the 90th percentile of |Δ| over every seed pair of
# every clip, rounded up at the measure's display precision. A fall within it is measurement noise, not a worse
# round. Measured 2026-12-02 by `nice -n 5 python bench/eval_noise.py /work/corpus-all/manifest.json --seeds 6`
# (the 8 real-footage clips of `bench/corpus.py build DIR --subset all`, offline backends, 120 seed pairs); the
# comments give that run's p90 / max. One clip (forensics_hello) carries most of the log-mel and control spread:
# each other clip's own p90 is at most 0.0043 (log-mel r), 0.0105 (log-mel frame r), 0.0065 (ctl own−other).
NOISE_TOLERANCE: dict[str, float] = {
    "onset_f1": 0.083,  # p90 0.0826, max 0.131
    "onset_f1_above_chance": 0.077,  # p90 0.0768, max 0.130
    "xcorr_max": 0.028,  # p90 0.0271, max 0.055
    "rms_r_1000ms": 0.061,  # p90 0.0600, max 0.112
    "rms_r_250ms": 0.040,  # p90 0.0395, max 0.113
    "logmel_profile_r": 0.010,  # p90 0.0099, max 0.055
    "logmel_frame_r": 0.023,  # p90 0.0226, max 0.163
    "control_margin": 0.045,  # p90 0.0447, max 0.204
    "control_rank": 2.0,  # p90 1.1, max 7 (a whole rank)
    "gen_dropout_s": 0.0,  # never moved: a dropout stays strict
}
DIRECTIONAL = tuple(m for m in MEASURES if m.better)
REFERENCE_DIRECTIONAL = tuple(m for m in DIRECTIONAL if m.kind != "model")


def reference_metrics(gen: ClipAudio, ref: ClipAudio | None, refs: Sequence[ClipAudio | None], own: int,
                      why_no_ref: str = "no reference soundtrack") -> dict:
    """All reference metrics of one generated track plus the cross-clip control against every clip's reference.

    ``refs[own]`` is this clip's reference; clips without one are left out of the control.
    """
    drops = silence_dropouts(gen)
    base = {"gen_duration_s": gen.duration_s, "gen_dropouts": drops,
            "gen_dropout_s": float(sum(d["duration_s"] for d in drops))}
    if ref is None:
        return base | {"reference_why": why_no_ref}
    out = compare(gen, ref)
    present = [(i, r) for i, r in enumerate(refs) if r is not None]
    idx = [i for i, _ in present].index(own)
    ctl = cross_clip_control(gen, [r for _, r in present], idx)
    margin = (ctl["own_r"] - ctl["mean_other_r"]
              if ctl["own_r"] is not None and ctl["mean_other_r"] is not None else None)
    out |= {"control_own_r": ctl["own_r"], "control_other_r": ctl["mean_other_r"], "control_margin": margin,
            "control_rank": ctl["rank"] if ctl["n_clips"] > 1 else None, "control_n": ctl["n_clips"]}
    if ctl["n_clips"] < 2:
        out["control_why"] = "only one clip has a reference: nothing to control against"
    return out | {k: v for k, v in base.items() if k not in out}


def compare_conditions(a: dict, b: dict, measures: Iterable[Measure] = DIRECTIONAL,
                       tolerance: Mapping[str, float] | None = None) -> dict:
    """Per measure sign of ``b`` vs ``a`` (+1 better, -1 worse, 0 tied) for the measures both have; a measure in
    ``tolerance`` ties while |Δ| stays within its tolerance."""
    out = {}
    for m in measures:
        s = m.delta_sign(a.get(m.key), b.get(m.key), (tolerance or {}).get(m.key, 0.0))
        if s is not None:
            out[m.key] = s
    return out


def no_worse(round0: dict, kept: dict, on: Iterable[Measure] = DIRECTIONAL,
             tolerance: Mapping[str, float] | None = None) -> tuple[bool | None, dict]:
    """Is the kept round no worse than round 0 on every independent measure (of ``on``) both conditions have?
    Strict by default (any fall beyond TIE_EPS is worse); with ``tolerance`` a measure is worse only when it falls
    by more than its tolerance (``no_worse_within_noise``).

    Returns (verdict — None when nothing is comparable, {"better", "worse", "tied", "worse_on"}).
    """
    signs = compare_conditions(round0, kept, on, tolerance)
    counts = {"better": sum(s > 0 for s in signs.values()), "worse": sum(s < 0 for s in signs.values()),
              "tied": sum(s == 0 for s in signs.values()),
              "worse_on": [k for k, s in signs.items() if s < 0]}
    return (None if not signs else counts["worse"] == 0), counts


def noise_tolerance(seeds: int = 1) -> dict[str, float]:
    """NOISE_TOLERANCE for measures that are each a mean over ``seeds`` renders: two such means differ by about
    1/sqrt(seeds) as much as two single renders (independent seed noise), so the tolerance shrinks with it."""
    f = 1.0 / math.sqrt(max(1, int(seeds)))
    return {k: round(v * f, 6) for k, v in NOISE_TOLERANCE.items()}


def no_worse_within_noise(round0: dict, kept: dict, on: Iterable[Measure] = DIRECTIONAL,
                          seeds: int = 1) -> tuple[bool | None, dict]:
    """``no_worse`` with each reference measure's seed-noise tolerance: a kept round is "no worse within noise" when
    no measure falls by more than re-rendering round 0's own plan with another seed moves it (``seeds``: the
    measures are means over that many renders each). Measures without a measured tolerance (the model measures)
    stay strict. The counts carry the tolerances they used."""
    tol = noise_tolerance(seeds)
    verdict, counts = no_worse(round0, kept, on, tol)
    return verdict, counts | {"tolerance": tol, "seeds": int(seeds)}


def seed_mean(per_seed: Sequence[dict]) -> dict:
    """One round's reference measures over renders of its plan with different seeds: each measure the mean of the
    renders that have it (a dropout the worst of them), the first render's other fields, ``seed_renders`` and each
    directional measure's per-seed values (``seed_values``). Model measures are not here: they score the stored
    render only."""
    out = dict(per_seed[0])
    values: dict[str, list[float]] = {}
    for m in MEASURES:
        if m.kind == "model":
            continue
        vals = [float(x[m.key]) for x in per_seed if isinstance(x.get(m.key), (int, float))]
        if not vals:
            continue
        out[m.key] = max(vals) if m.key == "gen_dropout_s" else float(np.mean(vals))
        if m.better:
            values[m.key] = [round(v, 6) for v in vals]
    return out | {"seed_renders": len(per_seed), "seed_values": values}


def mean_or_none(values: Iterable[float | None]) -> float | None:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None
