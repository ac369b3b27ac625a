"""`foleyloop` command line. Exit codes: 0 ok, 2 bad input, 1 internal error.

User errors print one line (no traceback); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from agent.config import RunConfig
from contract.errors import UserError  # the one user-error type: exit 2, one line
from contract.plan import Plan

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Give silent video its sound.")
# Wide when piped, so ids and paths are never cut or wrapped in logs.
out_console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
STATE = {"debug": False, "db": None}


def _store():
    from store.db import Store

    return Store(STATE["db"]) if STATE["db"] else Store()


@app.callback()
def _global(db: Optional[Path] = typer.Option(None, "--db", help="SQLite file (default $FOLEYLOOP_HOME/foleyloop.db)"),
            debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs")):
    STATE["debug"], STATE["db"] = debug, db
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _build_config(rounds: int, seed: int, review: bool, watcher: str, watcher_model: Optional[str],
                  endpoint: Optional[str], renderer: str, weights: Optional[Path], critic: str,
                  refiner: Optional[str], max_duration: float, keep_original: str, device: str, dtype: str,
                  steps: Optional[int] = None, cfg_scale: Optional[float] = None) -> RunConfig:
    options: dict[str, dict] = {}
    for role in ("watcher", "critic", "refiner"):
        if watcher_model:
            options.setdefault(role, {})["model"] = watcher_model
        if endpoint:
            options.setdefault(role, {})["endpoint"] = endpoint
    if weights:
        options.setdefault("renderer", {})["weights"] = str(Path(weights).expanduser().resolve())
    if steps:
        options.setdefault("renderer", {})["steps"] = steps
    if cfg_scale is not None:
        options.setdefault("renderer", {})["cfg_scale"] = cfg_scale
    from agent.backends import REGISTRY

    for role, name in (("watcher", watcher), ("renderer", renderer), ("critic", critic), ("refiner", refiner)):
        if name is not None and name not in REGISTRY[role]:
            raise UserError(f"unknown {role} backend {name!r} (known: {', '.join(sorted(REGISTRY[role]))})")
    try:
        return RunConfig(rounds=rounds, seed=seed, review=review, watcher=watcher, renderer=renderer, critic=critic,
                         refiner=refiner, max_duration_s=max_duration, keep_original=keep_original, device=device,
                         dtype=dtype, options=options)
    except ValueError as exc:
        raise UserError(str(exc).splitlines()[-1] if "\n" in str(exc) else str(exc)) from None


def _resolve_video(video: str) -> Path:
    if video.startswith("sample:"):
        from store.samples import sample_path

        return sample_path(video.split(":", 1)[1])
    return Path(video).expanduser()


def _default_out(video: Path, run_id: str) -> Path:
    return Path.cwd() / f"{video.stem}.foley{video.suffix if video.suffix.lower() in ('.mp4', '.mov', '.mkv', '.webm') else '.mp4'}"


# Shared option declarations (typer reads defaults at definition time).
O_ROUNDS = typer.Option(3, "--rounds", min=1, max=20, help="Round cap")
O_SEED = typer.Option(0, "--seed")
O_WATCHER = typer.Option("offline", "--watcher", help="offline | qwen | openai")
O_WMODEL = typer.Option(None, "--watcher-model", help="VLM hub id or local path (qwen/openai)")
O_ENDPOINT = typer.Option(None, "--endpoint", help="OpenAI-compatible base URL")
O_RENDERER = typer.Option("offline", "--renderer", help="offline | thinksound")
O_WEIGHTS = typer.Option(None, "--weights", help="ThinkSound checkpoint folder")
O_CRITIC = typer.Option("offline", "--critic", help="offline | qwen | qwen-omni | openai")
O_REFINER = typer.Option(None, "--refiner", help="offline | qwen | openai (default: follows --watcher)")
O_MAXDUR = typer.Option(600.0, "--max-duration", help="Refuse videos longer than this (s)")
O_KEEP = typer.Option("drop", "--keep-original", help="drop | mix the original soundtrack")
O_DEVICE = typer.Option("cpu", "--device", help="cpu | cuda | mps")
O_DTYPE = typer.Option("fp32", "--dtype", help="fp32 | fp16 | bf16")


@app.command()
def dub(video: str = typer.Argument(..., help="Video file, or sample:bigbuckbunny / sample:bikes"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output video (default ./NAME.foley.mp4)"),
        rounds: int = O_ROUNDS, seed: int = O_SEED,
        review: bool = typer.Option(False, "--review", help="Pause for a human to approve/edit the plan"),
        watcher: str = O_WATCHER, watcher_model: Optional[str] = O_WMODEL, endpoint: Optional[str] = O_ENDPOINT,
        renderer: str = O_RENDERER, weights: Optional[Path] = O_WEIGHTS, critic: str = O_CRITIC,
        refiner: Optional[str] = O_REFINER, max_duration: float = O_MAXDUR, keep_original: str = O_KEEP,
        device: str = O_DEVICE, dtype: str = O_DTYPE,
        steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (thinksound)"),
        metaclip: Optional[str] = typer.Option(None, "--metaclip", help="MetaCLIP hub id or folder (thinksound)"),
        t5: Optional[str] = typer.Option(None, "--t5", help="T5 hub id or folder (thinksound)"),
        synchformer: Optional[str] = typer.Option(None, "--synchformer", help="synchformer_state_dict.pth")):
    """Dub one video end to end."""
    from agent import graph

    cfg = _build_config(rounds, seed, review, watcher, watcher_model, endpoint, renderer, weights, critic, refiner,
                        max_duration, keep_original, device, dtype, steps)
    from agent.cli_generate import renderer_options

    extra = renderer_options(metaclip=metaclip, t5=t5, synchformer=synchformer)
    if extra:
        cfg = cfg.model_copy(update={"options": {**cfg.options, "renderer": {**cfg.opts("renderer"), **extra}}})
    path = _resolve_video(video)
    store = _store()
    run_id = graph.create_dub_run(store, path, cfg, status="running")
    out_path = out or _default_out(path, run_id)
    err_console.print(f"run [bold]{run_id}[/bold]: dubbing {path.name} ({cfg.rounds} rounds max)")
    result = graph.execute_dub(store, run_id, out_path, show_progress=True)
    _report(store, run_id, result)


def _report(store, run_id: str, result: dict) -> None:
    from agent.graph import run_status

    if run_status(result) == "review":
        out_console.print(f"run {run_id} paused for review: `foleyloop show {run_id}`, then "
                          f"`foleyloop resume {run_id} [--plan EDITED.json]`")
        return
    run = store.get_run(run_id)
    out_console.print(f"run {run_id} done ({run.stop_reason}); best overall {_fmt(run.best_overall)}; "
                      f"output: {run.output_path}")


def _fmt(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.3f}"


@app.command()
def batch(folder: Path = typer.Argument(..., help="Folder of videos"),
          out_dir: Path = typer.Option(..., "--out-dir", help="Where dubbed videos go"),
          rounds: int = O_ROUNDS, seed: int = O_SEED, watcher: str = O_WATCHER,
          watcher_model: Optional[str] = O_WMODEL, endpoint: Optional[str] = O_ENDPOINT,
          renderer: str = O_RENDERER, weights: Optional[Path] = O_WEIGHTS, critic: str = O_CRITIC,
          refiner: Optional[str] = O_REFINER, max_duration: float = O_MAXDUR, keep_original: str = O_KEEP,
          device: str = O_DEVICE, dtype: str = O_DTYPE):
    """Dub every video in a folder; bad files are recorded as failed runs and skipped."""
    from agent import graph
    from store.media import MediaError

    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder")
    cfg = _build_config(rounds, seed, False, watcher, watcher_model, endpoint, renderer, weights, critic, refiner,
                        max_duration, keep_original, device, dtype)
    exts = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)
    if not videos:
        raise UserError(f"{folder}: no video files ({', '.join(sorted(exts))})")
    store = _store()
    failures = 0
    for p in videos:
        try:
            run_id = graph.create_dub_run(store, p, cfg, status="running")
            graph.execute_dub(store, run_id, out_dir / f"{p.stem}.foley{p.suffix if p.suffix.lower() != '.avi' else '.mkv'}",
                              show_progress=False)
            run = store.get_run(run_id)
            out_console.print(f"{p.name}: run {run_id} done ({run.stop_reason}), overall {_fmt(run.best_overall)}")
        except MediaError as exc:
            failures += 1
            out_console.print(f"{p.name}: skipped: {exc}")
    out_console.print(f"{len(videos) - failures} dubbed, {failures} skipped")
    if failures == len(videos):
        raise typer.Exit(2)


@app.command()
def runs(status: Optional[str] = typer.Option(None, "--status"), limit: int = typer.Option(20, "--limit"),
         as_json: bool = typer.Option(False, "--json")):
    """List recent runs."""
    store = _store()
    rows = store.list_runs(status=status, limit=limit)
    if as_json:
        out_console.print_json(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    t = Table("run", "created", "status", "kind", "video / prompt", "dur (s)", "rounds", "best", "stop")
    for r in rows:
        t.add_row(r.id, r.created_at.strftime("%Y-%m-%d %H:%M"), r.status, r.kind,
                  Path(r.video_path).name if r.video_path else r.prompt[:30], _fmt(r.duration_s), str(r.n_rounds),
                  _fmt(r.best_overall), r.stop_reason or (r.error or "")[:40])
    out_console.print(t)


def _get_run(store, run_id: str):
    run = store.get_run(run_id)
    if run is None:
        raise UserError(f"no run {run_id!r} in {store.db_path}")
    return run


@app.command()
def show(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough) or 'last'"),
         as_json: bool = typer.Option(False, "--json")):
    """Rounds, per-dimension scores and stop reason of a run."""
    store = _store()
    run = _get_run(store, run_id)
    rounds = store.rounds(run.id)
    if as_json:
        out_console.print_json(json.dumps({"run": run.model_dump(mode="json"),
                                           "rounds": [r.model_dump(mode="json") for r in rounds]}))
        return
    out_console.print(f"[bold]run {run.id}[/bold]  {run.kind}  status={run.status}  stop={run.stop_reason}")
    out_console.print(f"video: {run.video_path or '—'}  duration: {_fmt(run.duration_s)} s")
    out_console.print(f"backends: {json.dumps({k: v for k, v in run.backends().items() if k != 'options'})}")
    if run.error:
        out_console.print(f"[red]error:[/red] {run.error}")
    t = Table("round", "id", "author", "seed", "semantic", "temporal", "aesthetic", "spatial", "overall", "status",
              "best")
    best_ids = {b.get("best_round_id") for b in run.branches().values()} | {run.best_round_id}
    for r in rounds:
        t.add_row(f"{r.branch}.{r.index}", str(r.id), r.author, str(r.seed), _fmt(r.score_semantic),
                  _fmt(r.score_temporal), _fmt(r.score_aesthetic), _fmt(r.score_spatial), _fmt(r.score_overall),
                  r.status, "★" if r.id in best_ids else "")
    out_console.print(t)
    for b, rec in sorted(run.branches().items()):
        out_console.print(f"branch {b}: stop={rec.get('stop_reason')} best round id={rec.get('best_round_id')} "
                          f"output={rec.get('output_path')}")
    timings = run.timings()
    if timings:
        out_console.print("timings (s): " + ", ".join(f"{k}={v:.2f}" for k, v in sorted(timings.items())))


def _round_by_ref(store, run, ref: str):
    branch, _, index = ref.rpartition(".")
    try:
        b, i = int(branch or 0), int(index)
    except ValueError:
        raise UserError(f"--round must be K or BRANCH.K, got {ref!r}") from None
    for r in store.rounds(run.id, branch=b):
        if r.index == i and r.status != "replaced":
            return r
    raise UserError(f"run {run.id} has no round {b}.{i}")


def _load_plan(path: Path) -> Plan:
    if not path.is_file():
        raise UserError(f"{path}: no such plan file")
    try:
        return Plan.from_json(path.read_text())
    except (ValueError, json.JSONDecodeError) as exc:
        first = str(exc).splitlines()
        raise UserError(f"{path}: not a valid plan: {' '.join(first[:3])[:300]}") from None


@app.command("plan")
def export_plan(run_id: str, round_ref: str = typer.Option("0", "--round", help="K or BRANCH.K")):
    """Print a round's plan as JSON (edit it, then `regenerate`)."""
    store = _store()
    run = _get_run(store, run_id)
    print(Plan.from_json(_round_by_ref(store, run, round_ref).plan_json).to_json())


