"""Check an uploaded video before anything is stored: type, size, then a real decode with ``store.media.probe``.

A rejected upload leaves no trace: the temporary copy is deleted and no Run row is written.
"""

from __future__ import annotations

import re
import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from store import media
from store.db import Store
from store.media import VideoInfo

_CHUNK = 1 << 20
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UploadRejected(ValueError):
    """The upload cannot become a run; the message is meant for the page as is."""


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    types: tuple[str, ...]  # extensions without the dot
    max_duration_s: float


@dataclass(frozen=True)
class AcceptedUpload:
    path: Path  # where the video now lives (under the store home)
    info: VideoInfo


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def check_name_and_size(name: str, size: int, limits: UploadLimits) -> None:
    ext = Path(name).suffix.lower().lstrip(".")
    if ext not in limits.types:
        kind = f"a .{ext} file" if ext else "a file without an extension"
        raise UploadRejected(f"'{name}' is {kind}; upload a video of type {', '.join(limits.types)}.")
    if size <= 0:
        raise UploadRejected(f"'{name}' is empty.")
    if size > limits.max_bytes:
        raise UploadRejected(f"'{name}' is {_mb(size)}; the limit is {_mb(limits.max_bytes)}.")


def safe_name(name: str) -> str:
    stem = _SAFE.sub("_", Path(name).stem).strip("._") or "video"
    return f"{stem[:80]}{Path(name).suffix.lower()}"


def accept(fileobj: BinaryIO, name: str, size: int, store: Store, limits: UploadLimits) -> AcceptedUpload:
    """Validate and keep an upload under ``<home>/uploads/<sha16>/<name>``; raise UploadRejected otherwise."""
    check_name_and_size(name, size, limits)
    tmp_dir = store.home / "tmp" / "uploads"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"{uuid.uuid4().hex}{Path(name).suffix.lower()}"
    try:
        written = _copy_limited(fileobj, tmp, limits.max_bytes)
        if written > limits.max_bytes:
            raise UploadRejected(f"'{name}' is larger than the limit of {_mb(limits.max_bytes)}.")
        try:
            info = media.probe(tmp)
        except media.MediaError as exc:
            reason = str(exc).replace(f"{tmp}: ", "").replace(str(tmp), name)
            raise UploadRejected(f"'{name}' could not be read as a video: {reason}.") from None
        if info.duration_s > limits.max_duration_s:
            raise UploadRejected(f"'{name}' is {info.duration_s:.1f} s long; the limit is "
                                 f"{limits.max_duration_s:.0f} s.")
        digest = media.sha256_file(tmp)
        final = store.home / "uploads" / digest[:16] / safe_name(name)
        if not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(tmp), final)
        return AcceptedUpload(final, replace(info, path=str(final.resolve())))
    finally:
        tmp.unlink(missing_ok=True)


def _copy_limited(src: BinaryIO, dst: Path, limit: int) -> int:
    """Copy at most ``limit + 1`` bytes: enough to know a file is too large without storing all of it."""
    n = 0
    with open(dst, "wb") as out:
        while n <= limit:
            block = src.read(min(_CHUNK, limit + 1 - n))
            if not block:
                break
            out.write(block)
            n += len(block)
    return n
