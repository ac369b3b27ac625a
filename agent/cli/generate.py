"""`foleyloop text` (text to audio through the loop) and `foleyloop edit` (audio to audio with ThinkSound)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional, Tuple

import typer

from agent.cli.common import (CfgScale, Critic, Db, Debug, Device, Dtype, Force, MetaClip, Out, PlanFile, Progress,
                              Refiner, Renderer, Rounds, Seed, Steps, Synchformer, T5, Weights, as_user_error,
                              build_config, err_console, fmt, free_path, load_plan, out_console, renderer_options,
                              stored_plan, writable_store)
from contract.errors import UserError

app = typer.Typer()

DEFAULT_VARIATION_STRENGTH = 0.5


def _slug(text: str, words: int = 4) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower())[:words]) or "audio"


@app.command("text")
def text_cmd(ctx: typer.Context, prompt: Annotated[str, typer.Argument(help="What to hear")],
             duration: Annotated[float, typer.Option("--duration", help="Seconds")] = 8.0,
             out: Out = None, force: Force = False, rounds: Rounds = 3, seed: Seed = 0,
             renderer: Renderer = "offline", weights: Weights = None, critic: Critic = None,
             refiner: Refiner = None, steps: Steps = None, cfg_scale: CfgScale = None, metaclip: MetaClip = None,
             t5: T5 = None, synchformer: Synchformer = None, device: Device = "auto", dtype: Dtype = "auto",
             db: Db = None, debug: Debug = False):
    """Text to audio: render a prompt (no video) through the render → critique → refine loop."""
    from agent import outputs, runs
    from contract.errors import BackendError, ModelMissing
    from contract.plan import MAX_TEXT_DURATION_S

    if not 0 < duration <= MAX_TEXT_DURATION_S:  # the cap of every text-to-audio plan (``Plan.check_for_text``)
        raise UserError(f"--duration must be > 0 and at most {MAX_TEXT_DURATION_S:g} s for text-to-audio, "
                        f"got {duration:g}")
    plan = runs.plan_from_prompt(prompt, duration).check_for_text()
    cfg = build_config(rounds=rounds, seed=seed, renderer=renderer, critic=critic, refiner=refiner,
                       max_duration=max(600.0, duration), device=device, dtype=dtype,
                       renderer_opts=renderer_options(weights, steps, cfg_scale, metaclip, t5, synchformer))
    out_path = outputs.check_out(out if out is not None else free_path(Path.cwd() / f"{_slug(prompt)}.wav"), "audio",
                                 force=force)
    st = writable_store(ctx)
    err_console.print(f"text-to-audio: {plan.caption!r}, {duration:g} s, {cfg.rounds} rounds max, "
                      f"renderer {cfg.renderer}")
    try:
        run_id, _ = runs.text_to_audio(st, plan, cfg, out_path, force=force, on_event=Progress())
    except ModelMissing:
        raise
    except BackendError as exc:
        raise as_user_error(exc) from None
    run = st.get_run(run_id)
    out_console.print(f"run {run_id} done ({run.stop_reason}); best overall {fmt(run.best_overall)}; "
                      f"output: {run.output_path}")


def _edit_plan(plan_file: Optional[Path], prompt: Optional[str], src, duration_s: float):
    from agent.runs import plan_from_prompt
    from contract.plan import PlanInvalid

    if plan_file is not None and prompt:
        raise UserError("give --plan or --prompt, not both")
    if plan_file is not None:
        return load_plan(plan_file, duration_s)
    if prompt:
        return plan_from_prompt(prompt, duration_s)
    if src.round is not None:  # the source round's plan, which must still fit the audio it made
        where = f"round {src.round.branch}.{src.round.index} of run {src.run.id}"
        plan = stored_plan(src.round.plan_json, where)
        try:
            return plan.check_for_video(duration_s)
        except PlanInvalid as exc:
            raise UserError(f"the plan of {where} does not fit its audio: {exc}") from None
    raise UserError("editing an audio file needs --plan PLAN.json or --prompt TEXT")


@app.command("edit")
def edit_cmd(ctx: typer.Context,
             source: Annotated[str, typer.Argument(metavar="AUDIO_OR_RUN", help="Audio file, run id, or 'last'")],
             plan: PlanFile = None,
             prompt: Annotated[Optional[str], typer.Option("--prompt", help="Text for the new audio")] = None,
             strength: Annotated[Optional[float], typer.Option(
                 "--strength", help="0 keeps the input, 1 ignores it (default 0.5; 1 with --window)")] = None,
             window: Annotated[Optional[Tuple[float, float]], typer.Option(
                 "--window", metavar="START END", help="Regenerate only this span (s)")] = None,
             out: Out = None, force: Force = False, weights: Weights = None, seed: Seed = 0, steps: Steps = None,
             cfg_scale: CfgScale = None, metaclip: MetaClip = None, t5: T5 = None, synchformer: Synchformer = None,
             device: Device = "auto", dtype: Dtype = "auto", db: Db = None, debug: Debug = False):
    """Audio to audio with ThinkSound: a variation of a track (a run's best), or a regenerated time window."""
    from agent import outputs, runs
    from contract.errors import BackendError, ModelMissing

    window = tuple(window) if window and None not in window else None
    if strength is None:
        strength = 1.0 if window else DEFAULT_VARIATION_STRENGTH
    if not 0.0 <= strength <= 1.0 or (window and strength == 0.0):
        raise UserError(f"--strength must be in 0..1 (and > 0 with --window), got {strength}")
    st = writable_store(ctx)
    src = runs.edit_source(st, source)
    audio, duration = runs.load_edit_audio(src.audio_path)
    if window and not (0 <= window[0] < window[1] and window[0] < duration):
        raise UserError(f"--window {window[0]:g} {window[1]:g} must satisfy 0 <= START < END, START < {duration:.2f} s")
    new_plan = _edit_plan(plan, prompt, src, duration)
    stem = src.run.id if src.run else src.audio_path.stem
    out_path = outputs.check_out(out if out is not None else free_path(Path.cwd() / f"{stem}.edit.wav"), "audio",
                                 inputs=[src.audio_path], force=force)
    cfg = build_config(rounds=1, seed=seed, renderer="thinksound", device=device, dtype=dtype,
                       renderer_opts=renderer_options(weights, steps, cfg_scale, metaclip, t5, synchformer))
    what = f"window {window[0]:g}-{window[1]:g} s" if window else "variation"
    err_console.print(f"edit ({what}, strength {strength:g}) of {src.describe()}")
    try:
        run_id = runs.edit(st, src, audio, new_plan, cfg, strength, window, out_path, force=force,
                           on_event=Progress())
    except ModelMissing:
        raise
    except (BackendError, ValueError) as exc:
        raise as_user_error(exc) from None
    run = st.get_run(run_id)
    out_console.print(f"run {run.id} done (edit, {run.timings().get('node:render', 0):.1f} s); "
                      f"output: {run.output_path}")
