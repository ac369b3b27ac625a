"""Play a round with the video: mux its audio into the clip once, on demand, into a cache beside the store."""

from __future__ import annotations

import logging
from pathlib import Path

from store import media
from store.db import Store
from store.schema import Round, Run

log = logging.getLogger(__name__)

BROWSER_CONTAINERS = {".mp4": ".mp4", ".m4v": ".mp4", ".mov": ".mp4", ".webm": ".webm"}


def cache_dir(store: Store) -> Path:
    return store.home / "cache" / "mux"


def round_audio(store: Store, rnd: Round) -> Path | None:
    path = store.artifact_path(rnd.audio_artifact_id)
    return path if path is not None and path.is_file() else None


def muxed(store: Store, run: Run, rnd: Round) -> Path | None:
    """The run's video with this round's audio as its soundtrack, or None when that cannot be made.

    The cache key holds the audio artifact id, so a round's file is made once and never goes stale.
    """
    audio = round_audio(store, rnd)
    video = Path(run.video_path) if run.video_path else None
    if audio is None or video is None or not video.is_file():
        return None
    suffix = BROWSER_CONTAINERS.get(video.suffix.lower(), ".mp4")
    out = cache_dir(store) / f"{run.id}-r{rnd.id}-a{rnd.audio_artifact_id}{suffix}"
    if out.is_file():
        return out
    try:
        data, sr = media.read_audio(audio)
        media.mux(video, data, sr, out, keep_original="drop")
    except (media.MediaError, OSError, ValueError) as exc:  # e.g. a codec the target container cannot hold
        log.warning("could not mux round %s of run %s for playback: %s", rnd.id, run.id, exc)
        return None
    return out
