"""The evaluation's own noise: how far the independent reference measures move when nothing the plan says changes.

    .venv/bin/python bench/eval_noise.py CORPUS [--seeds 6] [--json] [--rejudge EVAL_DB [--eval EVAL_ID]]

For every clip of CORPUS (a folder or manifest, e.g. ``bench/corpus.py build DIR --subset all``'s manifest.json) a
silent copy is dubbed once with the offline backends and ``--rounds 1``: the round-0 plan exactly as ``foleyloop
eval`` gets it. That plan is rendered whole with renderer seeds 0..N-1 (the offline renderer then picks other takes
among the samples within its choice margin and other offsets; events, levels, pans and labels stay the same — no
sound designer would call that a design change) and each render is measured against the clip's reference with the
evaluation's own ``evaluation.measures.reference_metrics`` (the cross-clip control included). Reported per
reference measure: median, 90th percentile and max of |Δ| over every seed pair of every clip, and the suggested
tolerance (the 90th percentile rounded up at the measure's display precision). ``evaluation.measures.
NOISE_TOLERANCE`` holds these. (The offline refiner keeps the seed, so a kept round's untouched events keep their
takes; a seed pair moves every event's take, so these figures bound what take changes alone do to a measure.)

``--rejudge EVAL_DB``: for each clip of an evaluation there (``--eval``, default the last) whose run kept a later
round, every reference measure that fell: by how much, against the tolerance just measured — beyond noise or not.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import backends, evals, runs  # noqa: E402
from agent.config import RunConfig  # noqa: E402
from bench.critic_noise import add_pair_diffs, spread  # noqa: E402
from contract.plan import Plan  # noqa: E402
from evaluation import manifest as corpus_mod  # noqa: E402
from evaluation import measures  # noqa: E402
from evaluation.metrics import ClipAudio  # noqa: E402
from store import evals as E  # noqa: E402
from store.db import Store  # noqa: E402
from store.media import VideoInfo  # noqa: E402

KEYS = tuple(m.key for m in measures.REFERENCE_DIRECTIONAL)


def suggested(key: str, p90: float) -> float:
    """The 90th percentile rounded up at the measure's display precision (a whole rank, 0.01 s, 0.001 of an r)."""
    scale = 10 ** measures.BY_KEY[key].digits
    return math.ceil(round(p90 * scale, 9)) / scale


def round0_plans(corpus: corpus_mod.Corpus, store: Store,
                 cfg: RunConfig) -> dict[str, tuple[Plan, Path, VideoInfo | None]]:
    """Each clip's round-0 plan as the evaluation gets it: a silent copy dubbed once (``--rounds 1``)."""
    out = {}
    for clip in corpus.clips:
        video = evals._silent_input(store, SimpleNamespace(video_path=str(clip.video)))
        run_id, _ = runs.dub(store, video, cfg)
        r0 = next(r for r in store.rounds(run_id) if r.index == 0 and r.plan_json)
        info = json.loads(store.get_run(run_id).video_info_json or "{}")
        out[clip.name] = (Plan.from_stored(r0.plan_json), video, VideoInfo(**info) if info else None)
    return out


def measure(corpus_path: str, n_seeds: int) -> dict:
    corpus = corpus_mod.load(corpus_path)
    rows = [SimpleNamespace(reference=str(c.reference), video_path=str(c.video)) for c in corpus.clips]
    refs, why = evals._references(rows)
    cfg = RunConfig(watcher="offline", renderer="offline", critic="offline", rounds=1, seed=0)
    diffs: dict[str, list[float]] = {k: [] for k in KEYS}
    clips: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="foleyloop-eval-noise-") as tmp:
        store = Store(home=Path(tmp) / "home")
        plans = round0_plans(corpus, store, cfg)
        renderer = backends.get("renderer", cfg)
        for own, clip in enumerate(corpus.clips):
            if refs[own] is None:
                clips[clip.name] = {"skipped": why[own]}
                continue
            plan, video, info = plans[clip.name]
            per_seed = []
            for seed in range(n_seeds):
                wav = evals.render_plan(renderer, plan, video, info, seed, Path(tmp) / f"{clip.name}-{seed}.wav",
                                        Path(tmp) / "cache")
                m = measures.reference_metrics(ClipAudio.from_file(wav), refs[own], refs, own)
                per_seed.append({k: m.get(k) for k in KEYS})
            own_diffs = {k: [] for k in KEYS}
            add_pair_diffs(own_diffs, per_seed)
            for k, v in own_diffs.items():
                diffs[k] += v
            clips[clip.name] = {"seeds": per_seed, "spread": spread(own_diffs)}
    stats = spread(diffs)
    for k, s in stats.items():
        s["suggested"] = suggested(k, s["p90"])
    return {"corpus": str(corpus.source), "seeds": n_seeds, "stats": stats, "clips": clips}


