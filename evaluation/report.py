"""An evaluation's report: ``report.json`` (everything), ``report.md`` (tables grouped by content group, with the
chance level and the cross-clip control beside each score, group means) and PNG plots (per-clip measures single shot
vs loop; the critic's score per round).

Input is plain dicts, one per clip: ``name, group, status, error, run_id, kept_index, kept_later, no_worse,
no_worse_counts, no_worse_noise, no_worse_noise_counts, metrics {"round0": {...}, "kept": {...}}, critic
[{"index", "overall", "scores"}]`` (``no_worse_noise*`` absent or None in evaluations older than the tolerances).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from evaluation.content import FOLEY_MAX_PERIODIC
from evaluation.measures import BY_KEY, CONDITIONS, DIRECTIONAL, MEASURES, Measure, mean_or_none

MODEL_FAMILIES = {"desync_s": "DeSync (Synchformer)", "clap": "CLAP",
                  "aes_PQ": "Audiobox Aesthetics", "aes_PC": "Audiobox Aesthetics", "aes_CE": "Audiobox Aesthetics",
                  "aes_CU": "Audiobox Aesthetics"}
WHY_KEY = {"desync_s": "desync_why", "clap": "clap_why", "aes_PQ": "aes_why", "aes_PC": "aes_why",
           "aes_CE": "aes_why", "aes_CU": "aes_why"}
# Issue #9's bars, stated for clips whose soundtrack is mostly foley (judged by measure, not by the corpus label)
FOLEY_TARGETS = {"onset_f1_above_chance": 0.15, "rms_r_1000ms": 0.3}
PLOT_METRICS = "metrics_single_vs_loop.png"
PLOT_CRITIC = "critic_rounds.png"


def _scored(clips: Sequence[dict]) -> list[dict]:
    return [c for c in clips if c.get("status") == "scored"]


def _means(clips: Sequence[dict]) -> dict:
    return {cond: {m.key: mean_or_none((c["metrics"].get(cond) or {}).get(m.key) for c in clips) for m in MEASURES}
            for cond in CONDITIONS}


def summarise(clips: Sequence[dict]) -> dict:
    """Group and overall means per condition, the loop's kept-later share, the no-worse count, failures, and why a
    model measure is missing (the first reason found per model family)."""
    scored = _scored(clips)
    groups: dict[str, list[dict]] = {}
    for c in scored:
        groups.setdefault(c.get("group") or "ungrouped", []).append(c)
    later = [c for c in scored if c.get("kept_later") is not None]
    verdicts = [c for c in scored if c.get("no_worse") is not None]
    # the loop's own test: a run that keeps round 0 is trivially no worse, so the count that says whether its
    # later rounds help is over the runs that kept one
    later_verdicts = [c for c in verdicts if c.get("kept_later")]
    missing: dict[str, str] = {}
    for c in scored:
        for cond in CONDITIONS:
            m = c["metrics"].get(cond) or {}
            for key, fam in MODEL_FAMILIES.items():
                why = m.get(WHY_KEY[key])
                if m.get(key) is None and why and fam not in missing:
                    missing[fam] = why
    return {
        "n_clips": len(clips), "n_scored": len(scored),
        "failed": [{"name": c["name"], "error": c.get("error") or c.get("status")} for c in clips
                   if c.get("status") != "scored"],
        "kept_later": {"n": sum(bool(c["kept_later"]) for c in later), "of": len(later),
                       "share": (sum(bool(c["kept_later"]) for c in later) / len(later)) if later else None},
        "no_worse": {"n": sum(bool(c["no_worse"]) for c in verdicts), "of": len(verdicts),
                     "share": (sum(bool(c["no_worse"]) for c in verdicts) / len(verdicts)) if verdicts else None},
        "later_no_worse": {"n": sum(bool(c["no_worse"]) for c in later_verdicts), "of": len(later_verdicts),
                           "share": (sum(bool(c["no_worse"]) for c in later_verdicts) / len(later_verdicts))
                           if later_verdicts else None,
                           "clips": [c["name"] for c in later_verdicts]},
        "later_no_worse_noise": _later_within_noise(later),
        "not_kept_no_worse": _not_kept(scored),
        "foley_targets": foley_targets(scored),
        "groups": {g: {"clips": [c["name"] for c in cs], "mean": _means(cs)} for g, cs in sorted(groups.items())},
        "overall": {"mean": _means(scored)},
        "model_missing": missing,
    }


def _later_within_noise(later: Sequence[dict]) -> dict:
    """Of the runs that kept a later round, how many kept one no worse within the measures' seed noise, over those
    that carry that verdict (an evaluation recorded before the tolerances has none: ``of`` 0, ``missing`` > 0)."""
    kept = [c for c in later if c.get("kept_later")]
    rows = [c for c in kept if c.get("no_worse_noise") is not None]
    n = sum(bool(c["no_worse_noise"]) for c in rows)
    tol = next(((c.get("no_worse_noise_counts") or {}).get("tolerance") for c in rows
                if (c.get("no_worse_noise_counts") or {}).get("tolerance")), None)
    return {"n": n, "of": len(rows), "share": n / len(rows) if rows else None, "clips": [c["name"] for c in rows],
            "missing": sum(c.get("no_worse_noise_counts") is None for c in kept), "tolerance": tol}


def foley_targets(scored: Sequence[dict]) -> dict:
    """The foley targets on the clips whose reference is mostly foley by measure (``reference_content``: pitched
    energy under FOLEY_MAX_PERIODIC), whatever the corpus label says; a label the measure contradicts is listed.
    ``met`` per condition is None when no clip qualifies: nothing to judge is not a pass."""
    clips, foley, mislabelled, unmeasured = {}, [], [], []
    for c in scored:
        share = ((c["metrics"].get("reference_content") or {}).get("periodic_energy_share"))
        if share is None:
            unmeasured.append(c["name"])
            continue
        mostly = share < FOLEY_MAX_PERIODIC
        if mostly != ((c.get("group") or "") == "foley"):
            mislabelled.append(c["name"])
        row = {"label": c.get("group"), "periodic_energy_share": share, "mostly_foley": mostly}
        if mostly:
            foley.append(c["name"])
            for cond in CONDITIONS:
                m = c["metrics"].get(cond) or {}
                row[cond] = {k: m.get(k) for k in FOLEY_TARGETS}
                row[cond]["met"] = all(m.get(k) is not None and m[k] >= bar for k, bar in FOLEY_TARGETS.items())
        clips[c["name"]] = row
    met = {cond: (all(clips[n][cond]["met"] for n in foley) if foley else None) for cond in CONDITIONS}
    return {"targets": dict(FOLEY_TARGETS), "max_periodic_share": FOLEY_MAX_PERIODIC, "foley": foley, "met": met,
            "mislabelled": mislabelled, "unmeasured": unmeasured, "clips": clips}


def _not_kept(scored: Sequence[dict]) -> dict:
    """Runs with a later round the loop did not keep: would the best of those (by the critic) have been no worse
    than round 0 on the reference measures? Many "yes" would say the keep rule turns down rounds that help."""
    rows = [c for c in scored if (c.get("not_kept") or {}).get("no_worse") is not None]
    n = sum(bool(c["not_kept"]["no_worse"]) for c in rows)
    noisy = [c for c in rows if c["not_kept"].get("no_worse_noise") is not None]  # none before the tolerances
    n_noisy = sum(bool(c["not_kept"]["no_worse_noise"]) for c in noisy)
    return {"n": n, "of": len(rows), "share": n / len(rows) if rows else None,
            "within_noise": {"n": n_noisy, "of": len(noisy), "share": n_noisy / len(noisy) if noisy else None},
            "clips": {c["name"]: {k: c["not_kept"].get(k) for k in ("round_index", "no_worse", "better", "worse",
                                                                       "worse_on", "no_worse_noise",
                                                                       "worse_on_noise")} for c in rows}}


# ---------------------------------------------------------------------------------------------------- markdown

def _foley_section(ft: dict | None) -> list[str]:
    """Issue #9's foley targets, on the clips measured mostly foley (none in an evaluation older than the measure)."""
    if not ft or not ft["clips"]:
        return []
    bars = ", ".join(f"{BY_KEY[k].label} ≥ {v}" for k, v in ft["targets"].items())
    lines = ["## foley targets", "",
             f"Targets ({bars}) apply to clips whose original soundtrack is mostly foley by measure: under "
             f"{100 * ft['max_periodic_share']:.0f} % of its energy in pitched (voiced or musical) frames "
             "(`evaluation.content`).", "",
             "| clip | label | pitched energy | mostly foley | " + " | ".join(
                 f"{BY_KEY[k].label} single / loop" for k in ft["targets"]) + " | met single / loop |",
             "| --- | --- | ---: | --- | " + " | ".join("---:" for _ in ft["targets"]) + " | --- |"]
    for name, r in ft["clips"].items():
        vals = [f"{_fmt((r.get('round0') or {}).get(k))} / {_fmt((r.get('kept') or {}).get(k))}"
                if r["mostly_foley"] else "—" for k in ft["targets"]]
        met = (f"{_fmt(r['round0']['met'])} / {_fmt(r['kept']['met'])}" if r["mostly_foley"] else "—")
        lines.append(f"| {_cell(name)} | {_cell(r.get('label') or '')} | {100 * r['periodic_energy_share']:.0f} % | "
                     f"{_fmt(r['mostly_foley'])} | " + " | ".join(vals) + f" | {met} |")
    lines.append("")
    if not ft["foley"]:
        lines += ["No clip of this corpus is mostly foley by measure: the foley targets are not judged here.", ""]
    if ft["mislabelled"]:
        lines += ["The measure contradicts the corpus label of: " + ", ".join(map(_cell, ft["mislabelled"])) + ".",
                  ""]
    return lines


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if digits == 0:
        return f"{v:.0f}"
    return f"{v:.{digits}f}"


