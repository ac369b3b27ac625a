"""When to stop refining (cot.md rules 3 and 4), as a pure function so it is testable without a graph."""

from __future__ import annotations

from dataclasses import dataclass

from contract.plan import Critique


@dataclass(frozen=True)
class Decision:
    stop: bool
    reason: str | None
    improved: bool
    best_overall: float | None
    rounds_without_improvement: int


def decide(critique: Critique, thresholds: dict[str, float], rounds_done: int, rounds_cap: int,
           best_overall: float | None, rounds_without_improvement: int, min_improvement: float = 0.005,
           patience: int = 1) -> Decision:
    """Stop when every available dimension passes, at the round cap, or after ``patience`` rounds without gain.

    A round that scores worse never replaces the best (the caller keeps best-so-far on ``improved``).
    """
    overall = critique.overall
    improved = overall is not None and (best_overall is None or overall > best_overall + min_improvement)
    new_best = overall if improved else best_overall
    stale = 0 if improved else rounds_without_improvement + 1
    available = [d for d, s in critique.scores.items() if s is not None]
    if available and not critique.failing(thresholds):
        return Decision(True, "passed", improved, new_best, stale)
    if rounds_done >= rounds_cap:
        return Decision(True, "round_cap", improved, new_best, stale)
    if not available:
        return Decision(True, "no_scorer", improved, new_best, stale)
    if stale >= patience:
        return Decision(True, "no_improvement", improved, new_best, stale)
    return Decision(False, None, improved, new_best, stale)
