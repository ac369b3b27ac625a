"""``foleyloop eval``: measure the system on a corpus (registered by ``agent.cli``; see ``agent.evals``).

    foleyloop eval CORPUS [dub options] [--out-dir DIR] [--force]   run an evaluation
    foleyloop eval --resume EVAL_ID                                 finish one (scored clips are skipped)
    foleyloop eval --compare EVAL_A EVAL_B                          per-measure deltas, paired sign counts

Exit codes as ``agent.cli``: 0 ok, 2 bad input (one line, before any work), 1 internal error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import typer
from rich.table import Table

from contract.errors import UserError


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
                  title=CONDITION_LABEL[cond])
        for r in rows:
            d = BY_KEY[r["key"]].digits
            t.add_row(r["label"], r["better"] or "—", str(r["n"]), _fmt(r["mean_a"], d), _fmt(r["mean_b"], d),
                      "—" if r["mean_delta"] is None else f"{r['mean_delta']:+.{max(d, 1)}f}",
                      *("—" if r[k] is None else str(r[k]) for k in ("n_better", "n_worse", "n_tied")))
        console.print(t)


def register(app: typer.Typer) -> None:
    if getattr(app, "_eval_command", False):  # main() may run several times in one process (tests)
        return
    app._eval_command = True
    from agent import cli

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
            rounds: int = cli.O_ROUNDS, seed: int = cli.O_SEED, watcher: str = cli.O_WATCHER,
            watcher_model: Optional[str] = cli.O_WMODEL, endpoint: Optional[str] = cli.O_ENDPOINT,
            renderer: str = cli.O_RENDERER, weights: Optional[Path] = cli.O_WEIGHTS,
            critic: Optional[str] = typer.Option(None, "--critic", help="offline | qwen | openai | desync | clap | "
                                                 "aesthetics | verified | a+b+… (default: verified with "
                                                 "thinksound+qwen, else offline)"),
            refiner: Optional[str] = cli.O_REFINER, max_duration: float = cli.O_MAXDUR,
            keep_original: str = cli.O_KEEP, device: str = cli.O_DEVICE, dtype: str = cli.O_DTYPE,
            steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (thinksound)"),
            metaclip: Optional[str] = typer.Option(None, "--metaclip", help="MetaCLIP hub id or folder (thinksound)"),
            t5: Optional[str] = typer.Option(None, "--t5", help="T5 hub id or folder (thinksound)"),
            synchformer: Optional[str] = typer.Option(None, "--synchformer", help="synchformer_state_dict.pth (or "
                                                      "its folder / hub id): renderer features, DeSync metric and "
                                                      "desync verifier"),
            clap: Optional[str] = typer.Option(None, "--clap", help="CLAP model folder or hub id (metric and "
                                               "verifier; default laion/larger_clap_general)"),
            aesthetics: Optional[str] = typer.Option(None, "--aesthetics", help="Audiobox Aesthetics folder or hub "
                                                     "id (default facebook/audiobox-aesthetics)"),
            no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars")):
        """Dub every clip of a corpus and measure single shot (round 0) vs loop (kept round) independently."""
        from agent import evals

        store = _store(ctx)
        if compare:
            if corpus or resume:
                raise UserError("--compare takes two evaluation ids and nothing else")
            _print_compare(cli.out_console, evals.compare(store, *compare))
            return
        opts = evals.EvalOptions(out_dir=out_dir, force=force, device=device, progress=not no_progress,
                                 model_refs={"desync": _abs(synchformer), "clap": _abs(clap),
                                             "aesthetics": _abs(aesthetics)})
        if resume:
            ev = evals.reopen(store, resume, corpus, opts)
            cli.err_console.print(f"evaluation [bold]{ev.id}[/bold]: resuming ({ev.n_clips} clips) → {ev.out_dir}")
        else:
            if not corpus:
                raise UserError("give a CORPUS (folder or manifest), or --resume EVAL_ID, or --compare A B")
            from evaluation.manifest import load

            corp = load(corpus)
            cfg = cli._build_config(rounds, seed, False, watcher, watcher_model, endpoint, renderer, weights, critic,
                                    refiner, max_duration, keep_original, device, dtype, steps)
            from agent.cli_generate import renderer_options

            extra = renderer_options(metaclip=metaclip, t5=t5, synchformer=synchformer)
            verifier = {k: v for k, v in (("synchformer", _abs(synchformer)), ("clap", _abs(clap)),
                                          ("aesthetics", _abs(aesthetics))) if v}
            if extra or verifier:
                cfg = cfg.model_copy(update={"options": {**cfg.options,
                                                         "renderer": {**cfg.opts("renderer"), **extra},
                                                         "critic": {**cfg.opts("critic"), **verifier}}})
            ev = evals.start(store, corp, cfg, opts)
            cli.err_console.print(f"evaluation [bold]{ev.id}[/bold]: {len(corp.clips)} clips, critic {cfg.critic}, "
                                  f"rounds ≤ {cfg.rounds} → {ev.out_dir}")
        summary = evals.run(store, ev.id, opts, log=lambda m: cli.err_console.print(m, markup=False,
                                                                                    highlight=False))
        kl, nw = summary["kept_later"], summary["no_worse"]
        cli.out_console.print(
            f"evaluation {ev.id} done: {summary['n_scored']}/{summary['n_clips']} clips scored, "
            f"{len(summary['failed'])} failed; kept a later round in {kl['n']}/{kl['of']} runs; kept round no "
            f"worse than round 0 in {nw['n']}/{nw['of']} clips; report: {Path(ev.out_dir) / 'report.md'}",
            markup=False, highlight=False)
        if summary["n_clips"] and not summary["n_scored"]:
            raise typer.Exit(1)


def _store(ctx: typer.Context):
    """The global --db, read from the root context: under `python -m agent.cli` the CLI runs as __main__, so
    ``agent.cli.STATE`` is a different, empty copy."""
    from store.db import Store

    db = ctx.find_root().params.get("db")
    return Store(db) if db else Store()


def _abs(value: Optional[str]) -> Optional[str]:
    """Local paths made absolute (hub ids stay as they are), so a stored config still works from another cwd."""
    if not value:
        return None
    p = Path(value).expanduser()
    return str(p.resolve()) if p.exists() else value
