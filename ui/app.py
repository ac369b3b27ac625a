"""Studio entry point (`foleyloop ui` runs it with Streamlit): a router over the four pages."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# `streamlit run ui/app.py` puts ui/ first on the path, where a module named like a top-level package (models,
# store, agent …) would shadow it: only the repository root is kept, first.
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() not in (HERE, HERE.parent)]

import streamlit as st  # noqa: E402

from store.db import StoreError  # noqa: E402
from ui.common import store_error  # noqa: E402

st.set_page_config(page_title="foleyloop studio", page_icon=":material/graphic_eq:", layout="wide")

PAGES = [
    st.Page(HERE / "views" / "runs.py", title="Runs", icon=":material/list:", url_path="runs", default=True),
    st.Page(HERE / "views" / "run.py", title="Run", icon=":material/movie:", url_path="run"),
    st.Page(HERE / "views" / "review.py", title="Review queue", icon=":material/rate_review:", url_path="review"),
    st.Page(HERE / "views" / "new_run.py", title="New run", icon=":material/add:", url_path="new"),
    st.Page(HERE / "views" / "evaluations.py", title="Evaluations", icon=":material/analytics:", url_path="evals"),
]
try:
    st.navigation(PAGES).run()
except StoreError as exc:  # the database failed under a page (damaged, locked, read-only): a sentence, not a trace
    store_error(exc)
