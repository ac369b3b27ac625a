"""Sibling temporary names for write-then-rename.

Two processes can fill the same cache entry at once (two evaluations or dubs sharing a cache folder, the studio's
worker beside a CLI run). A fixed name such as ``x.wav.part`` is then written and renamed by both, and the second
rename finds nothing; a name of its own per writer makes each rename atomic and the last one simply wins.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def part_path(dst: str | Path) -> Path:
    """A fresh hidden sibling of ``dst`` that keeps its suffix (writers that pick a format by extension need it)."""
    p = Path(dst)
    return p.with_name(f".{p.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part{p.suffix}")
