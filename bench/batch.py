"""Batch throughput: clips per minute with 1 vs 2 Ray workers on one node (num_cpus=2), offline default backends.

    .venv/bin/python bench/batch.py [--clips 8] [--seconds 3] [--rounds 3] [--workers 1 2] [--json]

Each worker count gets a fresh private Ray instance, database and output folder, and dubs the same short
synthetic clips (bouncing-ball impacts) through ``agent.batch``, exactly as ``foleyloop batch --engine ray``
does. Reported per worker count: wall time (Ray start + one model load per actor + all clips) as clips/minute,
and the steady rate after the first wave of clips (one per worker: Ray start and model load excluded).
Ray's token auth is turned off for this local, short-lived instance unless RAY_AUTH_MODE is set.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_clips(folder: Path, n: int, seconds: float) -> None:
    from store.synthetic import make_impact_clip

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        first = 0.5 + 0.1 * (i % 5)
        impacts = [round(t, 2) for t in [first + k * 0.8 for k in range(8)] if t < seconds - 0.3]
        make_impact_clip(folder / f"clip{i:02d}.mp4", duration_s=seconds, impacts=impacts, size=(320, 180))


def one(workers: int, clips_dir: Path, work: Path, rounds: int) -> dict:
    from agent import batch
    from agent.outputs import VIDEO_EXTS, out_name
    from agent.config import RunConfig
    from store.db import Store

    home = work / f"w{workers}"
    ray_tmp = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))  # short: unix socket paths
    store = Store(home / "fl.db")
    clips = batch.collect(clips_dir, home / "out", RunConfig(rounds=rounds), out_name, VIDEO_EXTS)
    done_at: list[float] = []
    engine = batch.RayEngine(workers=workers, init_options={
        "num_cpus": 2, "num_gpus": 0, "object_store_memory": 256 << 20, "_temp_dir": str(ray_tmp)})
    t0 = time.perf_counter()
    try:
        report = batch.run(store, clips, engine, on_outcome=lambda o: done_at.append(time.perf_counter()))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    wall = time.perf_counter() - t0
    n = len(report.of("done"))
    # Steady rate: the clips after the first wave (one per worker, which pays Ray's start and the model load).
    k = min(workers, len(done_at))
    steady = (len(done_at) - k) / (done_at[-1] - done_at[k - 1]) * 60 \
        if len(done_at) > k and done_at[-1] > done_at[k - 1] else None
    per_clip = [o.seconds for o in report.outcomes if o.seconds]
    return {"workers": workers, "clips": len(clips), "done": n, "failed": len(report.of("failed")),
            "wall_s": round(wall, 1), "clips_per_min": round(n / wall * 60, 2),
            "steady_clips_per_min": round(steady, 2) if steady else None,
            "first_done_s": round(done_at[0] - t0, 1) if done_at else None,
            "mean_clip_s_in_worker": round(sum(per_clip) / len(per_clip), 2) if per_clip else None,
            "nodes": sorted({o.worker.get("node_id", "")[:8] for o in report.outcomes if o.worker}),
            "worker_pids": len({o.worker.get("pid") for o in report.outcomes if o.worker})}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    work = Path(tempfile.mkdtemp(prefix="foleyloop-bench-batch-"))
    try:
        make_clips(work / "clips", args.clips, args.seconds)
        rows = [one(w, work / "clips", work, args.rounds) for w in args.workers]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.clips} clips of {args.seconds:g} s, offline backends, {args.rounds} rounds max, "
          f"one node with num_cpus=2 ({os.cpu_count()} cores here)")
    print(f"{'workers':>7} {'wall s':>7} {'clips/min':>9} {'steady/min':>10} {'1st done s':>10} {'s/clip':>7}")
    for r in rows:
        print(f"{r['workers']:>7} {r['wall_s']:>7} {r['clips_per_min']:>9} {r['steady_clips_per_min'] or '—':>10} "
              f"{r['first_done_s']:>10} {r['mean_clip_s_in_worker']:>7}  ({r['done']} done, {r['failed']} failed)")


if __name__ == "__main__":
    main()
