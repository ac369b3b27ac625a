"""Synchformer ``sync_features`` (spec thinksound.md §1.2–1.3): 25 fps, 16-frame windows, stride 8 → (8·S, D).

Frames are resized/cropped to 224² as they stream in, so memory holds uint8 224² frames only, whatever the input
resolution; padding (repeat the last frame) commutes with the per-frame resize, so it is done afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from models.synchformer import SynchformerVisual, VisualConfig, num_windows, pad_or_trim, preprocess_sync_frames
from models.synchformer.preprocess import SYNC_FPS, WINDOW_FRAMES

from models.hub import KINDS, fingerprint_dir, resolve_model
from .stream import Batcher, map_batches

log = logging.getLogger(__name__)

DEFAULT_ID = KINDS["synchformer"].default_id
PREPROCESS = "resize224-bicubic-crop-v1"


def num_sync_frames(duration_s: float) -> int:
    return int(SYNC_FPS * duration_s)


def num_sync_tokens(duration_s: float, cfg: VisualConfig | None = None) -> int:
    """8·S with S = (T−16)//8 + 1 and T = int(25·D)."""
    cfg = cfg or VisualConfig()
    return cfg.time_tokens * num_windows(num_sync_frames(duration_s), cfg.frames_per_window, cfg.window_stride)


class SyncFeatures:
    """The Synchformer visual branch loaded from ``synchformer_state_dict.pth`` (only ``vfeat_extractor.*``)."""

    def __init__(self, checkpoint: str | Path = DEFAULT_ID, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = torch.float32, *, cfg: VisualConfig | None = None,
                 allow_download: bool = False, chunk_frames: int = 32, chunk_windows: int = 8) -> None:
        from generator.thinksound.checkpoint import resolve_device, resolve_dtype

        self.model_id = str(checkpoint)
        self.path = resolve_model(checkpoint, "synchformer", allow_download=allow_download)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.cfg = cfg or VisualConfig()
        self.visual = SynchformerVisual.from_checkpoint(self.path, self.dtype, self.device, cfg=self.cfg)
        self.chunk_frames = max(1, chunk_frames)
        self.chunk_windows = max(1, chunk_windows)
        self.fingerprint = f"{self.model_id}@{fingerprint_dir(self.path)}"

    @property
    def dim(self) -> int:
        return self.cfg.dim

    def cache_id(self) -> dict:
        return {"model": self.fingerprint, "dtype": str(self.dtype), "pre": PREPROCESS, "cfg": repr(self.cfg)}

    def prepare(self, frames: Iterable[np.ndarray], n_frames: int) -> torch.Tensor:
        """Stream 25 fps RGB frames → uint8 (n_frames, 3, 224, 224), truncated or last frame repeated."""
        if n_frames < WINDOW_FRAMES:
            raise ValueError(f"need at least {WINDOW_FRAMES} sync frames (0.64 s), got {n_frames}")
        frames_u8, _ = map_batches(frames, n_frames, self.chunk_frames, preprocess_sync_frames, "sync")
        return pad_or_trim(frames_u8, n_frames)

    def encode_frames(self, frames: Iterable[np.ndarray], n_frames: int) -> torch.Tensor:
        """25 fps frames → (8·S, D) float32."""
        x = self.prepare(frames, n_frames)
        return self.visual.extract(x, chunk_windows=self.chunk_windows)[0].float().cpu()

    def batcher(self, n_frames: int) -> Batcher:
        """A push-based ``encode_frames``: push 25 fps frames (resized to 224² as they come), then
        ``finish_frames``."""
        if n_frames < WINDOW_FRAMES:
            raise ValueError(f"need at least {WINDOW_FRAMES} sync frames (0.64 s), got {n_frames}")
        return Batcher(n_frames, self.chunk_frames, preprocess_sync_frames, "sync")

    def finish_frames(self, batcher: Batcher) -> torch.Tensor:
        x = pad_or_trim(batcher.finish()[0], batcher.n_frames)
        return self.visual.extract(x, chunk_windows=self.chunk_windows)[0].float().cpu()
