"""`foleyloop dub`: one video in, one dubbed video out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.cli.common import (CfgScale, Critic, Db, Debug, Device, Dtype, Endpoint, Force, KeepOriginal, MaxDuration,
                              MetaClip, Out, PassAt, Progress, Refiner, Renderer, Review, Rounds, Seed, Steps,
                              Synchformer, T5, Watcher, WatcherModel, Weights, build_config, err_console, free_path,
                              renderer_options, report, writable_store)
from agent.cli.process import settle_gc
from contract.errors import UserError

app = typer.Typer()


def segment_options(segment_s: float) -> dict:
    """``--segment-s`` as run options: 0 turns segmenting off; otherwise a window the crossfades fit in."""
    import math

    from contract.segments import ROLL_S

    if segment_s == 0:
        return {"enabled": False}
    low = 1.0 + 2 * ROLL_S + 1.0  # a sub-split's crossfade and both rolls, plus at least a second of its own
    if not math.isfinite(segment_s) or not low < segment_s <= 3600:
        raise UserError(f"--segment-s must be 0 (one window) or more than {low:g} and at most 3600 s, "
                        f"got {segment_s:g}")
    return {"max_s": float(segment_s)}


def resolve_video(video: str) -> Path:
    if video.startswith("sample:"):
        from store.samples import sample_path

        return sample_path(video.split(":", 1)[1])
    return Path(video).expanduser()


@app.command()
def dub(ctx: typer.Context,
        video: Annotated[str, typer.Argument(help="Video file, or sample:bigbuckbunny / sample:bikes")],
        out: Out = None, force: Force = False, rounds: Rounds = 3, seed: Seed = 0, review: Review = False,
        watcher: Watcher = "offline", watcher_model: WatcherModel = None, endpoint: Endpoint = None,
        renderer: Renderer = "offline", weights: Weights = None, critic: Critic = None, refiner: Refiner = None,
        max_duration: MaxDuration = 600.0, keep_original: KeepOriginal = "drop", device: Device = "auto",
        dtype: Dtype = "auto", steps: Steps = None, cfg_scale: CfgScale = None, metaclip: MetaClip = None,
        t5: T5 = None, synchformer: Synchformer = None, pass_at: PassAt = None,
        segment_s: Annotated[Optional[float], typer.Option(
            "--segment-s", help="Longest render window (s) of a long or multi-shot video's segments (default 30; "
                                "a renderer with a shorter window, e.g. ThinkSound's 9 s, caps it); 0 = one window")
        ] = None, db: Db = None, debug: Debug = False):
    """Dub one video end to end (default output ./NAME.foley.mp4, never over an existing file)."""
    from agent import outputs, runs

    cfg = build_config(rounds=rounds, seed=seed, review=review, watcher=watcher, watcher_model=watcher_model,
                       endpoint=endpoint, renderer=renderer, critic=critic, refiner=refiner,
                       max_duration=max_duration, keep_original=keep_original, device=device, dtype=dtype,
                       renderer_opts=renderer_options(weights, steps, cfg_scale, metaclip, t5, synchformer),
                       pass_at=pass_at)
    if segment_s is not None:
        cfg.options["segments"] = segment_options(segment_s)
    path = resolve_video(video)
    out_path = outputs.check_out(out if out is not None else free_path(Path.cwd() / outputs.out_name(path)), "video",
                                 inputs=[path], force=force)
    st = writable_store(ctx)  # the arguments are checked; now, before the input is probed or a model loads
    run_id = runs.create_dub_run(st, path, cfg, status="running", out=out_path, load_backends=True)
    settle_gc()  # imported and loaded: the rounds' collections skip all of it
    err_console.print(f"run [bold]{run_id}[/bold]: dubbing {path.name} ({cfg.rounds} rounds max)")
    result = runs.execute_dub(st, run_id, out_path, force=force, on_event=Progress())
    report(st, run_id, result)
