"""The plan editor shared by the run page (edit & regenerate) and the review queue (edit before approving)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from contract.plan import (COT_TOKEN_BUDGET, MAX_LABEL_CHARS, MAX_NEGATIVES, MAX_SECTION_CHARS, SECTIONS, EventKind,
                           Plan, PlanInvalid)
from ui.components import md_escape

EVENT_COLUMNS = ["id", "label", "kind", "start_s", "end_s", "gain_db", "pan", "confidence"]
_DEFAULTS = {"kind": EventKind.impact.value, "gain_db": 0.0, "pan": 0.0, "confidence": 1.0}
CAPTION_MAX_CHARS = 200
# PlanInvalid is contract's (the one error type of every plan door); ``editor.PlanInvalid`` stays importable.

@dataclass
class EditResult:
    plan: Plan | None  # None while the edits do not make a valid plan
    problems: list[str] = field(default_factory=list)
    budget: dict = field(default_factory=dict)
    changed: bool = False


def _blank(v) -> bool:
    if isinstance(v, str):
        return not v.strip()
    return v is None or bool(pd.isna(v))


def event_rows(df: pd.DataFrame | list[dict]) -> list[dict]:
    """Rows from the events table as Event dicts; fully blank rows (a half-added line) are skipped."""
    records = df.to_dict("records") if isinstance(df, pd.DataFrame) else list(df)
    out = []
    for i, row in enumerate(records, start=1):
        if all(_blank(row.get(c)) for c in ("label", "start_s", "end_s")):
            continue
        ev = {c: row.get(c) for c in EVENT_COLUMNS}
        for c, default in _DEFAULTS.items():
            if _blank(ev[c]):
                ev[c] = default
        if _blank(ev["id"]):
            ev["id"] = uuid.uuid4().hex[:8]
        if _blank(ev["label"]):
            raise PlanInvalid([f"event row {i} needs a label"])
        if _blank(ev["start_s"]):
            raise PlanInvalid([f"event row {i} ('{ev['label']}') needs a start time"])
        if _blank(ev["end_s"]):
            ev["end_s"] = ev["start_s"]
        out.append(ev)
    return out


def explain(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        where = " → ".join(str(p) for p in err.get("loc", ()) if p not in ("", "__root__"))
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        out.append(f"{where}: {msg}" if where else msg)
    return out


def build_plan(base: Plan, caption: str, sections: dict[str, str], events: list[dict],
               negatives: list[str]) -> Plan:
    """A human-authored plan derived from ``base`` (new plan id, parent = base), with every bound of a plan from
    outside (the length is the base's); PlanInvalid says what is wrong."""
    changes = {"caption": caption.strip(), **{s: sections.get(s, "").strip() for s in SECTIONS},
               "events": events, "negatives": [n.strip() for n in negatives if n.strip()]}
    try:
        return base.derive("human", **changes)
    except ValidationError as exc:
        raise PlanInvalid(explain(exc)) from None


def cot_budget(base: Plan, sections: dict[str, str], negatives: list[str]) -> dict:
    """Token count of the CoT these texts would make, even while other fields are still invalid (or too long)."""
    draft = Plan.model_validate({"duration_s": base.duration_s, **{s: sections.get(s, "") for s in SECTIONS},
                                 "negatives": [n.strip() for n in negatives if n.strip()]}, context={"stored": True})
    return draft.cot_budget_report()


def events_table(plan: Plan) -> pd.DataFrame:
    rows = [{"id": e.id, "label": e.label, "kind": e.kind.value, "start_s": e.start_s, "end_s": e.end_s,
             "gain_db": e.gain_db, "pan": e.pan, "confidence": e.confidence} for e in plan.events]
    return pd.DataFrame(rows, columns=EVENT_COLUMNS).astype(
        {"id": "string", "label": "string", "kind": "string", "start_s": "float64", "end_s": "float64",
         "gain_db": "float64", "pan": "float64", "confidence": "float64"})


def plan_editor(plan: Plan, key: str) -> EditResult:
    """Widgets for every editable part of ``plan``; returns the edited plan (or what is wrong with it)."""
    # Widgets show text as values (never Markdown); their caps match the plan's bounds (or a longer stored value).
    caption = st.text_input("Caption (what one hears, at most 12 words)", plan.caption, key=f"{key}:caption",
                            max_chars=max(CAPTION_MAX_CHARS, len(plan.caption)))
    cols = st.columns(2)
    sections = {}
    for i, s in enumerate(SECTIONS):
        value = getattr(plan, s)
        sections[s] = cols[i % 2].text_area(s.capitalize(), value, key=f"{key}:{s}", height=90,
                                            max_chars=max(MAX_SECTION_CHARS, len(value)))
    st.markdown("**Events** (add, remove or retime rows; times in seconds, clip length "
                f"{plan.duration_s:.2f} s)")
    edited = st.data_editor(
        events_table(plan), key=f"{key}:events", num_rows="dynamic", hide_index=True, width="stretch",
        column_config={
            "id": st.column_config.TextColumn("id", help="left blank: a new id is made"),
            "label": st.column_config.TextColumn("label", required=True, max_chars=120),
            "kind": st.column_config.SelectboxColumn("kind", options=[k.value for k in EventKind],
                                                     default=EventKind.impact.value),
            "start_s": st.column_config.NumberColumn("start (s)", min_value=0.0, max_value=plan.duration_s,
                                                     step=0.01, format="%.2f"),
            "end_s": st.column_config.NumberColumn("end (s)", min_value=0.0, step=0.01, format="%.2f"),
            "gain_db": st.column_config.NumberColumn("gain (dB)", min_value=-60.0, max_value=12.0, step=0.5),
            "pan": st.column_config.NumberColumn("pan", min_value=-1.0, max_value=1.0, step=0.05),
            "confidence": st.column_config.NumberColumn("confidence", min_value=0.0, max_value=1.0, step=0.05),
        })
    shown = "\n".join(plan.negatives)
    negatives = st.text_area("Negatives: sounds to avoid, one per line", shown, key=f"{key}:negatives", height=80,
                             max_chars=max(MAX_NEGATIVES * (MAX_LABEL_CHARS + 1), len(shown))).splitlines()

    budget = cot_budget(plan, sections, negatives)
    label = f"CoT length: {budget['tokens']} / {COT_TOKEN_BUDGET} tokens"
    st.progress(min(1.0, budget["tokens"] / COT_TOKEN_BUDGET), text=label)
    if not budget["fits"]:
        st.warning(f"The CoT is {budget['overflow']} tokens over budget: the generator's text encoder drops "
                   "everything past token 77, starting with the spatial section and the negatives.")
    try:
        new = build_plan(plan, caption, sections, event_rows(edited), negatives)
    except PlanInvalid as exc:
        for p in exc.problems:
            st.error(f"Plan not valid yet: {md_escape(p)}")  # may quote the user's text
        return EditResult(None, exc.problems, budget)
    same = new.model_dump(exclude={"plan_id", "provenance"}) == plan.model_dump(exclude={"plan_id", "provenance"})
    return EditResult(new, [], budget, changed=not same)