def _cell(text: str) -> str:
    """Plain text in a table cell: no pipes or newlines (model text is data, not markup)."""
    return " ".join(str(text).replace("|", "/").split())


def _columns(clips: Sequence[dict]) -> list[Measure]:
    """Measures with at least one value anywhere: a column of dashes only says "unavailable", said once above."""
    cols = []
    for m in MEASURES:
        if any((c["metrics"].get(cond) or {}).get(m.key) is not None for c in clips for cond in CONDITIONS):
            cols.append(m)
    return cols


def markdown(header: dict, clips: Sequence[dict], summary: dict) -> str:
    scored = _scored(clips)
    cols = _columns(scored)
    kl, nw = summary["kept_later"], summary["no_worse"]
    lnw = summary.get("later_no_worse") or {"n": 0, "of": 0, "share": None}
    noise = summary.get("later_no_worse_noise")  # None in a summary written before the tolerances
    nk = summary.get("not_kept_no_worse") or {"n": 0, "of": 0, "share": None, "clips": {}}
    nkn = nk.get("within_noise") or {"n": 0, "of": 0, "share": None}
    pct = lambda s: "—" if s is None else f"{100 * s:.0f} %"  # noqa: E731
    lines = [f"# foleyloop evaluation `{header['eval_id']}`", ""]
    lines += [f"- corpus: `{header['corpus_path']}` ({header['corpus_kind']}, {summary['n_clips']} clips, sha256 "
              f"`{header['corpus_hash'][:16]}…`)",
              f"- backends: {header['backends']}",
              f"- code: `{header['code_version']}`{' (uncommitted changes)' if header.get('code_dirty') else ''}; "
              f"created {header['created_at']}",
              f"- scored {summary['n_scored']} of {summary['n_clips']} clips; failed: "
              + (", ".join(f"{f['name']} ({_cell(f['error'])[:200]})" for f in summary["failed"]) or "none"),
              f"- runs that kept a later round than round 0: {kl['n']} of {kl['of']} ({pct(kl['share'])})",
              f"- clips whose kept round is no worse than round 0 on every independent measure: {nw['n']} of "
              f"{nw['of']} ({pct(nw['share'])})",
              f"- of the runs that kept a later round, kept round no worse than round 0 on every independent measure: "
              f"{lnw['n']} of {lnw['of']} ({pct(lnw['share'])})",
              _noise_line(noise, pct),
              f"- runs with a later round the loop did not keep: the best of those no worse than round 0 on every "
              f"reference measure in {nk['n']} of {nk['of']} ({pct(nk['share'])})"
              + (f", within the seed noise in {nkn['n']} of {nkn['of']} ({pct(nkn['share'])})" if nkn["of"] else "")
              + ("; " + ", ".join(f"{_cell(name)} r{v['round_index']}: worse on "
                                  f"{', '.join(v['worse_on']) or 'nothing'}"
                                  + (f" (beyond noise: {', '.join(v['worse_on_noise']) or 'nothing'})"
                                     if v.get("worse_on_noise") is not None else "")
                                  for name, v in nk["clips"].items())
                 if nk["clips"] else ""),
              f"- CLAP caption: {header.get('clap_caption_rule', '')}", ""]
    if summary["model_missing"]:
        lines += ["Model measures not in the tables:", ""]
        lines += [f"- {fam}: {_cell(why)}" for fam, why in summary["model_missing"].items()]
        lines.append("")
    lines += ["Conditions: **single** = round 0 (the watcher's plan rendered once); **loop** = the round the critic "
              "loop kept (rN). Reference measures compare with the clip's original soundtrack; `F1 chance` is the "
              "onset F1 of the same onsets circularly shifted (20–80 %), `ctl` is the cross-clip control (log-mel "
              "profile r with the other clips' references; rank 1 = closest to its own). "
              "Lower is better for dropout s, DeSync s and ctl rank.", ""]
    head = ["clip", "run", "cond"] + [m.label for m in cols]
    sep = ["---"] * 3 + ["---:"] * len(cols)

    def row(first: str, run: str, cond: str, values: dict, mean: bool = False) -> str:
        digits = [(max(m.digits, 2) if mean else m.digits) for m in cols]  # a mean rank is not a whole number
        return "| " + " | ".join([first, run, cond] + [_fmt(values.get(m.key), d) for m, d in zip(cols, digits)]) \
            + " |"

    for g, info in summary["groups"].items():
        members = [c for c in scored if (c.get("group") or "ungrouped") == g]
        lines += [f"## {g} ({len(members)} clip{'s' if len(members) != 1 else ''})", "",
                  "| " + " | ".join(head) + " |", "| " + " | ".join(sep) + " |"]
        for c in members:
            lines.append(row(_cell(c["name"]), f"`{c.get('run_id') or '—'}`", "single r0", c["metrics"]["round0"]))
            lines.append(row("", "", f"loop r{c.get('kept_index')}", c["metrics"]["kept"]))
        lines.append(row("**mean**", "", "single", info["mean"]["round0"], mean=True))
        lines.append(row("**mean**", "", "loop", info["mean"]["kept"], mean=True))
        lines.append("")
    lines += _foley_section(summary.get("foley_targets"))
    if scored:
        lines += ["## all clips (mean)", "", "| " + " | ".join(head) + " |", "| " + " | ".join(sep) + " |",
                  row(f"**all ({len(scored)})**", "", "single", summary["overall"]["mean"]["round0"], mean=True),
                  row(f"**all ({len(scored)})**", "", "loop", summary["overall"]["mean"]["kept"], mean=True), ""]
        lines += ["## loop vs single shot, per clip", "",
                  "| clip | group | rounds | stop | kept round | critic r0 → kept | better | worse | tied | no worse "
                  "| worse on | no worse within noise | worse beyond noise on |",
                  "| --- | --- | ---: | --- | ---: | --- | ---: | ---: | ---: | --- | --- | --- | --- |"]
        for c in scored:
            k = c.get("no_worse_counts") or {}
            kn = c.get("no_worse_noise_counts") or {}
            crit = {r["index"]: r.get("overall") for r in c.get("critic") or []}
            lines.append(f"| {_cell(c['name'])} | {_cell(c.get('group') or '')} | {c.get('n_rounds', '—')} | "
                         f"{_cell(c.get('stop_reason') or '—')} | {c.get('kept_index')} | "
                         f"{_fmt(crit.get(0))} → {_fmt(crit.get(c.get('kept_index')))} | {k.get('better', '—')} | "
                         f"{k.get('worse', '—')} | {k.get('tied', '—')} | {_fmt(c.get('no_worse'))} | "
                         f"{', '.join(k.get('worse_on') or []) or '—'} | {_fmt(c.get('no_worse_noise'))} | "
                         f"{', '.join(kn.get('worse_on') or []) or '—'} |")
        lines.append("")
    lines += [f"Plots: `{PLOT_METRICS}` (per-clip measures, single shot vs loop), `{PLOT_CRITIC}` (critic overall "
              "score per round).", ""]
    return "\n".join(lines)


