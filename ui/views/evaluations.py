"""Evaluations page: every ``foleyloop eval``, one of them clip by clip (with links to its runs), and two of them
compared measure by measure (mean Δ and paired sign counts). Text that came from models or files (errors, notes,
captions) is shown in table cells, i.e. as plain text."""

from pathlib import Path

import pandas as pd
import streamlit as st

from evaluation.compare import compare_evals, unmatched
from evaluation.measures import CONDITION_LABEL, CONDITIONS, MEASURES
from store import evals as E
from ui import common

store = common.store()
st.title("Evaluations")

evs = E.list_evals(store, limit=500)
if not evs:
    st.info("No evaluations yet. Run `foleyloop eval CORPUS` (a folder of videos or a manifest); each one is "
            "listed here.")
    st.stop()


def _frac(part: dict | None) -> str:
    return "—" if not part or not part.get("of") else f"{part['n']}/{part['of']}"


def _label(ev) -> str:
    return f"{ev.id} · {ev.created_at.strftime('%Y-%m-%d %H:%M')} · {Path(ev.corpus_path).name} · {ev.code_version}"


summary_rows = []
for ev in evs:
    s, run_cfg = ev.summary(), ev.config().get("run", {})
    summary_rows.append({
        "eval": ev.id, "created": ev.created_at.strftime("%Y-%m-%d %H:%M"), "status": ev.status,
        "corpus": Path(ev.corpus_path).name, "corpus hash": ev.corpus_hash[:12], "clips": ev.n_clips,
        "scored": s.get("n_scored"), "failed": len(s.get("failed", [])) if s else None,
        "critic": run_cfg.get("critic"), "renderer": run_cfg.get("renderer"), "rounds": run_cfg.get("rounds"),
        "kept later round": _frac(s.get("kept_later")), "loop no worse": _frac(s.get("no_worse")),
        "kept later round no worse": _frac(s.get("later_no_worse")),
        # "—" for an evaluation recorded before the seed-noise tolerances (evaluation.measures.NOISE_TOLERANCE)
        "kept later round no worse within noise": _frac(s.get("later_no_worse_noise")),
        "code": ev.code_version + (" (dirty)" if ev.code_dirty else ""), "report": ev.out_dir,
    })
st.dataframe(pd.DataFrame(summary_rows), hide_index=True, width="stretch", key="evals:table")

by_id = {ev.id: ev for ev in evs}
ids = list(by_id)

# ---- one evaluation, clip by clip ----------------------------------------------------------------------------------
st.subheader("Clips")
one = st.selectbox("Evaluation", ids, key="evals:one", format_func=lambda i: _label(by_id[i]))
cond = st.radio("Condition", CONDITIONS, format_func=CONDITION_LABEL.get, horizontal=True, key="evals:cond")
clips = [E.clip_record(r) for r in E.clips(store, one)]
missing = {}
rows = []
for c in clips:
    m = c["metrics"].get(cond) or {}
    for key in ("desync_why", "clap_why", "aes_why", "reference_why"):
        if m.get(key):
            missing.setdefault(key, m[key])
    share = (c["metrics"].get("reference_content") or {}).get("periodic_energy_share")
    rows.append({"clip": c["name"], "group": c["group"], "status": c["status"],
                 # pitched (voiced/musical) share of the original's energy: under 25 % the clip is mostly foley
                 "reference pitched energy": None if share is None else round(share, 2),
                 "run": common.run_url(c["run_id"]) if c["run_id"] else None, "kept round": c["kept_index"],
                 "no worse": c["no_worse"], "no worse within noise": c.get("no_worse_noise"),
                 **{mm.label: m.get(mm.key) for mm in MEASURES},
                 "error": c["error"] or ""})
table = pd.DataFrame(rows).dropna(axis=1, how="all")
st.dataframe(table, hide_index=True, width="stretch", key="evals:clips", column_config={
    "run": st.column_config.LinkColumn("run", display_text=r"run=(\w+)", help="open the run page"),
    **{mm.label: st.column_config.NumberColumn(format=f"%.{max(mm.digits, 1)}f") for mm in MEASURES},
})
for why in missing.values():
    st.text(why)  # plain text: a path or a model message, never markup

# ---- two evaluations compared ------------------------------------------------------------------------------------
st.subheader("Compare two evaluations")
if len(ids) < 2:
    st.info("Run a second evaluation (e.g. after a change) to compare the two here, or with "
            "`foleyloop eval --compare A B`.")
    st.stop()
c1, c2 = st.columns(2)
a = c1.selectbox("A (before)", ids, index=1, key="evals:a", format_func=lambda i: _label(by_id[i]))
b = c2.selectbox("B (after)", ids, index=0, key="evals:b", format_func=lambda i: _label(by_id[i]))
ca = [E.clip_record(r) for r in E.clips(store, a)]
cb = [E.clip_record(r) for r in E.clips(store, b)]
if by_id[a].corpus_hash != by_id[b].corpus_hash:
    st.warning("These two evaluations ran on different corpora (content hashes differ): only clips with the same "
               "name are paired.")
um = unmatched(ca, cb)
if um["only_a"] or um["only_b"]:
    st.caption(f"Left out (scored in one only): A {', '.join(um['only_a']) or '—'} · "
               f"B {', '.join(um['only_b']) or '—'}")
result = compare_evals(ca, cb)
for c in CONDITIONS:
    st.markdown(f"**{CONDITION_LABEL[c]}** — Δ = B − A; better/worse counted per clip in each measure's direction")
    df = pd.DataFrame([{"measure": r["label"], "better if": r["better"] or "—", "clips": r["n"],
                        "mean A": r["mean_a"], "mean B": r["mean_b"], "Δ mean": r["mean_delta"],
                        "B better": r["n_better"], "B worse": r["n_worse"], "tied": r["n_tied"]}
                       for r in result[c]])
    if df.empty:
        st.info("No clip was scored in both evaluations.")
        continue
    st.dataframe(df, hide_index=True, width="stretch", key=f"evals:cmp:{c}", column_config={
        k: st.column_config.NumberColumn(format="%.3f") for k in ("mean A", "mean B", "Δ mean")})
