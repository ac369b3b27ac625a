"""Batch throughput: clips per minute with 1 vs 2 Ray workers on one node (num_cpus=2), offline default backends;
and (``--cross-clip``) with cross-clip batched ThinkSound rendering on vs off.

    .venv/bin/python bench/batch.py [--clips 8] [--seconds 3] [--rounds 3] [--workers 1 2] [--json]
    .venv/bin/python bench/batch.py --cross-clip [--clips 8] [--batch-size 8] [--width 64] [--steps 24]

``--cross-clip``: a random ThinkSound (MM-DiT ``--width`` wide, 2 blocks; the tiny MetaCLIP/T5/Synchformer of
tests/tiny_models.py) renders the clips through ``agent.batch.LocalEngine`` with ``batch_size`` 1 (clip by clip)
and ``--batch-size`` N (N clips in threads, their renders batched); watcher, critic and refiner are the test fakes
(instant), one round, so the figures are the renderer's. Each mode gets a fresh feature cache; the models are loaded
by an untimed warm-up clip first; CPU, fp32.

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


def cross_clip(args) -> None:
    import dataclasses

    import torch

    from agent import batch
    from agent.config import RunConfig
    from generator.thinksound.weights import TINY_MMDIT, write_tiny_weights
    from store.db import Store
    from tests import fakes
    from tests.tiny_models import build_tiny_metaclip, build_tiny_t5

    fakes.install()
    torch.set_num_threads(args.threads)  # tiny models: OpenMP barriers on a shared box cost more than the maths
    work = Path(tempfile.mkdtemp(prefix="foleyloop-bench-xclip-"))
    try:
        cfg_dit = dataclasses.replace(TINY_MMDIT, hidden_dim=args.width, num_heads=4, sync_dim=64)
        weights = write_tiny_weights(work / "weights", mmdit=cfg_dit, sync_dim=64)
        opts = {"weights": str(weights.root), "metaclip": str(build_tiny_metaclip(work / "metaclip")),
                "t5": str(build_tiny_t5(work / "t5")), "steps": args.steps}
        make_clips(work / "clips", args.clips, args.seconds)
        make_clips(work / "warm", 1, args.seconds)
        rows = []
        for size in (0, 1, args.batch_size):  # 0: an untimed warm-up clip, so neither mode pays the model load
            cfg = RunConfig(watcher="fake", renderer="thinksound", critic="fake", refiner="fake", rounds=1,
                            dtype="fp32", options={"renderer": opts | {"cache_dir": str(work / f"cache{size}")}})
            clips = batch.collect(work / ("clips" if size else "warm"), work / f"out{size}", cfg,
                                  lambda p: f"{p.stem}.mp4", {".mp4"})
            engine = batch.LocalEngine(scratch_root=work / f"scratch{size}", batch_size=max(1, size))
            t0 = time.perf_counter()
            report = batch.run(Store(work / f"db{size}" / "fl.db"), clips, engine)
            wall = time.perf_counter() - t0
            done = len(report.of("done"))
            if size == 0:
                continue
            rows.append({"batch_size": size, "done": done, "wall_s": round(wall, 2),
                         "clips_per_min": round(done / wall * 60, 1), "render_batches": engine.render_batches()})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.clips} clips of {args.seconds:g} s, random ThinkSound MM-DiT width {args.width} (2 blocks), "
          f"{args.steps} steps, CFG, fp32 on CPU, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores; "
          "fake watcher/critic/refiner, 1 round")
    for r in rows:
        mode = "off (clip by clip)" if r["batch_size"] == 1 else f"on (--batch-size {r['batch_size']})"
        print(f"  cross-clip batching {mode:<22} wall {r['wall_s']:>7.2f} s  {r['clips_per_min']:>7.1f} clips/min  "
              f"({r['done']} done; render_batch sizes {r['render_batches'] or '—'})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cross-clip", action="store_true", help="batched ThinkSound rendering on vs off")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--width", type=int, default=64, help="MM-DiT hidden width (--cross-clip)")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (--cross-clip)")
    args = ap.parse_args()
    if args.cross_clip:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return cross_clip(args)
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
