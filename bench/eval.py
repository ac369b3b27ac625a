"""Evaluation metric costs on CPU: seconds per clip for each metric, and each metric's peak RSS.

Every metric runs in its own process, so the peak RSS printed is that metric's alone (interpreter + torch included):
the reference metrics (with the cross-clip control), DeSync (full Synchformer), CLAP and Audiobox Aesthetics. The
"generated" track of each clip is its own reference soundtrack (the cost does not depend on what the audio is).
Real weights are used when this machine has them (HF cache, or --synchformer / --clap / --aesthetics); otherwise
TINY RANDOM models built with the same loading code stand in, and the table says so — their times say nothing
about the real models' cost.

    python bench/eval.py                                   # two synthetic 8 s clips
    python bench/eval.py --corpus /work/corpus/manifest.json --clips 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ("reference", "desync", "clap", "aesthetics")


def _clips(corpus: str, n: int):
    from evaluation.manifest import load

    return list(load(corpus).clips)[:n]


def _reference_audio(spec):
    from evaluation.manifest import NONE, OWN
    from store.media import read_audio

    if spec.reference == NONE:
        return None
    return read_audio(spec.video if spec.reference == OWN else spec.reference)


def child(metric: str, corpus: str, n: int, ref: str | None, tiny: bool, threads: int) -> dict:
    """Runs in its own process: time one metric over the clips, report this process's peak RSS."""
    import torch

    torch.set_num_threads(threads)
    out: dict = {"metric": metric, "per_clip_s": {}, "clip_duration_s": {}}
    specs = _clips(corpus, n)
    tracks = {s.name: _reference_audio(s) for s in specs}
    if metric == "reference":
        from evaluation import measures
        from evaluation.metrics import ClipAudio

        refs = [ClipAudio.from_array(*tracks[s.name]) if tracks[s.name] else None for s in specs]
        out["load_s"] = 0.0
        for i, s in enumerate(specs):
            if refs[i] is None:
                continue
            t = time.perf_counter()
            measures.reference_metrics(refs[i], refs[i], refs, i)
            out["per_clip_s"][s.name] = time.perf_counter() - t
            out["clip_duration_s"][s.name] = refs[i].duration_s
    else:
        from contract.memory import SLOTS
        from evaluation import refree

        mp = None
        if tiny and metric == "aesthetics":
            from tests.eval_fixtures import tiny_aes_patch

            mp = tiny_aes_patch()
        mm = refree.MODEL_METRICS[metric]
        scorer = mm.make(ref, "cpu")
        t = time.perf_counter()
        SLOTS.get("bench", mm.size_gb, scorer.load)
        out["load_s"] = time.perf_counter() - t
        for s in specs:
            if tracks[s.name] is None:
                continue
            audio, sr = tracks[s.name]
            item = refree.Item(audio, sr, s.video, s.notes or "footsteps on gravel", "bench")
            t = time.perf_counter()
            try:
                mm.measure(scorer, item)
                out["per_clip_s"][s.name] = time.perf_counter() - t
            except ValueError as exc:
                out["per_clip_s"][s.name] = None
                out.setdefault("not_measured", {})[s.name] = str(exc)
            out["clip_duration_s"][s.name] = audio.shape[-1] / sr
        SLOTS.release()
        if mp is not None:
            mp.undo()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _weights(metric: str, given: str | None, tmp: Path) -> tuple[str | None, bool]:
    """(weights ref, tiny?) — real weights when present, else a tiny random model written to ``tmp``."""
    from evaluation import refree

    if refree.describe(metric, given)["available"]:
        return given, False
    from tests import eval_fixtures as F

    folder = tmp / f"tiny-{metric}"
    folder.mkdir()
    if metric == "desync":
        F.write_tiny_synchformer(folder)
    elif metric == "clap":
        F.write_tiny_clap(folder)
    else:
        mp = F.tiny_aes_patch()
        F.write_tiny_aesthetics(folder)
        mp.undo()
    return str(folder), True


def _synthetic_corpus(tmp: Path, seconds: float) -> str:
    from store.synthetic import make_impact_clip

    d = tmp / "corpus"
    make_impact_clip(d / "synthetic_a.mp4", duration_s=seconds, impacts=(1.0, 2.5, 4.0, 6.0), audio=True)
    make_impact_clip(d / "synthetic_b.mp4", duration_s=seconds, impacts=(1.5, 3.0, 5.5), audio=True, seed=1)
    return str(d)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/eval.py", description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", help="folder or manifest (default: two synthetic clips)")
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of the synthetic clips")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--synchformer")
    ap.add_argument("--clap")
    ap.add_argument("--aesthetics")
    ap.add_argument("--child", choices=METRICS, help=argparse.SUPPRESS)
    ap.add_argument("--ref", help=argparse.SUPPRESS)
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.child:
        print(json.dumps(child(a.child, a.corpus, a.clips, a.ref, a.tiny, a.threads)))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp_s:
        tmp = Path(tmp_s)
        corpus = a.corpus or _synthetic_corpus(tmp, a.seconds)
        given = {"desync": a.synchformer, "clap": a.clap, "aesthetics": a.aesthetics}
        rows = []
        for metric in METRICS:
            ref, tiny = (None, False) if metric == "reference" else _weights(metric, given[metric], tmp)
            cmd = [sys.executable, __file__, "--child", metric, "--corpus", corpus, "--clips", str(a.clips),
                   "--threads", str(a.threads)] + (["--ref", ref] if ref else []) + (["--tiny"] if tiny else [])
            res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
            if res.returncode != 0:
                print(f"{metric}: failed: {res.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            r["weights"] = "none" if metric == "reference" else ("TINY RANDOM" if tiny else f"real ({ref or 'default'})")
            rows.append(r)
    print(f"corpus: {corpus if a.corpus else f'{a.clips} synthetic {a.seconds:g} s clips'}; torch threads "
          f"{a.threads}; peak RSS = the metric's own process")
    print(f"{'metric':<11} {'weights':<40} {'load s':>7} {'s/clip':>8} {'s per audio s':>14} {'peak RSS MB':>12}  "
          "per clip (s)")
    for r in rows:
        times = [t for t in r["per_clip_s"].values() if t is not None]
        secs = sum(r["clip_duration_s"][k] for k, t in r["per_clip_s"].items() if t is not None)
        mean = sum(times) / len(times) if times else float("nan")
        per_audio = sum(times) / secs if secs else float("nan")
        detail = ", ".join(f"{k} {'—' if t is None else f'{t:.2f}'} ({r['clip_duration_s'][k]:.1f} s)"
                           for k, t in r["per_clip_s"].items())
        print(f"{r['metric']:<11} {r['weights'][:40]:<40} {r['load_s']:>7.2f} {mean:>8.3f} {per_audio:>14.4f} "
              f"{r['peak_rss_mb']:>12.0f}  {detail}")
        for k, why in r.get("not_measured", {}).items():
            print(f"    {k}: not measured: {why}")
    if any(r["weights"] == "TINY RANDOM" for r in rows):
        print("TINY RANDOM: real weights are absent here; these rows time the code path on tiny random models, "
              "not the real models.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
