"""Charts and diffs for the run page: pure functions of stored data (no Streamlit calls), so tests can check them."""

from __future__ import annotations

import difflib
import re

import altair as alt
import numpy as np
import pandas as pd

from contract.plan import SECTIONS, Critique, Plan
from store.schema import Round

DIMS = ("semantic", "temporal", "aesthetic", "spatial")
WAVE_BINS = 1200
SPEC_TIME_BINS = 160
SPEC_FREQ_BINS = 48
_SPAN_KINDS = {"continuous", "ambience", "speech", "music"}


# ---- text from models and users is data: never Markdown ------------------------------------------------------------
# A model-written plan (or a run's error, a file name, a query parameter) may hold ``![x](http://host/beacon.png)``
# or ``<img src=...>``; rendered as Markdown that is a request to any URL each time the page is viewed. Blocks of
# such text go through ``st.text``; where it sits inside a sentence of ours (alerts, captions, st.table cells,
# which render Markdown), ``md_escape`` backslash-escapes what could build a link, an image, HTML or markup, and
# breaks bare URLs (GFM autolinks) so that none becomes a link.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>!#|~$&@{}^])")
_AUTOLINK = re.compile(r"(?i)(?<=:)//|(?<=\bwww)\.")


def md_escape(text: object) -> str:
    """``text`` shown literally inside Markdown (the characters are kept; nothing is interpreted)."""
    out = _MD_SPECIAL.sub(r"\\\1", "" if text is None else str(text))
    return _AUTOLINK.sub(lambda m: "\\/\\/" if m.group(0) == "//" else "\\.", out)


