"""The evaluation runner behind ``foleyloop eval``: dub every clip of a corpus through the run service and measure
the single shot (round 0) and the loop (the kept round) of the same run with the independent metrics.

Phases, each resumable from the database (``--resume``):
1. per clip: keep the original soundtrack as the reference, dub a silent copy, score both conditions with the
   reference metrics (+ the cross-clip control) → clip status ``dubbed``;
2. per model (DeSync, CLAP, Audiobox Aesthetics): load it once, score every dubbed clip, release it → ``scored``;
3. write report.json / report.md / plots.
A clip that fails is recorded with its error and the others go on.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from agent.config import RunConfig
from contract.errors import UserError
from contract.options import DEFAULT_THRESHOLDS
from contract.plan import Plan
from evaluation import manifest as corpus_mod
from evaluation import content, measures, refree, report
from evaluation.metrics import ClipAudio
from store import evals as E
from store import media
from store.db import Store
from store.schema import Eval, EvalClip

MARKER = ".foleyloop-eval"  # in an output folder: the id of the evaluation that writes there
MODEL_NAMES = ("desync", "clap", "aesthetics")
CLAP_CAPTION_RULE = ("the \"Sound:\" part of the clip's notes when the corpus has notes, else the run's round-0 plan "
                     "caption (the same caption for both conditions); each clip records which")


@dataclass
class EvalOptions:
    out_dir: Path | None = None  # default ./eval-<id>
    force: bool = False
    model_refs: dict[str, str | None] = field(default_factory=dict)  # desync/clap/aesthetics → weights (None: default)
    device: str = "cpu"
    progress: bool = True
    write_dubs: bool = True  # the dubbed videos go to OUT/dubs/
    seeds: int = 1  # reference measures of a compared round: the mean over this many renders of its plan


# ---------------------------------------------------------------------------------------------- small helpers

def code_version() -> tuple[str, bool | None]:
    """(``git describe --always --dirty`` of this checkout, dirty?) or the installed package version."""
    root = Path(__file__).resolve().parents[1]
    try:
        res = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=root, capture_output=True,
                             text=True, timeout=15)
        if res.returncode == 0 and res.stdout.strip():
            v = res.stdout.strip()
            return v, v.endswith("-dirty")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"foleyloop {version('foleyloop')}", None
    except PackageNotFoundError:
        return "unknown", None


def check_out_dir(out_dir: Path, eval_id: str, force: bool) -> None:
    """Refuse a non-empty folder that is not this evaluation's (its marker file names another id, or none)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out-dir {out_dir}: is a file")
    if not out_dir.is_dir() or not any(out_dir.iterdir()) or force:
        return
    marker = out_dir / MARKER
    owner = marker.read_text().strip() if marker.is_file() else ""
    if owner != eval_id:
        whose = f"evaluation {owner}'s report" if owner else "files of its own"
        raise UserError(f"--out-dir {out_dir} is not empty (it holds {whose}); choose another folder or pass "
                        "--force to write into it")


def preflight(cfg: RunConfig) -> None:
    """Every chosen backend must say it is available before any clip is dubbed (exit 2 otherwise)."""
    from agent import backends

    problems = []
    for role in ("watcher", "renderer", "critic", "refiner"):
        name = backends.chosen(role, cfg)
        names = name.split("+") if "+" in name else [name]
        for part in names:
            try:
                info = backends._module(role, part).describe(backends.options_for(role, cfg, part))
            except backends.UnknownBackend as exc:
                raise UserError(str(exc)) from None
            except ImportError as exc:
                info = {"available": False, "why": f"not installed: {exc}"}
            if not info.get("available", True):
                problems.append(f"{role} {part}: {info.get('why') or 'unavailable'}")
    if problems:
        raise UserError("cannot evaluate with these backends: " + "; ".join(problems))


clip_dict = E.clip_record  # the plain-dict view that evaluation.report / evaluation.compare read


