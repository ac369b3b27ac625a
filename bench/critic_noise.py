"""The critic's own noise: how far its scores move when nothing the plan says changes.

    .venv/bin/python bench/critic_noise.py --db EVAL_DB [--seeds 4] [--json]

Takes the round-0 plan of every finished run in ``EVAL_DB`` (e.g. the database of a ``foleyloop eval`` on the
real-footage corpus), renders it whole with renderer seeds 0..N-1 (the offline renderer then picks other takes
among the samples within its choice margin; events, levels, pans and labels stay the same) and scores each render
with the run's critic. Reported per dimension and overall: median, 90th percentile and max of the absolute score
difference over all seed pairs. ``reasoning.policy.CRITIC_NOISE*`` are these 90th percentiles rounded up to the
next 0.01: a later round must beat the best by more than that before the loop keeps it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import backends  # noqa: E402
from agent.config import RunConfig  # noqa: E402
from contract.plan import DIMENSIONS, Plan  # noqa: E402
from store.db import Store  # noqa: E402


def add_pair_diffs(diffs: dict[str, list[float]], samples: list[dict]) -> None:
    """Append |x[k] − y[k]| of every pair of ``samples`` (the same thing measured under other seeds) to
    ``diffs[k]``, for each key of ``diffs`` both of the pair have."""
    for x, y in itertools.combinations(samples, 2):
        for k, out in diffs.items():
            if x.get(k) is not None and y.get(k) is not None:
                out.append(abs(float(x[k]) - float(y[k])))


def spread(diffs: dict[str, list[float]]) -> dict[str, dict]:
    """Per key: how many pair differences, their median, 90th percentile and max (keys with none left out)."""
    return {k: {"n": len(v), "median": float(np.median(v)), "p90": float(np.percentile(v, 90)),
                "max": float(np.max(v))} for k, v in diffs.items() if v}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    store = Store(a.db)
    diffs: dict[str, list[float]] = {k: [] for k in (*DIMENSIONS, "overall")}
    clips = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in store.list_runs():
            r0 = next((r for r in store.rounds(run.id) if r.index == 0 and r.plan_json), None)
            if run.status != "done" or r0 is None or not run.video_path:
                continue
            cfg = RunConfig.model_validate(run.config())
            renderer, critic = backends.get("renderer", cfg), backends.get("critic", cfg)
            plan, video = Plan.from_stored(r0.plan_json), Path(run.video_path)
            scores = []
            for seed in range(a.seeds):
                out = Path(tmp) / f"{run.id}-{seed}.wav"
                renderer.render(plan, video, None, seed, out)
                c = critic.critique(plan, out, video, None)
                scores.append(dict(c.scores, overall=c.overall))
            clips[video.name] = scores
            add_pair_diffs(diffs, scores)
    stats = spread(diffs)
    if a.json:
        print(json.dumps({"stats": stats, "clips": clips}, indent=2))
    else:
        for k, s in stats.items():
            print(f"{k:10s} n={s['n']:3d}  median {s['median']:.4f}  p90 {s['p90']:.4f}  max {s['max']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