def md_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every text cell of a frame for ``st.table`` (which renders Markdown in cells) escaped."""
    return df.apply(lambda c: c.map(lambda v: md_escape(v) if isinstance(v, str) else v)) if len(df) else df


def round_label(r: Round) -> str:
    return f"{r.branch}.{r.index}"


# ---- scores ----------------------------------------------------------------------------------------------
def scores_frame(rounds: list[Round]) -> pd.DataFrame:
    """Long format (round, order, dimension, score) for every scored round; unscored dimensions are left out."""
    rows = []
    for order, r in enumerate(rounds):
        for dim, value in [*r.scores().items(), ("overall", r.score_overall)]:
            if value is not None:
                rows.append({"round": round_label(r), "order": order, "dimension": dim, "score": float(value),
                             "author": r.author})
    return pd.DataFrame(rows, columns=["round", "order", "dimension", "score", "author"])


def scores_table(rounds: list[Round]) -> pd.DataFrame:
    """Wide table (one row per round) for an HTML table the browser and screen readers can read."""
    data = [{"round": round_label(r), "author": r.author, "status": r.status,
             **{d: _fmt(v) for d, v in r.scores().items()}, "overall": _fmt(r.score_overall)} for r in rounds]
    return pd.DataFrame(data, columns=["round", "author", "status", *DIMS, "overall"])


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def score_chart(rounds: list[Round], thresholds: dict[str, float] | None = None) -> alt.Chart | None:
    df = scores_frame(rounds)
    if df.empty:
        return None
    order = list(dict.fromkeys(df.sort_values("order")["round"]))
    base = alt.Chart(df).encode(
        x=alt.X("round:N", sort=order, title="round (branch.index)"),
        y=alt.Y("score:Q", scale=alt.Scale(domain=[0, 1]), title="score"),
        color=alt.Color("dimension:N", sort=[*DIMS, "overall"]),
        tooltip=["round", "author", "dimension", alt.Tooltip("score:Q", format=".3f")],
    )
    chart = base.mark_line(point=True)
    if thresholds:
        th = pd.DataFrame([{"dimension": d, "threshold": v} for d, v in thresholds.items()])
        chart = chart + alt.Chart(th).mark_rule(strokeDash=[4, 4], opacity=0.5).encode(
            y="threshold:Q", color=alt.Color("dimension:N"), tooltip=["dimension", "threshold"])
    return chart.properties(height=260)


# ---- audio views with the plan's events drawn on top ----------------------------------------------------------
def events_frame(plan: Plan) -> pd.DataFrame:
    rows = [{"id": e.id, "label": e.label, "kind": e.kind.value, "start_s": e.start_s,
             "end_s": max(e.end_s, e.start_s + 0.02), "gain_db": e.gain_db, "pan": e.pan,
             "confidence": e.confidence, "span": e.kind.value in _SPAN_KINDS} for e in plan.events]
    return pd.DataFrame(rows, columns=["id", "label", "kind", "start_s", "end_s", "gain_db", "pan", "confidence",
                                       "span"])


def envelope(audio: np.ndarray, sr: int, bins: int = WAVE_BINS) -> pd.DataFrame:
    """Min/max envelope of the mono mix, ``bins`` points: enough for the eye, small for the browser."""
    mono = np.asarray(audio, dtype=np.float32)
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono
    n = mono.shape[0]
    if n == 0:
        return pd.DataFrame(columns=["t", "lo", "hi"])
    bins = max(1, min(bins, n))
    edges = np.linspace(0, n, bins + 1).astype(int)
    lo = np.minimum.reduceat(mono, edges[:-1])
    hi = np.maximum.reduceat(mono, edges[:-1])
    return pd.DataFrame({"t": edges[:-1] / sr, "lo": lo, "hi": hi})


def spectrogram(audio: np.ndarray, sr: int, time_bins: int = SPEC_TIME_BINS,
                freq_bins: int = SPEC_FREQ_BINS) -> pd.DataFrame:
    """Log-frequency power spectrogram in dB, pooled to a small grid of (t0, t1, f0, f1, db) cells."""
    from scipy.signal import spectrogram as sp

    mono = np.asarray(audio, dtype=np.float32)
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono
    nper = int(min(2 ** round(np.log2(sr * 0.025)), max(64, len(mono) // 8)))  # ~25 ms windows
    f, t, sxx = sp(mono, fs=sr, nperseg=nper, noverlap=nper // 2, scaling="spectrum")
    if sxx.size == 0 or len(f) < 2:
        return pd.DataFrame(columns=["t0", "t1", "f0", "f1", "db"])
    # Pool time frames into at most ``time_bins`` columns.
    tedges = np.unique(np.linspace(0, len(t), min(time_bins, len(t)) + 1).astype(int))
    pooled_t = np.add.reduceat(sxx, tedges[:-1], axis=1) / np.diff(tedges)[None, :]
    # Pool frequency rows into log-spaced bands; a band too narrow to hold a row takes its nearest row.
    fedges = np.geomspace(max(f[1], 20.0), f[-1], freq_bins + 1)
    centres = np.sqrt(fedges[:-1] * fedges[1:])
    band = np.digitize(f, fedges) - 1
    sums = np.zeros((freq_bins, pooled_t.shape[1]))
    counts = np.zeros(freq_bins)
    ok = (band >= 0) & (band < freq_bins)
    np.add.at(sums, band[ok], pooled_t[ok])
    np.add.at(counts, band[ok], 1)
    nearest = pooled_t[np.abs(f[None, :] - centres[:, None]).argmin(axis=1)]
    power = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], nearest)
    dt = (t[1] - t[0]) if len(t) > 1 else len(mono) / sr
    t0 = np.clip(t[tedges[:-1]] - dt / 2, 0, None)
    t1 = t[tedges[1:] - 1] + dt / 2
    ti, fi = np.meshgrid(np.arange(len(t0)), np.arange(freq_bins), indexing="ij")
    return pd.DataFrame({"t0": t0[ti.ravel()], "t1": t1[ti.ravel()], "f0": fedges[fi.ravel()],
                         "f1": fedges[fi.ravel() + 1], "db": 10 * np.log10(power.T.ravel() + 1e-12)})


def _event_layers(plan: Plan, y_field: str | None = None) -> list[alt.Chart]:
    ev = events_frame(plan)
    if ev.empty:
        return []
    tooltip = ["id", "label", "kind", alt.Tooltip("start_s:Q", format=".2f"), alt.Tooltip("end_s:Q", format=".2f"),
               "gain_db", "pan"]
    spans = alt.Chart(ev[ev["span"]]).mark_rect(opacity=0.18).encode(
        x="start_s:Q", x2="end_s:Q", color=alt.Color("kind:N", title="event kind"), tooltip=tooltip)
    hits = alt.Chart(ev[~ev["span"]]).mark_rule(strokeWidth=2).encode(
        x="start_s:Q", color=alt.Color("kind:N", title="event kind"), tooltip=tooltip)
    labels = alt.Chart(ev).mark_text(align="left", dx=3, dy=-4, fontSize=10, angle=0).encode(
        x="start_s:Q", y=alt.value(10), text="label:N")
    return [spans, hits, labels]


def segments_frame(plan: Plan, critique_json: str | None = None) -> pd.DataFrame:
    """A segmented plan's segments, one row each (empty for a one-window plan), with this round's per-segment
    overall score and whether the segment was rendered in this round (or its audio reused)."""
    parts = {}
    if critique_json:
        try:
            parts = {p.index: p for p in Critique.from_json(critique_json).segments or []}
        except ValueError:
            parts = {}
    rows = []
    for sg in plan.segments or []:
        p = parts.get(sg.index)
        rows.append({"segment": sg.index, "start_s": sg.start_s, "end_s": sg.end_s,
                     "starts_at": "cut" if sg.cut else ("split" if sg.index else "start"), "scene": sg.scene,
                     "crossfade_s": sg.xfade_in_s, "caption": sg.caption or plan.caption,
                     "overall": None if p is None or p.overall is None else round(p.overall, 3),
                     "rendered": None if p is None else ("rendered" if p.rendered else "reused")})
    return pd.DataFrame(rows, columns=["segment", "start_s", "end_s", "starts_at", "scene", "crossfade_s", "caption",
                                       "overall", "rendered"])


def _segment_layers(plan: Plan) -> list[alt.Chart]:
    """Segment boundaries on the timeline: a dashed rule where each segment after the first starts."""
    seg = segments_frame(plan)
    seg = seg[seg["segment"] > 0]
    if seg.empty:
        return []
    seg = seg.assign(name="segment " + seg["segment"].astype(str))
    tooltip = ["name", "starts_at", "scene", alt.Tooltip("start_s:Q", format=".2f", title="boundary (s)"),
               alt.Tooltip("crossfade_s:Q", format=".2f")]
    rules = alt.Chart(seg).mark_rule(strokeDash=[4, 3], color="#666666", strokeWidth=1.5).encode(
        x="start_s:Q", tooltip=tooltip)
    names = alt.Chart(seg).mark_text(align="left", dx=2, fontSize=9, color="#666666").encode(
        x="start_s:Q", y=alt.value(195), text="name:N")
    return [rules, names]


def waveform_chart(env: pd.DataFrame, plan: Plan) -> alt.Chart:
    """``env`` from ``envelope``; a segmented plan's boundaries are dashed rules."""
    wave = alt.Chart(env).mark_area(color="#4c78a8", opacity=0.85).encode(
        x=alt.X("t:Q", title="time (s)", scale=alt.Scale(domain=[0, max(plan.duration_s, float(env["t"].max() or 0))])),
        y=alt.Y("lo:Q", title="amplitude", scale=alt.Scale(domain=[-1, 1])), y2="hi:Q")
    return alt.layer(wave, *_event_layers(plan), *_segment_layers(plan)).properties(height=200)