def header(ev: Eval) -> dict:
    cfg = ev.config()
    run = cfg.get("run", {})
    backends = (f"watcher `{run.get('watcher')}`, renderer `{run.get('renderer')}`, critic `{run.get('critic')}`, "
                f"refiner `{run.get('refiner') or 'default'}`; rounds ≤ {run.get('rounds')}, seed {run.get('seed')}")
    thresholds = run.get("thresholds") or {}
    if thresholds and thresholds != DEFAULT_THRESHOLDS:
        backends += "; passes at " + ", ".join(f"{k} {v:g}" for k, v in thresholds.items())
    n = int(cfg.get("eval", {}).get("seeds", 1))
    if n > 1:
        backends += (f"; reference measures: the mean of {n} renders of each compared round's plan (its own seed and "
                     f"the next {n - 1})")
    return {"eval_id": ev.id, "corpus_path": ev.corpus_path, "corpus_kind": ev.corpus_kind,
            "corpus_hash": ev.corpus_hash, "backends": backends, "code_version": ev.code_version,
            "code_dirty": ev.code_dirty, "created_at": ev.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "clap_caption_rule": CLAP_CAPTION_RULE, "config": cfg, "status": ev.status}


# ------------------------------------------------------------------------------------------------ start/resume

def start(store: Store, corpus: corpus_mod.Corpus, cfg: RunConfig, opts: EvalOptions) -> Eval:
    """Check everything checkable, then record the evaluation and its clips (status ``pending``)."""
    eval_id = E.new_id()
    out_dir = (opts.out_dir or Path.cwd() / f"eval-{eval_id}").expanduser().resolve()
    check_out_dir(out_dir, eval_id, opts.force)
    preflight(cfg)
    version, dirty = code_version()
    rows = [{"name": c.name, "content_group": c.group, "video_path": str(c.video), "reference": str(c.reference),
             "notes": c.notes, "labels_json": list(c.labels)} for c in corpus.clips]
    config = {"run": json.loads(cfg.model_dump_json()),
              "eval": {"models": {k: opts.model_refs.get(k) for k in MODEL_NAMES}, "device": opts.device,
                       "seeds": int(opts.seeds)}}
    ev = E.create_eval(store, rows, id=eval_id, corpus_path=str(corpus.source), corpus_kind=corpus.kind,
                       corpus_hash=corpus.digest(), config_json=config, code_version=version, code_dirty=dirty,
                       out_dir=str(out_dir))
    _claim(out_dir, ev.id)
    return ev


def reopen(store: Store, eval_id: str, corpus_arg: str | Path | None, opts: EvalOptions) -> Eval:
    """``--resume``: same corpus (by content hash), same configuration; only unscored clips are worked on."""
    ev = E.get_eval(store, eval_id)
    if ev is None:
        raise UserError(f"no evaluation {eval_id!r} in {store.db_path}")
    corpus = corpus_mod.load(corpus_arg or ev.corpus_path)
    if corpus.digest() != ev.corpus_hash:
        raise UserError(f"the corpus {corpus.source} is not the one evaluation {ev.id} ran on (its content hash "
                        "differs); start a new evaluation instead")
    out_dir = (opts.out_dir or Path(ev.out_dir)).expanduser().resolve()
    check_out_dir(out_dir, ev.id, opts.force)
    preflight(RunConfig.model_validate(ev.config()["run"]))
    _claim(out_dir, ev.id)
    return E.update_eval(store, ev.id, out_dir=str(out_dir), status="running", error=None)


