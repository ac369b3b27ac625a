"""Two evaluations side by side: per measure, the mean change over the clips both scored, and a paired sign count
(how many clips got better / worse / stayed tied) — a mean alone hides whether one clip moved or all of them did."""

from __future__ import annotations

from typing import Sequence

from evaluation.measures import CONDITIONS, DIRECTIONAL, MEASURES, Measure, mean_or_none, noise_tolerance


def _metrics_by_name(clips: Sequence[dict], condition: str) -> dict[str, dict]:
    return {c["name"]: (c.get("metrics") or {}).get(condition) or {} for c in clips
            if c.get("status") == "scored" and (c.get("metrics") or {}).get(condition)}


def compare_evals(clips_a: Sequence[dict], clips_b: Sequence[dict],
                  measures: Sequence[Measure] = MEASURES) -> dict:
    """{condition: [{"key", "label", "better", "n", "mean_a", "mean_b", "mean_delta", "n_better", "n_worse",
    "n_tied", "n_better_noise", "n_worse_noise"}]} over clips (matched by name) that both evaluations scored.
    Δ = B − A; better/worse follow each measure's direction (counted only for directional measures); the ``_noise``
    counts take only changes beyond the measure's seed noise (``noise_tolerance``, for means over as many renders
    as the less-averaged side of each pair has; None for a measure without one)."""
    out: dict[str, list[dict]] = {}
    for cond in CONDITIONS:
        a, b = _metrics_by_name(clips_a, cond), _metrics_by_name(clips_b, cond)
        names = sorted(set(a) & set(b))
        rows = []
        for m in measures:
            both = [n for n in names if a[n].get(m.key) is not None and b[n].get(m.key) is not None]
            if not both:
                continue
            pairs = [(a[n][m.key], b[n][m.key]) for n in both]
            signs = [m.delta_sign(x, y) for x, y in pairs]
            # each pair's noise: that of the less-averaged side's seed means
            tols = [noise_tolerance(min(int(a[n].get("seed_renders") or 1),
                                        int(b[n].get("seed_renders") or 1))).get(m.key) for n in both]
            beyond = ([m.delta_sign(x, y, t) for (x, y), t in zip(pairs, tols)]
                      if m.better and all(t is not None for t in tols) else None)
            rows.append({"key": m.key, "label": m.label, "better": m.better, "n": len(pairs),
                         "mean_a": mean_or_none(x for x, _ in pairs), "mean_b": mean_or_none(y for _, y in pairs),
                         "mean_delta": mean_or_none(y - x for x, y in pairs),
                         "n_better": sum(s == 1 for s in signs) if m.better else None,
                         "n_worse": sum(s == -1 for s in signs) if m.better else None,
                         "n_tied": sum(s == 0 for s in signs) if m.better else None,
                         "n_better_noise": None if beyond is None else sum(s == 1 for s in beyond),
                         "n_worse_noise": None if beyond is None else sum(s == -1 for s in beyond)})
        out[cond] = rows
    return out


def unmatched(clips_a: Sequence[dict], clips_b: Sequence[dict]) -> dict:
    """Clips scored in only one of the two evaluations (they are left out of the comparison)."""
    a = {c["name"] for c in clips_a if c.get("status") == "scored"}
    b = {c["name"] for c in clips_b if c.get("status") == "scored"}
    return {"only_a": sorted(a - b), "only_b": sorted(b - a)}


def directional_keys() -> list[str]:
    return [m.key for m in DIRECTIONAL]
