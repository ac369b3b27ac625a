"""The first dub: wall time of `foleyloop dub sample:bigbuckbunny --rounds 3` in fresh processes, and whether the
run's recorded ``load`` timing is the real loading time.

    .venv/bin/python bench/first_dub.py [--repeats 3] [--tree DIR]

(a) ``--repeats`` fresh processes each run ``python -m agent.cli dub sample:bigbuckbunny --rounds 3 --out X.mp4
    --db D.db`` (after one untimed warm-up run that fills the caches); prints each wall time and the run's timings.
(b) Recorded vs real load: a separate fresh process imports what the CLI imports, then times constructing every
    backend and calling its ``load()`` (interleaved with (a), so both see the same machine); and, in the dub's own
    process, the time measured around the run service's load calls vs the ``load`` the run records.
(c) Hidden loading in the nodes: bigbuckbunny dubbed first in a fresh process vs dubbed after another clip
    (sample:bikes) in the same process (per-video caches stay cold, one-time loads and inits are paid by the
    first clip); the difference in watch+render+critique is what the nodes still load or initialise lazily.
``--tree`` runs another checkout (e.g. an export of an older commit); ``--against OLD`` alternates dubs of both
(wall and CPU seconds); ``--parts [--against OLD]`` prints each role's construction and ``load()`` time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU: dict[Path, list[float]] = {}  # CPU seconds (user + system) of each dub process, per tree

_TUNE = r"""
try:  # the CLI's process settings (agent.cli.main applies them), where this tree has them
    from agent.cli.process import tune_gc
    tune_gc()
except ImportError:
    pass
"""

_LOAD = _TUNE + r"""
import json, sys, time
t0 = time.perf_counter()
import agent.cli.app, agent.cli.dub  # noqa: F401,E401  what `python -m agent.cli dub` imports first
from agent import backends, runs
from agent.cli.common import build_config
cfg = build_config(rounds=3)
t1 = time.perf_counter()
for role in runs.ROLES:
    b = backends.get(role, cfg)
    if callable(getattr(b, "load", None)):
        b.load()
t2 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "load_s": t2 - t1}))
"""

_PARTS = _TUNE + r"""
import json, time
t0 = time.perf_counter()
import agent.cli.app, agent.cli.dub  # noqa: F401,E401
from agent import backends, runs
from agent.cli.common import build_config
cfg = build_config(rounds=3)
out = {"imports_s": time.perf_counter() - t0}
for role in runs.ROLES:
    a = time.perf_counter()
    b = backends.get(role, cfg)
    m = time.perf_counter()
    if callable(getattr(b, "load", None)):
        b.load()
    out[role] = [m - a, time.perf_counter() - m]
print(json.dumps(out))
"""

_AROUND = r"""
import atexit, json, sys, time
from agent import backends
from agent.cli import main
spent = []
real_load = backends.load


def timed(*a, **k):
    t0 = time.perf_counter()
    try:
        return real_load(*a, **k)
    finally:
        spent.append(time.perf_counter() - t0)


backends.load = timed
out, db = sys.argv[1:3]


@atexit.register
def report():  # main() without argv ends the process itself (its atexit handlers run)
    import sqlite3
    (t,) = sqlite3.connect(db).execute("select timings_json from run order by created_at desc limit 1").fetchone()
    print(json.dumps({"around_load_calls_s": sum(spent), "recorded_load_s": json.loads(t)["load"]}), flush=True)


sys.argv = ["foleyloop", "dub", "sample:bigbuckbunny", "--rounds", "3", "--out", out, "--db", db]
main()  # without argv, as the console script calls it (the CLI's process settings apply)
"""

_TWICE = r"""
import json, sys, tempfile
from pathlib import Path
from agent import runs
from agent.cli.common import build_config
from store.db import Store
from store.samples import sample_path
tmp = Path(tempfile.mkdtemp())
st = Store(tmp / "D.db")
out = []
for i, name in enumerate(sys.argv[1:]):
    run_id, _ = runs.dub(st, sample_path(name), build_config(rounds=3), out=tmp / f"x{i}.mp4")
    out.append(st.get_run(run_id).timings())
