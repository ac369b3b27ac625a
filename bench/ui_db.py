"""Runs-page query time on a large history: 10,000 runs and 30,000 rounds, seeded by bulk inserts.

    .venv/bin/python -m bench.ui_db [--runs 10000] [--rounds-per-run 3] [--repeat 20]

Prints the median time of "count + one page" (what the runs page does per view) for several filters.
Target: at most 100 ms each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402

from store.db import Store  # noqa: E402
from store.schema import Round, Run  # noqa: E402
from ui import queries  # noqa: E402

STATUSES = ("done", "done", "done", "failed", "review", "running", "queued")
BACKENDS = json.dumps({"watcher": "offline", "renderer": "offline", "critic": "offline", "refiner": "offline"})


def seed(store: Store, runs: int = 10_000, rounds_per_run: int = 3, batch: int = 5_000) -> None:
    """Bulk-insert synthetic history (executemany in a few transactions; no ORM objects)."""
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    run_rows, round_rows = [], []
    rid = 0
    for i in range(runs):
        run_id = f"bench{i:07d}"
        first = rid + 1
        for k in range(rounds_per_run):
            rid += 1
            s = round(0.3 + 0.6 * ((i * 7 + k * 13) % 100) / 100, 3)
            round_rows.append({"id": rid, "run_id": run_id, "index": k, "branch": 0, "status": "scored",
                               "author": "watcher" if k == 0 else "refiner", "plan_json": "{}", "seed": k,
                               "score_semantic": s, "score_temporal": s, "score_aesthetic": s, "score_spatial": s,
                               "score_overall": s, "model_id": "", "prompt_version": "", "raw_output": "",
                               "changes_json": "[]", "timings_json": "{}", "created_at": start})
        status = STATUSES[i % len(STATUSES)]
        created = start + timedelta(minutes=13 * i)
        run_rows.append({"id": run_id, "created_at": created, "updated_at": created, "kind": "dub",
                         "status": status, "video_path": f"/videos/clip_{i}.mp4", "video_sha256": "",
                         "video_info_json": "{}", "duration_s": 5.0 + i % 20, "config_json": "{}",
                         "backends_json": BACKENDS, "timings_json": "{}", "n_rounds": rounds_per_run,
                         "branches_json": "{}", "prompt": "",
                         "best_round_id": first + rounds_per_run - 1 if status == "done" else None,
                         "best_overall": round_rows[-1]["score_overall"] if status == "done" else None,
                         "error": "BackendError: seeded" if status == "failed" else None})
    with store.engine.begin() as conn:
        for i in range(0, len(run_rows), batch):
            conn.execute(insert(Run), run_rows[i:i + batch])
        for i in range(0, len(round_rows), batch):
            conn.execute(insert(Round), round_rows[i:i + batch])


CASES = {
    "no filter, page 1": (queries.RunFilter(), 1),
    "no filter, last page": (queries.RunFilter(), None),
    "status=failed": (queries.RunFilter(status="failed"), 1),
    "text 'clip_77'": (queries.RunFilter(text="clip_77"), 1),
    "one week": (queries.RunFilter(since=date(2026, 2, 1), until=date(2026, 2, 7)), 1),
}


def measure(store: Store, repeat: int = 20, size: int = 50) -> dict[str, float]:
    """Median milliseconds of count + page per case."""
    out = {}
    for name, (flt, page) in CASES.items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            total = queries.count_runs(store, flt)
            rows = queries.runs_page(store, flt, page or max(1, -(-total // size)), size)
            times.append((time.perf_counter() - t0) * 1000)
        assert total == 0 or rows, f"{name}: {total} runs counted but the page is empty"
        out[name] = statistics.median(times)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--rounds-per-run", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        t0 = time.perf_counter()
        seed(store, args.runs, args.rounds_per_run)
        print(f"seeded {args.runs} runs and {args.runs * args.rounds_per_run} rounds in "
              f"{time.perf_counter() - t0:.2f} s")
        results = measure(store, args.repeat)
        store.engine.dispose()
    for name, ms in results.items():
        print(f"runs page ({name}): {ms:.1f} ms (count + 50 rows, median of {args.repeat})")
    worst = max(results.values())
    print(f"worst: {worst:.1f} ms; target 100 ms: {'met' if worst <= 100 else 'MISSED'}")
    return 0 if worst <= 100 else 1


if __name__ == "__main__":
    sys.exit(main())
