"""The offline critic: four scores from signal analysis and aiSFX embeddings, no model hub.

- temporal: every audio onset (those inside continuous sounds too, weighted by loudness) vs the picture's contacts
  (``motion.contacts``, from the video, never from the plan), F1 within ±80 ms at the best global lag (searched in
  ±250 ms), discounted when that lag is audible; a layer whose loud onsets match no contact is named as masking
  the impacts; envelope correlation when the video shows no contacts.
- semantic: what the render sounds like vs what the picture shows, never vs the plan's own labels (issue 9):
  windows of the render are named by their nearest reference recordings in aiSFX space (the host's sample bank),
  and those labels are compared (MiniLM) with ImageNet labels the critic takes from its own keyframes
  (``picture``). Generic foley fits and is neutral; a specific source the picture does not support costs
  (``semantic``). A *proxy* for CLAP-style audio–text scoring: there is no embedded audio–text model.
- aesthetic: BS.1770 loudness against a delivery range, true peak / clipping, silence inside planned events,
  DC offset.
- spatial: the pan heard in the left/right energy balance vs the visual motion balance.

Every finding carries a machine-readable ``hint`` the offline refiner acts on (see ``reasoning.offline.refiner``).
A missing part (no video, no motion analysis, no aiSFX, no reference recording) gives that score None and a finding
saying why; it never raises.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from scipy.optimize import linear_sum_assignment

from contract.options import BackendOptions
from reasoning.offline import audio_features as af
from reasoning.offline import semantic as sem
from reasoning.offline.motion import CONTACT_RULES, contacts
from reasoning.offline.picture import PictureCache, PictureLabels, PictureSupport
from contract.plan import Critique, EventKind, Finding, Plan, ScorerInfo
from store.media import AUDIO_EXTS, AudioFile, VideoInfo, read_audio

log = logging.getLogger(__name__)

NAME = "offline"
VERSION = "4"  # 3: over-loud hits are temporal findings; 4: contacts judged within a shot

# temporal
MATCH_TOL_S = 0.080       # an audio onset within ±80 ms of a visual onset is in sync
MAX_LAG_S = 0.250         # global lags searched
FREE_LAG_S = 0.040        # a constant lag up to this is not audible (ITU-R BT.1359 detectability: +45 ms / -125 ms)
LAG_FLOOR = 0.25          # sync discount at MAX_LAG_S (linear from 1.0 at FREE_LAG_S)
ENVELOPE_WIN_S = 0.2      # audio RMS smoothing for the motion-envelope fallback (motion energy is slow)
# semantic: how sure the critic is that a window of the render *is* its nearest reference recording. Cosine in aiSFX
# space is compressed, and the nearest of ~180 references is the maximum of many: on renders of five corpus clips,
# windows that mix generic layers (thuds + rustle + bed) come out 0.83-0.89 near some "hub" recording (a toy robot,
# a drum loop) with the next distinct label within 0.00-0.02; a window that is one recording (a looped dog bark, the
# procedural rustle) is 0.97-0.99 near it and 0.05-0.17 above the next. So confidence = cosine 0.85 -> 0 .. 0.95 ->
# 1, times the margin over the next distinct label 0 -> 0 .. 0.04 -> 1; below that the window is judged neutral.
SEM_COS_LO, SEM_COS_HI = 0.85, 0.95
SEM_MARGIN = 0.04
# aesthetic
LUFS_RANGE = (-23.0, -14.0)   # EBU R128 broadcast (-23) to streaming (-14) delivery
LUFS_TARGET = -18.0
LUFS_SPAN = 12.0          # loudness score reaches 0 this many LU outside the range
TRUE_PEAK_MAX = -1.0      # dBTP
CLIP_RATIO_BAD = 1e-3     # 0.1 % of samples at full scale scores 0 on the peak component
SILENT_EVENT_DBFS = -60.0
DIGITAL_SILENCE_DBFS = -90.0
DC_MAX = 0.01
AES_WEIGHTS = {"loudness": 0.35, "peak": 0.35, "silence": 0.25, "dc": 0.05}
# spatial
MOTION_MIN = 0.1          # windows with less (normalised) visual motion say nothing about position
AUDIO_ACTIVE_DB = -30.0   # windows more than this below the loudest one are not judged
SPATIAL_SPAN = 1.5        # mean |pan_audio - balance_visual| that scores 0
PAN_FIX = 0.4             # an event whose heard pan is this far from the picture gets a pan hint

# ---- small containers ---------------------------------------------------------------------------------
@dataclass
class DimensionResult:
    score: float | None
    scorers: list[ScorerInfo] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


@dataclass
class LagFit:
    lag: float
    f1: float
    score: float
    pairs: list[tuple[int, int]]          # (visual index, audio index)
    precision: float                      # loudness-weighted
    recall: float
    unmatched_visual: list[int]
    unmatched_audio: list[int]


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


# ---- temporal -----------------------------------------------------------------------------------------
def lag_factor(lag: float) -> float:
    """1 inside the inaudible band, falling linearly to LAG_FLOOR at MAX_LAG_S."""
    excess = abs(lag) - FREE_LAG_S
    if excess <= 0:
        return 1.0
    return max(LAG_FLOOR, 1.0 - (1.0 - LAG_FLOOR) * excess / (MAX_LAG_S - FREE_LAG_S))


def match_onsets(visual: np.ndarray, audio: np.ndarray, lag: float, tol: float = MATCH_TOL_S
                 ) -> list[tuple[int, int]]:
    """Optimal one-to-one pairs (visual i, audio j) with |audio - lag - visual| <= tol, in visual order.

    The most pairs, then the least total distance (a linear assignment). Onsets only pair within ``tol``, so
    the problem splits into runs of nearby onsets: a lone pair is taken as is and only runs with a choice go
    through ``linear_sum_assignment`` (a whole-clip cost matrix is quadratic in memory and cubic in time).
    """
    v = np.asarray(visual, dtype=np.float64)
    u = np.asarray(audio, dtype=np.float64) - lag  # the same arithmetic as |(audio - lag) - visual|
    if len(v) == 0 or len(u) == 0:
        return []
    vo, uo = np.argsort(v, kind="stable"), np.argsort(u, kind="stable")
    vs, us = v[vo], u[uo]
    lo = np.searchsorted(us, vs - tol - 1e-9, side="left")
    hi = np.searchsorted(us, vs + tol + 1e-9, side="right")
    while True:  # trim each window to the exact distance test (the pairs it passes are contiguous)
        bad_lo = (lo < hi) & (np.abs(us[np.minimum(lo, len(us) - 1)] - vs) > tol)
        bad_hi = (hi > lo) & (np.abs(us[np.maximum(hi - 1, 0)] - vs) > tol)
        if not (bad_lo.any() or bad_hi.any()):
            break
        lo, hi = lo + bad_lo, hi - bad_hi
    rows = np.flatnonzero(hi > lo)
    if rows.size == 0:
        return []
    # Runs: consecutive rows whose column windows overlap (windows only move right as the rows do).
    reach = np.maximum.accumulate(hi[rows])
    starts = np.flatnonzero(np.r_[True, lo[rows[1:]] >= reach[:-1]])
    ends = np.r_[starts[1:], rows.size]
    lone = (ends - starts == 1) & (hi[rows[starts]] - lo[rows[starts]] == 1)  # one visual, one audio: no choice
    pairs = list(zip(vo[rows[starts[lone]]].tolist(), uo[lo[rows[starts[lone]]]].tolist()))
    for s0, s1 in zip(starts[~lone], ends[~lone]):
        rr = rows[s0:s1]
        c0, c1 = int(lo[rr[0]]), int(reach[s1 - 1])
        d = np.abs(us[None, c0:c1] - vs[rr, None])
        r_idx, c_idx = linear_sum_assignment(np.where(d <= tol, d, 1e6))
        pairs.extend((int(vo[rr[i]]), int(uo[c0 + j])) for i, j in zip(r_idx, c_idx) if d[i, j] <= tol)
    return sorted(pairs)


def fit_lag(visual: Iterable[float], audio: Iterable[float], weights: Iterable[float] | None = None,
            tol: float = MATCH_TOL_S, max_lag: float = MAX_LAG_S) -> LagFit:
    """The global lag (audio minus video) that maximises F1 × audibility discount.

    Onset lists must be sorted. Precision weighs each audio onset by its loudness (``weights``), so the
    faint rattle after a hit costs less than a second full hit; recall counts every visual impact.
    Every lag that makes some audio onset coincide with some visual onset is a candidate; for each, the
    lag actually realised is the median offset of its matched pairs, and that is what the discount sees.
    """
    v = np.asarray(list(visual), dtype=np.float64)
    a = np.asarray(list(audio), dtype=np.float64)
    w = np.ones(len(a)) if weights is None else np.asarray(list(weights), dtype=np.float64)
    # audio onsets within ±max_lag of each visual one (a band, not the whole V×A matrix)
    a_sorted = np.sort(a)
    lo = np.searchsorted(a_sorted, v - max_lag - 1e-9, side="left")
    hi = np.searchsorted(a_sorted, v + max_lag + 1e-9, side="right")
    diffs = np.concatenate([[0.0]] + [a_sorted[l:h] - x for x, l, h in zip(v, lo, hi)])
    candidates = np.unique(np.round(diffs[np.abs(diffs) <= max_lag], 4))
    w_total = w.sum()
    best: LagFit | None = None
    best_key = None
    matched: OrderedDict[float, list[tuple[int, int]]] = OrderedDict()  # many candidates realise the same median

    def match(lag: float) -> list[tuple[int, int]]:
        if lag in matched:
            matched.move_to_end(lag)
        else:
            matched[lag] = match_onsets(v, a, lag, tol)
            if len(matched) > 16:  # a few recent lags: caching every candidate's pairs would grow with V x lags
                matched.popitem(last=False)
        return matched[lag]

    for cand in candidates:
        pairs = match(float(cand))
        lag = float(np.median(a[[j for _, j in pairs]] - v[[i for i, _ in pairs]])) if pairs else 0.0
        pairs = match(lag) or pairs
        pi = np.fromiter((i for i, _ in pairs), dtype=np.intp, count=len(pairs))
        pj = np.fromiter((j for _, j in pairs), dtype=np.intp, count=len(pairs))
        # running sums add in pair order, exactly as a Python sum() over the pairs would
        precision = float((np.cumsum(w[pj])[-1] if len(pj) else 0.0) / w_total) if len(a) and w_total > 0 else 0.0
        recall = len(pairs) / len(v) if len(v) else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        score = f1 * lag_factor(lag)
        resid = float(np.cumsum(np.abs(a[pj] - lag - v[pi]))[-1]) if len(pj) else 0
        key = (round(score, 9), -round(resid, 9), -abs(lag))
        if best_key is None or key > best_key:
            mv = set(pi.tolist())
            ma = set(pj.tolist())
            best_key = key
            best = LagFit(lag=lag, f1=f1, score=score, pairs=pairs, precision=precision, recall=recall,
                          unmatched_visual=[i for i in range(len(v)) if i not in mv],
                          unmatched_audio=[j for j in range(len(a)) if j not in ma])
    assert best is not None  # 0.0 is always a candidate
    return best


def _impact_events(plan: Plan) -> list:
    return sorted((e for e in plan.events if e.kind == EventKind.impact), key=lambda e: e.start_s)


def attribute_onsets(plan: Plan, onsets: list[float], tol: float = MATCH_TOL_S) -> tuple[dict[int, str], list[int]]:
    """({audio onset index: impact event id}, indices explained by non-impact events).

    An onset near an impact event's start came from it; an onset inside a continuous/ambience/speech/music
    span (and near no impact) is texture of that sound, not a claim of an impact, so precision ignores it.
    Onsets closest to an impact are attributed first. Nearby events are found by bisection, so a clip with
    thousands of hits costs no onsets × events loop.
    """
    owner: dict[int, str] = {}
    taken: set[str] = set()
    impacts = _impact_events(plan)
    starts = np.asarray([e.start_s for e in impacts], dtype=np.float64)
    t = np.asarray(onsets, dtype=np.float64)
    if len(impacts):
        k = np.searchsorted(starts, t)
        # nearest start: the neighbours around the insertion point (their min is the min over all starts)
        dist = np.minimum(np.abs(t - starts[np.clip(k - 1, 0, len(starts) - 1)]),
                          np.abs(t - starts[np.clip(k, 0, len(starts) - 1)]))
    else:
        dist = np.full(len(t), 9.0)
    for j in sorted(range(len(onsets)), key=lambda j: float(dist[j])):
        lo = int(np.searchsorted(starts, onsets[j] - tol - 1e-9, side="left"))
        hi = int(np.searchsorted(starts, onsets[j] + tol + 1e-9, side="right"))
        near = [e for e in impacts[lo:hi] if abs(onsets[j] - e.start_s) <= tol and e.id not in taken]
        if near:
            e = min(near, key=lambda e: abs(onsets[j] - e.start_s))
            owner[j] = e.id
            taken.add(e.id)
    beds = [e for e in plan.events if e.kind != EventKind.impact]
    texture = [j for j, t in enumerate(onsets) if j not in owner and any(
        e.start_s - tol <= t <= max(e.end_s, e.start_s) + tol for e in beds)]
    return owner, texture


def score_temporal(plan: Plan, audio: np.ndarray, sr: int, visual: Any) -> DimensionResult:
    """Onset F1 at the best lag, with hints to add, drop/shift or shift all events."""
    det = af.detect_onsets(audio, sr)
    # The picture's own contact evidence (weak motion, first frames and codec pulses are not contacts), from the
    # video analysis, never from the plan.
    v_onsets = [float(t) for t in contacts(visual)[0]]
    if not v_onsets:
        return _temporal_envelope(audio, sr, visual, det)
    owner, texture = attribute_onsets(plan, det.onsets)
    # Every audio onset is judged, those inside continuous sounds too (issue 9: a movement layer louder than the
    # bounces hid them while temporal said 1.0); precision weighs each by its loudness, so quiet texture costs little.
    keep = list(range(len(det.onsets)))
    a_onsets = list(det.onsets)
    v = sorted(v_onsets)
    salience = det.salience()
    fit = fit_lag(v, a_onsets, salience)
    findings: list[Finding] = _masking_findings(plan, det, fit, set(texture))
    findings += _overloud_findings(plan, det, fit, owner, dict(zip(*contacts(visual))), v)
    if abs(fit.lag) > FREE_LAG_S and len(fit.pairs) >= min(2, len(v)):
        findings.append(Finding(
            target="temporal", dimension="temporal",
            problem=f"sound runs {abs(fit.lag) * 1000:.0f} ms {'late' if fit.lag > 0 else 'early'} against the picture",
            suggestion=f"shift every event by {-fit.lag:+.3f} s", hint={"action": "shift_all", "by_s": round(-fit.lag, 4)}))
    # Unmatched impact sounds and unmatched visual hits near each other are one event in the wrong place.
    stray = {keep[j]: owner[keep[j]] for j in fit.unmatched_audio if keep[j] in owner}
    used_events: set[str] = set()
    impacts = {e.id: e for e in _impact_events(plan)}
    heard = set(owner.values())
    for i in fit.unmatched_visual:
        t = v[i]
        pan = round(float(visual.balance_over(t - 0.1, t + 0.1)), 3)
        hint: dict = {"action": "add_event", "time_s": round(t, 4), "pan": pan}
        near = [(abs(det.onsets[j] - fit.lag - t), eid) for j, eid in stray.items()
                if abs(det.onsets[j] - fit.lag - t) <= MAX_LAG_S and eid not in used_events]
        # An impact event that produced no onset at all (inaudible) near this hit is the same event.
        near += [(abs(e.start_s - t), e.id) for e in impacts.values()
                 if e.id not in heard and abs(e.start_s - t) <= MAX_LAG_S and e.id not in used_events]
        if near:
            eid = min(near)[1]
            hint["near_event"] = eid
            used_events.add(eid)
        findings.append(Finding(target="temporal", dimension="temporal",
                                problem=f"visible impact at {t:.2f}s has no sound",
                                suggestion=f"move event {hint['near_event']} there" if "near_event" in hint
                                else "add an impact event there", hint=hint))
    partner = {f.hint["near_event"]: f.hint["time_s"] for f in findings if "near_event" in f.hint}
    for j, eid in stray.items():
        hint = {"action": "drop_or_shift", "event": eid, "time_s": round(det.onsets[j], 4)}
        if eid in partner:
            hint["to_s"] = partner[eid]
        findings.append(Finding(target=eid, dimension="temporal",
                                problem=f"impact sound at {det.onsets[j]:.2f}s matches nothing on screen",
                                suggestion=f"move it to {hint['to_s']:.2f}s" if "to_s" in hint else "drop it",
                                hint=hint))
    note = (f"audio onsets (spectral flux) vs visual impacts: F1 {fit.f1:.2f} (loudness-weighted P "
            f"{fit.precision:.2f}, R {fit.recall:.2f}; "
            f"{len(fit.pairs)}/{len(v)} hits matched within ±{MATCH_TOL_S * 1000:.0f} ms) at lag "
            f"{fit.lag * 1000:+.0f} ms (sync factor {lag_factor(fit.lag):.2f}); {len(texture)} onsets inside "
            f"non-impact events counted by loudness")
    scorers = [ScorerInfo(name="onset_f1", version=VERSION, dimension="temporal", raw=round(fit.f1, 4), note=note),
               ScorerInfo(name="av_lag_s", version=VERSION, dimension="temporal", raw=round(fit.lag, 4),
                          note="best global lag, audio minus video (s), searched in ±250 ms")]
    return DimensionResult(_clip01(fit.score), scorers, findings)


# A hit is over-loud when it stands this far above what its contact's visual strength implies, judged against the
# clip's other matched hits (the median of level minus visual strength, in dB): an arm swing that gets the loudest
# thump while the main contact is near-silent. Visual strength below OVERLOUD_FLOOR_DB of the strongest contact is
# taken as that floor (a faint contact should still be heard).
OVERLOUD_DB = 9.0
OVERLOUD_FLOOR_DB = -15.0
OVERLOUD_MIN_PAIRS = 3


def _overloud_findings(plan: Plan, det: af.OnsetResult, fit: LagFit, owner: dict[int, str],
                       strength_at: dict[float, float], v: list[float]) -> list[Finding]:
    """Matched impact sounds far louder than their contact looks; the hint turns that event down (``gain_event``)."""
    pairs = [(i, j) for i, j in fit.pairs if j in owner and strength_at.get(v[i], 0.0) > 0]
    if len(pairs) < OVERLOUD_MIN_PAIRS:
        return []
    top = max(strength_at[v[i]] for i, _ in pairs)
    looks = {j: max(OVERLOUD_FLOOR_DB, 20 * math.log10(strength_at[v[i]] / top)) for i, j in pairs}
    residual = {j: det.levels_db[j] - looks[j] for _, j in pairs}
    typical = float(np.median(list(residual.values())))
    events = {e.id: e for e in plan.events}
    out = []
    for i, j in pairs:
        excess = residual[j] - typical
        if excess <= OVERLOUD_DB or owner[j] not in events:
            continue
        e = events[owner[j]]
        by = -round(excess - OVERLOUD_DB / 3, 1)
        out.append(Finding(target=e.id, dimension="temporal",
                           problem=f"'{e.label}' ({e.id}) at {det.onsets[j]:.2f}s is {excess:.0f} dB louder than its "
                                   f"contact looks, against the clip's other hits",
                           suggestion=f"turn it down by {-by:.0f} dB",
                           hint={"action": "gain_event", "event": e.id, "by_db": by, "reason": "over-loud hit"}))
    return out


MASK_SALIENCE = 0.5  # an unmatched onset within 10 dB of the loudest one is loud enough to mask the contacts
MASK_SOFTEN_DB = -6.0


def _masking_findings(plan: Plan, det: af.OnsetResult, fit: LagFit, texture: set[int]) -> list[Finding]:
    """Loud onsets with nothing on screen, made by a continuous/ambience event: that layer masks the impacts.

    The hint softens the layer that holds the most such loudness (the refiner's ``gain_event``)."""
    salience = det.salience()
    beds = [e for e in plan.events if e.kind in (EventKind.continuous, EventKind.ambience)]
    load: dict[str, list[float]] = {}
    for j in fit.unmatched_audio:
        if j not in texture or salience[j] < MASK_SALIENCE:
            continue
        t = det.onsets[j]
        inside = [e for e in beds if e.start_s - MATCH_TOL_S <= t <= e.end_s + MATCH_TOL_S]
        if inside:
            load.setdefault(max(inside, key=lambda e: e.gain_db).id, []).append(t)
    out = []
    for eid, times in sorted(load.items(), key=lambda kv: -len(kv[1]))[:8]:
        ev = next(e for e in beds if e.id == eid)
        out.append(Finding(target=eid, dimension="temporal",
                           problem=f"'{ev.label}' ({eid}) makes {len(times)} loud onsets with no contact on screen "
                                   f"(first at {times[0]:.2f}s): it competes with the impacts",
                           suggestion=f"soften it by {-MASK_SOFTEN_DB:.0f} dB",
                           hint={"action": "gain_event", "event": eid, "by_db": MASK_SOFTEN_DB}))
    return out


def _temporal_envelope(audio: np.ndarray, sr: int, visual: Any, det: af.OnsetResult) -> DimensionResult:
    """No visual impacts: correlate the motion envelope with the audio envelope (best lag in ±250 ms)."""
    times = np.asarray(visual.times, dtype=np.float64)
    motion = np.asarray(visual.motion, dtype=np.float64)
    env = af.rms_envelope(audio, sr, times, win_s=ENVELOPE_WIN_S)
    if len(times) < 4 or motion.std() < 1e-6 or env.std() < 1e-9:
        why = "the picture is static" if len(times) < 4 or motion.std() < 1e-6 else "the audio level never changes"
        return DimensionResult(None, [ScorerInfo(name="motion_audio_corr", version=VERSION, dimension="temporal",
                                                 note=f"no visual impacts and {why}: nothing to sync against")],
                               [Finding(target="temporal", dimension="temporal",
                                        problem=f"timing cannot be judged: no visual impacts and {why}")])
    max_shift = int(round(MAX_LAG_S * visual.fps))
    best_r, best_k = -2.0, 0
    for k in range(-max_shift, max_shift + 1):
        m, e = (motion[:len(motion) - k], env[k:]) if k >= 0 else (motion[-k:], env[:len(env) + k])
        if len(m) >= 4 and m.std() > 1e-9 and e.std() > 1e-12:
            r = float(np.corrcoef(m, e)[0, 1])
            if r > best_r + 1e-9 or (abs(r - best_r) <= 1e-9 and abs(k) < abs(best_k)):
                best_r, best_k = r, k
    lag = best_k / visual.fps
    findings = []
    if best_r > 0.5 and abs(lag) > FREE_LAG_S:
        findings.append(Finding(target="temporal", dimension="temporal",
                                problem=f"audio envelope follows the motion {lag * 1000:+.0f} ms off",
                                suggestion=f"shift every event by {-lag:+.3f} s",
                                hint={"action": "shift_all", "by_s": round(-lag, 4)}))
    note = (f"no visual impacts found, so: Pearson r of motion energy vs audio RMS envelope, best lag "
            f"{lag * 1000:+.0f} ms; score (1+r)/2 (0.5 = unrelated)")
    return DimensionResult(_clip01((1.0 + best_r) / 2.0),
                           [ScorerInfo(name="motion_audio_corr", version=VERSION, dimension="temporal",
                                       raw=round(best_r, 4), note=note)], findings)


# ---- semantic -----------------------------------------------------------------------------------------
def rescale_cosine(cos: float) -> float:
    return _clip01((cos - SEM_COS_LO) / (SEM_COS_HI - SEM_COS_LO))


SEM_WINDOW_S = 100 * 1024 / 44100   # one aiSFX block (100 frames, hop 1024 at 44.1 kHz): ~2.32 s
SEM_MIN_WINDOW_S = 1.0              # a shorter tail is not judged on its own
SEM_MAX_WINDOWS = 6                 # the aiSFX CNN is the critic's main cost: a few windows, spread over the clip
SEM_NEAREST = 2                     # the nearest label and the next one (its margin is part of the confidence)


def semantic_windows(audio, sr: int) -> list[tuple[float, float]]:
    """Consecutive one-block windows of the render that are not silent, at most SEM_MAX_WINDOWS spread evenly.

    Chosen from the audio alone, so the same render is judged on the same windows whatever its plan says."""
    duration = af.n_samples(audio) / sr
    spans, t = [], 0.0
    while t < duration - 1e-9:
        b = min(duration, t + SEM_WINDOW_S)
        if b - t >= SEM_MIN_WINDOW_S or not spans:
            spans.append((t, b))
        t = b
    active = [(a, b) for a, b in spans if af.span_rms_db(audio, sr, a, b) >= af.SILENCE_DBFS]
    if len(active) <= SEM_MAX_WINDOWS:
        return active
    pick = np.unique(np.round(np.linspace(0, len(active) - 1, SEM_MAX_WINDOWS)).astype(int))
    return [active[i] for i in pick]


@dataclass
class HeardWindow:
    start_s: float
    end_s: float
    nearest: list[tuple[str, float]]          # (reference label, aiSFX cosine), best first
    support: float                            # picture support of the nearest label
    confidence: float                         # that the window is what its nearest label says
    score: float


def identification(nearest: list[tuple[str, float]]) -> float:
    """Confidence that a window is its nearest reference: close to it, and clearly closer than to the next label."""
    if not nearest:
        return 0.0
    margin = nearest[0][1] - nearest[1][1] if len(nearest) > 1 else SEM_MARGIN
    return rescale_cosine(nearest[0][1]) * _clip01(margin / SEM_MARGIN)


def _judge_window(start: float, end: float, nearest: list[tuple[str, float]], support: float) -> HeardWindow:
    """The nearest label's fit with the picture, pulled to neutral as the identification gets unsure ("when in
    doubt, understate": a mix the critic cannot name is not accused of being a dog)."""
    conf = identification(nearest)
    fit = sem.fit(sem.specificity(nearest[0][0]), support) if nearest else sem.NEUTRAL
    return HeardWindow(start, end, nearest, support, conf, conf * fit + (1.0 - conf) * sem.NEUTRAL)


def score_semantic(plan: Plan, audio, sr: int, embedder: Any, index: "sem.ReferenceIndex",
                   support: "PictureSupport", threshold: float, seen: str = "") -> DimensionResult:
    """Mean over windows of how what the render sounds like (its nearest reference recordings' labels) fits what
    the picture shows; a confidently heard specific source the picture does not support is a finding.

    The plan is read only to name the event a finding is about, never for the score."""
    version = f"{_embedder_version(embedder)}+{getattr(support.text, 'model_id', 'text')}"
    windows = semantic_windows(audio, sr)
    if not windows:
        events = [e for e in plan.events if e.start_s < af.n_samples(audio) / sr]
        why = "the render is silent"
        return DimensionResult(0.0 if events else None,
                               [ScorerInfo(name="heard_vs_picture", version=version, dimension="semantic",
                                           note=f"{why}: nothing to identify")],
                               [Finding(target="semantic", dimension="semantic", problem=why)] if events else [])
    embs = _embed_many(embedder, [af.segment(audio, sr, a, b) for a, b in windows], sr)
    judged = []
    for (a, b), emb in zip(windows, embs):
        nearest = index.nearest(emb, SEM_NEAREST)
        sup = support.support([nearest[0][0]], a, b)[0][0] if nearest else 0.0
        judged.append(_judge_window(a, b, nearest, sup))
    score = float(np.mean([w.score for w in judged]))
    findings = _unsupported_findings(plan, judged, support.text, threshold)
    heard = "; ".join(f"{w.start_s:.1f}s {w.nearest[0][0][:40]!r} (cosine {w.nearest[0][1]:.2f}, confidence "
                      f"{w.confidence:.2f}, support {w.support:.2f})" for w in judged[:4] if w.nearest)
    note = (f"what the render sounds like vs what the picture shows (not the plan's labels): {len(judged)} windows "
            f"of {SEM_WINDOW_S:.2f} s, each named by its nearest of {len(index)} reference recordings (aiSFX; "
            f"confidence: cosine {SEM_COS_LO}->0..{SEM_COS_HI}->1 times margin over the next label /{SEM_MARGIN}, "
            f"unsure windows count as neutral); that label vs the picture's ImageNet "
            f"labels ({seen}) by MiniLM similarity; generic sounds score {sem.NEUTRAL} (fits, neutral), a specific "
            f"source scores its picture support; heard: {heard}")
    return DimensionResult(_clip01(score), [ScorerInfo(name="heard_vs_picture", version=version,
                                                       dimension="semantic", raw=round(score, 4), note=note)],
                           findings)


def _unsupported_findings(plan: Plan, judged: list[HeardWindow], text: Any, threshold: float) -> list[Finding]:
    """One finding per event that sounds like a specific source the picture does not show."""
    out: dict[str, Finding] = {}
    for w in judged:
        if not w.nearest or w.score >= threshold:
            continue
        label, cos = w.nearest[0]
        sup = w.support
        if sem.specificity(label) < 0.5 or w.confidence < sem.HEARD or sup >= sem.SUPPORTED:
            continue
        candidates = [e for e in plan.events if e.kind not in (EventKind.speech, EventKind.music)
                      and e.start_s < w.end_s and max(e.end_s, e.start_s + 0.1) > w.start_s]
        if candidates:  # the event whose label is closest to what is heard made it (the plan only names the target)
            emb = np.asarray(text.encode([label] + [e.label for e in candidates]), dtype=np.float32)
            ev = candidates[int(np.argmax(emb[1:] @ emb[0]))]
        else:
            ev = None
        if ev is not None and ev.id in out:
            continue
        problem = (f"sounds like {label!r} at {w.start_s:.1f}-{w.end_s:.1f}s (aiSFX cosine {cos:.2f}), a specific "
                   f"source the picture does not show (support {sup:.2f})")
        if ev is None:
            out[f"w{w.start_s:.2f}"] = Finding(target="semantic", dimension="semantic", problem=problem)
        elif sem.specificity(ev.label) >= 0.5:
            out[ev.id] = Finding(target=ev.id, dimension="semantic", problem=f"'{ev.label}' ({ev.id}) {problem}",
                                 suggestion="use a generic sound that cannot be wrong in kind",
                                 hint={"action": "make_generic", "event": ev.id, "heard": label[:80]})
        else:  # a generic label that came out sounding like a specific source: another sample of it
            out[ev.id] = Finding(target=ev.id, dimension="semantic", problem=f"'{ev.label}' ({ev.id}) {problem}",
                                 suggestion="use another sample",
                                 hint={"action": "swap_sample", "event": ev.id, "reason": f"sounds like {label[:60]}"})
    return list(out.values())


def _embed_many(embedder: Any, segments: list[np.ndarray], sr: int) -> list[np.ndarray]:
    if hasattr(embedder, "embed_many"):
        return embedder.embed_many(segments, sr)
    return [embedder.embed(s, sr) for s in segments]


def _embedder_version(embedder: Any) -> str:
    return str(getattr(embedder, "version", "unknown"))


# ---- aesthetic ----------------------------------------------------------------------------------------
def score_aesthetic(plan: Plan, audio, sr: int) -> DimensionResult:
    findings: list[Finding] = []
    audio = af.as_signal(audio, sr)
    lufs = af.integrated_loudness(audio, sr)
    tp = af.true_peak_dbtp(audio, sr)
    clip = af.clipping_ratio(audio)
    dc = af.dc_offset(audio)
    duration = audio.n / sr
    spans = [(e.start_s, min(duration, max(e.end_s, e.start_s + 0.1))) for e in plan.events if e.start_s < duration]
    silent_in_events = af.silence_ratio(audio, sr, spans=spans) if spans else None
    silent_all = af.silence_ratio(audio, sr)

    # loudness
    if lufs is None or not np.isfinite(lufs):
        loud = 0.0 if lufs is not None else 1.0
    else:
        lo, hi = LUFS_RANGE
        dist = lo - lufs if lufs < lo else (lufs - hi if lufs > hi else 0.0)
        loud = _clip01(1.0 - dist / LUFS_SPAN)
    # peaks
    peak = min(_clip01(1.0 - clip / CLIP_RATIO_BAD), _clip01(1.0 - max(0.0, tp - TRUE_PEAK_MAX) / 3.0))
    # silence where the plan wants sound
    sil = 1.0 if silent_in_events is None else 1.0 - silent_in_events
    dcs = _clip01(1.0 - max(0.0, dc - DC_MAX) / (5 * DC_MAX))
    parts = {"loudness": loud, "peak": peak, "silence": sil, "dc": dcs}
    score = sum(AES_WEIGHTS[k] * v for k, v in parts.items())

    # one global gain: reach the loudness target without pushing the true peak over the ceiling
    gain: float | None = None
    headroom = TRUE_PEAK_MAX - tp - (3.0 if clip > 0 else 0.0)  # clipping hides how far over it really went
    if lufs is not None and np.isfinite(lufs) and not (LUFS_RANGE[0] <= lufs <= LUFS_RANGE[1]):
        gain = LUFS_TARGET - lufs
    if clip > 0 or tp > TRUE_PEAK_MAX:
        gain = min(gain if gain is not None else headroom, headroom)
    elif gain is not None and gain > 0:
        gain = min(gain, headroom)
    clipped_event = _clip_owner(plan, audio, sr) if clip > 0 else None
    if gain is not None and abs(gain) >= 0.5:
        gain = float(np.clip(gain, -24.0, 24.0))
        reason = "clip" if clip > 0 else "true_peak" if tp > TRUE_PEAK_MAX else "loudness"
        problem = (f"clipping ({clip * 100:.2f}% of samples at full scale, true peak {tp:+.1f} dBTP)" if clip > 0
                   else f"true peak {tp:+.1f} dBTP over {TRUE_PEAK_MAX:+.0f}" if tp > TRUE_PEAK_MAX
                   else f"loudness {lufs:.1f} LUFS outside {LUFS_RANGE[0]:.0f}..{LUFS_RANGE[1]:.0f}")
        if clipped_event is not None:
            findings.append(Finding(target=clipped_event, dimension="aesthetic", problem=problem + f" in event {clipped_event}",
                                    suggestion=f"lower it by {-gain:.1f} dB",
                                    hint={"action": "gain_event", "event": clipped_event, "by_db": round(gain, 2),
                                          "reason": reason}))
        else:
            findings.append(Finding(target="aesthetic", dimension="aesthetic", problem=problem,
                                    suggestion=f"change the overall level by {gain:+.1f} dB",
                                    hint={"action": "gain", "by_db": round(gain, 2), "reason": reason}))
    # events that are (nearly) silent
    for e in plan.events:
        if e.start_s >= duration:
            continue
        level = af.span_rms_db(audio, sr, e.start_s, min(duration, max(e.end_s, e.start_s + 0.1)))
        if level >= SILENT_EVENT_DBFS:
            continue
        if level < DIGITAL_SILENCE_DBFS:
            hint = {"action": "swap_sample", "event": e.id, "reason": "silent"}
            suggestion = "nothing was rendered: use another sample"
        else:
            hint = {"action": "gain_event", "event": e.id, "by_db": round(min(12.0, -35.0 - level), 2)}
            suggestion = f"raise it by {hint['by_db']:.1f} dB"
        findings.append(Finding(target=e.id, dimension="aesthetic",
                                problem=f"'{e.label}' at {e.start_s:.2f}s is inaudible ({level:.0f} dBFS)",
                                suggestion=suggestion, hint=hint))
    if dc > DC_MAX:
        findings.append(Finding(target="aesthetic", dimension="aesthetic", problem=f"DC offset {dc:.3f}",
                                suggestion="high-pass the mix", hint={"action": "dc_block"}))
    lufs_txt = "n/a (shorter than 0.4 s)" if lufs is None else f"{lufs:.1f}"
    sie = "n/a" if silent_in_events is None else f"{silent_in_events:.2f}"
    scorers = [
        ScorerInfo(name="loudness_lufs", version=VERSION, dimension="aesthetic",
                   raw=None if lufs is None or not np.isfinite(lufs) else round(lufs, 2),
                   note=f"BS.1770-4 integrated (pyloudnorm) {lufs_txt} LUFS vs {LUFS_RANGE[0]:.0f}..{LUFS_RANGE[1]:.0f}; "
                        f"component {loud:.2f}"),
        ScorerInfo(name="true_peak_dbtp", version=VERSION, dimension="aesthetic", raw=round(tp, 2),
                   note=f"4x oversampled; clipped samples {clip * 100:.3f}%; component {peak:.2f}"),
        ScorerInfo(name="silence_in_events", version=VERSION, dimension="aesthetic",
                   raw=None if silent_in_events is None else round(silent_in_events, 4),
                   note=f"share of 50 ms frames below {af.SILENCE_DBFS:.0f} dBFS inside planned events {sie} "
                        f"(whole clip {silent_all:.2f}); component {sil:.2f}"),
        ScorerInfo(name="dc_offset", version=VERSION, dimension="aesthetic", raw=round(dc, 5),
                   note=f"component {dcs:.2f}; weights {AES_WEIGHTS}"),
    ]
    return DimensionResult(_clip01(score), scorers, findings)


def _clip_owner(plan: Plan, audio: np.ndarray, sr: int) -> str | None:
    """The event holding at least 80% of the clipped samples, if one does."""
    total = af.clipped_samples(audio)
    if total == 0 or len(plan.events) < 2:
        return None
    for e in plan.events:
        inside = af.clipped_share(audio, sr, e.start_s - 0.01, max(e.end_s, e.start_s) + 0.5) / total
        if inside >= 0.8:
            return e.id
    return None


# ---- spatial ------------------------------------------------------------------------------------------
def score_spatial(plan: Plan, audio: np.ndarray, sr: int, visual: Any) -> DimensionResult:
    """Mean |heard pan - visual motion balance| over windows where something moves and something sounds."""
    times = np.asarray(visual.times, dtype=np.float64)
    motion = np.asarray(visual.motion, dtype=np.float64)
    vbal = np.asarray(visual.balance, dtype=np.float64)
    bal, energy = af.balance_envelope(audio, sr, times)
    pan = np.asarray(af.balance_to_pan(bal))
    energy_db = 10 * np.log10(np.maximum(energy, af.EPS))
    active = (motion >= MOTION_MIN) & (energy_db >= max(energy_db.max() + AUDIO_ACTIVE_DB, af.SILENCE_DBFS))
    name = "pan_vs_motion"
    if af.channels(audio) < 2:
        return DimensionResult(None, [ScorerInfo(name=name, version=VERSION, dimension="spatial", note="mono audio")],
                               [Finding(target="spatial", dimension="spatial", problem="the render is mono: no spatial cue")])
    if not active.any():
        return DimensionResult(None, [ScorerInfo(name=name, version=VERSION, dimension="spatial",
                                                 note="no window with both visual motion and sound")],
                               [Finding(target="spatial", dimension="spatial",
                                        problem="placement cannot be judged: nothing sounds while something moves")])
    w = motion[active] * 10 ** (energy_db[active] / 20)
    diff = np.abs(pan[active] - vbal[active])
    mad = float(np.dot(w, diff) / w.sum())
    corr = None
    if active.sum() >= 3 and pan[active].std() > 1e-3 and vbal[active].std() > 1e-3:
        corr = float(np.corrcoef(pan[active], vbal[active])[0, 1])
    findings = []
    duration = af.n_samples(audio) / sr
    for e in sorted(plan.events, key=lambda e: e.start_s):
        if e.kind == EventKind.ambience or e.start_s >= duration:
            continue
        a, b = e.start_s, min(duration, max(e.end_s, e.start_s + 0.3))
        mask = active & (times >= a - 0.05) & (times <= b)
        if not mask.any():
            continue
        want = float(visual.balance_over(a, b))
        heard = float(np.dot(motion[mask], pan[mask]) / max(motion[mask].sum(), 1e-9))
        if abs(heard - want) > PAN_FIX:
            findings.append(Finding(target=e.id, dimension="spatial",
                                    problem=f"'{e.label}' at {e.start_s:.2f}s is heard at pan {heard:+.2f}, "
                                            f"the motion is at {want:+.2f}",
                                    suggestion=f"pan it to {want:+.2f}",
                                    hint={"action": "pan", "event": e.id, "to": round(want, 3)}))
    corr_txt = "n/a" if corr is None else f"{corr:.2f}"
    note = (f"pan heard in the L/R energy balance (constant-power law) vs visual motion balance over "
            f"{int(active.sum())} active windows: weighted mean |diff| {mad:.2f} (score 1 - diff/{SPATIAL_SPAN}), "
            f"correlation {corr_txt}")
    return DimensionResult(_clip01(1.0 - mad / SPATIAL_SPAN),
                           [ScorerInfo(name=name, version=VERSION, dimension="spatial", raw=round(mad, 4), note=note)],
                           findings)


@contextlib.contextmanager
def _open_render(path: Path):
    """The render as an ``af.Signal``: a WAV/FLAC is streamed from disk (an hour of audio is never held
    whole); anything else is decoded into memory."""
    if Path(path).suffix.lower() in AUDIO_EXTS:
        with AudioFile(path) as f:
            yield af.Signal(file=f)
    else:
        data, sr = read_audio(path)
        yield af.Signal(data, sr)


# ---- the critic ---------------------------------------------------------------------------------------
def _missing(dimension: str, why: str, scorer: str) -> DimensionResult:
    return DimensionResult(None, [ScorerInfo(name=scorer, version=VERSION, dimension=dimension, note=why)],
                           [Finding(target=dimension, dimension=dimension, problem=f"{dimension} not scored: {why}")])


def _default_analyze(cache_dir: Path | None) -> Callable:
    def analyze(video: Path, info: VideoInfo | None):
        from reasoning.offline.motion import analyze_video

        return analyze_video(video, info=info, cache_dir=cache_dir)

    return analyze


class OfflineCritic:
    """Critic protocol implementation; models, the reference index, visual analyses and picture labels are loaded
    once and reused across rounds."""

    name = NAME
    version = f"{VERSION}+contacts{CONTACT_RULES}"  # cached segment verdicts follow both

    def __init__(self, cache_dir: str | Path | None = None,
                 reference_catalog: Any = None,
                 embedder: Any | None = None, analyze: Callable | None = None, classifier: Any | None = None,
                 text_embedder: Any | None = None, semantic_threshold: float = 0.45):
        """``reference_catalog``: every recording the host offers with its label, as ``{label: [files]}``, a list
        of (label, file), or a callable returning either (the offline renderer's sample bank, injected by the
        host); without one, semantic is unscored. ``classifier`` (``top_labels(frames, k)``) and ``text_embedder``
        (``encode(texts)``) default to the shared EfficientNet-Lite0 and MiniLM."""
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._analyze = analyze or _default_analyze(self.cache_dir)
        self._embedder = embedder
        self._catalog = sem.catalog_from(reference_catalog)
        self._index: sem.ReferenceIndex | None = None
        self._classifier = classifier
        self._text = text_embedder
        self._pictures = PictureCache(self.cache_dir)
        self.semantic_threshold = semantic_threshold
        self._visual: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    # -- loading ------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load aiSFX, embed the reference recordings (cached on disk) and load the image and text models now
        (idempotent), so a run can time loading apart from its rounds; a missing part leaves semantic unscored
        and says why, as before."""
        try:
            self.embedder()
            from reasoning.offline.aisfx_embed import _window, mel_filters

            mel_filters(), _window()  # one-time tables: here, not in round 0
            self.reference_index()
            self.text_embedder()
            self.classifier()
        except (ImportError, RuntimeError, OSError) as exc:
            log.warning("offline critic: semantic models unavailable (%s); semantic will not be scored", exc)

    # -- lazily resolved parts ------------------------------------------------------------------------
    def embedder(self):
        if self._embedder is None:
            from reasoning.offline.aisfx_embed import get_embedder

            self._embedder = get_embedder()
        return self._embedder

    def reference_index(self) -> sem.ReferenceIndex | None:
        """aiSFX embeddings of every reference recording (each cached on disk under cache_dir/aisfx)."""
        with self._lock:
            if self._index is None and self._catalog is not None:
                self._index = sem.ReferenceIndex(self.embedder(), self._catalog(), cache_dir=self.cache_dir)
            return self._index

    def text_embedder(self):
        if self._text is None:
            from models.text_embed import get_embedder

            self._text = get_embedder()
        return self._text

    def classifier(self):
        if self._classifier is None:
            from reasoning.offline.labels import get_classifier

            self._classifier = get_classifier()
        return self._classifier

    def picture(self, video: Path, visual: Any) -> PictureLabels:
        """The picture's own labels (keyframes the critic samples; cached per video)."""
        return self._pictures.get(Path(video), visual, self.classifier)

    def visual(self, video: Path, info: VideoInfo | None):
        st = os.stat(video)
        key = (str(Path(video).resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._visual:
                return self._visual[key]
        result = self._analyze(Path(video), info)
        with self._lock:
            self._visual[key] = result
        return result

    # -- protocol -------------------------------------------------------------------------------------
    def critique(self, plan: Plan, audio: Path, video: Path | None, info: VideoInfo | None) -> Critique:
        with _open_render(audio) as src:
            return self._critique(plan, src, video, info)

    def _critique(self, plan: Plan, src: "af.Signal", video: Path | None, info: VideoInfo | None) -> Critique:
        sr = src.sr
        short_by = plan.duration_s - src.n / sr
        if short_by > 0:  # judge the plan's whole timeline: what the render lacks counts as silence
            src.n += int(round(short_by * sr))
        wave = src
        visual, why_no_visual = None, "no video (text-to-audio)"
        if video is not None:
            try:
                visual = self.visual(Path(video), info)
            except ImportError as exc:
                why_no_visual = f"visual analysis unavailable ({exc})"
                log.warning("offline critic: %s; temporal and spatial are not scored", why_no_visual)
            except (OSError, ValueError) as exc:
                why_no_visual = f"visual analysis failed ({type(exc).__name__}: {exc})"
                log.warning("offline critic: %s", why_no_visual)
        aesthetic = score_aesthetic(plan, wave, sr)
        if short_by > 0.05:
            aesthetic.findings.append(Finding(target="aesthetic", dimension="aesthetic",
                                              problem=f"the render stops {short_by:.2f}s before the plan ends"))
        results = {
            "temporal": score_temporal(plan, wave, sr, visual) if visual is not None
            else _missing("temporal", why_no_visual, "onset_f1"),
            "semantic": self._semantic(plan, wave, sr, video, visual, why_no_visual),
            "aesthetic": aesthetic,
            "spatial": score_spatial(plan, wave, sr, visual) if visual is not None
            else _missing("spatial", why_no_visual, "pan_vs_motion"),
        }
        return Critique(scores={d: r.score for d, r in results.items()},
                        findings=[f for r in results.values() for f in r.findings],
                        scorers=[s for r in results.values() for s in r.scorers])

    def _semantic(self, plan: Plan, wave, sr: int, video: Path | None, visual: Any, why_no_visual: str
                  ) -> DimensionResult:
        name = "heard_vs_picture"
        try:
            embedder = self.embedder()
            index = self.reference_index()
            if index is None or not len(index):
                return _missing("semantic", "no reference recording (sample bank unavailable)", name)
            text = self.text_embedder()
        except (ImportError, RuntimeError, OSError) as exc:
            log.warning("offline critic: semantic models unavailable (%s); semantic is not scored", exc)
            return _missing("semantic", f"aiSFX or text embedding unavailable ({exc})", name)
        if visual is None:
            if video is not None:
                return _missing("semantic", why_no_visual, name)
            # Text-to-audio: the request is what the sound must fit (there is no picture to ground it in).
            texts = [t for t in (plan.caption, plan.semantic) if t and t.strip()]
            if not texts:
                return _missing("semantic", "no video and no caption: nothing to compare the sound with", name)
            picture = PictureLabels.from_texts(plan.duration_s, texts)
            seen = "no video: the request's caption and semantic section"
        else:
            try:
                picture = self.picture(Path(video), visual)
            except (ImportError, RuntimeError, OSError, ValueError) as exc:
                log.warning("offline critic: picture labels unavailable (%s); semantic is not scored", exc)
                return _missing("semantic", f"picture labels unavailable ({type(exc).__name__}: {exc})", name)
            if picture.missing:
                return _missing("semantic", f"picture labels unavailable ({picture.missing})", name)
            seen = f"{len(picture.times)} keyframes: {picture.summary()}"
        return score_semantic(plan, wave, sr, embedder, index, PictureSupport(picture, text),
                              self.semantic_threshold, seen)


# ---- registry hooks -----------------------------------------------------------------------------------
def make(cfg: BackendOptions) -> OfflineCritic:
    opts = dict(cfg.params)
    refs = opts.get("references")  # optional {label: [audio files]}: name what the render sounds like with these
    return OfflineCritic(cache_dir=opts.get("cache_dir"), semantic_threshold=cfg.thresholds.get("semantic", 0.45),
                         reference_catalog={k: list(v) for k, v in refs.items()} if refs is not None
                         else cfg.reference_catalog)


def describe(cfg: BackendOptions) -> dict:
    from reasoning.offline import aisfx_embed

    ok, why = aisfx_embed.availability()
    return {
        "available": True,
        "where": str(aisfx_embed.checkpoint_path() or ""),
        "why": "" if ok else f"semantic score disabled: {why}",
        "model_id": f"{aisfx_embed.VERSION} + EfficientNet-Lite0 picture labels + MiniLM + signal features "
                    "(onsets, BS.1770, L/R balance)",
        "license": f"aiSFX model {aisfx_embed.LICENSE}; EfficientNet-Lite0 Apache-2.0; MiniLM Apache-2.0; "
                   "code Apache-2.0",
    }