@app.command()
def resume(run_id: str, plan: Optional[Path] = typer.Option(None, "--plan", help="Edited plan (review pause)")):
    """Continue a killed run, or answer a review pause (approve, or --plan EDITED.json)."""
    from agent import graph

    store = _store()
    run = _get_run(store, run_id)
    if run.status == "done" and not graph._open_branches(store, run.id):
        out_console.print(f"run {run.id} is already done")
        return
    answer = {"action": "edit", "plan": _load_plan(plan).to_json()} if plan else {"action": "approve"}
    result = graph.resume(store, run.id, answer, show_progress=True)
    _report(store, run.id, result)


@app.command()
def regenerate(run_id: str, round_ref: str = typer.Option(..., "--round", help="K or BRANCH.K to fork from"),
               plan: Path = typer.Option(..., "--plan", help="Edited plan JSON"),
               out: Optional[Path] = typer.Option(None, "--out", "-o"),
               rounds: Optional[int] = typer.Option(None, "--rounds", min=1, max=20)):
    """Fork a new branch of rounds from an edited plan (nothing is overwritten)."""
    from agent import graph

    store = _store()
    run = _get_run(store, run_id)
    parent = _round_by_ref(store, run, round_ref)
    new_plan = _load_plan(plan)
    branch, result = graph.regenerate(store, run.id, parent.id, new_plan,
                                      out or Path.cwd() / f"{run.id}.b{store.next_branch(run.id)}.mp4", rounds,
                                      show_progress=True)
    rec = store.get_run(run.id).branches().get(str(branch), {})
    out_console.print(f"run {run.id} branch {branch} done ({rec.get('stop_reason')}); output: {rec.get('output_path')}")


