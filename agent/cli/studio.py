"""`foleyloop ui` (the Streamlit studio, exec'd as its own program) and `foleyloop worker` (the job queue)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from agent.cli.common import Db, Debug, store, writable_store
from contract.errors import UserError

app = typer.Typer()
log = logging.getLogger(__name__)


@app.command("ui")
def ui_cmd(ctx: typer.Context,
           port: Annotated[int, typer.Option("--port", help="Port to serve the studio on")] = 8501,
           host: Annotated[str, typer.Option("--host", help="Address to bind (localhost by default)")] = "127.0.0.1",
           max_upload_mb: Annotated[int, typer.Option("--max-upload-mb", min=1, help="Largest video upload")] = 200,
           upload_types: Annotated[str, typer.Option("--upload-types",
                                                     help="Comma-separated video extensions accepted")
                                   ] = "mp4,mov,mkv,webm,m4v,avi",
           db: Db = None, debug: Debug = False):
    """Open the studio (Streamlit) on http://HOST:PORT."""
    st = store(ctx)  # creates/migrates the schema before the server starts
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the studio has no login; binding to %s exposes it to the network", host)
    typer.echo(f"foleyloop studio on http://{host}:{port} (database {st.db_path})", err=True)
    # The studio is its own program (`python -m ui`): exec'd, never imported, so the CLI stays below it.
    argv = [sys.executable, "-m", "ui", "--port", str(port), "--host", host, "--db", str(st.db_path),
            "--max-upload-mb", str(max_upload_mb), "--upload-types", upload_types]
    os.execv(argv[0], argv)


@app.command("worker")
def worker_cmd(ctx: typer.Context,
               once: Annotated[bool, typer.Option("--once", help="Run at most one job, then exit")] = False,
               drain: Annotated[bool, typer.Option("--drain", help="Exit when no job is left to claim")] = False,
               poll: Annotated[float, typer.Option("--poll", min=0.05, help="Seconds between queue polls")] = 2.0,
               heartbeat: Annotated[float, typer.Option("--heartbeat", min=0.05, help="Heartbeat interval (s)")] = 5.0,
               stale: Annotated[float, typer.Option(
                   "--stale", min=0.1, help="Reclaim running jobs whose heartbeat is older than this (s)")] = 60.0,
               max_attempts: Annotated[int, typer.Option("--max-attempts", min=1)] = 3,
               db: Db = None, debug: Debug = False):
    """Take queued jobs (studio dubs, regenerations, review answers) and run them."""
    from agent import worker

    if heartbeat >= stale:
        raise UserError(f"--heartbeat ({heartbeat} s) must be shorter than --stale ({stale} s)")
    st = writable_store(ctx)
    logging.getLogger("agent.worker").setLevel(logging.INFO)
    n = worker.main(st, once=once, drain=drain,
                    cfg=worker.WorkerConfig(poll_s=poll, heartbeat_s=heartbeat, stale_s=stale,
                                            max_attempts=max_attempts))
    typer.echo(f"worker ran {n} job(s)", err=True)
