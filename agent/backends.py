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
    return (role, name, repr(sorted(cfg.opts(role).items())), cfg.device, cfg.dtype)


def chosen(role: str, cfg: RunConfig) -> str:
    return {"watcher": cfg.watcher, "renderer": cfg.renderer, "critic": cfg.critic, "refiner": cfg.refiner_name}[role]


def _references(label: str) -> list:
    """The offline critic's semantic references: recordings from the offline renderer's bank (lazy)."""
    global _bank_lookup
    if _bank_lookup is None:
        from generator.offline.bank import reference_lookup

        _bank_lookup = reference_lookup()
    return _bank_lookup(label)


_bank_lookup = None


def options_for(role: str, cfg: RunConfig, name: str | None = None) -> BackendOptions:
    """The slice of the run config that the ``role`` backend may see, plus the lookups it may need."""
    return BackendOptions(role=role, name=name or chosen(role, cfg), params=cfg.opts(role), device=cfg.device,
                          dtype=cfg.dtype, seed=cfg.seed, thresholds=dict(cfg.thresholds),
                          peer=lambda r, n: get(r, cfg, name=n), references=_references)


def get(role: str, cfg: RunConfig, name: str | None = None):
    name = name or chosen(role, cfg)
    key = _key(role, name, cfg)
    with _lock:
        if key not in _cache:
            _cache[key] = _module(role, name).make(options_for(role, cfg, name))
        return _cache[key]


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
    with _lock:
        _cache.clear()