print(json.dumps(out[-1]))
"""


def _env(tree: Path) -> dict:
    return os.environ | {"PYTHONPATH": str(tree)}


def dub_once(tree: Path, tmp: Path, i: int) -> tuple[float, dict]:
    db, out = tmp / "D.db", tmp / f"x{i}.mp4"
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "agent.cli", "dub", "sample:bigbuckbunny", "--rounds", "3", "--out",
                    str(out), "--db", str(db)], cwd=tree, env=_env(tree), check=True, capture_output=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[tree] = CPU.get(tree, []) + [(r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)]
    con = sqlite3.connect(db)
    (timings,) = con.execute("select timings_json from run order by created_at desc limit 1").fetchone()
    con.close()
    return wall, json.loads(timings)


def real_load(tree: Path) -> dict:
    p = subprocess.run([sys.executable, "-c", _LOAD], cwd=tree, env=_env(tree), check=True, capture_output=True,
                       text=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def parts(trees: list[Path], repeats: int) -> None:
    """Per role: constructing the backend (its module imported) and its load(), fresh processes, trees alternating."""
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    for i in range(repeats):
        for tree in trees:
            p = subprocess.run([sys.executable, "-c", _PARTS], cwd=tree, env=_env(tree), check=True,
                               capture_output=True, text=True)
            r = json.loads(p.stdout.strip().splitlines()[-1])
            roles = ", ".join(f"{k} make {v[0]:.2f} + load {v[1]:.2f}" for k, v in r.items() if k != "imports_s")
            print(f"  {tree.name}: imports {r['imports_s']:.2f} s; {roles}")


def against(a: Path, b: Path, repeats: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="foleyloop-first-dub-"))
    print(f"alternating {a} and {b}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    walls: dict[Path, list[float]] = {a: [], b: []}
    for tree in (a, b):
        (tmp / tree.name).mkdir()
        dub_once(tree, tmp / tree.name, 99)  # warm-up
        CPU[tree] = []
    for i in range(repeats):
        for tree in (a, b):
            wall, t = dub_once(tree, tmp / tree.name, i)
            walls[tree].append(wall)
            print(f"  {tree.name}: wall {wall:.2f} s, CPU {CPU[tree][-1]:.2f} s, recorded load {t.get('load', 0):.2f} s")
    for tree in (a, b):
        print(f"{tree}: wall median {statistics.median(walls[tree]):.2f} s (min {min(walls[tree]):.2f}), "
              f"CPU median {statistics.median(CPU[tree]):.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tree", type=Path, default=ROOT)
    ap.add_argument("--against", type=Path, default=None,
                    help="another checkout: its dubs alternate with --tree's (same machine load), walls and CPU only")
    ap.add_argument("--parts", action="store_true", help="per-role construction and load() times only")
    args = ap.parse_args()
    tree = args.tree.resolve()
    if args.parts:
        return parts([tree] + ([args.against.resolve()] if args.against else []), args.repeats)
    if args.against is not None:
        return against(tree, args.against.resolve(), args.repeats)
    tmp = Path(tempfile.mkdtemp(prefix="foleyloop-first-dub-"))
    print(f"tree {tree}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    dub_once(tree, tmp, 99)  # warm-up: caches filled, pages in memory
    walls, recorded, real = [], [], []
    for i in range(args.repeats):
        wall, t = dub_once(tree, tmp, i)
        r = real_load(tree)
        walls.append(wall)
        recorded.append(t.get("load", 0.0))
        real.append(r["load_s"])
        print(f"  dub {i}: wall {wall:.2f} s; recorded load {t.get('load', 0):.2f} s, graph {t.get('wall', 0):.2f} s "
              f"(watch {t.get('node:watch', 0):.2f}, render {t.get('node:render', 0):.2f}, critique "
              f"{t.get('node:critique', 0):.2f}); separate process: imports {r['imports_s']:.2f} s, "
              f"load {r['load_s']:.2f} s")
    print(f"(a) wall median {statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f})")
    ratio = statistics.median(recorded) / statistics.median(real)
    print(f"(b) recorded load median {statistics.median(recorded):.2f} s vs real {statistics.median(real):.2f} s: "
          f"{ratio:.2f}×")
    rows = []
    for i in range(args.repeats):
        p = subprocess.run([sys.executable, "-c", _AROUND, str(tmp / f"a{i}.mp4"), str(tmp / "A.db")], cwd=tree,
                           env=_env(tree), capture_output=True, text=True)
        if p.returncode == 0:
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
    if rows:
        for r in rows:
            print(f"  in the dub's process: time around the load calls {r['around_load_calls_s']:.3f} s, recorded "
                  f"load {r['recorded_load_s']:.3f} s ({r['recorded_load_s'] / r['around_load_calls_s']:.3f}×)")
    else:
        print("  (this tree has no agent.backends.load: loads happen lazily inside the nodes)")
    cold, warm = ({}, {})
    for label, samples in (("cold", ["bigbuckbunny"]), ("warm", ["bikes", "bigbuckbunny"])):
        p = subprocess.run([sys.executable, "-c", _TWICE, *samples], cwd=tree, env=_env(tree), check=True,
                           capture_output=True, text=True)
        (cold if label == "cold" else warm).update(json.loads(p.stdout.strip().splitlines()[-1]))
    hidden = sum(cold.get(k, 0) - warm.get(k, 0) for k in ("node:watch", "node:render", "node:critique"))
    print(f"(c) bigbuckbunny first in a process vs after a dub of another clip (sample:bikes) in the same "
          f"process: load {cold.get('load', 0):.2f} vs {warm.get('load', 0):.2f} s; "
          f"watch+render+critique {sum(cold.get(k, 0) for k in ('node:watch', 'node:render', 'node:critique')):.2f}"
          f" vs {sum(warm.get(k, 0) for k in ('node:watch', 'node:render', 'node:critique')):.2f} s "
          f"(lazy loading or set-up left in the nodes ≈ {hidden:.2f} s)")


if __name__ == "__main__":
    main()
