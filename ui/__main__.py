"""`python -m ui`: serve the studio. `foleyloop ui` execs this (a process boundary, so the CLI never imports
the studio's modules and the layers stay one-way)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ui import launch
from ui.settings import DEFAULT_MAX_MB, StudioSettings, parse_types

log = logging.getLogger("ui")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ui", description="Serve the foleyloop studio (Streamlit).")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--db", type=Path, default=None)
    p.add_argument("--max-upload-mb", type=int, default=DEFAULT_MAX_MB)
    p.add_argument("--upload-types", default=None)
    a = p.parse_args(argv)
    settings = StudioSettings(db=a.db, upload_max_mb=a.max_upload_mb, upload_types=parse_types(a.upload_types))
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the studio has no login; binding to %s exposes it to the network", a.host)
    launch.serve(a.port, a.host, settings)


if __name__ == "__main__":
    main()
