"""Model ids and licences of the backends a run used, for the run page."""

from __future__ import annotations

import importlib
import logging

from agent import backends
from agent.config import RunConfig

log = logging.getLogger(__name__)
ROLES = ("watcher", "renderer", "critic", "refiner")


def used_backends(run_backends: dict) -> list[dict]:
    """(role, backend name, model id) as recorded on the Run when its backends were loaded."""
    rows = []
    for role in ROLES:
        name = run_backends.get(role)
        if name:
            rows.append({"role": role, "backend": str(name),
                         "model id": str(run_backends.get(f"{role}_model_id", "") or "not loaded yet")})
    return rows


def describe(role: str, name: str, cfg: RunConfig) -> dict:
    """The backend module's ``describe(cfg)`` (as in ``describe_all``), for one backend; failures become a row."""
    try:
        path = backends.REGISTRY[role][name]
    except KeyError:
        return {"available": False, "why": f"no {role} backend named {name!r} in this installation"}
    try:
        return dict(importlib.import_module(path).describe(cfg))
    except Exception as exc:  # a broken optional backend must not take the page down
        log.warning("describe(%s/%s) failed: %s", role, name, exc)
        return {"available": False, "why": f"{type(exc).__name__}: {exc}"}


def licence_rows(run_backends: dict, config_json: str) -> list[dict]:
    try:
        cfg = RunConfig.model_validate_json(config_json or "{}")
    except ValueError:
        cfg = RunConfig()
    rows = []
    for row in used_backends(run_backends):
        info = describe(row["role"], row["backend"], cfg)
        rows.append({**row, "licence": str(info.get("license") or "unknown"),
                     "available now": "yes" if info.get("available") else "no",
                     "where / why": str(info.get("where") or info.get("why") or "")})
    return rows
