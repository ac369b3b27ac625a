"""`foleyloop runs`, `show` and `plan`: what the database holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from agent.cli.common import (AsJson, Db, Debug, RoundRef, fmt, get_run, out_console, round_by_ref, store,
                              stored_plan)
from contract import segments as segs
from contract.errors import UserError
from contract.plan import Critique, Plan

app = typer.Typer()
MAX_LIMIT = 1_000_000


@app.command()
def runs(ctx: typer.Context, status: Annotated[Optional[str], typer.Option("--status")] = None,
         limit: Annotated[int, typer.Option("--limit")] = 20, as_json: AsJson = False, db: Db = None,
         debug: Debug = False):
    """List recent runs."""
    if not 0 <= limit <= MAX_LIMIT:  # SQLite cannot bind a 24-digit number; a negative LIMIT means "all"
        raise UserError(f"--limit must be between 0 and {MAX_LIMIT}, got {limit}")
    rows = store(ctx).list_runs(status=status, limit=limit)
    if as_json:
        out_console.print_json(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    t = Table("run", "created", "status", "kind", "video / prompt", "dur (s)", "rounds", "best", "stop")
    for r in rows:
        t.add_row(r.id, r.created_at.strftime("%Y-%m-%d %H:%M"), r.status, r.kind,
                  Path(r.video_path).name if r.video_path else r.prompt[:30], fmt(r.duration_s), str(r.n_rounds),
                  fmt(r.best_overall), r.stop_reason or (r.error or "")[:40])
    out_console.print(t)


def print_plan(plan: Plan, title: str) -> None:
    """The plan as a reader wants it: caption, the four sections, negatives, then the timed events."""
    out_console.print(f"[bold]{title}[/bold]: {plan.caption or '—'}  ({plan.duration_s:g} s)", highlight=False)
    for name in ("semantic", "temporal", "aesthetic", "spatial"):
        text = getattr(plan, name)
        if text:
            out_console.print(f"  {name}: {text}", highlight=False)
    if plan.negatives:
        out_console.print(f"  negatives: {', '.join(plan.negatives)}", highlight=False)
    if plan.events:
        t = Table("event", "kind", "start (s)", "end (s)", "label", "gain (dB)", "pan")
        for e in plan.events:
            t.add_row(e.id, e.kind.value, f"{e.start_s:.2f}", f"{e.end_s:.2f}", e.label, f"{e.gain_db:g}",
                      f"{e.pan:g}")
        out_console.print(t)


def print_segments(plan: Plan, rounds: list) -> None:
    """A segmented plan's segments, one row each: span, how it starts, scene, its events, its caption, and per
    round its overall score (``*`` = rendered in that round, otherwise its audio was reused)."""
    own = segs.owners(plan)
    scored = []
    for r in rounds:
        try:
            crit = Critique.from_json(r.critique_json) if r.critique_json else None
        except ValueError:
            crit = None
        if crit is not None and crit.segments:
            scored.append((f"{r.branch}.{r.index}", {p.index: p for p in crit.segments}))
    t = Table("segment", "span (s)", "starts at", "scene", "events", "caption", *(f"round {n}" for n, _ in scored))
    for s in plan.segments or []:
        cells = []
        for _, parts in scored:
            p = parts.get(s.index)
            cells.append("—" if p is None else f"{fmt(p.overall)}{'*' if p.rendered else ''}")
        start = "cut" if s.cut else ("split" if s.index else "start")
        t.add_row(str(s.index), s.span_text().replace(" s", ""), start, str(s.scene),
                  str(sum(1 for k in own.values() if k == s.index)), s.caption or plan.caption, *cells)
    out_console.print(f"segments: {len(plan.segments or [])} (score per round; * = rendered that round, "
                      "otherwise reused)", highlight=False)
    out_console.print(t)


@app.command()
def show(ctx: typer.Context,
         run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough) or 'last'")],
         as_json: AsJson = False, db: Db = None, debug: Debug = False):
    """Rounds, per-dimension scores, stop reason and the kept plan (the best round's) of a run."""
    from agent.runs import best_round, branch_status

    st = store(ctx)
    run = get_run(st, run_id)
    rounds = st.rounds(run.id)
    best = best_round(st, run)
    if as_json:
        out_console.print_json(json.dumps({"run": run.model_dump(mode="json"),
                                           "rounds": [r.model_dump(mode="json") for r in rounds],
                                           "best_round_id": best.id if best else None}))
        return
    out_console.print(f"[bold]run {run.id}[/bold]  {run.kind}  status={run.status}  stop={run.stop_reason}")
    out_console.print(f"video: {run.video_path or '—'}  duration: {fmt(run.duration_s)} s")
    out_console.print(f"backends: {json.dumps({k: v for k, v in run.backends().items() if k != 'options'})}")
    if run.error:
        out_console.print(f"[red]error:[/red] {run.error}", highlight=False)
    t = Table("round", "id", "author", "seed", "semantic", "temporal", "aesthetic", "spatial", "overall", "status",
              "best")
    best_ids = {b.get("best_round_id") for b in run.branches().values()}
    for r in rounds:
        mark = "★★" if best and r.id == best.id else "★" if r.id in best_ids else ""
        t.add_row(f"{r.branch}.{r.index}", str(r.id), r.author, str(r.seed), fmt(r.score_semantic),
                  fmt(r.score_temporal), fmt(r.score_aesthetic), fmt(r.score_spatial), fmt(r.score_overall),
                  r.status, mark)
    out_console.print(t)
    for r in rounds:  # what each refine changed, and the loop's verdict on it (data: printed as plain text)
        changes = _changes(r.changes_json)
        if changes:
            out_console.print(f"round {r.branch}.{r.index} changes:", highlight=False)
            for c in changes:
                out_console.print(f"  - {c}", markup=False, highlight=False)
    for b, rec in sorted(run.branches().items(), key=lambda kv: int(kv[0])):
        status = branch_status(rec)
        line = f"branch {b}: {status}"
        if status == "failed":
            line += f" ({rec.get('error')}); `foleyloop resume {run.id} --retry-failed` retries it"
        elif status == "done":
            line += f" stop={rec.get('stop_reason')} best round id={rec.get('best_round_id')} " \
                    f"output={rec.get('output_path')}"
        out_console.print(line, highlight=False)
    if best is not None:
        out_console.print(f"best: round {best.branch}.{best.index} (id {best.id}), overall {fmt(best.score_overall)}"
                          " (★★; ★ = each branch's best)")
        where = f"round {best.branch}.{best.index}"
        kept = stored_plan(best.plan_json, f"{where} of run {run.id}")
        print_plan(kept, f"kept plan ({where})")
        if kept.segments:
            print_segments(kept, [r for r in rounds if r.branch == best.branch])
    timings = run.timings()
    if timings:
        out_console.print("timings (s): " + ", ".join(f"{k}={v:.2f}" for k, v in sorted(timings.items())))


def _changes(raw: str | None) -> list[str]:
    """A round's stored change list; anything unreadable (an older or damaged row) shows as nothing, not a crash."""
    try:
        got = json.loads(raw or "[]")
    except ValueError:
        return []
    return [str(c)[:2000] for c in got] if isinstance(got, list) else []


@app.command("plan")
def export_plan(ctx: typer.Context, run_id: str, round_ref: RoundRef = "0",
                segment: Annotated[Optional[int], typer.Option(
                    "--segment", help="Print this segment's own plan (its time starts at its render window)")] = None,
                db: Db = None, debug: Debug = False):
    """Print a round's plan as JSON (edit it, then `regenerate`); a segmented plan lists its segments."""
    st = store(ctx)
    run = get_run(st, run_id)
    rnd = round_by_ref(st, run, round_ref)
    plan = stored_plan(rnd.plan_json, f"round {rnd.branch}.{rnd.index} of run {run.id}")
    if segment is None:
        print(plan.to_json())
        return
    n = len(plan.segments or [])
    if not 0 <= segment < n:
        raise UserError(f"--segment {segment}: round {rnd.branch}.{rnd.index} has "
                        + (f"segments 0–{n - 1}" if n else "no segments (a single render window)"))
    print(segs.sub_plan(plan, segment).to_json())
