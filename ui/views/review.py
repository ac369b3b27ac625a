"""Review queue: runs paused at the human-review interrupt. Approve the plan, or edit it, and a worker resumes."""

from pathlib import Path

import pandas as pd
import streamlit as st

from agent import runs
from contract.plan import Plan, PlanInvalid
from ui import common, editor, queries
from ui.components import md_escape, md_table

store = common.store()
st.title("Review queue")
if msg := st.session_state.pop("review:flash", None):
    st.success(msg)

queue = queries.review_queue(store)
if not queue:
    st.info("No run is waiting for review. Runs started with review on pause here after the watcher has "
            "written its plan.")
    st.stop()

waiting = {r.id: queries.active_jobs(store, r.id, kind="resume") for r in queue}
st.table(md_table(pd.DataFrame([{
    "run": r.id, "video": Path(r.video_path).name if r.video_path else r.prompt[:40],
    "duration (s)": common.fmt(r.duration_s, 1), "waiting since": common.ago(r.updated_at),
    "answer": f"queued (job {waiting[r.id][0].id})" if waiting[r.id] else "needed",
} for r in queue])), hide_index=True)  # st.table renders Markdown: the prompt/file name is escaped

ids = [r.id for r in queue]
wanted = st.query_params.get("run")
run_id = st.selectbox("Run to review", ids, index=ids.index(wanted) if wanted in ids else 0, key="review:run")
run = next(r for r in queue if r.id == run_id)
st.page_link("views/run.py", label=f"Open run {run.id}", icon=":material/movie:", query_params={"run": run.id})

if waiting[run.id]:
    job = waiting[run.id][0]
    st.success(f"Your answer for run {run.id} is queued as job {job.id} ({job.status}); a worker will continue "
               "the run from its checkpoint.")
    st.stop()

pending = runs.pending_review(store, run.id)
if pending is None:
    st.warning(f"Run {run.id} is marked for review but has no paused step to answer (it may have been resumed "
               "from the command line). Open the run page for its current state.")
    st.stop()

try:
    plan = Plan.from_stored(pending["plan"])
except PlanInvalid as exc:
    st.error(f"The paused plan of run {run.id} cannot be read: {md_escape(exc)}")
    st.stop()
st.markdown(f"**The watcher's plan** (round id {md_escape(pending.get('round_id'))}):")
st.text(plan.caption or "—")  # model text: plain, never Markdown
read_only = common.read_only_note(store, "answering a review needs to write")
if st.button("Approve this plan", type="primary", key=f"review:{run.id}:approve", disabled=read_only):
    job = store.enqueue("resume", run.id, answer={"action": "approve"})
    st.session_state["review:flash"] = f"Approved run {run.id}: resume queued as job {job.id}."
    st.rerun()

st.subheader("…or edit it, then approve your version")
result = editor.plan_editor(plan, key=f"review:{run.id}")
if st.button("Approve with my edits", key=f"review:{run.id}:edit",
             disabled=read_only or result.plan is None or not result.changed):
    try:  # the check the worker's runs.resume makes, said now rather than as a failed job
        answer = runs.check_plan(result.plan, runs.plan_length(run)).to_json()
    except PlanInvalid as exc:
        st.error(f"This plan cannot answer the review: {md_escape(exc)}")
    else:
        job = store.enqueue("resume", run.id, answer={"action": "edit", "plan": answer})
        st.session_state["review:flash"] = f"Edited plan for run {run.id} queued as job {job.id}."
        st.rerun()
if result.plan is not None and not result.changed:
    st.caption("Change something above to approve an edited plan.")
