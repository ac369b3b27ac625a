"""`foleyloop ui` and `foleyloop worker`, registered on the main CLI by ``agent.cli``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from contract.errors import UserError

log = logging.getLogger(__name__)


def _db(ctx: typer.Context, db: Optional[Path]) -> Optional[Path]:
    """The command's --db, else the global one (read from the root context: `python -m agent.cli` runs the CLI
    as __main__, so ``agent.cli.STATE`` is a different, empty copy there)."""
    from agent.cli import STATE

    chosen = db or ctx.find_root().params.get("db") or STATE.get("db")
    return Path(chosen).expanduser().resolve() if chosen else None


def register(app: typer.Typer) -> None:
    if any(c.name in ("ui", "worker") for c in app.registered_commands):  # main() may run more than once
        return

    @app.command("ui")
    def ui_cmd(ctx: typer.Context,
               port: int = typer.Option(8501, "--port", help="Port to serve the studio on"),
               host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (localhost by default)"),
               db: Optional[Path] = typer.Option(None, "--db", help="SQLite file (overrides the global --db)"),
               max_upload_mb: int = typer.Option(200, "--max-upload-mb", min=1, help="Largest video upload"),
               upload_types: str = typer.Option("mp4,mov,mkv,webm,m4v,avi", "--upload-types",
                                                help="Comma-separated video extensions accepted")):
        """Open the studio (Streamlit) on http://HOST:PORT."""
        import os

        from store.db import Store

        path = _db(ctx, db)
        store = Store(path) if path else Store()  # creates/migrates the schema before the server starts
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("the studio has no login; binding to %s exposes it to the network", host)
        typer.echo(f"foleyloop studio on http://{host}:{port} (database {store.db_path})", err=True)
        # The studio is its own program (`python -m ui`): exec'd, never imported, so the CLI stays below it.
        argv = [sys.executable, "-m", "ui", "--port", str(port), "--host", host, "--db", str(store.db_path),
                "--max-upload-mb", str(max_upload_mb), "--upload-types", upload_types]
        os.execv(argv[0], argv)

    @app.command("worker")
    def worker_cmd(ctx: typer.Context,
                   once: bool = typer.Option(False, "--once", help="Run at most one job, then exit"),
                   drain: bool = typer.Option(False, "--drain", help="Exit when no job is left to claim"),
                   poll: float = typer.Option(2.0, "--poll", min=0.05, help="Seconds between queue polls"),
                   db: Optional[Path] = typer.Option(None, "--db", help="SQLite file (overrides the global --db)"),
                   heartbeat: float = typer.Option(5.0, "--heartbeat", min=0.05, help="Heartbeat interval (s)"),
                   stale: float = typer.Option(60.0, "--stale", min=0.1,
                                               help="Reclaim running jobs whose heartbeat is older than this (s)"),
                   max_attempts: int = typer.Option(3, "--max-attempts", min=1)):
        """Take queued jobs (studio dubs, regenerations, review answers) and run them."""
        from agent import worker
        from store.db import Store

        if heartbeat >= stale:
            raise UserError(f"--heartbeat ({heartbeat} s) must be shorter than --stale ({stale} s)")
        path = _db(ctx, db)
        store = Store(path) if path else Store()
        logging.getLogger("agent.worker").setLevel(logging.INFO)
        n = worker.main(store, once=once, drain=drain,
                        cfg=worker.WorkerConfig(poll_s=poll, heartbeat_s=heartbeat, stale_s=stale,
                                                max_attempts=max_attempts))
        typer.echo(f"worker ran {n} job(s)", err=True)
