"""What an evaluation runs on: a folder of videos, a CSV/JSON manifest, or the corpus builder's ``manifest.json``.

Every entry becomes a ``ClipSpec``: the video to dub, the reference soundtrack (a file, the video's own soundtrack, or
none), a content group and free-text notes. Everything that can be checked before any work starts is checked here and
reported as one ``CorpusError`` line (the CLI's exit 2): a missing path, an empty folder, a malformed manifest, a
missing file, a duplicate name.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from contract.errors import UserError
from store.media import sha256_file

VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}
OWN = "own"  # reference = the video file's own soundtrack
NONE = "none"  # no reference: only reference-free metrics
OWN_WORDS = {"own", "self", "same", "video", "own soundtrack"}
NONE_WORDS = {"none", "no", "-"}
GROUPS_DEFAULT = "ungrouped"


class CorpusError(UserError):
    """The corpus cannot be used as given (one line, exit 2)."""


@dataclass(frozen=True)
class ClipSpec:
    """One clip to evaluate. ``reference`` is an audio/video file, ``OWN`` or ``NONE``."""

    name: str
    video: Path
    reference: Path | str
    group: str = GROUPS_DEFAULT
    notes: str = ""
    labels: tuple[str, ...] = ()
    video_sha256: str = ""
    reference_sha256: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["video"], d["reference"], d["labels"] = str(self.video), str(self.reference), list(self.labels)
        return d

    @property
    def has_reference_file(self) -> bool:
        return isinstance(self.reference, Path)


@dataclass(frozen=True)
class Corpus:
    source: Path  # the folder or manifest the user named
    clips: tuple[ClipSpec, ...]
    kind: str  # folder | json | csv | corpus-manifest

    def digest(self) -> str:
        """sha256 of what the clips are (video/reference contents, group, notes, labels): two evaluations on the
        same digest ran on the same material, wherever the files lie."""
        rows = [[c.name, c.video_sha256 or sha256_file(c.video),
                 (c.reference_sha256 or sha256_file(c.reference)) if c.has_reference_file else str(c.reference),
                 c.group, c.notes, list(c.labels)] for c in self.clips]
        return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------- loading

def load(source: str | Path) -> Corpus:
    """Read a corpus; raises ``CorpusError`` with one line for anything unusable."""
    p = Path(source).expanduser()
    if not p.exists():
        raise CorpusError(f"{p}: no such corpus (a folder of videos, or a .json/.csv manifest)")
    if p.is_dir():
        for name, kind in (("manifest.json", "json"), ("manifest.csv", "csv")):
            if (p / name).is_file():
                return _load_manifest(p / name, kind)
        videos = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_EXTS)
        if not videos:
            raise CorpusError(f"{p}: no video files ({', '.join(sorted(VIDEO_EXTS))}) and no manifest.json/.csv")
        clips = [ClipSpec(name=f.stem, video=f.resolve(), reference=OWN) for f in videos]
        _unique(clips, p)
        return Corpus(p.resolve(), tuple(clips), "folder")
    suffix = p.suffix.lower()
    if suffix == ".json":
        return _load_manifest(p, "json")
    if suffix == ".csv":
        return _load_manifest(p, "csv")
    if suffix in VIDEO_EXTS:
        return Corpus(p.resolve(), (ClipSpec(name=p.stem, video=p.resolve(), reference=OWN),), "folder")
    raise CorpusError(f"{p}: not a folder, a .json/.csv manifest or a video file")


def _load_manifest(path: Path, kind: str) -> Corpus:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{path}: cannot read the manifest ({type(exc).__name__})") from None
    if kind == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}: malformed JSON manifest (line {exc.lineno}: {exc.msg})") from None
        if isinstance(data, dict) and "clips" in data:
            entries, kind = data["clips"], ("corpus-manifest" if "version" in data else "json")
        elif isinstance(data, list):
            entries = data
        else:
            raise CorpusError(f"{path}: a JSON manifest is a list of clips or an object with a \"clips\" list")
        if not isinstance(entries, list):
            raise CorpusError(f"{path}: \"clips\" must be a list")
    else:
        rows = list(csv.DictReader(text.splitlines()))
        if not rows and text.strip():
            raise CorpusError(f"{path}: the CSV manifest has a header but no rows")
        entries = [{(k or "").strip().lower(): (v or "").strip() for k, v in r.items() if k is not None} for r in rows]
        if entries and not ({"path", "video"} & set(entries[0])):
            raise CorpusError(f"{path}: the CSV header needs a 'path' (or 'video') column; got "
                              f"{', '.join(entries[0]) or 'nothing'}")
    if not entries:
        raise CorpusError(f"{path}: the manifest lists no clips")
    clips = [_entry(e, i, path) for i, e in enumerate(entries)]
    _unique(clips, path)
    return Corpus(path.resolve(), tuple(clips), kind)


def _entry(e: Any, i: int, manifest: Path) -> ClipSpec:
    where = f"{manifest}: clip {i + 1}"
    if not isinstance(e, dict):
        raise CorpusError(f"{where}: expected an object with a \"video\" (or \"path\") field, got {type(e).__name__}")
    video = e.get("video") or e.get("path")
    if not isinstance(video, str) or not video.strip():
        raise CorpusError(f"{where}: no \"video\" (or \"path\") given")
    vpath = _rel(video, manifest)
    if not vpath.is_file():
        raise CorpusError(f"{where}: video {vpath} does not exist")
    ref_raw = e.get("reference", e.get("ref", OWN))
    if ref_raw is None or (isinstance(ref_raw, str) and ref_raw.strip().lower() in NONE_WORDS):
        ref: Path | str = NONE
    elif not isinstance(ref_raw, str):
        raise CorpusError(f"{where}: \"reference\" must be a path, \"own\" or \"none\"")
    elif ref_raw.strip() == "" or ref_raw.strip().lower() in OWN_WORDS:
        ref = OWN
    else:
        ref = _rel(ref_raw, manifest)
        if not ref.is_file():
            raise CorpusError(f"{where}: reference {ref} does not exist")
    labels = e.get("labels", ())
    if isinstance(labels, str):
        labels = [s.strip() for s in labels.replace(";", ",").split(",") if s.strip()]
    if not isinstance(labels, (list, tuple)) or not all(isinstance(s, str) for s in labels):
        raise CorpusError(f"{where}: \"labels\" must be a list of strings or a comma-separated string")
    name = e.get("name") or vpath.stem
    group = e.get("content") or e.get("group") or GROUPS_DEFAULT
    notes = e.get("note") or e.get("notes") or ""
    for key, val in (("name", name), ("content group", group), ("notes", notes)):
        if not isinstance(val, str):
            raise CorpusError(f"{where}: {key} must be text")
    meta = {k: e[k] for k in ("licence", "attribution", "window_s", "duration_s") if k in e}
    return ClipSpec(name=str(name).strip(), video=vpath, reference=ref, group=str(group).strip().lower(),
                    notes=str(notes).strip(), labels=tuple(labels),
                    video_sha256=str(e.get("video_sha256") or ""),
                    reference_sha256=str(e.get("reference_sha256") or "") if isinstance(ref, Path) else "",
                    meta=meta)


def _rel(text: str, manifest: Path) -> Path:
    p = Path(text.strip()).expanduser()
    return (p if p.is_absolute() else manifest.parent / p).resolve()


def _unique(clips: list[ClipSpec], where: Path) -> None:
    seen: set[str] = set()
    for c in clips:
        if c.name in seen:
            raise CorpusError(f"{where}: two clips are named {c.name!r}; give each a unique \"name\"")
        seen.add(c.name)


def sound_caption(notes: str) -> str:
    """The part of a clip note that describes the sound ("... Sound: X") — what CLAP should compare audio with."""
    low = notes.lower()
    k = low.find("sound")
    if k >= 0:
        rest = notes[k:]
        colon = rest.find(":")
        if 0 <= colon <= 40:
            return rest[colon + 1:].strip()
    return notes.strip()
