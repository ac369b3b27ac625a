"""`foleyloop batch`: dub a folder or a manifest of videos, resumable, in this process or on a Ray cluster.

The work is ``agent.batch``'s; this module turns options into clips and an engine, and shows progress (a bar with
ETA on stderr, one line per clip and a summary on stdout). Exit codes: 2 for bad input (before any work); 1 when
every clip failed, or with ``--strict`` when any failed; else 0 (failures are listed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from agent.cli.common import (CfgScale, CommandFailed, Critic, Db, Debug, Device, Dtype, Endpoint, Force,
                              KeepOriginal, MaxDuration, MetaClip, PassAt, Refiner, Renderer, Rounds, Seed, Steps,
                              Synchformer, T5, Watcher, WatcherModel, Weights, build_config, err_console, fmt,
                              out_console, renderer_options, writable_store)
from contract.errors import UserError

app = typer.Typer()

Source = Annotated[Path, typer.Argument(
    help="Folder of videos, or a manifest: .csv (header line) or .jsonl with path and optional out, rounds, seed, "
         "watcher, renderer, critic, refiner, keep_original, max_duration")]
OutDir = Annotated[Optional[Path], typer.Option(
    "--out-dir", help="Where dubbed videos go (NAME.foley.EXT); needed unless every manifest row has out")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Skip clips already done with the same config (video sha256 + config hash); take over the "
                     "runs a killed batch left unfinished")]
Strict = Annotated[bool, typer.Option("--strict", help="Exit 1 when any clip failed (default: only when all did)")]
Engine = Annotated[str, typer.Option("--engine", help="local (this process, one clip at a time) | ray")]
Address = Annotated[Optional[str], typer.Option(
    "--address", help="Ray cluster to join (HOST:PORT, or auto); default: a private Ray instance on this machine")]
Workers = Annotated[Optional[int], typer.Option(
    "--workers", min=1, help="Ray workers (default: one per CPU of the cluster, or per GPU when clips run on CUDA)")]
ArtifactsDir = Annotated[Optional[Path], typer.Option(
    "--artifacts-dir", help="A folder this machine and every Ray node share: results come back as files there "
                            "instead of through Ray's object store (large outputs)")]
BatchSize = Annotated[int, typer.Option(
    "--batch-size", help="Local engine: dub N clips at once in this process; a renderer that renders batches "
                         "(thinksound) renders their requests together, clips of one length sharing each forward")]
WorkerSetup = Annotated[Optional[list[str]], typer.Option(
    "--worker-setup", help="MODULE:FUNCTION called on each worker before its first clip (e.g. to register "
                           "extra backends); repeatable")]


def _line(o) -> str:
    node = o.worker.get("node_id") if o.worker else None
    where = f" [node {node[:8]}]" if node else ""
    if o.status == "done":
        return f"{o.clip.where}: run {o.run_id} done ({o.stop_reason}), overall {fmt(o.best_overall)} → " \
               f"{o.clip.out}{where}"
    if o.status == "skipped":
        return f"{o.clip.where}: skipped, done in run {o.run_id}" + (f"; {o.note}" if o.note else "")
    return f"{o.clip.where}: failed{f' (run {o.run_id})' if o.run_id else ''}: {o.error}{where}"


@app.command()
def batch(ctx: typer.Context, source: Source, out_dir: OutDir = None, resume: Resume = False, strict: Strict = False,
          force: Force = False, engine: Engine = "local", address: Address = None, workers: Workers = None,
          artifacts_dir: ArtifactsDir = None, worker_setup: WorkerSetup = None, rounds: Rounds = 3, seed: Seed = 0,
          watcher: Watcher = "offline", watcher_model: WatcherModel = None, endpoint: Endpoint = None,
          renderer: Renderer = "offline", weights: Weights = None, critic: Critic = None,
          refiner: Refiner = None, max_duration: MaxDuration = 600.0, keep_original: KeepOriginal = "drop",
          device: Device = "auto", dtype: Dtype = "auto", steps: Steps = None, cfg_scale: CfgScale = None,
          metaclip: MetaClip = None, t5: T5 = None, synchformer: Synchformer = None, batch_size: BatchSize = 1,
          pass_at: PassAt = None, db: Db = None, debug: Debug = False):
    """Dub every video of a folder or manifest; failures are recorded as failed runs and the batch goes on."""
    from agent import batch as service
    from agent import outputs

    if engine not in service.ENGINES:
        raise UserError(f"--engine must be {' or '.join(service.ENGINES)}, got {engine!r}")
    if engine == "local":
        for flag, value in (("--address", address), ("--workers", workers), ("--artifacts-dir", artifacts_dir)):
            if value is not None:
                raise UserError(f"{flag} needs --engine ray")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if engine == "ray" and batch_size > 1:
        raise UserError("--batch-size > 1 needs --engine local (cross-clip batching runs in one process; "
                        "with Ray use one worker per GPU)")
    setup = service.check_setup(worker_setup or [])
    service.check_address(address)
    auto = engine == "ray" and device == "auto"  # decided by the cluster's GPUs once connected, not by this machine
    cfg = build_config(rounds=rounds, seed=seed, watcher=watcher, watcher_model=watcher_model, endpoint=endpoint,
                       renderer=renderer, critic=critic, refiner=refiner, max_duration=max_duration,
                       keep_original=keep_original, device="cpu" if auto else device, dtype=dtype,
                       renderer_opts=renderer_options(weights, steps, cfg_scale, metaclip, t5, synchformer),
                       pass_at=pass_at)
    if auto and dtype == "auto":  # the cluster's devices decide: each worker resolves it (models.precision)
        cfg = cfg.model_copy(update={"dtype": "auto"})
    clips = service.collect(source, out_dir, cfg, outputs.out_name, outputs.VIDEO_EXTS)
    if artifacts_dir is not None:
        artifacts_dir = outputs.check_folder(artifacts_dir, "--artifacts-dir")
    st = writable_store(ctx)

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("ETA"), TimeRemainingColumn(), console=err_console, redirect_stdout=False,
                        redirect_stderr=False)
    bar = progress.add_task("batch", total=len(clips))
    lines = progress.console if out_console.is_terminal else out_console  # beside the bar on a terminal

    def on_outcome(o) -> None:
        lines.print(_line(o), markup=False, highlight=False)
        progress.update(bar, advance=1, description=f"{o.clip.path.name} {o.status}")

    def on_note(msg: str) -> None:
        progress.console.print(msg, markup=False, highlight=False)

    def on_event(ev) -> None:
        where = "" if ev.round_index is None else f" (round {ev.round_index})"
        progress.update(bar, description=f"{ev.node}{where}")

    if engine == "ray":
        eng = service.RayEngine(address=address, workers=workers, artifacts_dir=artifacts_dir, setup=setup,
                                on_note=on_note)
    else:
        eng = service.LocalEngine(scratch_root=st.home / "tmp", setup=setup, on_event=on_event,
                                  batch_size=batch_size)
    job = service.Batch(st, clips, eng, resume=resume, force=force, auto_device=auto, on_outcome=on_outcome,
                        on_note=on_note, on_start=lambda n: progress.start())  # the bar once the checks passed
    lost = None
    try:
        report = job.run()
    except service.WorkersLost as exc:
        report, lost = job.report, exc
    finally:
        if progress.live.is_started:
            progress.stop()
    out_console.print(report.summary(), highlight=False)
    failed = report.of("failed")
    if lost is not None:
        raise CommandFailed(f"error: {lost}; {len(clips) - len(report.outcomes)} clips were not started "
                            "(rerun with --resume)")
    if failed and (strict or len(failed) == len(report.outcomes)):
        raise CommandFailed(f"{len(failed)} of {len(report.outcomes)} clips failed")
