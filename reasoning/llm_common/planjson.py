"""The plan as a model writes and reads it: the content fields only, never ids we own or provenance.

``plan_from_reply`` repairs faults whose fix is unambiguous (recorded, never silent) and leaves the rest to
validation, whose message is sent back to the model.
"""

from __future__ import annotations

import re

from reasoning.llm_common.parse import OutputProblem
from contract.plan import COT_TOKEN_BUDGET, MAX_EVENTS, SECTIONS, EventKind, Plan, Provenance

REPLY_FIELDS = ("caption", *SECTIONS, "events", "negatives")
OURS = {"schema_version", "plan_id", "duration_s", "provenance"}  # set by foleyloop, ignored if a model writes them
REQUIRED = ("caption", *SECTIONS, "events")
EVENT_FIELDS = ("id", "label", "kind", "start_s", "end_s", "gain_db", "pan", "confidence")
_KIND_ALIASES = {"ambient": "ambience", "ambiance": "ambience", "background": "ambience", "loop": "continuous",
                 "sustained": "continuous", "voice": "speech", "dialogue": "speech", "hit": "impact"}
_RANGES = {"gain_db": (-60.0, 12.0), "pan": (-1.0, 1.0), "confidence": (0.0, 1.0)}
IMPACT_LEN_S = 0.1
_NUMERIC = {"start_s", "end_s", "gain_db", "pan", "confidence"}


def plan_prompt_json(plan: Plan, indent: int | None = None) -> str:
    """The plan's content fields as JSON, the same shape the watcher is asked to write."""
    return plan.model_dump_json(include=set(REPLY_FIELDS), indent=indent)


_NUMBER = re.compile(r"\s*-?\d{1,12}(\.\d{1,12})?\s*")


def _num(v):
    """Numbers as floats; a short numeric string ("1.5") too, as models write them. Booleans stay booleans, so
    validation refuses them (``true`` is not a time)."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return float(v) if abs(v) < 10 ** 15 else v  # a huge int is left for validation to refuse
    if isinstance(v, float):
        return v
    if isinstance(v, str) and _NUMBER.fullmatch(v):
        return float(v)
    return v


def normalise_events(events, duration_s: float, notes: list[str]) -> list[dict]:
    if not isinstance(events, list):
        raise OutputProblem(f"'events' must be a list of objects, got {type(events).__name__}")
    if len(events) > MAX_EVENTS:
        raise OutputProblem(f"{len(events)} events is more than the limit of {MAX_EVENTS}; merge or drop some")
    out, seen = [], set()
    for n, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise OutputProblem(f"events.{n} must be an object with label, kind, start_s, end_s")
        extra = set(ev) - set(EVENT_FIELDS)
        if extra:
            raise OutputProblem(f"events.{n} has unknown field(s) {sorted(extra)}; allowed: {', '.join(EVENT_FIELDS)}")
        e = {k: _num(v) if k in _NUMERIC else v for k, v in ev.items()}
        if isinstance(e.get("kind"), str):
            kind = e["kind"].strip().lower()
            e["kind"] = _KIND_ALIASES.get(kind, kind)
        eid = str(e.get("id") or f"e{n + 1}")
        while eid in seen:
            eid += "b"
        if eid != e.get("id"):
            notes.append(f"event {n}: id set to {eid!r}")
        e["id"] = eid
        seen.add(eid)
        start = e.get("start_s")
        if isinstance(start, float):
            if start < 0:
                notes.append(f"event {eid}: start_s {start} clamped to 0")
                e["start_s"] = start = 0.0
            if "end_s" not in e or e["end_s"] is None:
                long = e.get("kind") in (EventKind.ambience.value, EventKind.continuous.value, EventKind.music.value)
                e["end_s"] = duration_s if long else min(duration_s, start + IMPACT_LEN_S)
                notes.append(f"event {eid}: missing end_s set to {e['end_s']:.2f}")
            if isinstance(e["end_s"], float) and e["end_s"] > duration_s:
                notes.append(f"event {eid}: end_s {e['end_s']} clamped to the clip end {duration_s}")
                e["end_s"] = duration_s
        for key, (lo, hi) in _RANGES.items():
            v = e.get(key)
            if isinstance(v, float) and not lo <= v <= hi:
                e[key] = min(hi, max(lo, v))
                notes.append(f"event {eid}: {key} {v} clamped to {e[key]}")
        out.append(e)
    return out


def normalise_reply(obj: dict, duration_s: float, required=REQUIRED) -> tuple[dict, list[str]]:
    """Keep the reply fields, check the required ones, fix unambiguous faults; returns (fields, notes)."""
    notes: list[str] = []
    unknown = set(obj) - set(REPLY_FIELDS) - OURS - {"changes", "consistency", "findings"}
    missing = [k for k in required if k not in obj]
    if missing:
        got = ", ".join(sorted(obj)) or "nothing"
        raise OutputProblem(f"missing field(s) {', '.join(missing)} (got: {got}); "
                            f"the object needs {', '.join(REPLY_FIELDS)}")
    if unknown:
        notes.append(f"ignored unknown field(s) {sorted(unknown)}")
    data = {k: obj[k] for k in REPLY_FIELDS if k in obj}
    for k in ("caption", *SECTIONS):
        if k in data and not isinstance(data[k], str):
            raise OutputProblem(f"'{k}' must be a string, got {type(data[k]).__name__}")
    neg = data.get("negatives", [])
    if isinstance(neg, str):
        neg = [n.strip() for n in neg.split(",") if n.strip()]
        notes.append("negatives given as a string: split on commas")
    if not isinstance(neg, list) or not all(isinstance(n, str) for n in neg):
        raise OutputProblem("'negatives' must be a list of short strings")
    data["negatives"] = neg
    if "events" in data:
        data["events"] = normalise_events(data["events"], duration_s, notes)
    return data, notes


def budget_problem(plan: Plan) -> str | None:
    rep = plan.cot_budget_report()
    if rep["fits"]:
        return None
    return (f"the four sections plus negatives come to about {rep['tokens']} tokens, over the {COT_TOKEN_BUDGET}-token "
            f"budget by {rep['overflow']}; shorten them (about {int(COT_TOKEN_BUDGET / 1.35)} words in all)")


def plan_from_reply(obj: dict, duration_s: float, provenance: Provenance,
                    accept_overflow: bool) -> tuple[Plan, list[str]]:
    data, notes = normalise_reply(obj, duration_s)
    plan = Plan.model_validate({**data, "duration_s": duration_s, "provenance": provenance.model_dump()})
    if (problem := budget_problem(plan)) is not None:
        if not accept_overflow:
            raise OutputProblem(problem)
        notes.append(f"accepted over budget: {problem}")
    return plan, notes
