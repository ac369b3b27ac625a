"""The four conditioning tensors of one render: video (clip_f, sync_f) and text (text_f, t5_f), cached.

Video features depend on the clip and the duration only, text features on the caption or CoT only, so a refinement
round that rewrites the CoT re-encodes one short text and reuses everything else.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from models.synchformer import VisualConfig
from store.media import FrameGrid, stream_frames

from .cache import Features, FeatureCache, make_key
from .metaclip import CLIP_FPS, MetaCLIPFeatures, num_clip_frames
from .sync import SYNC_FPS, WINDOW_FRAMES, SyncFeatures, num_sync_frames
from .t5 import T5Features

VERSION = 1  # bump when any extraction rule changes: old cache entries stop matching


class FeatureExtractor:
    """MetaCLIP + T5 + Synchformer behind two calls; ``cache`` (optional) makes repeated calls free."""

    def __init__(self, metaclip: MetaCLIPFeatures, t5: T5Features, sync: SyncFeatures,
                 cache: FeatureCache | None = None) -> None:
        self.metaclip, self.t5, self.sync, self.cache = metaclip, t5, sync, cache

    @classmethod
    def load(cls, metaclip: str | Path | None = None, t5: str | Path | None = None,
             synchformer: str | Path | None = None, *, device: str = "cpu", dtype: str | torch.dtype = "fp32",
             cache_dir: str | Path | None = None, allow_download: bool = False,
             sync_config: VisualConfig | None = None) -> FeatureExtractor:
        """Build from hub ids or local paths (None → the ThinkSound defaults); raises ModelMissing early."""
        from .metaclip import DEFAULT_ID as CLIP_ID
        from .sync import DEFAULT_ID as SYNC_ID
        from .t5 import DEFAULT_ID as T5_ID

        kw = dict(device=device, dtype=dtype, allow_download=allow_download)
        return cls(MetaCLIPFeatures(metaclip or CLIP_ID, **kw), T5Features(t5 or T5_ID, **kw),
                   SyncFeatures(synchformer or SYNC_ID, cfg=sync_config, **kw),
                   FeatureCache(cache_dir) if cache_dir is not None else None)

    def video_id(self) -> dict:
        return {"version": VERSION, "clip": self.metaclip.cache_id(), "sync": self.sync.cache_id()}

    def stats(self) -> dict[str, int]:
        return self.cache.stats() if self.cache else {"hits": 0, "misses": 0}

    def _cached(self, key: str, fn, meta: dict) -> Features:
        return self.cache.get_or_compute(key, fn, meta) if self.cache else fn()

    def compute_video(self, video: str | Path, duration_s: float) -> Features:
        """The first D seconds at 8 fps (MetaCLIP) and at 25 fps (Synchformer) from one streamed decode: memory
        holds one CLIP batch + the 224² sync frames."""
        clip = self.metaclip.batcher(num_clip_frames(duration_s))
        sync = self.sync.batcher(num_sync_frames(duration_s))
        takers = {"clip": clip, "sync": sync}
        grids = {"clip": FrameGrid(CLIP_FPS, end_s=duration_s), "sync": FrameGrid(SYNC_FPS, end_s=duration_s)}
        for name, _, img in stream_frames(video, grids):
            takers[name].push(img)
            if not (clip.wants_more or sync.wants_more):
                break
        return {"clip_f": self.metaclip.finish_frames(clip), "sync_f": self.sync.finish_frames(sync)}

    def video_features(self, video_path: str | Path, duration_s: float) -> Features:
        """{clip_f: (int(8·D), 1024), sync_f: (8·S, 768)} float32 on the CPU."""
        if not math.isfinite(duration_s) or num_sync_frames(duration_s) < WINDOW_FRAMES:  # before any decoding
            raise ValueError(f"duration_s {duration_s!r} is too short: Synchformer needs at least {WINDOW_FRAMES} "
                             f"frames at {SYNC_FPS} fps (0.64 s)")
        parts = {"video": self.cache.video_digest(video_path) if self.cache else "", "duration_s": float(duration_s),
                 **self.video_id()}
        return self._cached(make_key("video", **parts), lambda: self.compute_video(video_path, duration_s),
                            {"video": Path(video_path).name, "duration_s": duration_s})

    def text_features(self, caption: str, cot: str) -> Features:
        """{text_f: (77, 1024) MetaCLIP caption states, t5_f: (77, 2048) T5 CoT states}; each cached on its own.

        An empty text becomes a single space, as in the reference app.
        """
        caption, cot = caption or " ", cot or " "
        cap = self._cached(make_key("caption", text=caption, version=VERSION, **self.metaclip.cache_id()),
                           lambda: dict(zip(("text_f", "text_global_f"), self.metaclip.encode_text(caption))),
                           {"text": caption[:200]})
        cot_f = self._cached(make_key("cot", text=cot, version=VERSION, **self.t5.cache_id()),
                             lambda: {"t5_f": self.t5.encode(cot)}, {"text": cot[:200]})
        return {"text_f": cap["text_f"], "t5_f": cot_f["t5_f"]}