def _claim(out_dir: Path, eval_id: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text(eval_id + "\n")


# ------------------------------------------------------------------------------------------------------- run

class _Progress:
    """A rich progress bar per phase on stderr, or nothing."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, total: int, what: str):
        if not self.enabled or total == 0:
            return _NoBar()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=False)


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def advance(self, *a, **k):
        pass


def run(store: Store, eval_id: str, opts: EvalOptions, log: Callable[[str], None] = print) -> dict:
    """Work through every clip that is not scored yet, then write the report. Returns the summary."""
    ev = E.get_eval(store, eval_id)
    cfg = RunConfig.model_validate(ev.config()["run"])
    out_dir = Path(ev.out_dir)
    models = ev.config().get("eval", {}).get("models", {})
    bar = _Progress(opts.progress)
    try:
        rows = E.clips(store, ev.id)
        refs, ref_why = _references(rows)
        todo = [r for r in rows if r.status in ("pending", "failed")]
        with bar(len(todo), "dub") as p:
            task = p.add_task("dubbing", total=len(todo))
            for row in todo:
                p.update(task, description=f"dubbing {row.name}")
                _dub_and_measure(store, ev, row, cfg, refs, ref_why, out_dir if opts.write_dubs else None, log,
                                 seeds=int(ev.config().get("eval", {}).get("seeds", 1)))
                p.advance(task)
        rows = E.clips(store, ev.id)
        dubbed = [r for r in rows if r.status == "dubbed"]
        if dubbed:
            _model_passes(store, dubbed, models, ev.config().get("eval", {}).get("device", opts.device), bar)
            for row in E.clips(store, ev.id):
                if row.status == "dubbed":
                    _finish_clip(store, row)
        ev = E.update_eval(store, ev.id, status="done", error=None)
        summary = report.write(out_dir, header(ev), [clip_dict(r) for r in E.clips(store, ev.id)])
    except BaseException as exc:
        E.update_eval(store, ev.id, status="interrupted", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    E.update_eval(store, ev.id, summary_json=summary)
    return summary


def _references(rows: list[EvalClip]) -> tuple[list[ClipAudio | None], list[str]]:
    """Every clip's reference at the metrics' rate (the cross-clip control needs them all), or why there is none."""
    refs, whys = [], []
    for row in rows:
        ref, why = None, ""
        try:
            if row.reference == corpus_mod.NONE:
                why = "the corpus gives no reference for this clip"
            elif row.reference == corpus_mod.OWN:
                if media.probe(row.video_path).has_audio:
                    ref = ClipAudio.from_file(row.video_path)
                else:
                    why = "the video has no soundtrack of its own to compare with"
            else:
                ref = ClipAudio.from_file(row.reference)
        except (media.MediaError, OSError) as exc:
            why = f"reference unreadable: {exc}"
        refs.append(ref)
        whys.append(why)
    return refs, whys


def _silent_input(store: Store, row: EvalClip) -> Path:
    """The video to dub: the file itself when it has no audio, else a stream copy without audio (kept in the store,
    so the run's video stays valid after the report folder is gone)."""
    video = Path(row.video_path)
    if not media.probe(video).has_audio:
        return video
    from evaluation.corpus import cut_silent_video

    tmp_dir = store.home / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        dst = Path(tmp) / f"{video.stem}.silent{video.suffix.lower()}"
        cut_silent_video(video, dst, 0.0, float("inf"))
        art = store.put_file(dst, kind="input", mime="video/" + video.suffix.lower().lstrip("."), move=True)
    return store.artifact_dir / art.path


def _dub(store: Store, row: EvalClip, video: Path, cfg: RunConfig, out: Path | None) -> str:
    from agent import runs

    run = store.get_run(row.run_id) if row.run_id else None
    if run is not None and run.video_path == str(video) and run.status != "failed":
        if run.status != "done":
            runs.resume(store, run.id)  # interrupted mid-run: continue it rather than start over
        return run.id
    run_id = runs.create_dub_run(store, video, cfg, status="running")
    E.update_clip(store, row.id, run_id=run_id)
    runs.execute_dub(store, run_id, out)
    return run_id


def _rounds(store: Store, run_id: str):
    run = store.get_run(run_id)
    if run is None or run.status != "done":
        why = (run.error or run.status) if run else "the run is missing"
        raise RuntimeError(f"run {run_id} did not finish: {why}")
    rounds = [r for r in store.rounds(run_id, branch=0) if r.status != "replaced"]
    r0 = next((r for r in rounds if r.index == 0 and r.audio_artifact_id is not None), None)
    kept = store.get_round(run.best_round_id) if run.best_round_id is not None else None
    if r0 is None or kept is None or kept.audio_artifact_id is None:
        raise RuntimeError(f"run {run_id} has no rendered round 0 / kept round")
    critic = [{"index": r.index, "overall": r.score_overall, "scores": r.scores(), "status": r.status}
              for r in rounds if r.critique_json]
    return r0, kept, critic


def _other_seeds(store: Store, run_id: str, rnd, cfg: RunConfig, seeds: int, refs, own: int,
                 work: Path) -> list[dict]:
    """The reference measures of the round's plan rendered again with seeds ``seed+1 … seed+seeds-1`` (the stored
    render is the first): the run's renderer, whole or by segments as the run rendered it. ``work`` is the clip's
    scratch folder: its segment proxies serve every round measured there."""
    from agent import backends
    from store.media import VideoInfo

    run = store.get_run(run_id)
    plan = Plan.from_stored(rnd.plan_json)
    info_json = json.loads(run.video_info_json or "{}")
    info = VideoInfo(**info_json) if info_json else None
    renderer = backends.get("renderer", cfg)
    out = []
    for k in range(1, seeds):
        wav = render_plan(renderer, plan, Path(run.video_path), info, rnd.seed + k,
                          work / f"r{rnd.id}-seed{k}.wav", work / "segments")
        out.append(measures.reference_metrics(ClipAudio.from_file(wav), refs[own], refs, own))
    return out


def render_plan(renderer, plan: Plan, video: Path, info, seed: int, out: Path, cache: Path) -> Path:
    """The whole plan with ``seed``; a plan cut into segments is rendered and joined as a run does it."""
    from agent import segments as segmenting

    if plan.segments:
        sr = segmenting.prepare(plan, video, info, cache, "eval-seeds")
        return segmenting.render(renderer, plan, seed, out, sr).audio_path
    return renderer.render(plan, video, info, seed, out).audio_path


def _best_not_kept(store: Store, run_id: str, kept):
    """The later round (index > 0) with the highest critic score that the loop did not keep, if any."""
    later = [r for r in store.rounds(run_id, branch=0) if r.index > 0 and r.id != kept.id
             and r.audio_artifact_id is not None and r.score_overall is not None and r.status == "scored"]
    return max(later, key=lambda r: (r.score_overall, -r.index), default=None)


def _dub_and_measure(store: Store, ev: Eval, row: EvalClip, cfg: RunConfig, refs, ref_why, out_dir: Path | None,
                     log: Callable[[str], None], seeds: int = 1) -> None:
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        video = _silent_input(store, row)
        suffix = video.suffix.lower() if video.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm") else ".mkv"
        out = out_dir / "dubs" / f"{row.name}.foley{suffix}" if out_dir else None
        run_id = _dub(store, row, video, cfg, out)
        timings["dub"] = round(time.perf_counter() - t0, 3)
        r0, kept, critic = _rounds(store, run_id)
        t1 = time.perf_counter()
        rows = E.clips(store, ev.id)
        own = next(i for i, r in enumerate(rows) if r.id == row.id)
        metrics = {}
        (store.home / "tmp").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=store.home / "tmp") as work:

            def measure(rnd) -> dict:
                gen = ClipAudio.from_file(store.artifact_path(rnd.audio_artifact_id))
                m = measures.reference_metrics(gen, refs[own], refs, own, ref_why[own] or "no reference")
                if seeds > 1 and refs[own] is not None:
                    m = measures.seed_mean([m] + _other_seeds(store, run_id, rnd, cfg, seeds, refs, own, Path(work)))
                return m | {"round_index": rnd.index, "round_id": rnd.id, "critic_overall": rnd.score_overall}

            for cond, rnd in (("round0", r0), ("kept", kept)):
                if cond == "kept" and kept.id == r0.id:
                    metrics["kept"] = dict(metrics["round0"])
                    continue
                metrics[cond] = measure(rnd)
            unkept = _best_not_kept(store, run_id, kept)
            if unkept is not None:  # what the loop turned down: was it right to? (reference measures only)
                metrics["not_kept"] = measure(unkept)
        if refs[own] is not None:  # what the original soundtrack is made of: are the foley targets its to meet?
            metrics["reference_content"] = content.periodic_share(refs[own])
        timings["reference_metrics"] = round(time.perf_counter() - t1, 3)
        run = store.get_run(run_id)
        metrics["run"] = {"stop_reason": run.stop_reason, "n_rounds": len(critic)}
        E.update_clip(store, row.id, run_id=run_id, status="dubbed", error=None, round0_id=r0.id, kept_id=kept.id,
                      kept_index=kept.index, kept_later=kept.index > 0, metrics_json=metrics, critic_json=critic,
                      timings_json=timings)
    except Exception as exc:  # one clip's failure is recorded; the others go on
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]
        E.update_clip(store, row.id, status="failed", error=msg, timings_json=timings)
        log(f"{row.name}: failed: {msg[:300]}")


