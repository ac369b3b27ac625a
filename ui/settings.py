"""Studio settings, read from the environment so that `foleyloop ui` can hand them to the Streamlit process."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ENV_DB = "FOLEYLOOP_DB"
ENV_MAX_MB = "FOLEYLOOP_UPLOAD_MAX_MB"
ENV_TYPES = "FOLEYLOOP_UPLOAD_TYPES"
ENV_REFRESH = "FOLEYLOOP_UI_REFRESH_S"
ENV_PAGE_SIZE = "FOLEYLOOP_UI_PAGE_SIZE"

DEFAULT_MAX_MB = 200
DEFAULT_TYPES = ("mp4", "mov", "mkv", "webm", "m4v", "avi")


@dataclass(frozen=True)
class StudioSettings:
    db: Path | None = None  # None: the Store's default ($FOLEYLOOP_HOME/foleyloop.db)
    upload_max_mb: int = DEFAULT_MAX_MB
    upload_types: tuple[str, ...] = field(default=DEFAULT_TYPES)
    refresh_s: float = 2.0  # live-progress poll interval while a run is queued or running
    page_size: int = 50

    @property
    def upload_max_bytes(self) -> int:
        return self.upload_max_mb * 1024 * 1024

    def env(self) -> dict[str, str]:
        """The variables that reproduce these settings in a child process."""
        out = {ENV_MAX_MB: str(self.upload_max_mb), ENV_TYPES: ",".join(self.upload_types),
               ENV_REFRESH: str(self.refresh_s), ENV_PAGE_SIZE: str(self.page_size)}
        if self.db is not None:
            out[ENV_DB] = str(self.db)
        return out


def parse_types(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return DEFAULT_TYPES
    return tuple(t.strip().lower().lstrip(".") for t in raw.split(",") if t.strip())


def load() -> StudioSettings:
    db = os.environ.get(ENV_DB)
    return StudioSettings(db=Path(db).expanduser().resolve() if db else None,
                          upload_max_mb=int(os.environ.get(ENV_MAX_MB, DEFAULT_MAX_MB)),
                          upload_types=parse_types(os.environ.get(ENV_TYPES)),
                          refresh_s=float(os.environ.get(ENV_REFRESH, 2.0)),
                          page_size=max(1, int(os.environ.get(ENV_PAGE_SIZE, 50))))