def rejudge(db: Path, eval_id: str, tolerance: dict[str, float], clips: dict[str, dict]) -> list[dict]:
    """Every reference measure that fell in a kept later round of ``eval_id``: the drop against ``tolerance``, and
    where the kept value lies against the range the clip's own round-0 plan spans over the seeds (``clips``, from
    ``measure``; a clip of the same name) — a value below that range is a fall that no seed of round 0 reached."""
    store = Store(db, read_only=True)
    ev = E.get_eval(store, eval_id)
    if ev is None:
        raise SystemExit(f"no evaluation {eval_id!r} in {db}")
    out = []
    for row in E.clips(store, ev.id):
        if not row.kept_later or row.status != "scored":
            continue
        m = row.metrics()
        a, b = m.get("round0") or {}, m.get("kept") or {}
        drops = []
        for meas in measures.REFERENCE_DIRECTIONAL:
            if a.get(meas.key) is None or b.get(meas.key) is None:
                continue
            fall = (a[meas.key] - b[meas.key]) if meas.better == "higher" else (b[meas.key] - a[meas.key])
            if fall > measures.TIE_EPS:
                tol = tolerance.get(meas.key, 0.0)
                seeds = [x[meas.key] for x in (clips.get(row.name) or {}).get("seeds", []) if x[meas.key] is not None]
                span = [min(seeds), max(seeds)] if seeds else None
                outside = None if span is None else (b[meas.key] < span[0] if meas.better == "higher"
                                                     else b[meas.key] > span[1])
                drops.append({"key": meas.key, "round0": a[meas.key], "kept": b[meas.key], "drop": fall,
                              "tolerance": tol, "beyond_noise": fall > max(tol, measures.TIE_EPS),
                              "round0_seed_range": span, "outside_seed_range": outside})
        strict, _ = measures.no_worse(a, b, measures.REFERENCE_DIRECTIONAL)
        noisy, counts = measures.no_worse(a, b, measures.REFERENCE_DIRECTIONAL, tolerance=tolerance)
        out.append({"eval": ev.id, "clip": row.name, "kept_index": row.kept_index, "no_worse_strict": strict,
                    "no_worse_within_noise": noisy, "worse_beyond_noise_on": counts["worse_on"], "drops": drops})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rejudge", type=Path, metavar="EVAL_DB")
    ap.add_argument("--eval", default="last", metavar="EVAL_ID")
    a = ap.parse_args(argv)
    if a.seeds < 2:
        ap.error("--seeds: at least 2 (the spread is over seed pairs)")
    data = measure(a.corpus, a.seeds)
    if a.rejudge:
        data["rejudge"] = rejudge(a.rejudge, a.eval, {k: s["p90"] for k, s in data["stats"].items()},
                                  data["clips"])
    if a.json:
        print(json.dumps(data, indent=2))
        return 0
    n_clips = sum("seeds" in c for c in data["clips"].values())
    print(f"{data['corpus']}: {n_clips} clips × {a.seeds} seeds; |Δ| between two seeds of the same round-0 plan")
    print(f"{'measure':24s} {'n':>4s} {'median':>8s} {'p90':>8s} {'max':>8s} {'suggested':>10s}")
    for k, s in data["stats"].items():
        print(f"{k:24s} {s['n']:4d} {s['median']:8.4f} {s['p90']:8.4f} {s['max']:8.4f} {s['suggested']:10.4f}")
    print("\nper clip, p90 of |Δ|:")
    print(f"{'clip':20s} " + " ".join(f"{k[:10]:>10s}" for k in KEYS))
    for name, c in data["clips"].items():
        if "spread" not in c:
            print(f"{name:20s} skipped: {c['skipped']}")
            continue
        print(f"{name:20s} " + " ".join(f"{c['spread'][k]['p90']:10.4f}" if k in c["spread"] else f"{'—':>10s}"
                                        for k in KEYS))
    for r in data.get("rejudge", []):
        print(f"\n{r['eval']} {r['clip']} kept r{r['kept_index']}: no worse strictly {r['no_worse_strict']}, "
              f"within the measured noise {r['no_worse_within_noise']}")
        for d in r["drops"]:
            span = d["round0_seed_range"]
            where = "" if span is None else (f"; round-0 plan over the seeds {span[0]:.4f}…{span[1]:.4f}: kept "
                                             + ("outside" if d["outside_seed_range"] else "inside"))
            print(f"  {d['key']:22s} {d['round0']:8.4f} → {d['kept']:8.4f}  drop {d['drop']:.4f}  "
                  f"p90 noise {d['tolerance']:.4f} {'BEYOND noise' if d['beyond_noise'] else 'within noise'}{where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
