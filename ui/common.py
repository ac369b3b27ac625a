"""What every studio page shares: the settings, one Store per database file, and small formatting helpers."""

from __future__ import annotations

from datetime import datetime, timezone

import streamlit as st

from store.db import Store
from ui import settings as settings_mod

STATUS_ICON = {"queued": ":material/schedule:", "running": ":material/autorenew:", "review": ":material/rate_review:",
               "done": ":material/check_circle:", "failed": ":material/error:"}


def settings() -> settings_mod.StudioSettings:
    return settings_mod.load()


@st.cache_resource(show_spinner=False)
def _store(db: str | None) -> Store:
    return Store(db) if db else Store()


def store() -> Store:
    db = settings().db
    return _store(str(db) if db else None)


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
