"""Run page: listen to every round with the video, read and diff its plans, compare scores, edit and regenerate."""

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from agent.config import RunConfig
from contract.plan import SECTIONS, Critique, Plan, PlanInvalid
from store import media
from ui import common, components, editor, errors, licences, playback, queries
from ui.components import md_escape, md_table

# Every text from a model or a user (plans, findings, changes, errors, file names, the address bar) is shown as
# plain text (st.text) or escaped (md_escape): a Markdown image in a plan must not become a request to any URL.

store, cfg = common.store(), common.settings()

run_id = st.query_params.get("run", "")
if not run_id:
    st.title("Run")
    entered = st.text_input("Run id (or a unique prefix)", key="run:lookup")
    if entered:
        st.query_params["run"] = entered.strip()
        st.rerun()
    st.page_link("views/runs.py", label="Back to all runs", icon=":material/list:")
    st.stop()

run = store.get_run(run_id)
if run is None:
    st.title("Run")
    shown = run_id if len(run_id) <= 64 else f"{run_id[:64]}…"  # no id of ours is longer; the address bar may be
    st.error(f"There is no run '{md_escape(shown)}' in {md_escape(store.db_path)}.")
    st.page_link("views/runs.py", label="Back to all runs", icon=":material/list:")
    st.stop()
if run.id != run_id:  # a prefix was given: show the canonical id in the address bar
    st.query_params["run"] = run.id

st.title(f"Run {run.id}")
source = Path(run.video_path).name if run.video_path else (run.prompt or "text-to-audio")
st.caption(f"{run.kind} · {md_escape(source)} · {common.fmt(run.duration_s, 2)} s · created "
           f"{run.created_at.strftime('%Y-%m-%d %H:%M:%S')} UTC · {run.n_rounds} rounds")

jobs = queries.active_jobs(store, run.id)
active = run.status in ("queued", "running") or bool(jobs)


@st.fragment(run_every=cfg.refresh_s if active else None)
def live_status(initial_status: str, initial_rounds: int, initial_jobs: int) -> None:
    """Polls the DB while the run works, and reloads the whole page when a round or the status changes."""
    now = store.get_run(run.id)
    open_jobs = queries.active_jobs(store, run.id)
    rounds_now = len(store.rounds(run.id))
    if (now.status, rounds_now, len(open_jobs)) != (initial_status, initial_rounds, initial_jobs):
        st.rerun()
    line = f"**Status:** {common.status_label(now.status)}"
    if now.stop_reason:
        line += f" · **stop reason:** {md_escape(now.stop_reason)}"
    st.markdown(line)
    for job in open_jobs:
        who = f"worker {job.worker_id}, heartbeat {common.ago(job.heartbeat_at)}" if job.worker_id else \
            "waiting for a worker (`foleyloop worker`)"
        st.info(f"Job {job.id} ({job.kind}) is {job.status}: {md_escape(who)}.")
    events = store.node_events(run.id)
    if events and (now.status in ("queued", "running") or open_jobs):
        last = events[-1]
        st.caption(f"Current step: {md_escape(last.node)} (round {last.round_index}) {last.status}, started "
                   f"{common.ago(last.started_at)}")


live_status(run.status, len(store.rounds(run.id)), len(jobs))
if run.error:
    st.error(md_escape(errors.plain(run.error)))
for b, rec in sorted(run.branches().items(), key=lambda kv: int(kv[0])):
    if b != "0" and rec.get("status") == "failed":  # a failed fork: the run itself is as it was (agent.runs)
        st.warning(md_escape(f"Branch {b} failed: {errors.plain(rec.get('error')) or 'no reason was recorded'}. "
                             f"The run, its best round and its output are unchanged; its rounds are kept below. "
                             f"foleyloop resume {run.id} --retry-failed tries the branch again."))

rounds = store.rounds(run.id)
if not rounds:
    if run.status == "failed":
        st.warning("This run failed before it wrote a plan, so there is nothing to listen to or edit.")
    else:
        st.info("No round yet: the watcher has not written a plan. This page updates by itself.")
    st.stop()

by_id = {r.id: r for r in rounds}
best = by_id.get(run.best_round_id)
best_ids = {b.get("best_round_id") for b in run.branches().values()} | {run.best_round_id}
if best is not None:
    cols = st.columns(6)
    cols[0].metric("best overall", common.fmt(best.score_overall))
    for col, dim in zip(cols[1:5], components.DIMS):
        col.metric(dim, common.fmt(best.scores()[dim]))
    cols[5].metric("best round", components.round_label(best))


