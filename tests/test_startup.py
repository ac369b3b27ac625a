"""A command's start-up and exit (issue 13: the first dub within 5 s): what the CLI process imports on the dub's
path, and how its cycle collector treats the objects the imports build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_the_cli_collects_young_garbage_rarely_and_its_exit_skips_the_collection_walks():
    # Registered before main(), so it runs after every handler main() registers (atexit is LIFO).
    out = _python("import atexit, gc\n"
                  "atexit.register(lambda: print(gc.get_freeze_count(), *gc.get_threshold()))\n"
                  "from agent.cli import main\n"
                  "main(['samples'])\n")
    frozen, gen0, *_ = map(int, out.split("\n")[-2].split())
    assert gen0 >= 10_000  # CPython's default is 700: ~900 collections while torch & co are imported
    assert frozen > 10_000  # what the imports built is not walked again by the interpreter's teardown
