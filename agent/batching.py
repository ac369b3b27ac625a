"""Cross-clip batched rendering: several clips' render requests share one ``render_batch`` call.

``foleyloop batch --batch-size N`` (local engine) dubs N clips in threads of one process. Each clip's graph calls
``renderer.render`` as usual; the renderer it gets from the backend registry is a ``BatchingRenderer`` that hands
the request to a ``RenderBatcher``. The batcher waits until every clip thread that is still dubbing is waiting in
a render (or N requests are pending), then renders them with one ``render_batch`` (ThinkSound: clips of one
duration bucket share each MM-DiT forward, their CFG pairs stacked). Nothing waits on a clip that will never
render again: a clip leaving (done or failed) re-checks the condition.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class _Request:
    def __init__(self, job: tuple):
        self.job = job
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def set(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


class RenderBatcher:
    """Collects concurrent render requests of the clip threads that ``enter``-ed and renders them together."""

    def __init__(self, renderer: Any, max_batch: int, max_wait_s: float = 300.0):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.renderer, self.max_batch, self.max_wait_s = renderer, int(max_batch), float(max_wait_s)
        self._cond = threading.Condition()
        self._live = 0
        self._pending: list[_Request] = []
        self.batches: list[int] = []  # size of every render_batch call (for the bench and tests)

    # -- participants: the clip threads whose renders go through this batcher --
    def enter(self) -> None:
        with self._cond:
            self._live += 1

    def leave(self) -> None:
        with self._cond:
            self._live -= 1
            batch = self._take()
        if batch:
            self._run(batch)

    def _take(self, everything: bool = False) -> list[_Request]:
        """The requests to render now (lock held): when every live clip waits, or a full batch is pending."""
        n = len(self._pending)
        if n and (everything or n >= self.max_batch or n >= self._live):
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            return batch
        return []

    def _run(self, batch: list[_Request]) -> None:
        self.batches.append(len(batch))
        try:
            results = self.renderer.render_batch([r.job for r in batch])
        except Exception as exc:  # one bad plan must not fail its neighbours: each is rendered alone
            log.warning("batched render of %d clips failed (%s: %s); rendering them one by one", len(batch),
                        type(exc).__name__, exc)
            for r in batch:
                try:
                    r.set(self.renderer.render(*r.job))
                except Exception as one:
                    r.set(error=one)
            return
        for r, res in zip(batch, results):
            r.set(res)

    def submit(self, job: tuple) -> Any:
        """Render ``job`` = (plan, video, info, seed, out_path), possibly together with other clips' jobs."""
        req = _Request(job)
        with self._cond:
            self._pending.append(req)
            batch = self._take()
        if batch:
            self._run(batch)
        t0 = time.monotonic()
        while not req.done.wait(0.05):
            batch = []
            with self._cond:
                if self._pending:
                    late = time.monotonic() - t0 > self.max_wait_s  # a guard; the live count normally decides
                    batch = self._take(everything=late)
            if batch:
                self._run(batch)
        if req.error is not None:
            raise req.error
        return req.result


class BatchingRenderer:
    """A renderer whose ``render`` goes through a ``RenderBatcher``; everything else is the wrapped renderer's."""

    def __init__(self, inner: Any, batcher: RenderBatcher):
        self.inner, self.batcher = inner, batcher

    def render(self, plan, video, info, seed, out_path):
        return self.batcher.submit((plan, video, info, seed, Path(out_path)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
