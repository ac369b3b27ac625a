"""The `foleyloop` root: one Typer app assembled from command modules that never import it, and ``main``.

Exit codes: 0 ok; 2 bad input (``UserError``, ``BadWeights``/``ModelMissing``, ``MediaError``, store errors,
unknown backends, usage errors); 1 anything else (a backend failing, a bug, a failed oracle check). Errors print
one line on stderr; ``--debug`` (anywhere on the line) adds the traceback.
"""

from __future__ import annotations

import errno
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
    ("agent.cli.eval", None),  # eval
]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Give silent video its sound.")


class RedactLogs(logging.Filter):
    """Credentials out of every log line the CLI prints (a backend may log an endpoint URL with its password)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from store.redact import redact_text

        text = record.getMessage()
        clean = redact_text(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True


@app.callback()
def _root(ctx: typer.Context, db: Db = None, debug: Debug = False):
    """Give silent video its sound. --db and --debug work before or after the command name."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactLogs) for f in handler.filters):
            handler.addFilter(RedactLogs())
    state(ctx)


for _module, _name in COMMANDS:
    app.add_typer(importlib.import_module(_module).app, name=_name)


def user_errors() -> tuple[type[BaseException], ...]:
    """What exits 2: bad input the user can fix (a plan file or a stored plan that cannot be read is
    ``PlanInvalid``; a database that is not SQLite, read-only or in an unusable folder is ``StoreError``)."""
    from agent.backends import UnknownBackend
    from contract.errors import BadWeights, ModelMissing
    from contract.plan import PlanInvalid
    from store.db import StoreError
    from store.media import MediaError

    return (UserError, BadWeights, ModelMissing, MediaError, StoreError, PlanInvalid, UnknownBackend)


# The machine, not the input or a bug: a full disk or quota, a read-only or unwritable folder, a failing disk.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})


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

        if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:  # a path argument no file system allows
            return _fail(f"error: a path is too long for this system: {_cut(str(exc.filename or ''), 80)}", 2, debug)
        if isinstance(exc, BackendError):  # a model answered badly or failed: not the user's input
            return _fail(f"error: {exc}", 1, debug)
        if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:  # e.g. the disk filled up mid-run
            where = f": {exc.filename}" if exc.filename else ""
            return _fail(f"error: {exc.strerror or exc}{where}", 1, debug)
        return _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1, debug)


def _fail(message: str, code: int, debug: bool) -> int:
    """One line on stderr, credentials masked (a last guard: an endpoint URL with ``user:password@`` may sit in
    any exception's text)."""
    from store.redact import redact_text

    if debug:
        print(redact_text(traceback.format_exc()), file=sys.stderr, end="", flush=True)
    print(_cut(redact_text(" ".join(message.split())), MAX_ERROR_CHARS), file=sys.stderr, flush=True)
    return code


MAX_ERROR_CHARS = 2000  # an error line quotes user input (a 100 KB argument): it stays a line, not a page


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit - 1]}…"
