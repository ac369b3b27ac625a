"""Backend registry: a name in the config → a factory, imported lazily.

Each factory module exposes ``make(opts: BackendOptions)`` returning an object that satisfies the role's
protocol, and ``describe(opts) -> dict`` (``available``, ``where``, ``why``) for ``foleyloop models``. A backend
sees only its own options (``options_for``); what it needs from elsewhere is injected here. Instances are cached
per process so that rounds and batch items reuse loaded models.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from agent.config import RunConfig
from contract.options import BackendOptions

COMPOSITE = "reasoning.verifiers.composite"


class _Registry(dict):
    """A role's names → modules. A ``+``-joined critic name (``offline+desync+clap``) is known when every part
    is a known single critic: it builds a composite critic (``reasoning.verifiers.composite``)."""

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and "+" in name:
            parts = name.split("+")
            return all(p and p != "verified" and "+" not in p and dict.__contains__(self, p) for p in parts)
        return dict.__contains__(self, name)

    def __getitem__(self, name: str) -> str:
        if isinstance(name, str) and "+" in name and name in self:
            return COMPOSITE
        return dict.__getitem__(self, name)

    def get(self, name, default=None):
        return self[name] if name in self else default


REGISTRY: dict[str, dict[str, str]] = {
    "watcher": {
        "offline": "reasoning.offline.watcher",
        "qwen": "reasoning.qwen.watcher",
        "openai": "reasoning.openai_backend.watcher",
    },
    "renderer": {
        "offline": "generator.offline.renderer",
        "thinksound": "generator.thinksound.renderer",
    },
    "critic": _Registry({
        "offline": "reasoning.offline.critic",
        "qwen": "reasoning.qwen.judge",
        "qwen-omni": "reasoning.qwen.omni",
        "openai": "reasoning.openai_backend.judge",
        # Verifiers (options: {"synchformer": PATH, "clap": DIR, "aesthetics": DIR}) and the preset that stacks
        # every verifier with weights on top of the offline critic; "a+b+c" names build composites.
        "desync": "reasoning.verifiers.desync",
        "clap": "reasoning.verifiers.clap",
        "aesthetics": "reasoning.verifiers.aesthetics",
        "verified": COMPOSITE,
    }),
    "refiner": {
        "offline": "reasoning.offline.refiner",
        "qwen": "reasoning.qwen.refiner",
        "openai": "reasoning.openai_backend.refiner",
    },
}

_cache: dict[tuple, Any] = {}
_loaded: set[tuple] = set()  # keys whose instance has run load()
_load_locks: dict[tuple, threading.Lock] = {}
_lock = threading.RLock()  # a factory may look up a peer backend (the judge's metric critic)


class UnknownBackend(ValueError):
    pass


def _module(role: str, name: str):
    try:
        path = REGISTRY[role][name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY.get(role, {})))
        raise UnknownBackend(f"unknown {role} backend {name!r} (known: {known})") from None
    return importlib.import_module(path)


def _key(role: str, name: str, cfg: RunConfig) -> tuple:
    cfg = cfg.resolved()  # "auto" and what it resolves to are one backend
    return (role, name, repr(sorted(cfg.opts(role).items())), cfg.device, cfg.dtype)


def chosen(role: str, cfg: RunConfig) -> str:
    return {"watcher": cfg.watcher, "renderer": cfg.renderer, "critic": cfg.critic, "refiner": cfg.refiner_name}[role]


def _reference_catalog() -> list:
    """Every bank recording with its description (the offline critic's "what does this sound like" index)."""
    from generator.offline.bank import reference_catalog

    return reference_catalog()


def options_for(role: str, cfg: RunConfig, name: str | None = None) -> BackendOptions:
    """The slice of the run config that the ``role`` backend may see, plus the lookups it may need. A backend
    never sees "auto": device and dtype are resolved for this machine (``RunConfig.resolved``)."""
    cfg = cfg.resolved()
    return BackendOptions(role=role, name=name or chosen(role, cfg), params=cfg.opts(role), device=cfg.device,
                          dtype=cfg.dtype, seed=cfg.seed, thresholds=dict(cfg.thresholds),
                          peer=lambda r, n: get(r, cfg, name=n), reference_catalog=_reference_catalog)


def get(role: str, cfg: RunConfig, name: str | None = None):
    name = name or chosen(role, cfg)
    key = _key(role, name, cfg)
    with _lock:
        if key not in _cache:
            _cache[key] = _module(role, name).make(options_for(role, cfg, name))
        return _cache[key]


def _is_loaded(backend: Any, key: tuple) -> bool:
    """A backend that says whether its models are in memory (``loaded``, e.g. after the device manager released
    them) is asked; otherwise ``load()`` has run once for this instance."""
    flag = getattr(backend, "loaded", None)
    return bool(flag) if isinstance(flag, bool) else key in _loaded


def load(role: str, cfg: RunConfig, name: str | None = None):
    """``get`` plus the backend's ``load()`` (its models into memory now, if it has one and they are not already
    there), so that callers can time loading apart from the work. Instances are shared, so a worker or batch that
    keeps them (and does not release their models) loads once for every job of the same configuration."""
    name = name or chosen(role, cfg)
    backend = get(role, cfg, name)
    key = _key(role, name, cfg)
    fn = getattr(backend, "load", None)
    if callable(fn) and not _is_loaded(backend, key):
        with _load_locks.setdefault(key, threading.Lock()):  # concurrent runs in one process load once
            if not _is_loaded(backend, key):
                fn()
                _loaded.add(key)
    return backend


def install(role: str, cfg: RunConfig, backend: Any) -> Any:
    """Make ``backend`` the instance ``get(role, cfg)`` returns (e.g. a batching wrapper around the cached one);
    returns the instance it replaces (None when there was none)."""
    key = _key(role, chosen(role, cfg), cfg)
    with _lock:
        before = _cache.get(key)
        _cache[key] = backend
        return before


def keys_for(cfg: RunConfig, roles: tuple[str, ...] = ("watcher", "renderer", "critic", "refiner")) -> set[tuple]:
    """The cache keys of a config's backends (two configs with equal keys share loaded instances)."""
    return {_key(role, chosen(role, cfg), cfg) for role in roles}


def forget(keys: set[tuple] | None = None) -> None:
    """Drop cached instances (all, or those ``keys``) so their models can be freed; they rebuild on next use."""
    with _lock:
        for key in list(_cache) if keys is None else keys:
            _cache.pop(key, None)
            _loaded.discard(key)
            _load_locks.pop(key, None)


def describe_all(cfg: RunConfig | None = None) -> list[dict]:
    cfg = cfg or RunConfig()
    rows = []
    for role, entries in REGISTRY.items():
        for name in entries:
            try:
                info = _module(role, name).describe(options_for(role, cfg, name))
            except ImportError as exc:
                info = {"available": False, "why": f"not installed: {exc}"}
            except Exception as exc:  # a broken backend must not hide the others
                info = {"available": False, "why": f"{type(exc).__name__}: {exc}"}
            rows.append({"role": role, "name": name, **info})
    return rows


def clear_cache() -> None:
    forget()
