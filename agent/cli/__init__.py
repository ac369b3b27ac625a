"""`foleyloop` command line. The root app and the list of commands are in ``agent.cli.app``; each command module
(``dub``, ``history``, ``branching``, ``catalog``, ``generate``, ``tools``, ``studio``) imports only
``agent.cli.common`` and the layers below, never the root. This package stays empty of imports so that importing a
command module does not build the whole CLI."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the CLI (console script ``foleyloop = agent.cli:main``); returns the exit code. Without ``argv`` (the
    console script, ``python -m agent.cli``) the CLI owns the process (``agent.cli.process``): its collector is
    tuned, and a command that returns ends the process at once, without the interpreter's teardown; a caller that
    passes ``argv`` (tests, scripts) keeps its own settings and gets the code back."""
    if argv is not None:
        from agent.cli.app import main as run

        return run(argv)
    from agent.cli.process import leave, tune_gc

    tune_gc()  # before the imports
    from agent.cli.app import main as run

    leave(run(argv))
