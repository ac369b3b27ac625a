"""Start the Streamlit studio as a child process (argv list, never a shell)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ui.settings import StudioSettings

APP = Path(__file__).resolve().parent / "app.py"


def streamlit_argv(port: int, host: str, settings: StudioSettings) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.headless", "true",
            "--server.address", host,
            "--server.port", str(port),
            "--server.maxUploadSize", str(settings.upload_max_mb),
            "--server.fileWatcherType", "none",
            "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal",
            "--global.developmentMode", "false"]


def child_env(settings: StudioSettings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(settings.env())
    root = str(APP.parent.parent)  # the package root, so pages can `import ui`, `agent`, `store`
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def serve(port: int, host: str, settings: StudioSettings) -> None:
    """Replace this process with the Streamlit server: signals (Ctrl-C, SIGTERM) reach it directly, and no
    orphaned server outlives its launcher."""
    argv = streamlit_argv(port, host, settings)
    os.execve(argv[0], argv, child_env(settings))
