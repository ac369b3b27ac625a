"""Composite critics: ``offline+desync+clap+aesthetics`` runs each part in order and merges their critiques, and the
preset ``verified`` is the offline critic plus every verifier whose weights are on this machine.

Merging: a later part overrides the dimensions it measured (a part that could not measure a dimension — score
None — leaves the earlier value); findings and scorer records are concatenated, so each number keeps its source.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from contract.options import BackendOptions
from contract.plan import DIMENSIONS, Critique, Plan
from reasoning.verifiers import VERIFIERS
from store.media import VideoInfo

PRESET = "verified"
BASE = "offline"
MODULES = {"desync": "reasoning.verifiers.desync", "clap": "reasoning.verifiers.clap",
           "aesthetics": "reasoning.verifiers.aesthetics"}


class CompositeCritic:
    def __init__(self, name: str, parts: list[tuple[str, object]]):
        if not parts:
            raise ValueError("a composite critic needs at least one part")
        self.name = name
        self.parts = parts
        self.model_id = "+".join(n for n, _ in parts)

    def critique(self, plan: Plan, audio: Path, video: Path | None, info: VideoInfo | None) -> Critique:
        scores: dict[str, float | None] = {d: None for d in DIMENSIONS}
        findings, scorers = [], []
        for _, critic in self.parts:
            c = critic.critique(plan, audio, video, info)
            scores.update({d: v for d, v in c.scores.items() if v is not None})
            findings += c.findings
            scorers += c.scorers
        return Critique(scores=scores, findings=findings, scorers=scorers)


def _part_opts(opts: BackendOptions, part: str) -> BackendOptions:
    return dataclasses.replace(opts, name=part)


def available_verifiers(opts: BackendOptions) -> tuple[list[str], dict[str, str]]:
    """(verifiers whose weights are present, {absent verifier: why})."""
    have, why = [], {}
    for v in VERIFIERS:
        d = importlib.import_module(MODULES[v]).describe(_part_opts(opts, v))
        if d.get("available"):
            have.append(v)
        else:
            why[v] = d.get("why", "")
    return have, why


def part_names(opts: BackendOptions) -> list[str]:
    if opts.name == PRESET:
        return [BASE] + available_verifiers(opts)[0]
    return opts.name.split("+")


def make(opts: BackendOptions) -> CompositeCritic:
    """Parts come from the host's backend lookup (``opts.peer``), so each is built and cached once."""
    parts = []
    for part in part_names(opts):
        if opts.peer is not None:
            parts.append((part, opts.peer("critic", part)))
        elif part in MODULES:
            parts.append((part, importlib.import_module(MODULES[part]).make(_part_opts(opts, part))))
        else:
            raise ValueError(f"composite critic part {part!r} needs the host's backend lookup (opts.peer)")
    return CompositeCritic(opts.name, parts)


def describe(opts: BackendOptions) -> dict:
    have, why = available_verifiers(opts)
    return {"available": True, "where": " + ".join([BASE] + have),
            "why": "; ".join(f"{v} {w}" for v, w in why.items()),
            "model_id": f"{BASE} + every verifier with weights ({', '.join(VERIFIERS)})", "license": "see each part"}
