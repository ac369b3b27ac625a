"""The package layers stay one-way (ARCHITECTURE.md): import-linter's contracts in .importlinter hold."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is not installed next to this Python (pip install -r requirements.txt)")
    proc = subprocess.run([exe, "--config", str(ROOT / ".importlinter")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_no_package_reaches_into_another_through_sys_modules():
    """Static imports are what the linter checks; a ``sys.modules`` reach would bypass it."""
    offenders = [str(p.relative_to(ROOT)) for pkg in ("agent", "reasoning", "generator", "evaluation", "models", "contract",
                                                         "store", "ui")
                 for p in (ROOT / pkg).rglob("*.py") if "sys.modules" in p.read_text(encoding="utf-8")]
    assert offenders == []