def _freq_domain(spec: pd.DataFrame):
    return alt.Undefined if spec.empty else [float(spec["f0"].min()), float(spec["f1"].max())]


def spectrogram_chart(spec: pd.DataFrame, plan: Plan) -> alt.Chart:
    """``spec`` from ``spectrogram``."""
    top = float(spec["db"].max()) if not spec.empty else 0.0
    heat = alt.Chart(spec).mark_rect(strokeWidth=0).encode(
        x=alt.X("t0:Q", title="time (s)"), x2="t1:Q",
        y=alt.Y("f0:Q", title="frequency (Hz)",
                scale=alt.Scale(type="log", nice=False, domain=_freq_domain(spec))),
        y2="f1:Q",
        color=alt.Color("db:Q", title="dB",  # an 80 dB window below the peak: silence would flatten the rest
                        scale=alt.Scale(scheme="magma", domain=[top - 80.0, top], clamp=True)))
    return alt.layer(heat, *_event_layers(plan), *_segment_layers(plan)).resolve_scale(
        color="independent").properties(height=220)


# ---- plan diff -----------------------------------------------------------------------------------------------
def _event_lines(plan: Plan) -> list[str]:
    return [f"{e.id}  {e.label}  [{e.kind.value}]  {e.start_s:.2f}-{e.end_s:.2f}s  gain {e.gain_db:+.1f} dB  "
            f"pan {e.pan:+.2f}  conf {e.confidence:.2f}" for e in sorted(plan.events, key=lambda e: (e.start_s, e.id))]


def plan_sections(plan: Plan) -> dict[str, list[str]]:
    """Each editable part of a plan as lines of text, in display order."""
    out = {"caption": [plan.caption]}
    for s in SECTIONS:
        out[s] = getattr(plan, s).splitlines() or [""]
    out["events"] = _event_lines(plan)
    out["negatives"] = list(plan.negatives)
    return out


def plan_diff(parent: Plan | None, plan: Plan) -> dict[str, str]:
    """Unified diff per changed section (difflib); an empty dict means nothing changed."""
    if parent is None:
        return {}
    old, new = plan_sections(parent), plan_sections(plan)
    diffs = {}
    for name in new:
        if old.get(name) != new[name]:
            lines = difflib.unified_diff(old.get(name, []), new[name], fromfile=f"parent {name}",
                                         tofile=f"this {name}", lineterm="", n=2)
            diffs[name] = "\n".join(lines)
    return diffs