def _noise_line(noise: dict | None, pct) -> str:
    head = ("- of the runs that kept a later round, kept round no worse than round 0 within the measures' seed noise "
            "(no measure falls by more than two renders of one plan differ): ")
    if noise is None or (not noise.get("of") and noise.get("missing")):
        return head + "not recorded (an evaluation made before the noise tolerances)"
    tol = noise.get("tolerance") or {}
    by = ", ".join(f"{BY_KEY[k].label} {v:g}" for k, v in tol.items() if k in BY_KEY)
    return (head + f"{noise['n']} of {noise['of']} ({pct(noise['share'])})"
            + (f" ({noise['missing']} not recorded)" if noise.get("missing") else "")
            + (f"; tolerances: {by}" if by else ""))


# ------------------------------------------------------------------------------------------------------- plots

def plot_metrics(clips: Sequence[dict], path: Path) -> Path | None:
    """Grouped bars per clip — round 0 vs kept — one panel per directional measure that has values."""
    from matplotlib.figure import Figure

    scored = _scored(clips)
    panels = [m for m in DIRECTIONAL
              if any((c["metrics"].get(cond) or {}).get(m.key) is not None for c in scored for cond in CONDITIONS)]
    if not panels:
        return None
    ncols = 3
    nrows = -(-len(panels) // ncols)
    names = [c["name"] for c in scored]
    fig = Figure(figsize=(5 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    x = list(range(len(names)))
    for ax, m in zip(axes.flat, panels):
        for off, cond, label in ((-0.2, "round0", "single (r0)"), (0.2, "kept", "loop (kept)")):
            vals = [(c["metrics"].get(cond) or {}).get(m.key) for c in scored]
            ax.bar([i + off for i in x], [v if v is not None else 0.0 for v in vals], width=0.4, label=label)
        ax.set_title(f"{m.label} ({m.better} is better)", fontsize=9)
        ax.set_xticks(x, names, rotation=40, ha="right", fontsize=7)
        ax.axhline(0, color="black", linewidth=0.5)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.savefig(path, dpi=90)
    return path


def plot_critic(clips: Sequence[dict], path: Path) -> Path | None:
    """The critic's overall score per round for each clip; the kept round is starred."""
    from matplotlib.figure import Figure

    series = [(c["name"], sorted((r["index"], r["overall"]) for r in c.get("critic") or []
                                 if r.get("overall") is not None), c.get("kept_index"))
              for c in clips if c.get("critic")]
    series = [s for s in series if s[1]]
    if not series:
        return None
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for name, pts, kept in series:
        xs, ys = zip(*pts)
        line, = ax.plot(xs, ys, marker="o", label=name)
        for xi, yi in pts:
            if xi == kept:
                ax.plot([xi], [yi], marker="*", markersize=14, color=line.get_color())
    ax.set_xlabel("round")
    ax.set_ylabel("critic overall score")
    ax.set_xticks(sorted({x for _, pts, _ in series for x, _ in pts}))
    ax.set_title("critic score per round (★ = kept round)", fontsize=10)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=90)
    return path


def write(out_dir: Path, header: dict, clips: Sequence[dict]) -> dict:
    """Write report.json, report.md and the plots into ``out_dir``; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(clips)
    plots = {}
    for name, fn in ((PLOT_METRICS, plot_metrics), (PLOT_CRITIC, plot_critic)):
        done = fn(clips, out_dir / name)
        if done is not None:
            plots[name] = str(done)
    data = {"eval": header, "summary": summary, "clips": list(clips), "plots": plots,
            "measures": [{"key": m.key, "label": m.label, "better": m.better, "kind": m.kind} for m in MEASURES]}
    _atomic(out_dir / "report.json", json.dumps(data, indent=2, default=str) + "\n")
    _atomic(out_dir / "report.md", markdown(header, clips, summary))
    return summary


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
