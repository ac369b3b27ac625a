"""`foleyloop` command line. The root app and the list of commands are in ``agent.cli.app``; each command module
(``dub``, ``history``, ``branching``, ``catalog``, ``generate``, ``tools``, ``studio``) imports only
``agent.cli.common`` and the layers below, never the root. This package stays empty of imports so that importing a
command module does not build the whole CLI."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the CLI (console script ``foleyloop = agent.cli:main``); returns the exit code. Without ``argv`` (the
    console script, ``python -m agent.cli``) the CLI owns the process, so its collector is tuned
    (``agent.cli.collector``); a caller that passes ``argv`` (tests, scripts) keeps its own settings."""
    if argv is None:
        from agent.cli.collector import tune_gc

        tune_gc()
    from agent.cli.app import main as run

    return run(argv)