def _caption(store: Store, row: EvalClip) -> tuple[str, str]:
    if row.notes.strip():
        return corpus_mod.sound_caption(row.notes), "clip notes"
    r0 = store.get_round(row.round0_id)
    cap = Plan.from_json(r0.plan_json).caption if r0 is not None else ""
    return cap, "plan caption (round 0)"


def _model_passes(store: Store, rows: list[EvalClip], models: dict, device: str, bar: _Progress) -> None:
    """One model at a time over every dubbed clip (both conditions); each result is stored as it comes."""
    items: dict[tuple[int, str], refree.Item] = {}
    same_round: dict[int, bool] = {}
    for row in rows:
        cap, source = _caption(store, row)
        same_round[row.id] = row.kept_id == row.round0_id
        for cond, rid in (("round0", row.round0_id), ("kept", row.kept_id)):
            if cond == "kept" and same_round[row.id]:
                continue
            rnd = store.get_round(rid)
            audio, sr = media.read_audio(store.artifact_path(rnd.audio_artifact_id))
            run = store.get_run(row.run_id)
            items[(row.id, cond)] = refree.Item(audio, sr, Path(run.video_path), cap, source)

    def save(name: str, key: tuple[int, str], result: dict) -> None:
        row_id, cond = key
        row = next(r for r in E.clips(store, rows[0].eval_id) if r.id == row_id)
        m = row.metrics()
        conds = ["round0", "kept"] if (cond == "round0" and same_round[row_id]) else [cond]
        for c in conds:
            m[c] = {**m.get(c, {}), **result}
        t = row.timings()
        t[name] = round(t.get(name, 0.0) + float(result.get(f"{name}_seconds_compute", 0.0)), 4)
        E.update_clip(store, row_id, metrics_json=m, timings_json=t)

    for name in MODEL_NAMES:
        label = refree.MODEL_METRICS[name].label
        with bar(len(items), name) as p:
            task = p.add_task(f"scoring {label}", total=len(items))

            def on_item(key, result, _p=p, _t=task, _name=name):
                save(_name, key, result)
                _p.advance(_t)

            refree.score_pass(name, items, ref=models.get(name), device=device, on_item=on_item)


