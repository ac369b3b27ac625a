"""When to stop refining and when a later round replaces the best (cot.md rules 3 and 4), as pure functions so
they are testable without a graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from contract.plan import DIMENSIONS, Critique

# The offline critic's own noise: how far its scores move when the same plan is rendered again with other takes
# (renderer seeds 0-3, nothing the plan says changed; 7 real-footage clips x 6 seed pairs, December 2026).
# 90th percentile of |difference|: overall 0.017 (median 0.007); semantic 0.013 (the picture-grounded score; the
# plan-label score it replaced: 0.032), temporal 0.041, aesthetic 0.057, spatial 0.002 (max 0.007). Each is rounded
# up to the next 0.01: a difference inside it is not evidence. Re-measure with bench/critic_noise.py.
CRITIC_NOISE_OVERALL = 0.02
CRITIC_NOISE: dict[str, float] = {"semantic": 0.02, "temporal": 0.05, "aesthetic": 0.06, "spatial": 0.01}


@dataclass(frozen=True)
class Decision:
    stop: bool
    reason: str | None
    improved: bool
    best_overall: float | None
    rounds_without_improvement: int
    evidence: str = ""  # why a later round was or was not kept (empty for round 0 / the plain overall rule)


def clear_gain(scores: Mapping[str, float | None], best: Mapping[str, float | None], aimed_at: Iterable[str],
               min_gain: float = CRITIC_NOISE_OVERALL,
               noise: Mapping[str, float] | None = None) -> tuple[bool, str]:
    """Is the critic's evidence that ``scores`` beat ``best`` clear? (verdict, why)

    A sound designer keeps a revision when the thing it set out to fix got audibly better and nothing else got
    worse: only the dimensions the refine acted on (``aimed_at``) count as gains (a rise elsewhere is a side
    effect of other takes, i.e. the critic's noise); every dimension counts when it falls. The gain, on the
    overall score's scale (mean over the scored dimensions), must exceed ``min_gain``, and no dimension may fall
    by more than its own noise.
    """
    noise = CRITIC_NOISE if noise is None else noise
    aimed = set(aimed_at)
    dims = [d for d in DIMENSIONS if scores.get(d) is not None and best.get(d) is not None]
    if not dims:
        return False, "no dimension scored in both rounds"
    delta = {d: float(scores[d]) - float(best[d]) for d in dims}
    fell = [d for d in dims if delta[d] < -noise.get(d, 0.0)]
    if fell:
        return False, "; ".join(f"{d} fell {delta[d]:+.3f} (beyond its noise {noise.get(d, 0.0):.3f})" for d in fell)
    gain = sum(delta[d] if d in aimed else min(delta[d], 0.0) for d in dims) / len(dims)
    parts = ", ".join(f"{d} {delta[d]:+.3f}{'' if d in aimed else ' (not aimed at)'}" for d in dims)
    if gain <= min_gain:
        return False, f"gain {gain:+.3f} on what the refine aimed at is within the critic's noise {min_gain:.3f} ({parts})"
    return True, f"gain {gain:+.3f} beyond the critic's noise {min_gain:.3f} ({parts})"


def decide(critique: Critique, thresholds: dict[str, float], rounds_done: int, rounds_cap: int,
           best_overall: float | None, rounds_without_improvement: int,
           min_improvement: float = CRITIC_NOISE_OVERALL, patience: int = 1,
           best_scores: Mapping[str, float | None] | None = None,
           aimed_at: Iterable[str] | None = None) -> Decision:
    """Stop when every available dimension passes, at the round cap, or after ``patience`` rounds without gain.

    A later round replaces the best only on clear evidence (``clear_gain``) when the best round's scores are
    given; without them, when its overall beats the best by more than ``min_improvement``. ``aimed_at`` is what
    the refine acted on (None: every dimension). A round that is not clearly better never replaces the best (the
    caller keeps best-so-far on ``improved``).
    """
    overall = critique.overall
    evidence = ""
    if overall is None:
        improved = False
    elif best_overall is None:
        improved = True
    elif best_scores is not None:
        improved, evidence = clear_gain(critique.scores, best_scores,
                                        DIMENSIONS if aimed_at is None else aimed_at, min_improvement)
    else:
        improved = overall > best_overall + min_improvement
    new_best = overall if improved else best_overall
    stale = 0 if improved else rounds_without_improvement + 1
    available = [d for d, s in critique.scores.items() if s is not None]
    if available and not critique.failing(thresholds):
        # "passed" ends the loop; a passing later round that is not clearly better still does not replace the best
        return Decision(True, "passed", improved, new_best, stale, evidence)
    if rounds_done >= rounds_cap:
        return Decision(True, "round_cap", improved, new_best, stale, evidence)
    if not available:
        return Decision(True, "no_scorer", improved, new_best, stale, evidence)
    if stale >= patience:
        return Decision(True, "no_improvement", improved, new_best, stale, evidence)
    return Decision(False, None, improved, new_best, stale, evidence)
