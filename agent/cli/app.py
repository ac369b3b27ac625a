"""The `foleyloop` root: one Typer app assembled from command modules that never import it, and ``main``.

Exit codes: 0 ok; 2 bad input (``UserError``, ``BadWeights``/``ModelMissing``, ``MediaError``, store errors,
unknown backends, usage errors); 1 anything else (a backend failing, a bug, a failed oracle check). Errors print
one line on stderr; ``--debug`` (anywhere on the line) adds the traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback

import typer
from typer.exceptions import TyperException

from agent.cli.common import CommandFailed, Db, Debug, state
from contract.errors import UserError

# The commands, in help order: (module, name). ``None`` adds the module's commands at the top level; a name mounts
# the module's Typer app as a sub-command group (e.g. ("evaluation_cli_module", "eval") for `foleyloop eval ...`).
COMMANDS: list[tuple[str, str | None]] = [
    ("agent.cli.dub", None),  # dub, batch
    ("agent.cli.batch", None),  # batch (agent.batch: resumable, local or Ray)
    ("agent.cli.history", None),  # runs, show, plan
    ("agent.cli.branching", None),  # resume, regenerate
    ("agent.cli.catalog", None),  # models, samples
    ("agent.cli.generate", None),  # text, edit
    ("agent.cli.tools", None),  # convert, check-oracle
    ("agent.cli.studio", None),  # ui, worker
]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Give silent video its sound.")


@app.callback()
def _root(ctx: typer.Context, db: Db = None, debug: Debug = False):
    """Give silent video its sound. --db and --debug work before or after the command name."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    state(ctx)


for _module, _name in COMMANDS:
    app.add_typer(importlib.import_module(_module).app, name=_name)


def _store_error() -> type[BaseException]:
    """``store.db.StoreError`` (store-side user errors) where the store defines it, else ``SchemaTooNew``."""
    import store.db

    return getattr(store.db, "StoreError", store.db.SchemaTooNew)


def user_errors() -> tuple[type[BaseException], ...]:
    from agent.backends import UnknownBackend
    from contract.errors import BadWeights, ModelMissing
    from store.media import MediaError

    return (UserError, BadWeights, ModelMissing, MediaError, _store_error(), UnknownBackend)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        rc = app(args=args, prog_name="foleyloop", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except user_errors() as exc:
        return _fail(f"error: {exc}", 2, debug)
    except CommandFailed as exc:  # a command's own verdict (e.g. an oracle check failed): exit 1, one line
        return _fail(str(exc), exc.exit_code, debug)
    except TyperException as exc:  # usage errors: bad option, missing argument... (exit 2)
        if hasattr(exc, "show"):
            exc.show()
        else:
            _fail(f"error: {exc}", exc.exit_code, debug)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return _fail("interrupted", 1, debug)
    except Exception as exc:
        from contract.errors import BackendError

        if isinstance(exc, BackendError):  # a model answered badly or failed: not the user's input
            return _fail(f"error: {exc}", 1, debug)
        return _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1, debug)


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(" ".join(message.split()), file=sys.stderr, flush=True)
    return code
