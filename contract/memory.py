"""The process's one model cache: every loaded model (VLM, generator, verifier) lives here under a key and a
role, so one place can release models under a device-memory budget (the diffusers idea of
``model_cpu_offload_seq`` / ``maybe_free_model_hooks``). The orchestrator decides *when* (agent.devices);
backends only ``get`` what they need and never hold a model beyond one call, or release could not free it."""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable

from contract.errors import BackendError

log = logging.getLogger(__name__)


def _weakrefs(value: Any) -> list[weakref.ref]:
    out = []
    for obj in (value, getattr(value, "model", None)):
        try:
            out.append(weakref.ref(obj))
        except TypeError:  # None, or a type without weakref support
            pass
    return out


def _empty_device_cache(dropped: list[weakref.ref] | None = None) -> None:
    """Free what was dropped. A full gc costs seconds on a big heap, so it runs only when a dropped model
    is still alive (held by a reference cycle); then the CUDA caching allocator returns the memory."""
    if dropped is None or any(r() is not None for r in dropped):
        gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # torch is optional for the openai backend's users
        pass


def cuda_free_gb() -> float | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.mem_get_info()[0] / 1e9
    except (ImportError, RuntimeError):
        pass
    return None


class ModelSlots:
    """Process-wide holder of loaded models: the only strong reference, so that release really frees."""

    def __init__(self, budget_gb: float | None = None):
        self.budget_gb = budget_gb
        self._slots: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._roles: dict[str, str] = {}
        self._lock = threading.RLock()

    def loaded(self) -> dict[str, float]:
        with self._lock:
            return {k: gb for k, (_, gb) in self._slots.items()}

    def used_gb(self) -> float:
        return sum(self.loaded().values())

    def roles(self) -> dict[str, str]:
        """key → the role that loaded it (watcher, renderer, critic, ...)."""
        with self._lock:
            return dict(self._roles)

    def get(self, key: str, size_gb: float, load: Callable[[], Any], budget_gb: float | None = None,
            role: str = "") -> Any:
        """The loaded model for ``key``, loading it (after making room) if needed."""
        budget = budget_gb if budget_gb is not None else self.budget_gb
        with self._lock:
            if key in self._slots:
                self._slots.move_to_end(key)
                return self._slots[key][0]
            if budget is not None and size_gb > budget:
                raise BackendError(f"{key} needs about {size_gb:.1f} GB but the memory budget is {budget:.1f} GB; "
                                   "use a smaller model or dtype, or raise gpu_memory_gb")
            self.make_room(size_gb, budget, device_check=False)
            log.info("loading %s (~%.1f GB)", key, size_gb)
            value = load()
            self._slots[key] = (value, size_gb)
            self._roles[key] = role
            return value

    def make_room(self, size_gb: float, budget_gb: float | None = None, device_check: bool = True) -> list[str]:
        """Release least-recently-used models until ``size_gb`` more fits the budget (and free CUDA memory)."""
        budget = budget_gb if budget_gb is not None else self.budget_gb
        released, refs = [], []
        with self._lock:
            while self._slots and budget is not None and self.used_gb() + size_gb > budget:
                released.append(self._drop(next(iter(self._slots)), refs))
            while self._slots and device_check and (free := cuda_free_gb()) is not None and free < size_gb:
                released.append(self._drop(next(iter(self._slots)), refs))
                _empty_device_cache(refs)
        if released:
            _empty_device_cache(refs)
            log.info("released %s to make room for %.1f GB", ", ".join(released), size_gb)
        return released

    def release(self, key: str | None = None) -> list[str]:
        """Release one model (or all): drop the reference, collect, empty the CUDA cache."""
        refs: list[weakref.ref] = []
        with self._lock:
            keys = [key] if key is not None else list(self._slots)
            released = [self._drop(k, refs) for k in keys if k in self._slots]
        if released:
            _empty_device_cache(refs)
            log.info("released %s", ", ".join(released))
        return released

    def release_roles(self, roles: set[str] | frozenset[str]) -> list[str]:
        """Release every model loaded for one of ``roles``."""
        with self._lock:
            keys = [k for k, r in self._roles.items() if r in roles]
        return [k for key in keys for k in self.release(key)]

    def _drop(self, key: str, refs: list[weakref.ref]) -> str:
        self._roles.pop(key, None)
        refs += _weakrefs(self._slots.pop(key)[0])
        return key


SLOTS = ModelSlots()


def release(key: str | None = None) -> list[str]:
    return SLOTS.release(key)


def make_room(size_gb: float, budget_gb: float | None = None) -> list[str]:
    return SLOTS.make_room(size_gb, budget_gb)
