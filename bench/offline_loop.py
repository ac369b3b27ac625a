"""Real-time factor, peak RSS and per-node timings of a 3-round offline dub of a 10 s 640x360 clip.

    .venv/bin/python bench/offline_loop.py [--seconds 10] [--rounds 3]

One-time model/bank loading is measured separately (constructing the backends, then their ``load()``, then a
warm-up dub of a 2 s clip) and excluded from the real-time factor. Targets (issue 2): RTF <= 0.5, peak RSS <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from agent import backends, runs
    from agent.config import RunConfig
    from store.db import Store
    from store.synthetic import make_impact_clip

    tmp = Path(tempfile.mkdtemp(prefix="foleyloop-bench-"))
    impacts = [round(0.7 + i * 0.9, 2) for i in range(int((args.seconds - 1) / 0.9))]
    clip = make_impact_clip(tmp / "clip.mp4", duration_s=args.seconds, impacts=impacts, size=(640, 360))
    warm = make_impact_clip(tmp / "warm.mp4", duration_s=2.0, impacts=[0.5, 1.2], size=(640, 360))
    # Never pass early and never stop on a stall: every round is rendered and scored.
    cfg = RunConfig(rounds=args.rounds, thresholds={d: 1.0 for d in ("semantic", "temporal", "aesthetic", "spatial")},
                    patience=args.rounds + 1, min_improvement=0.0)
    store = Store(tmp / "fl.db")

    t0 = time.perf_counter()
    made = [backends.get(role, cfg) for role in ("watcher", "renderer", "critic", "refiner")]
    t_construct = time.perf_counter() - t0
    t0 = time.perf_counter()
    for backend in made:  # every model the rounds need (offline backends load lazily otherwise)
        load = getattr(backend, "load", None)
        if load is not None:
            load()
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    runs.dub(store, warm.path, cfg.model_copy(update={"rounds": 1}), out=tmp / "warm.out.mp4")
    t_warm = time.perf_counter() - t0

    t0 = time.perf_counter()
    run_id, _ = runs.dub(store, clip.path, cfg, out=tmp / "out.mp4")
    wall = time.perf_counter() - t0
    run = store.get_run(run_id)
    rounds = store.rounds(run_id)
    timings = run.timings()

    print(f"clip: {args.seconds:.1f} s 640x360 @25 fps, {len(impacts)} impacts; rounds rendered: {len(rounds)}")
    print(f"one-time load: backends constructed in {t_construct:.2f} s, load() {t_load:.2f} s; "
          f"warm-up dub (2 s clip, 1 round) {t_warm:.2f} s")
    print(f"3-round dub wall time: {wall:.2f} s  ->  real-time factor {wall / args.seconds:.3f} (target <= 0.5)")
    print(f"peak RSS: {peak_rss_gb():.2f} GB (target <= 1.5)")
    print("per-node time (s, summed over rounds):")
    for key, val in sorted(timings.items()):
        if key.startswith("node:"):
            print(f"  {key[5:]:<10} {val:7.3f}  ({val / wall * 100:4.1f} %)")
    print("scores per round: " + json.dumps([{"round": r.index, "overall": r.score_overall,
                                               **{k: v for k, v in r.scores().items()}} for r in rounds]))


if __name__ == "__main__":
    main()