def _finish_clip(store: Store, row: EvalClip) -> None:
    m = row.metrics()
    verdict, counts = measures.no_worse(m.get("round0") or {}, m.get("kept") or {})
    m["comparison"] = counts
    # the same comparison where a fall within the measure's seed noise is a tie (the strict one stays the verdict)
    n = int((m.get("round0") or {}).get("seed_renders") or 1)  # means of n renders: their noise is ~1/sqrt(n)
    v, c = measures.no_worse_within_noise(m.get("round0") or {}, m.get("kept") or {}, seeds=n)
    m["comparison_noise"] = c | {"no_worse": v}
    if m.get("not_kept"):  # reference measures only: the model passes score round 0 and the kept round
        v, c = measures.no_worse(m.get("round0") or {}, m["not_kept"], measures.REFERENCE_DIRECTIONAL)
        vn, cn = measures.no_worse(m.get("round0") or {}, m["not_kept"], measures.REFERENCE_DIRECTIONAL,
                                   measures.noise_tolerance(n))
        m["not_kept_comparison"] = c | {"no_worse": v, "round_index": m["not_kept"]["round_index"],
                                        "critic_overall": m["not_kept"]["critic_overall"],
                                        "no_worse_noise": vn, "worse_on_noise": cn["worse_on"]}
    E.update_clip(store, row.id, status="scored", no_worse=verdict, metrics_json=m)


# ---------------------------------------------------------------------------------------------------- compare

def compare(store: Store, a: str, b: str) -> dict:
    from evaluation.compare import compare_evals, unmatched

    evs = []
    for ref in (a, b):
        ev = E.get_eval(store, ref)
        if ev is None:
            raise UserError(f"no evaluation {ref!r} in {store.db_path}")
        evs.append(ev)
    ca, cb = ([clip_dict(r) for r in E.clips(store, ev.id)] for ev in evs)
    return {"a": header(evs[0]), "b": header(evs[1]), "same_corpus": evs[0].corpus_hash == evs[1].corpus_hash,
            "rows": compare_evals(ca, cb), "unmatched": unmatched(ca, cb)}