def _round_name(r) -> str:
    star = " ★" if r.id in best_ids else ""
    note = " (replaced by a human edit)" if r.status == "replaced" else ""
    return f"{components.round_label(r)} · {r.author} · overall {common.fmt(r.score_overall)}{star}{note}"


default = rounds.index(best) if best in rounds else len(rounds) - 1
rnd = st.selectbox("Round (branch.index)", rounds, index=default, format_func=_round_name,
                   key=f"run:{run.id}:round")
try:  # stored rows are read without the size bounds, so an old oversized plan can still be shown
    plan = Plan.from_stored(rnd.plan_json)
except PlanInvalid as exc:
    st.error(f"The plan stored with round {components.round_label(rnd)} cannot be read: {md_escape(exc)}")
    st.code(rnd.plan_json[:20_000], language="json")
    st.stop()
parent = by_id.get(rnd.parent_round_id) or (store.get_round(rnd.parent_round_id) if rnd.parent_round_id else None)


@st.cache_data(max_entries=32, show_spinner=False)
def _audio_frames(path: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    audio, sr = media.read_audio(path)
    return components.envelope(audio, sr), components.spectrogram(audio, sr)


listen, plan_tab, scores_tab, edit_tab, timing_tab, models_tab = st.tabs(
    ["Listen", "Plan", "Scores", "Edit & regenerate", "Timings", "Models"])

with listen:
    audio_path = playback.round_audio(store, rnd)
    watch, look = st.columns([2, 3])
    with watch:
        if audio_path is None:
            st.info(f"Round {components.round_label(rnd)} has no audio yet (status: {rnd.status}).")
            if run.video_path and Path(run.video_path).is_file():
                st.video(run.video_path)
        else:
            if run.video_path:
                with st.spinner("Putting this round's audio on the video…"):
                    video = playback.muxed(store, run, rnd)
                if video is not None:
                    st.video(str(video))
                elif Path(run.video_path).is_file():
                    st.warning("This round could not be muxed into the video for playback; the video and the "
                               "audio play separately below.")
                    st.video(run.video_path)
                else:
                    st.warning(f"The source video is gone: {md_escape(run.video_path)}")
            st.audio(str(audio_path))
    with look:
        if audio_path is not None:
            try:
                env, spec = _audio_frames(str(audio_path))
                st.markdown("**Waveform** with the plan's events (impacts are lines, continuous sounds are bands)")
                st.altair_chart(components.waveform_chart(env, plan), width="stretch")
                st.markdown("**Spectrogram** (log frequency)")
                st.altair_chart(components.spectrogram_chart(spec, plan), width="stretch")
            except media.MediaError as exc:
                st.warning(f"The audio of this round cannot be read: {md_escape(exc)}")

with plan_tab:
    st.markdown("**Caption**")
    st.text(plan.caption or "—")
    for s in SECTIONS:
        st.markdown(f"**{s.capitalize()}**")
        st.text(getattr(plan, s) or "—")
    st.markdown("**Events**")
    st.dataframe(editor.events_table(plan), hide_index=True, width="stretch")
    st.markdown("**Negatives**")
    st.text(", ".join(plan.negatives) or "—")
    segment_rows = components.segments_frame(plan, rnd.critique_json)
    if not segment_rows.empty:
        st.markdown("**Segments** (rendered one window each, joined with crossfades; dashed lines on the timeline)")
        st.dataframe(segment_rows, hide_index=True, width="stretch")
    budget = plan.cot_budget_report()
    st.caption(f"CoT: {budget['tokens']} / {budget['budget']} tokens"
               + ("" if budget["fits"] else f" ({budget['overflow']} over: the end is cut off)")
               + f" · author {plan.provenance.author} · backend {md_escape(plan.provenance.backend or '—')} · "
                 f"plan {md_escape(plan.plan_id)}")
    try:
        changes = json.loads(rnd.changes_json or "[]")
    except ValueError:
        changes = [rnd.changes_json]
    if changes:
        st.markdown("**What the refiner changed**")
        st.text("\n".join(f"- {c}" for c in (changes if isinstance(changes, list) else [changes])))
    st.subheader("Changes against the parent round")
    if parent is None:
        st.caption("This is the first plan of its branch; it has no parent.")
    else:
        try:
            diffs = components.plan_diff(Plan.from_stored(parent.plan_json), plan)
        except PlanInvalid as exc:
            diffs = {}
            st.warning(f"The parent's stored plan cannot be read: {md_escape(exc)}")
        st.caption(f"Parent: round {components.round_label(parent)} ({parent.author})")
        if not diffs:
            st.caption("Same plan as its parent (only the seed or the render changed).")
        for section, text in diffs.items():
            st.markdown(f"*{md_escape(section)}*")
            st.code(text, language="diff")

with scores_tab:
    chart = components.score_chart(rounds, RunConfig.model_validate_json(run.config_json).thresholds)
    if chart is None:
        st.info("No round has been scored yet.")
    else:
        st.altair_chart(chart, width="stretch")
    st.table(md_table(components.scores_table(rounds)), hide_index=True)
    try:
        crit = Critique.from_json(rnd.critique_json) if rnd.critique_json else None
    except ValueError as exc:
        crit = None
        st.warning(f"The critique stored with this round cannot be read: {md_escape(exc)}")
    if crit is not None:
        st.markdown(f"**Findings for round {components.round_label(rnd)}**")
        if crit.findings:
            st.text("\n".join(f"- {f.target}: {f.problem}" + (f" → {f.suggestion}" if f.suggestion else "")
                               for f in crit.findings))
        if crit.scorers:
            st.dataframe(pd.DataFrame([s.model_dump() for s in crit.scorers]), hide_index=True)

with edit_tab:
    st.caption(f"Editing round {components.round_label(rnd)}. Regenerating forks a new branch of rounds from "
               "your plan; nothing that exists is overwritten.")
    result = editor.plan_editor(plan, key=f"edit:{run.id}:{rnd.id}")
    run_cfg = RunConfig.model_validate_json(run.config_json)
    n = st.number_input("Rounds for the new branch", 1, 20, run_cfg.rounds, key=f"edit:{run.id}:{rnd.id}:rounds")
    blocked = run.status in ("queued", "running", "review") or bool(jobs)
    if blocked:
        st.info("This run is busy (queued, running, or waiting for review); regenerate once it has finished.")
    read_only = common.read_only_note(store, "regenerating needs to write")
    if result.plan is not None and not result.changed:
        st.caption("The plan is unchanged: the new branch re-renders it with the same seed.")
    if st.button("Regenerate from this plan", type="primary", disabled=blocked or read_only or result.plan is None,
                 key=f"edit:{run.id}:{rnd.id}:go"):
        from agent import runs  # langgraph is slow to import; only this button needs it

        try:  # the service checks the plan against the video (the CLI's and the worker's check) before recording
            branch, new_round = runs.fork(store, run.id, rnd.id, result.plan)
        except PlanInvalid as exc:
            st.error(f"This plan cannot be regenerated: {md_escape(exc)}")
        else:
            job = store.enqueue("regenerate", run.id, branch=branch, round_id=new_round, rounds=int(n))
            st.session_state["run:flash"] = (f"Branch {branch} queued (job {job.id}); its rounds appear here as they "
                                             "finish.")
            st.rerun()
    if msg := st.session_state.pop("run:flash", None):
        st.success(msg)

with timing_tab:
    timings = run.timings()
    if timings:
        st.table(md_table(pd.DataFrame([{"step": k, "seconds": f"{v:.2f}"} for k, v in sorted(timings.items())])),
                 hide_index=True)
    events = store.node_events(run.id)
    if events:
        st.markdown("**Node events**")
        st.dataframe(pd.DataFrame([{"node": e.node, "round": e.round_index, "status": e.status,
                                    "seconds": e.seconds, "started": e.started_at, "detail": e.detail[:200]}
                                   for e in events]), hide_index=True, width="stretch")
    history = queries.jobs_for_run(store, run.id)
    if history:
        st.markdown("**Jobs**")
        st.dataframe(pd.DataFrame([{"job": j.id, "kind": j.kind, "status": j.status, "attempts": j.attempts,
                                    "worker": j.worker_id, "error": errors.plain(j.error)} for j in history]),
                     hide_index=True, width="stretch")


@st.cache_data(ttl=600, show_spinner=False)
def _licences(backends_json: str, config_json: str) -> list[dict]:
    return licences.licence_rows(json.loads(backends_json or "{}"), config_json)


with models_tab:
    rows = _licences(run.backends_json, run.config_json)
    if rows:
        st.table(md_table(pd.DataFrame(rows)), hide_index=True)
    else:
        st.caption("No backend was recorded for this run.")
