"""What a backend factory is given: its own options and the device settings, never the whole run config.

``agent.backends`` builds one ``BackendOptions`` per role from the run's config, so a backend cannot read (or
depend on) another role's settings. Cross-backend needs are injected as callables (``peer``, ``reference_catalog``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

DEFAULT_THRESHOLDS = {"semantic": 0.6, "temporal": 0.6, "aesthetic": 0.6, "spatial": 0.5}


@dataclass(frozen=True)
class BackendOptions:
    role: str  # watcher | renderer | critic | refiner
    name: str  # the backend's registry name ("offline", "qwen", ...)
    params: Mapping[str, Any] = field(default_factory=dict)  # this role's options: model, weights, steps, ...
    device: str = "cpu"
    dtype: str = "fp32"
    seed: int = 0
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    # Another backend by (role, name): the LLM judge explains the scores of a metric critic it does not own.
    peer: Callable[[str, str], Any] | None = None
    # Every recording the host can offer, with its label ((label, path) pairs): the offline critic names what a
    # render sounds like by its nearest recordings' labels, so it needs them all, not a lookup by label.
    reference_catalog: Callable[[], list[tuple[str, Path]]] | None = None
