"""A process the CLI owns (``agent.cli.main`` without argv: the console script, ``python -m agent.cli``): its
start-up and exit skip the collector's walks over what the imports built, and the interpreter's teardown (issue
13: ≈ 1.7 s of a 6 s first dub)."""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading
from typing import NoReturn

# A command's start-up builds ~650 000 long-lived objects (torch, scipy, LangGraph, SQLAlchemy, the models). At
# CPython's default thresholds (700, 10, 10) the cycle collector walks them ~900 times while they are being built
# (≈ 0.8 s of a 6 s first dub), and the interpreter's teardown walks them all again at exit (≈ 0.4–0.9 s). So a CLI
# process collects only every STARTUP_GC_THRESHOLD objects until its start-up is over (``settle_gc``: what it built is
# frozen out of later collections, which then run every GC_THRESHOLD[0] young objects, a few MB of garbage at most),
# and at exit it skips the final walks (``gc.freeze``): the OS frees what the imports built; atexit handlers and
# refcount finalizers still run. A command that never settles keeps collecting, every million objects.
STARTUP_GC_THRESHOLD = (1_000_000, 20, 10)
GC_THRESHOLD = (50_000, 20, 10)
_exit_registered = False


def tune_gc() -> None:
    """The CLI process's collector settings for its start-up (above); idempotent. ``bench/first_dub.py`` applies
    it too when it times loading in a separate process, so both measure the same process."""
    global _exit_registered
    gc.set_threshold(*STARTUP_GC_THRESHOLD)
    if not _exit_registered:  # registered first, so it runs after every handler registered later (LIFO)
        atexit.register(gc.freeze)
        _exit_registered = True


def settle_gc() -> None:
    """Start-up is over (imports done, models loaded): freeze what it built, collect young garbage again."""
    if gc.get_threshold() == STARTUP_GC_THRESHOLD:
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLD)


def leave(code: int) -> NoReturn:
    """Exit without the interpreter's teardown (≈ 0.2 s, mostly torch's C++ static destructors): the atexit
    handlers run (logging, checkpointer connections, temporary folders) and the standard streams are flushed, as at
    a normal exit; only the freeing of memory the OS frees anyway is skipped. While another non-daemon thread is
    alive, or a profiler or tracer is attached (``python -m cProfile -o``, a debugger), the normal exit is taken."""
    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    if sys.getprofile() is not None or sys.gettrace() is not None:  # a profiler or debugger writes after we return
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be written anyway
            pass
    os._exit(code)
