"""Where a run's result goes: checked before any work starts, written atomically, never over a user's file.

``check_out`` refuses a path that cannot work (a directory, a file used as a folder, an unwritable or
uncreatable parent, an unknown container, the input video itself or a link to it, an existing file without
``force``) so that a bad ``--out`` is exit 2 at once, not a failure after the rendering. ``publish`` moves a
finished temporary file (written in the destination's folder) into place: a hard link when nothing may be
overwritten (an atomic "create if absent"), ``os.replace`` when ``force`` allows it.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from contract.errors import UserError

VIDEO_OUT_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".m4v")
AUDIO_OUT_SUFFIXES = (".wav",)
# Video codecs a container cannot hold (the video stream is copied, never re-encoded).
_CODECS_ONLY = {".webm": {"vp8", "vp9", "av1"}}
_CODECS_NOT = {".mp4": {"vp8", "theora"}, ".m4v": {"vp8", "theora"}, ".mov": {"vp8"}}


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` name one file: the same path, a symlink to it, or a hard link of it."""
    a, b = Path(a).expanduser(), Path(b).expanduser()
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.abspath(a) == os.path.abspath(b)


def _first_existing(path: Path) -> Path:
    p = path.parent
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_out(out: str | Path, kind: str = "video", inputs: Iterable[str | Path] = (), force: bool = False,
              video_codec: str | None = None, what: str = "--out") -> Path:
    """The absolute output path, or UserError naming it. ``kind`` is "video" (a muxed copy) or "audio" (a .wav)."""
    p = Path(out).expanduser().absolute()
    allowed = VIDEO_OUT_SUFFIXES if kind == "video" else AUDIO_OUT_SUFFIXES
    if p.is_dir():
        raise UserError(f"{what} {p} is a directory")
    if p.suffix.lower() not in allowed:
        if kind == "audio":
            raise UserError(f"{what} {p} must be a .wav file (got {p.suffix or 'no extension'})")
        raise UserError(f"{what} {p}: unknown container extension {p.suffix or '(none)'!r} for a video "
                        f"(use {', '.join(allowed)})")
    for src in inputs:
        if same_file(p, src):
            raise UserError(f"{what} {p} is the input {src} (or a link to it); refusing to overwrite the input")
    parent = _first_existing(p)
    if not parent.is_dir():
        raise UserError(f"{what} {p}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} {p}: {parent} is not writable")
    if os.path.lexists(p) and not force:
        raise UserError(f"{what} {p} already exists; pass --force to overwrite it")
    if video_codec is not None:
        check_container(p, video_codec, what)
    return p


def check_folder(folder: str | Path, what: str = "--out-dir") -> Path:
    """A folder that exists and is writable, or that can be created (UserError naming it otherwise)."""
    p = Path(folder).expanduser().absolute()
    if os.path.lexists(p) and not p.is_dir():
        raise UserError(f"{what} {p} is a file, not a folder")
    existing = p if p.is_dir() else _first_existing(p)
    if not existing.is_dir():
        raise UserError(f"{what} {p}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} {p}: {existing} is not writable")
    return p


def check_container(out: Path, video_codec: str, what: str = "--out") -> None:
    """Refuse a container that cannot hold the input's video stream (it is copied, not re-encoded)."""
    suffix, codec = out.suffix.lower(), (video_codec or "").lower()
    only, never = _CODECS_ONLY.get(suffix), _CODECS_NOT.get(suffix, set())
    if (only is not None and codec not in only) or codec in never:
        raise UserError(f"{what} {out}: a {suffix} file cannot hold this input's {codec or 'unknown'} video "
                        f"(the video is copied, not re-encoded); use .mkv or .mp4")


@contextmanager
def staging(out: str | Path) -> Iterator[Path]:
    """A temporary path beside ``out`` (same folder, same suffix so the container is inferred), removed after."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=f".part{out.suffix}", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def publish(tmp: Path, out: Path, force: bool = False) -> Path:
    """Move ``tmp`` to ``out`` atomically; without ``force`` an existing ``out`` raises FileExistsError."""
    if force:
        os.replace(tmp, out)
        return out
    try:
        os.link(tmp, out)  # fails if ``out`` exists: no window in which a user's file could be replaced
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links
        if os.path.lexists(out):
            raise FileExistsError(out) from None
        os.replace(tmp, out)
        return out
    tmp.unlink(missing_ok=True)
    return out


VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}


def out_name(video: Path) -> str:
    """NAME.foley.EXT: the input's container when a copied video stream can go back into it, else .mp4/.mkv."""
    suffix = video.suffix.lower()
    if suffix == ".avi":
        return f"{video.stem}.foley.mkv"
    return f"{video.stem}.foley{suffix if suffix in ('.mp4', '.mov', '.mkv', '.webm', '.m4v') else '.mp4'}"
