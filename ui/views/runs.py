"""Runs page: the history, filtered and paginated in SQL (count + one page), newest first."""

from datetime import date

import pandas as pd
import streamlit as st

from ui import common, queries

store, cfg = common.store(), common.settings()
st.title("Runs")

counts = queries.status_counts(store)
statuses = ["any"] + sorted(counts)
c1, c2, c3 = st.columns([1, 1, 2])
status = c1.selectbox("Status", statuses, format_func=lambda s: s if s == "any" else f"{s} ({counts[s]})",
                      key="runs:status")
dates = c2.date_input("Created between", value=(), key="runs:dates", format="YYYY-MM-DD")
text = c3.text_input("Search (run id, video file, prompt)", key="runs:text", max_chars=200)

since = until = None
if isinstance(dates, (tuple, list)) and dates:
    since = dates[0]
    until = dates[1] if len(dates) > 1 else dates[0]
elif isinstance(dates, date):
    since = until = dates
flt = queries.RunFilter(status=None if status == "any" else status, text=text, since=since, until=until)

total = queries.count_runs(store, flt)
if total == 0:
    if not counts:
        st.info("No runs yet. Start one on the **New run** page, or with `foleyloop dub VIDEO`.")
    else:
        st.info("No run matches these filters.")
    st.page_link("views/new_run.py", label="New run", icon=":material/add:")
    st.stop()

pages = max(1, -(-total // cfg.page_size))
page = st.session_state.get("runs:page", 1)
page = min(max(1, page), pages)
rows = queries.runs_page(store, flt, page, cfg.page_size)
first = (page - 1) * cfg.page_size + 1
st.caption(f"{total} runs match · showing {first}–{first + len(rows) - 1}")

table = pd.DataFrame([{
    "run": common.run_url(r.id), "created": r.created_at.strftime("%Y-%m-%d %H:%M"),
    "status": r.status, "kind": r.kind, "video / prompt": r.source,
    "duration (s)": r.duration_s, "rounds": r.rounds, "overall": r.best_overall,
    **{d: r.scores[d] for d in queries.SCORE_COLUMNS}, "backends": r.backends,
    "stop / error": r.stop_reason or (r.error or "")[:80],
} for r in rows])
st.dataframe(table, hide_index=True, width="stretch", key="runs:table", column_config={
    "run": st.column_config.LinkColumn("run", display_text=r"run=(\w+)", help="open the run page"),
    "duration (s)": st.column_config.NumberColumn(format="%.1f"),
    **{c: st.column_config.NumberColumn(format="%.3f") for c in ("overall", *queries.SCORE_COLUMNS)},
})
if pages > 1:
    st.pagination(pages, default=page, key="runs:page")
