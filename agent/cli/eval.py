"""``foleyloop eval``: measure the system on a corpus (listed in ``agent.cli.app.COMMANDS``; see ``agent.evals``).

    foleyloop eval CORPUS [dub options] [--out-dir DIR] [--force]   run an evaluation
    foleyloop eval --resume EVAL_ID                                 finish one (scored clips are skipped)
    foleyloop eval --compare EVAL_A EVAL_B                          per-measure deltas, paired sign counts

Exit codes as ``agent.cli.app``: 0 ok, 2 bad input (one line, before any work), 1 internal error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import typer
from rich.table import Table

from agent.cli.common import (Db, Debug, Device, Dtype, Endpoint, KeepOriginal, MaxDuration, MetaClip, PassAt, Refiner,
                              Renderer, Rounds, Seed, Steps, T5, Watcher, WatcherModel, Weights, build_config,
                              err_console, out_console, renderer_options, store)
from contract.errors import UserError

app = typer.Typer()


def _fmt(v, digits: int = 3) -> str:
    return "—" if v is None else f"{v:+.{digits}f}" if digits < 0 else f"{v:.{digits}f}"


def _print_compare(console, data: dict) -> None:
    from evaluation.measures import BY_KEY, CONDITION_LABEL

    a, b = data["a"], data["b"]
    console.print(f"A = {a['eval_id']} ({a['code_version']}, {a['created_at']}); "
                  f"B = {b['eval_id']} ({b['code_version']}, {b['created_at']}); Δ = B − A")
    if not data["same_corpus"]:
        console.print("note: the two evaluations ran on different corpora (content hashes differ); "
                      "only clips with the same name are paired")
    um = data["unmatched"]
    if um["only_a"] or um["only_b"]:
        console.print(f"left out (scored in one only): A {', '.join(um['only_a']) or '—'}; "
                      f"B {', '.join(um['only_b']) or '—'}")
    for cond, rows in data["rows"].items():
        t = Table("measure", "better", "n", "mean A", "mean B", "Δ mean", "B better", "B worse", "tied",
                  "beyond noise: better / worse", title=CONDITION_LABEL[cond])
        for r in rows:
            d = BY_KEY[r["key"]].digits
            t.add_row(r["label"], r["better"] or "—", str(r["n"]), _fmt(r["mean_a"], d), _fmt(r["mean_b"], d),
                      "—" if r["mean_delta"] is None else f"{r['mean_delta']:+.{max(d, 1)}f}",
                      *("—" if r[k] is None else str(r[k]) for k in ("n_better", "n_worse", "n_tied")),
                      "—" if r.get("n_better_noise") is None else f"{r['n_better_noise']} / {r['n_worse_noise']}")
        console.print(t)


@app.command("eval")
def eval_cmd(
        ctx: typer.Context,
        corpus: Optional[str] = typer.Argument(None, help="Folder of videos, a .json/.csv manifest, or the "
                                                          "corpus builder's manifest.json"),
        out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Report folder (default ./eval-ID)"),
        force: bool = typer.Option(False, "--force", help="Write into a non-empty --out-dir that is not "
                                                         "this evaluation's"),
        resume: Optional[str] = typer.Option(None, "--resume", metavar="EVAL_ID",
                                             help="Finish an evaluation; clips already scored are skipped"),
        compare: Optional[Tuple[str, str]] = typer.Option(None, "--compare", metavar="EVAL_A EVAL_B",
                                                          help="Per-measure deltas of two evaluations"),
        rounds: Rounds = 3, seed: Seed = 0, watcher: Watcher = "offline", watcher_model: WatcherModel = None,
        endpoint: Endpoint = None, renderer: Renderer = "offline", weights: Weights = None,
        critic: Optional[str] = typer.Option(None, "--critic", help="offline | qwen | openai | desync | clap | "
                                             "aesthetics | verified | a+b+… (default: verified with "
                                             "thinksound+qwen, else offline)"),
        refiner: Refiner = None, max_duration: MaxDuration = 600.0, keep_original: KeepOriginal = "drop",
        device: Device = "auto", dtype: Dtype = "auto",
        steps: Steps = None, metaclip: MetaClip = None, t5: T5 = None,
        synchformer: Optional[str] = typer.Option(None, "--synchformer", help="synchformer_state_dict.pth (or "
                                                  "its folder / hub id): renderer features, DeSync metric and "
                                                  "desync verifier"),
        clap: Optional[str] = typer.Option(None, "--clap", help="CLAP model folder or hub id (metric and "
                                           "verifier; default laion/larger_clap_general)"),
        aesthetics: Optional[str] = typer.Option(None, "--aesthetics", help="Audiobox Aesthetics folder or hub "
                                                 "id (default facebook/audiobox-aesthetics)"),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars"),
        pass_at: PassAt = None,
        seeds: int = typer.Option(1, "--seeds", min=1, max=16,
                                  help="Reference measures of each compared round as the mean of N renders of its "
                                       "plan (its seed and the next N-1): seed noise shrinks ~1/sqrt(N)"),
        db: Db = None, debug: Debug = False):
    """Dub every clip of a corpus and measure single shot (round 0) vs loop (kept round) independently."""
    from agent import evals

    st = store(ctx)
    if compare:
        if corpus or resume:
            raise UserError("--compare takes two evaluation ids and nothing else")
        _print_compare(out_console, evals.compare(st, *compare))
        return
    from agent.devices import resolve_device

    opts = evals.EvalOptions(out_dir=out_dir, force=force, device=resolve_device(device), progress=not no_progress,
                             seeds=seeds,
                             model_refs={"desync": _abs(synchformer), "clap": _abs(clap),
                                         "aesthetics": _abs(aesthetics)})
    if resume:
        ev = evals.reopen(st, resume, corpus, opts)
        err_console.print(f"evaluation [bold]{ev.id}[/bold]: resuming ({ev.n_clips} clips) → {ev.out_dir}")
    else:
        if not corpus:
            raise UserError("give a CORPUS (folder or manifest), or --resume EVAL_ID, or --compare A B")
        from evaluation.manifest import load

        corp = load(corpus)
        cfg = build_config(rounds=rounds, seed=seed, watcher=watcher, watcher_model=watcher_model, endpoint=endpoint,
                           renderer=renderer, critic=critic, refiner=refiner, max_duration=max_duration,
                           keep_original=keep_original, device=device, dtype=dtype,
                           renderer_opts=renderer_options(weights, steps, None, metaclip, t5, synchformer),
                       pass_at=pass_at)
        verifier = {k: v for k, v in (("synchformer", _abs(synchformer)), ("clap", _abs(clap)),
                                      ("aesthetics", _abs(aesthetics))) if v}
        if verifier:
            cfg = cfg.model_copy(update={"options": {**cfg.options, "critic": {**cfg.opts("critic"), **verifier}}})
        ev = evals.start(st, corp, cfg, opts)
        err_console.print(f"evaluation [bold]{ev.id}[/bold]: {len(corp.clips)} clips, critic {cfg.critic}, "
                          f"rounds ≤ {cfg.rounds} → {ev.out_dir}")
    summary = evals.run(st, ev.id, opts, log=lambda m: err_console.print(m, markup=False, highlight=False))
    kl, nw = summary["kept_later"], summary["no_worse"]
    lnw = summary.get("later_no_worse") or {"n": 0, "of": 0}
    noise = summary.get("later_no_worse_noise") or {"n": 0, "of": 0}
    out_console.print(
        f"evaluation {ev.id} done: {summary['n_scored']}/{summary['n_clips']} clips scored, "
        f"{len(summary['failed'])} failed; kept a later round in {kl['n']}/{kl['of']} runs "
        f"({lnw['n']}/{lnw['of']} of them no worse than round 0, {noise['n']}/{noise['of']} within the measures' "
        f"seed noise); kept round no "
        f"worse than round 0 in {nw['n']}/{nw['of']} clips; report: {Path(ev.out_dir) / 'report.md'}",
        markup=False, highlight=False)
    if summary["n_clips"] and not summary["n_scored"]:
        raise typer.Exit(1)


def _abs(value: Optional[str]) -> Optional[str]:
    """Local paths made absolute (hub ids stay as they are), so a stored config still works from another cwd."""
    if not value:
        return None
    p = Path(value).expanduser()
    return str(p.resolve()) if p.exists() else value
