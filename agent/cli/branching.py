"""`foleyloop resume` and `foleyloop regenerate`: continue a run, or fork a branch from an edited plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.cli.common import (Db, Debug, Force, Out, Progress, Rounds, get_run, load_plan, out_console, report,
                              round_by_ref, stored_plan, writable_store)

app = typer.Typer()


@app.command()
def resume(ctx: typer.Context, run_id: str,
           plan: Annotated[Optional[Path], typer.Option("--plan", help="Edited plan (answers a review pause)")] = None,
           retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Also retry forks that failed")] = False,
           db: Db = None, debug: Debug = False):
    """Continue a killed or failed run, or answer a review pause (approve, or --plan EDITED.json)."""
    from agent import runs

    st = writable_store(ctx)
    run = get_run(st, run_id)
    answer = {"action": "edit", "plan": load_plan(plan, runs.plan_length(run)).to_json()} if plan else \
        {"action": "approve"}
    if not runs.open_branches(st, run.id, retry_failed):
        failed = runs.failed_branches(st, run.id)
        hint = f"; failed forks {', '.join(map(str, failed))} (retry them with --retry-failed)" if failed else ""
        out_console.print(f"run {run.id} is already {run.status}: nothing to resume{hint}")
        return
    result = runs.resume(st, run.id, answer, on_event=Progress(), retry_failed=retry_failed)
    report(st, run.id, result)


@app.command()
def regenerate(ctx: typer.Context, run_id: str,
               round_ref: Annotated[str, typer.Option("--round", help="K or BRANCH.K to fork from")],
               plan: Annotated[Path, typer.Option("--plan", help="Edited plan JSON")],
               out: Out = None, force: Force = False, rounds: Rounds = None, db: Db = None, debug: Debug = False):
    """Fork a new branch of rounds from an edited plan (nothing is overwritten; a failed fork leaves the run as
    it was)."""
    from agent import outputs, runs

    st = writable_store(ctx)
    run = get_run(st, run_id)
    parent = round_by_ref(st, run, round_ref)
    stored_plan(parent.plan_json, f"round {parent.branch}.{parent.index} of run {run.id}")
    new_plan = load_plan(plan, runs.plan_length(run))
    suffix = (Path(run.video_path).suffix.lower() or ".mp4") if run.video_path else ".wav"
    if run.video_path and suffix not in outputs.VIDEO_OUT_SUFFIXES:
        suffix = ".mp4"
    default = Path.cwd() / f"{run.id}.b{st.next_branch(run.id)}{suffix}"
    codec = json.loads(run.video_info_json or "{}").get("video_codec") if run.video_path else None
    out_path = outputs.check_out(out if out is not None else default, "video" if run.video_path else "audio",
                                 inputs=[run.video_path] if run.video_path else [], force=force, video_codec=codec)
    branch, _ = runs.regenerate(st, run.id, parent.id, new_plan, out_path, rounds, force=force, on_event=Progress())
    rec = st.get_run(run.id).branches().get(str(branch), {})
    out_console.print(f"run {run.id} branch {branch} done ({rec.get('stop_reason')}); "
                      f"output: {rec.get('output_path')}")
