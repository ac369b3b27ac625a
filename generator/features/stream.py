"""Bounded-memory frame streaming shared by the feature extractors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
import torch

log = logging.getLogger(__name__)


def map_batches(frames: Iterable[np.ndarray], n_frames: int, batch_size: int,
                fn: Callable[[list[np.ndarray]], torch.Tensor], what: str) -> tuple[torch.Tensor, int]:
    """Apply ``fn`` to at most ``n_frames`` frames, ``batch_size`` at a time; returns (concatenated rows, frames
    seen). Only one batch of decoded frames is alive at once, whatever the video's length."""
    outs, batch, seen = [], [], 0
    for frame in frames:
        if seen >= n_frames:
            break
        batch.append(frame)
        seen += 1
        if len(batch) == batch_size:
            outs.append(fn(batch))
            batch = []
    if batch:
        outs.append(fn(batch))
    if not outs:
        raise ValueError("the video produced no frames")
    if seen < n_frames:
        log.info("video gave %d of %d %s frames; repeating the last one", seen, n_frames, what)
    return torch.cat(outs), seen
