"""What every studio page shares: the settings, one Store per database file, and small formatting helpers."""

from __future__ import annotations

from datetime import datetime, timezone

import streamlit as st

from store.db import Store, StoreError
from ui import settings as settings_mod
from ui.components import md_escape

STATUS_ICON = {"queued": ":material/schedule:", "running": ":material/autorenew:", "review": ":material/rate_review:",
               "done": ":material/check_circle:", "failed": ":material/error:"}


def settings() -> settings_mod.StudioSettings:
    return settings_mod.load()


@st.cache_resource(show_spinner=False)
def _store(db: str | None) -> Store:
    return Store(db) if db else Store()


def store() -> Store:
    """The configured database's Store. One that cannot be opened (not SQLite, a folder, an unusable home, a newer
    schema) is said in plain words and the page stops: no traceback in the studio."""
    db = settings().db
    try:
        return _store(str(db) if db else None)
    except StoreError as exc:
        store_error(exc)
        st.stop()


def store_error(exc: StoreError) -> None:
    """A database problem on the page; the message names a path (user text), so it is escaped."""
    st.error(f"The database cannot be used: {md_escape(exc)}")


def read_only_note(store: Store, what: str) -> bool:
    """True (with a note saying so) when the database is read-only and ``what`` would have to write."""
    if store.read_only:
        st.info(f"The database {md_escape(store.db_path)} is read-only: runs can be viewed, but {what}.")
    return store.read_only


def fmt(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def status_label(status: str) -> str:
    """Markdown (icon + word); tables take the bare word, since they do not render icons."""
    return f"{STATUS_ICON.get(status, '')} {status}".strip()


def ago(when: datetime | None) -> str:
    if when is None:
        return "never"
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    s = max(0.0, (datetime.now(timezone.utc) - when).total_seconds())
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago" if s < 7200 else f"{s / 3600:.1f} h ago"


def run_url(run_id: str) -> str:
    return f"/run?run={run_id}"
