"""Bounded-memory frame streaming shared by the feature extractors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
import torch

log = logging.getLogger(__name__)


class Batcher:
    """Frames pushed one at a time go through ``fn`` ``batch_size`` at a time; at most ``n_frames`` are taken.

    Push-based, so one decode can feed several extractors at their own rates (MetaCLIP at 8 fps and Synchformer
    at 25 fps from the same pass); only one batch of decoded frames per extractor is alive at once.
    """

    def __init__(self, n_frames: int, batch_size: int, fn: Callable[[list[np.ndarray]], torch.Tensor], what: str):
        self.n_frames, self.batch_size, self.fn, self.what = n_frames, max(1, batch_size), fn, what
        self._outs: list[torch.Tensor] = []
        self._batch: list[np.ndarray] = []
        self.seen = 0

    @property
    def wants_more(self) -> bool:
        return self.seen < self.n_frames

    def push(self, frame: np.ndarray) -> bool:
        """Take one frame (ignored once ``n_frames`` were taken); returns whether more are wanted."""
        if self.seen >= self.n_frames:
            return False
        self._batch.append(frame)
        self.seen += 1
        if len(self._batch) == self.batch_size:
            self._outs.append(self.fn(self._batch))
            self._batch = []
        return self.wants_more

    def finish(self) -> tuple[torch.Tensor, int]:
        """(concatenated rows, frames seen)."""
        if self._batch:
            self._outs.append(self.fn(self._batch))
            self._batch = []
        if not self._outs:
            raise ValueError("the video produced no frames")
        if self.seen < self.n_frames:
            log.info("video gave %d of %d %s frames; repeating the last one", self.seen, self.n_frames, self.what)
        return torch.cat(self._outs), self.seen


def map_batches(frames: Iterable[np.ndarray], n_frames: int, batch_size: int,
                fn: Callable[[list[np.ndarray]], torch.Tensor], what: str) -> tuple[torch.Tensor, int]:
    """Apply ``fn`` to at most ``n_frames`` frames, ``batch_size`` at a time; returns (concatenated rows, frames
    seen). Only one batch of decoded frames is alive at once, whatever the video's length."""
    b = Batcher(n_frames, batch_size, fn, what)
    for frame in frames:
        if not b.push(frame):
            break
    return b.finish()