@app.command()
def models(as_json: bool = typer.Option(False, "--json")):
    """Backends available, where their weights are, or why they are missing."""
    from agent.backends import describe_all

    rows = describe_all()
    if as_json:
        out_console.print_json(json.dumps(rows, default=str))
        return
    t = Table("role", "backend", "available", "model", "where / why", "licence")
    for r in rows:
        t.add_row(r["role"], r["name"], "yes" if r.get("available") else "no", str(r.get("model_id", "")),
                  str(r.get("where") or r.get("why") or ""), str(r.get("license", "")))
    out_console.print(t)


@app.command()
def samples():
    """Bundled sample videos (sample:NAME)."""
    from store.samples import SAMPLES, sample_path

    for name, meta in SAMPLES.items():
        try:
            where = str(sample_path(name))
        except UserError as exc:
            where = str(exc)
        out_console.print(f"sample:{name}  {meta['credit']}  {where}")


def _register_optional_commands() -> None:
    """Commands owned by other modules (generator tools, studio, worker) register themselves here."""
    import importlib

    for mod in ("agent.cli_generate", "agent.cli_studio", "agent.cli_eval"):
        try:
            importlib.import_module(mod).register(app)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def main(argv: list[str] | None = None) -> int:
    from store.db import SchemaTooNew
    from store.media import MediaError

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    _register_optional_commands()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        rc = app(args=argv, standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except (UserError, MediaError, SchemaTooNew, FileNotFoundError) as exc:
        if debug:
            traceback.print_exc()
        _one_line(f"error: {exc}")
        return 2
    except _user_error_types() as exc:
        if debug:
            traceback.print_exc()
        _one_line(f"error: {exc}")
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except _backend_error_type() as exc:  # a model answered badly or failed: not the user's input
        if debug:
            traceback.print_exc()
        _one_line(f"error: {exc}")
        return 1
    except typer.Abort:
        err_console.print("aborted")
        return 1
    except Exception as exc:
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):  # (typer's bundled) click
            exc.show()  # usage errors: bad option, missing argument...
            return exc.exit_code
        if debug:
            traceback.print_exc()
        _one_line(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        return 1


def _one_line(message: str) -> None:
    print(" ".join(message.split()), file=sys.stderr, flush=True)


def _backend_error_type() -> type[BaseException]:
    from contract.errors import BackendError

    return BackendError


def _user_error_types() -> tuple[type[BaseException], ...]:
    from agent.backends import UnknownBackend
    from contract.errors import BadWeights, ModelMissing

    return (UnknownBackend, ModelMissing, BadWeights)


if __name__ == "__main__":
    sys.exit(main())
