"""On-disk feature cache: refinement rounds re-render the same video many times, extraction should run once.

Entries are safetensors files named by a sha256 over the inputs that determine them (video content, model
fingerprints, preprocessing version, duration, text). Writes are atomic (temp file + rename), so a killed run
never leaves a half-written entry; an unreadable entry is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from store.media import sha256_file

log = logging.getLogger(__name__)

Features = dict[str, torch.Tensor]


def make_key(kind: str, **parts) -> str:
    """Stable key for any JSON-serialisable description of what produced an entry."""
    blob = json.dumps({"kind": kind, **parts}, sort_keys=True, default=str, ensure_ascii=False)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:32]}"


class FeatureCache:
    """Directory of ``<key>.safetensors``; counts hits and misses so the renderer can report them."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._file_hashes: dict[tuple, str] = {}

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses}

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.safetensors"

    def video_digest(self, video: str | Path) -> str:
        """sha256 of the file's bytes, memoised per (path, size, mtime) so rounds don't rehash big videos."""
        st = os.stat(video)
        k = (str(Path(video).resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            if k in self._file_hashes:
                return self._file_hashes[k]
        digest = sha256_file(video)
        with self._lock:
            self._file_hashes[k] = digest
        return digest

    def get(self, key: str) -> Features | None:
        p = self.path(key)
        if not p.exists():
            return None
        try:
            return load_file(p)
        except (SafetensorError, OSError, ValueError) as exc:
            log.warning("feature cache entry %s is unreadable (%s); recomputing", p.name, exc)
            return None

    def put(self, key: str, features: Features, meta: dict | None = None) -> Path:
        p = self.path(key)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in features.items()}
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".part", dir=self.dir)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={k: str(v) for k, v in (meta or {}).items()})
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return p

    def get_or_compute(self, key: str, fn: Callable[[], Features], meta: dict | None = None) -> Features:
        cached = self.get(key)
        if cached is not None:
            with self._lock:
                self.hits += 1
            return cached
        features = fn()
        with self._lock:
            self.misses += 1
        try:
            self.put(key, features, meta)
        except OSError as exc:  # a full or read-only disk costs speed, not the render
            log.warning("could not write feature cache entry %s: %s", key, exc)
        return features
