"""Evaluations in the store: create, find, list and update ``Eval`` / ``EvalClip`` rows (short transactions, as
every writer of the shared SQLite file must)."""

from __future__ import annotations

import json
import uuid
from typing import Optional

from sqlmodel import col, select

from store.db import Store
from store.schema import Eval, EvalClip, utcnow

CONDITIONS = ("round0", "kept")  # single shot, loop (evaluation.measures.CONDITIONS)
_JSON = ("config_json", "summary_json", "metrics_json", "critic_json", "timings_json", "labels_json")


def _encode(fields: dict) -> dict:
    return {k: (json.dumps(v, default=str) if k in _JSON and not isinstance(v, str) and v is not None else v)
            for k, v in fields.items()}


def new_id() -> str:
    return "ev" + uuid.uuid4().hex[:10]


def create_eval(store: Store, clips: list[dict], **fields) -> Eval:
    """An Eval and its clip rows in one transaction (``clips``: EvalClip fields without ``eval_id``)."""
    fields.setdefault("id", new_id())
    ev = Eval(**_encode(fields), n_clips=len(clips))
    with store.session() as s:
        s.add(ev)
        s.flush()
        for i, c in enumerate(clips):
            s.add(EvalClip(**_encode({"position": i, **c}), eval_id=ev.id))
        s.commit()
    return ev


def get_eval(store: Store, eval_id: str) -> Optional[Eval]:
    """By id, a unique id prefix, or ``"last"``."""
    with store.session() as s:
        if eval_id == "last":
            return s.exec(select(Eval).order_by(col(Eval.created_at).desc()).limit(1)).first()
        ev = s.get(Eval, eval_id)
        if ev is None and eval_id:
            matches = s.exec(select(Eval).where(col(Eval.id).startswith(eval_id)).limit(2)).all()
            ev = matches[0] if len(matches) == 1 else None
        return ev


def list_evals(store: Store, limit: int = 100, offset: int = 0) -> list[Eval]:
    with store.session() as s:
        q = select(Eval).order_by(col(Eval.created_at).desc()).offset(offset).limit(limit)
        return list(s.exec(q).all())


def _update(store: Store, model, key, fields: dict):
    with store.session() as s:
        row = s.get(model, key)
        if row is None:
            raise KeyError(key)
        for k, v in _encode(fields).items():
            setattr(row, k, v)
        row.updated_at = utcnow()
        s.add(row)
        s.commit()
        return row


def update_eval(store: Store, eval_id: str, **fields) -> Eval:
    return _update(store, Eval, eval_id, fields)


def clips(store: Store, eval_id: str) -> list[EvalClip]:
    with store.session() as s:
        q = select(EvalClip).where(EvalClip.eval_id == eval_id).order_by(EvalClip.position, EvalClip.id)
        return list(s.exec(q).all())


def update_clip(store: Store, clip_id: int, **fields) -> EvalClip:
    return _update(store, EvalClip, clip_id, fields)


def evals_for_run(store: Store, run_id: str) -> list[str]:
    """Ids of the evaluations that dubbed with this run (the studio's run page can link back)."""
    with store.session() as s:
        return sorted(set(s.exec(select(EvalClip.eval_id).where(EvalClip.run_id == run_id)).all()))


def clip_record(row: EvalClip) -> dict:
    """The plain-dict view of a clip row that the report, the comparison and the studio read."""
    m = row.metrics()
    return {"name": row.name, "group": row.content_group, "status": row.status, "error": row.error,
            "run_id": row.run_id, "round0_id": row.round0_id, "kept_id": row.kept_id, "kept_index": row.kept_index,
            "kept_later": row.kept_later, "no_worse": row.no_worse, "no_worse_counts": m.get("comparison"),
            # within the measures' seed noise; None for an evaluation recorded before the tolerances existed
            "no_worse_noise": (m.get("comparison_noise") or {}).get("no_worse"),
            "no_worse_noise_counts": m.get("comparison_noise"),
            "not_kept": m.get("not_kept_comparison"),  # the best later round the loop did not keep, vs round 0
            "stop_reason": (m.get("run") or {}).get("stop_reason"), "n_rounds": (m.get("run") or {}).get("n_rounds"),
            "metrics": {c: m.get(c) or {} for c in CONDITIONS} | {"reference_content": m.get("reference_content")},
            "critic": row.critic(),
            "notes": row.notes, "reference": row.reference, "video": row.video_path, "timings": row.timings()}
