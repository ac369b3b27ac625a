"""Cheap visual analysis for timing: motion energy, impact onsets, scene cuts and left/right balance.

The offline watcher places its sound events with it and the offline critic compares rendered audio
against it, so both read the same ``VisualAnalysis`` (cached per video as npz).

How impacts are found: a hit is a sudden change of velocity. Frame differences isolate what moves;
in each vertical band the height of the change's centre of mass traces the vertical position of what
moves there (each horizontal band traces horizontal position). The second difference of that trace is
the acceleration: gravity or steady motion gives a small, flat value, a bounce a spike. A sudden stop
(the change vanishes) or start counts too. Spikes are weighted by how much moves and peak-picked.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from scipy.ndimage import median_filter
from scipy.signal import find_peaks

from store.atomic import part_path
from store.media import FrameGrid, VideoInfo, probe, sha256_file, stream_frames

log = logging.getLogger(__name__)

ALGO_VERSION = 1  # bump when the numbers change, so caches made by older code are not reused
_N_COLS, _N_ROWS = 8, 6  # vertical bands (vertical motion) and horizontal bands (horizontal motion)
_NOISE_FLOOR = 0.02  # grey-level change (0..1) below which a pixel counts as unchanged (codec noise)
_SATURATE = 0.08  # change above the noise floor at which a pixel counts as fully changed
_MIN_MASS = 1e-3  # fraction of the frame a band's change must cover before its centroid is trusted
_MIN_MASS_PX = 3.0  # ... and never fewer than this many changed pixels (a centroid of one pixel is noise)
_LOW = 0.2  # "almost nothing": a band's change below this fraction of its neighbour in time
_MOTION_REF = 2e-3  # motion normalisation floor, so a still clip stays near 0 instead of 1
_ONSET_MIN = 0.02  # absolute impact threshold (velocity change in frame-sides/s × sqrt(moving fraction))
_ONSET_LOCAL = 2.5  # a peak must also exceed this multiple of the envelope's median over the second around it
_MIN_GAP_S = 0.12  # two impacts closer than this are one
_CUT_HIST = 0.35  # colour-histogram distance (0..1) that is a hard cut on its own
_CUT_HIST_LOW = 0.15  # smaller distance that is a cut when most pixels change at once
_CUT_PIXEL = 0.1  # grey-level change that counts a pixel as different for cut detection
_CUT_FRAC = 0.5  # ... and the fraction of such pixels that makes a cut candidate
_CUT_SPIKE = 3.0  # a candidate's mean change over the median of its neighbours' (a pan changes steadily)
_CUT_MIN_GAP_S = 0.5
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0


@dataclass
class VisualAnalysis:
    duration_s: float
    fps: float  # analysis rate (default 25)
    times: np.ndarray  # (T,) seconds
    motion: np.ndarray  # (T,) motion energy, normalised 0..1
    onset_env: np.ndarray  # (T,) visual onset strength (impact-likeness), >= 0
    onsets: list[float]  # impact times in seconds (peak-picked, deduplicated)
    onset_strengths: list[float]
    cuts: list[float]  # scene-cut times (s)
    balance: np.ndarray  # (T,) left/right motion balance in [-1, 1] (-1 = all motion on the left)
    frame_size: tuple[int, int]  # analysed (width, height)

    def to_npz(self, path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = part_path(p)
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f, version=np.int64(ALGO_VERSION), duration_s=np.float64(self.duration_s), fps=np.float64(self.fps),
                times=self.times, motion=self.motion, onset_env=self.onset_env,
                onsets=np.asarray(self.onsets, dtype=np.float64),
                onset_strengths=np.asarray(self.onset_strengths, dtype=np.float64),
                cuts=np.asarray(self.cuts, dtype=np.float64), balance=self.balance,
                frame_size=np.asarray(self.frame_size, dtype=np.int64))
        tmp.replace(p)  # atomic: a killed run never leaves a half-written cache entry

    @classmethod
    def from_npz(cls, path) -> "VisualAnalysis":
        with np.load(path, allow_pickle=False) as z:
            return cls(duration_s=float(z["duration_s"]), fps=float(z["fps"]), times=z["times"].copy(),
                       motion=z["motion"].copy(), onset_env=z["onset_env"].copy(),
                       onsets=[float(x) for x in z["onsets"]],
                       onset_strengths=[float(x) for x in z["onset_strengths"]],
                       cuts=[float(x) for x in z["cuts"]], balance=z["balance"].copy(),
                       frame_size=(int(z["frame_size"][0]), int(z["frame_size"][1])))

    def balance_over(self, start_s: float, end_s: float) -> float:
        """Mean balance in [start_s, end_s], weighted by motion (0 when nothing moves there)."""
        if len(self.times) == 0:
            return 0.0
        lo, hi = min(start_s, end_s), max(start_s, end_s)
        mask = (self.times >= lo - 1e-9) & (self.times <= hi + 1e-9)
        if not mask.any():
            mask = np.zeros(len(self.times), dtype=bool)
            mask[int(np.argmin(np.abs(self.times - 0.5 * (lo + hi))))] = True
        w = self.motion[mask].astype(np.float64)
        if w.sum() <= 1e-9:
            return 0.0
        return float(np.clip(np.dot(w, self.balance[mask]) / w.sum(), -1.0, 1.0))


# ---- caching ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def video_sha256(path: str | Path) -> str:
    """sha256 of the file, memoised by (path, size, mtime) so repeated rounds hash it once."""
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def analysis_cache_path(path: str | Path, cache_dir: str | Path, fps: float = 25.0, max_side: int = 160) -> Path:
    """Where ``analyze_video`` keeps (or finds) the analysis of this video content with these settings."""
    key = f"{video_sha256(path)[:32]}_f{fps:g}_s{max_side}_v{ALGO_VERSION}"
    return Path(cache_dir) / f"visual_{key}.npz"


# ---- per-frame statistics --------------------------------------------------------------------------------

def _compute_rate(native_fps: float, fps: float) -> float:
    """Decode at the source rate (an integer fraction of it for very high rates).

    Resampling 30 fps to 25 drops every sixth frame, which doubles one step's apparent velocity and
    looks like an impact; an integer decimation keeps the steps even.
    """
    if not native_fps or native_fps <= 0 or not np.isfinite(native_fps):
        return fps
    return native_fps / max(1, int(round(native_fps / fps)))


def _tent_windows(n: int, parts: int) -> np.ndarray:
    """(n, parts) overlapping triangular weights that sum to 1 at every pixel.

    With hard band edges a band's centroid is biased while an object slides across the edge (only part
    of it is inside), which reads as a jolt; tents make that bias change slowly.
    """
    parts = max(2, min(parts, n))
    centres = np.linspace(0.0, n - 1.0, parts)
    spacing = max(centres[1] - centres[0], 1.0)
    x = np.arange(n, dtype=np.float32)[:, None]
    return np.clip(1.0 - np.abs(x - centres[None, :]) / spacing, 0.0, 1.0).astype(np.float32)


class _Accumulator:
    """Per-frame statistics, streamed: memory is O(frames × bands), never O(pixels × frames)."""

    def __init__(self, w: int, h: int):
        self.w, self.h = w, h
        scale = float(max(w, h))
        self.ys = np.arange(h, dtype=np.float32) / scale
        self.xs = np.arange(w, dtype=np.float32) / scale
        self.xpan = (np.arange(w, dtype=np.float32) + 0.5) / w * 2.0 - 1.0
        self.col_w = _tent_windows(w, _N_COLS)
        self.row_w = _tent_windows(h, _N_ROWS)
        self.prev_grey: np.ndarray | None = None
        self.prev_hist: np.ndarray | None = None
        self._times = _Rows(1, np.float64)
        self._bands = _Rows(2 * _N_COLS + 2 * _N_ROWS, np.float32)  # col_mass | col_y | row_mass | row_x
        self._stats = _Rows(5, np.float64)  # total, changed, mean_abs, balance, hist_dist

    # Views of the filled part, named as the analysis reads them.
    @property
    def times(self) -> np.ndarray:
        return self._times.view()[:, 0]

    def _band(self, i: int, width: int) -> np.ndarray:
        return self._bands.view()[:, i:i + width]

    @property
    def col_mass(self) -> np.ndarray:
        return self._band(0, _N_COLS)

    @property
    def col_y(self) -> np.ndarray:
        return self._band(_N_COLS, _N_COLS)

    @property
    def row_mass(self) -> np.ndarray:
        return self._band(2 * _N_COLS, _N_ROWS)

    @property
    def row_x(self) -> np.ndarray:
        return self._band(2 * _N_COLS + _N_ROWS, _N_ROWS)

    def _stat(self, i: int) -> np.ndarray:
        return self._stats.view()[:, i]

    total = property(lambda self: self._stat(0))
    changed = property(lambda self: self._stat(1))  # fraction of pixels that changed clearly (cut detection)
    mean_abs = property(lambda self: self._stat(2))
    balance = property(lambda self: self._stat(3))
    hist_dist = property(lambda self: self._stat(4))

    @staticmethod
    def _hist(rgb: np.ndarray) -> np.ndarray:
        small = rgb[::2, ::2].reshape(-1, 3) >> 4  # 16 bins per channel
        hist = np.stack([np.bincount(small[:, c], minlength=16) for c in range(3)]).astype(np.float32)
        return hist / max(1, small.shape[0])

    def add(self, t: float, rgb: np.ndarray) -> None:
        grey = rgb.astype(np.float32) @ _GREY
        hist = self._hist(rgb)
        self._times.append([float(t)])
        if self.prev_grey is None or self.prev_grey.shape != grey.shape:
            self.prev_grey, self.prev_hist = grey, hist
            return
        diff = np.abs(grey - self.prev_grey)
        noise = max(_NOISE_FLOOR, 2.0 * float(np.median(diff)))
        # Saturate: a changed pixel counts ~1 whatever the contrast, so centroids follow shapes, not texture.
        d = np.clip((diff - noise) / _SATURATE, 0.0, 1.0)
        colsum = d.sum(axis=0)
        self._bands.append(np.concatenate([colsum @ self.col_w, (self.ys @ d) @ self.col_w,
                                           d.sum(axis=1) @ self.row_w, (d @ self.xs) @ self.row_w]))
        total = float(colsum.sum())
        moving = total > max(_MIN_MASS * d.size, _MIN_MASS_PX)
        self._stats.append([total / d.size, float(np.count_nonzero(diff > _CUT_PIXEL)) / d.size, float(diff.mean()),
                            float(np.dot(colsum, self.xpan) / total) if moving else 0.0,
                            0.5 * float(np.abs(hist - self.prev_hist).sum()) / 3.0])
        self.prev_grey, self.prev_hist = grey, hist


class _Rows:
    """An append-only (n, width) array grown by doubling: per-frame features without a Python object per value."""

    def __init__(self, width: int, dtype):
        self._data = np.zeros((256, width), dtype=dtype)
        self._n = 0

    def append(self, row) -> None:
        if self._n == len(self._data):
            self._data = np.concatenate([self._data, np.zeros_like(self._data)])
        self._data[self._n] = row
        self._n += 1

    def __len__(self) -> int:
        return self._n

    def view(self) -> np.ndarray:
        return self._data[:self._n]


# ---- signals from the statistics -------------------------------------------------------------------------

def _find_cuts(hist_dist: np.ndarray, changed: np.ndarray, mean_abs: np.ndarray, rate: float) -> list[int]:
    """Diff indices of hard cuts: colours jump, or nearly every pixel changes at once (and not before/after)."""
    n = len(mean_abs)
    spike = np.zeros(n)
    for k in np.flatnonzero(changed > _CUT_FRAC):
        nb = np.r_[mean_abs[max(0, k - 4):k], mean_abs[k + 1:k + 5]]
        spike[k] = mean_abs[k] / (float(np.median(nb)) + 1e-3) if len(nb) else 0.0
    big = changed > _CUT_FRAC
    hard = (hist_dist > _CUT_HIST) | (big & (hist_dist > _CUT_HIST_LOW)) | (big & (spike > _CUT_SPIKE))
    cand = np.flatnonzero(hard)
    gap = max(1, int(round(_CUT_MIN_GAP_S * rate)))
    cuts: list[int] = []
    for i in cand[np.argsort(-hist_dist[cand], kind="stable")]:
        if all(abs(int(i) - c) >= gap for c in cuts):
            cuts.append(int(i))
    return sorted(cuts)


def _impact_strength(mass: np.ndarray, moment: np.ndarray, min_mass: float, area: float,
                     rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Impact strength: |velocity change| (frame-sides/s) × sqrt(fraction of the frame that moves).

    ``mass``/``moment`` are (n_diffs, bands). Returns (per diff k, i.e. centred between frames k and
    k+1; per frame, (n_diffs + 1,)). Per frame holds sudden stops and starts, which is what a footstep
    or a thrown object landing looks like.
    """
    n = mass.shape[0]
    mid, edges = np.zeros(n), np.zeros(n + 1)
    if n < 5:
        return mid, edges
    valid = mass > min_mass
    pos = np.where(valid, moment / np.maximum(mass, 1e-12), np.nan)

    def low(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a < _LOW * b

    # Bounce: second difference of the centroid over three consecutive moving diffs. (Subtracting the
    # steady acceleration around it was tried: next to a spike there is no clean "around", and it made
    # false hits 2-3 frames from every bounce.)
    jolt = np.abs(pos[2:] - 2.0 * pos[1:-1] + pos[:-2]) * rate
    m3 = np.minimum(np.minimum(mass[2:], mass[1:-1]), mass[:-2])
    mid[1:-1] = np.where(np.isfinite(jolt), jolt * np.sqrt(np.maximum(m3, 0.0) / area), 0.0).sum(axis=1)

    k = np.arange(2, n - 2)
    # Stillness is judged over a band and its neighbours: an object sliding into the next band is not
    # stopping.
    nb = mass.copy()
    nb[:, 1:] += mass[:, :-1]
    nb[:, :-1] += mass[:, 1:]
    # Bounce between two frames: diff k almost still, velocities before and after it differ.
    dip = valid[k - 2] & valid[k - 1] & valid[k + 1] & valid[k + 2] & low(nb[k], np.minimum(nb[k - 1], nb[k + 1]))
    dv = np.abs((pos[k + 2] - pos[k + 1]) - (pos[k - 1] - pos[k - 2])) * rate
    w = np.sqrt(np.minimum(mass[k - 1], mass[k + 1]) / area)
    mid[k] += np.where(dip, np.nan_to_num(dv) * w, 0.0).sum(axis=1)

    # speed[j]: from diff j to diff j+1. Stops and starts use the smaller of two consecutive speeds and
    # masses, because a nearly still object's centroid is noisy.
    speed = np.nan_to_num(np.abs(pos[1:] - pos[:-1]) * rate)
    # Stop: moving in diffs k-1 and k, nothing in k+1 and k+2 → it halted at frame k+1.
    stop = valid[k - 1] & valid[k] & low(nb[k + 1], nb[k]) & low(nb[k + 2], nb[k])
    v_stop = np.minimum(speed[k - 2], speed[k - 1]) * np.sqrt(np.minimum(mass[k - 1], mass[k]) / area)
    edges[k + 1] += np.where(stop, v_stop, 0.0).sum(axis=1)
    # Start: nothing in k-2 and k-1, moving in k and k+1 → it set off at frame k (a hit sets things moving).
    start = valid[k] & valid[k + 1] & low(nb[k - 1], nb[k]) & low(nb[k - 2], nb[k])
    v_start = np.minimum(speed[k], speed[k + 1]) * np.sqrt(np.minimum(mass[k], mass[k + 1]) / area)
    edges[k] += 0.5 * np.where(start, v_start, 0.0).sum(axis=1)
    return mid, edges


def _refine_peak(env: np.ndarray, i: int) -> float:
    """Sub-sample peak position by a parabola through the peak and its neighbours."""
    if 0 < i < len(env) - 1:
        a, b, c = env[i - 1], env[i], env[i + 1]
        den = a - 2.0 * b + c
        if den < 0:
            return i + float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))
    return float(i)


def _pick_onsets(env: np.ndarray, t_env: np.ndarray, per_s: float,
                 cut_times: list[float], rate: float) -> tuple[list[float], list[float]]:
    if len(env) < 3 or float(env.max()) < _ONSET_MIN:
        return [], []
    local = median_filter(env, size=max(3, int(per_s) | 1), mode="nearest")
    peaks, _ = find_peaks(env, height=_ONSET_MIN, distance=max(1, int(round(_MIN_GAP_S * per_s))))
    onsets, strengths = [], []
    for i in peaks:
        if env[i] < _ONSET_LOCAL * local[i] or env[i] - local[i] < _ONSET_MIN:
            continue
        t = float(t_env[0] + _refine_peak(env, int(i)) / per_s)
        if any(abs(t - c) <= 2.0 / rate for c in cut_times):
            continue  # the jump across a cut is not an impact
        onsets.append(round(t, 4))
        strengths.append(float(env[i]))
    return onsets, strengths


def _window_max(t_src: np.ndarray, v_src: np.ndarray, t_out: np.ndarray, half: float) -> np.ndarray:
    """Max of v_src over [t - half, t + half) at each output time, so peaks survive a lower rate."""
    out = np.interp(t_out, t_src, v_src)
    lo = np.searchsorted(t_src, t_out - half, side="left")
    hi = np.searchsorted(t_src, t_out + half, side="left")
    for j in np.flatnonzero(hi > lo):
        out[j] = max(out[j], float(v_src[lo[j]:hi[j]].max()))
    return out


def _analyse(acc: _Accumulator, rate: float, fps: float, duration_s: float) -> VisualAnalysis:
    n_out = max(1, int(round(duration_s * fps)))
    t_out = np.arange(n_out, dtype=np.float64) / fps
    frame_size = (acc.w, acc.h)
    if len(acc.total) < 1:
        z = np.zeros(n_out, dtype=np.float32)
        return VisualAnalysis(float(duration_s), float(fps), t_out, z, z.copy(), [], [], [], z.copy(), frame_size)

    t_frames = np.asarray(acc.times, dtype=np.float64)
    area = float(acc.w * acc.h)
    total, balance = acc.total.copy(), acc.balance.copy()
    col_mass, row_mass = acc.col_mass.copy(), acc.row_mass.copy()
    cut_idx = _find_cuts(acc.hist_dist, acc.changed, acc.mean_abs, rate)
    for c in cut_idx:  # the change across a cut is not motion: forget it
        col_mass[c] = 0.0
        row_mass[c] = 0.0
        total[c], balance[c] = (total[c - 1], balance[c - 1]) if c > 0 else (0.0, 0.0)
    cuts = [round(float(t_frames[c + 1]), 4) for c in cut_idx]

    min_mass = max(_MIN_MASS * area, _MIN_MASS_PX)
    mid_c, edge_c = _impact_strength(col_mass, acc.col_y, min_mass, area, rate)
    mid_r, edge_r = _impact_strength(row_mass, acc.row_x, min_mass, area, rate)
    # Half-frame grid: diff k at 2k+1, frame k at 2k (interpolated, plus stops/starts), so a bounce on a
    # frame and one between two frames both peak where they happened.
    strength = mid_c + mid_r
    half = np.zeros(2 * len(strength) + 1)
    half[1::2] = strength
    half[2:-1:2] = 0.5 * (strength[:-1] + strength[1:])
    half[0::2] += edge_c + edge_r
    t_half = t_frames[0] + np.arange(len(half)) / (2.0 * rate)
    onsets, strengths = _pick_onsets(half, t_half, 2.0 * rate, cuts, rate)

    # Per-frame signals: frame k+1 gets diff k (the change that produced it); frame 0 copies frame 1.
    motion_f = np.concatenate([[total[0]], total])
    balance_f = np.concatenate([[balance[0]], balance])
    motion_f = motion_f / max(float(motion_f.max()), _MOTION_REF)
    motion = np.clip(np.interp(t_out, t_frames, motion_f), 0.0, 1.0)
    bal = np.clip(np.interp(t_out, t_frames, balance_f), -1.0, 1.0)
    env = np.maximum(_window_max(t_half, half, t_out, 0.5 / fps), 0.0)
    return VisualAnalysis(duration_s=float(duration_s), fps=float(fps), times=t_out, motion=motion.astype(np.float32),
                          onset_env=env.astype(np.float32), onsets=onsets, onset_strengths=strengths, cuts=cuts,
                          balance=bal.astype(np.float32), frame_size=frame_size)


_MEMO: "OrderedDict[tuple, VisualAnalysis]" = OrderedDict()
_MEMO_SIZE = 8
_MEMO_LOCK = threading.Lock()

OnFrame = Callable[[str, float, np.ndarray], None]


def _memo_key(path, fps: float, max_side: int) -> tuple:
    st = Path(path).stat()
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, float(fps), int(max_side))


def _remember(key: tuple, result: VisualAnalysis) -> None:
    with _MEMO_LOCK:
        _MEMO[key] = result
        _MEMO.move_to_end(key)
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)


# Contacts: the visual onsets that evidence a hit (issue 9). Weak velocity changes are motion texture; onsets
# in the first frames have no history to change from; a fast, strict lattice of onsets is the codec, a frame-rate
# conversion (repeated frames make motion stop and start on a grid) or a flicker, not the action.
# The lattice and the first frames are judged within a shot: a flicker in one shot says nothing about a flash in
# another, and the first frames after a cut have no history either. So the watcher (whole video) and the critic
# (one segment, which starts at a cut) find the same lattices. The floor stays relative to the strongest change
# seen: a small change in a quiet shot next to a far stronger hit is motion texture (when in doubt, understate).
CONTACT_RULES = 2  # bump when a rule below changes: critics that use them then stop reusing cached verdicts
CONTACT_REL_MIN = 0.15
CONTACT_ABS_MIN = 0.035
CONTACT_MIN_T = 0.2
PULSE_MIN_COUNT = 4
PULSE_SHARE = 0.5
PULSE_MAX_GAP_S = 0.32  # codec and flicker grids are a few frames; a ball bouncing every 0.9 s is not a lattice
PULSE_KEEP = 3.0  # a lattice onset this many times the lattice's median strength is still a contact


def periodic_pulses(times: list[float], fps: float) -> set[int]:
    """Indices of onsets on a fast regular grid: consecutive gaps equal (within a frame) to the commonest gap, when
    that gap is short and at least PULSE_MIN_COUNT gaps, half of them, are on it."""
    t = np.asarray(sorted(times), dtype=np.float64)
    if len(t) < PULSE_MIN_COUNT + 1:
        return set()
    gaps = np.round(np.diff(t) * fps).astype(int)
    values, counts = np.unique(gaps[gaps >= 2], return_counts=True)
    if not len(values):
        return set()
    m = int(values[np.argmax(counts)])
    if m > PULSE_MAX_GAP_S * fps:
        return set()
    on = np.abs(gaps - m) <= 1
    if on.sum() < PULSE_MIN_COUNT or on.mean() < PULSE_SHARE:
        return set()
    idx = set()
    for k in np.flatnonzero(on):
        idx.update((int(k), int(k) + 1))
    order = np.argsort(np.asarray(times, dtype=np.float64), kind="stable")
    return {int(order[i]) for i in idx}


def _shot_contacts(times: list[float], strengths: list[float], fps: float, start_s: float, floor: float) -> list[int]:
    """Indices of one shot's onsets that are contacts (the rules above, within the shot)."""
    pulses = periodic_pulses(times, fps)
    lattice = float(np.median([strengths[i] for i in pulses])) if pulses else 0.0
    return [i for i, (t, s) in enumerate(zip(times, strengths))
            if t >= start_s + CONTACT_MIN_T and s >= floor and (i not in pulses or s >= PULSE_KEEP * lattice)]


def contacts(vis: "VisualAnalysis") -> tuple[list[float], list[float]]:
    """(times, strengths) of the visual onsets that evidence a contact or an abrupt change (see above)."""
    onsets = sorted(zip(vis.onsets, vis.onset_strengths))
    if not onsets:
        return [], []
    floor = max(CONTACT_ABS_MIN, CONTACT_REL_MIN * max(s for _, s in onsets))
    edges = [0.0] + sorted(float(c) for c in vis.cuts if c > 0.0) + [math.inf]
    out: list[tuple[float, float]] = []
    for a, b in zip(edges[:-1], edges[1:]):
        shot = [(t, s) for t, s in onsets if a <= t < b]
        if shot:
            times, strengths = [t for t, _ in shot], [s for _, s in shot]
            out += [shot[i] for i in _shot_contacts(times, strengths, vis.fps, a, floor)]
    return [t for t, _ in out], [s for _, s in out]


def analyze_video(path, info: VideoInfo | None = None, fps: float = 25.0, max_side: int = 160,
                  cache_dir: Path | None = None, extra: Mapping[str, FrameGrid] | None = None,
                  on_frame: OnFrame | None = None) -> VisualAnalysis:
    """Analyse a video once per process: from the npz cache when a cache dir is given and it has the entry, else
    from the in-process memo (so watcher and critic share one analysis across rounds, whatever cache dirs they
    were given), else by one streaming decode.

    ``extra`` consumers ride along on that decode (their frames go to ``on_frame``), so a caller that needs
    other frames too (the watcher's keyframes) pays no second pass; they get nothing when no decode happens.
    """
    if fps <= 0:
        raise ValueError("fps must be positive")
    key = _memo_key(path, fps, max_side)
    cache = analysis_cache_path(path, cache_dir, fps, max_side) if cache_dir is not None else None
    if cache is not None and cache.exists():
        try:
            result = VisualAnalysis.from_npz(cache)
            _remember(key, result)
            return result
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable visual-analysis cache %s (%s)", cache, exc)
    with _MEMO_LOCK:
        result = _MEMO.get(key)
    if result is None:
        result = _decode_and_analyse(path, info, fps, max_side, extra or {}, on_frame)
        _remember(key, result)
    if cache is not None:
        try:
            result.to_npz(cache)
        except OSError as exc:
            log.warning("could not write visual-analysis cache %s (%s)", cache, exc)
    return result


def _decode_and_analyse(path, info: VideoInfo | None, fps: float, max_side: int,
                        extra: Mapping[str, FrameGrid], on_frame: OnFrame | None) -> VisualAnalysis:
    """One streaming pass, downscaled to ``max_side``; per-frame state is a few numbers (``_Accumulator``).

    The pass also keeps a few thumbnails (``thumbnails``), so the critic can label the picture without decoding
    the video again (issue 13: one decode per dub)."""
    info = info or probe(path)
    rate = _compute_rate(info.fps, fps)
    acc: _Accumulator | None = None
    thumbs = _Thumbs(info.duration_s)
    consumers = {**extra, _SELF: FrameGrid(rate, max_side=max_side, end_s=info.duration_s), _THUMBS: thumbs}
    for name, t, rgb in stream_frames(path, consumers):
        if name == _THUMBS:
            thumbs.add(t, rgb)
            continue
        if name != _SELF:
            if on_frame is not None:
                on_frame(name, t, rgb)
            continue
        if acc is None:
            acc = _Accumulator(rgb.shape[1], rgb.shape[0])
        acc.add(t, rgb)
    if acc is None:
        log.warning("%s: no frames decoded; visual analysis is empty", path)
        acc = _Accumulator(2, 2)
    _remember_thumbs(path, thumbs)
    return _analyse(acc, rate, fps, info.duration_s)


_SELF = "motion"
_THUMBS = "thumbnails"
THUMB_STEP_S = 0.5
THUMB_CAPACITY = 32       # ~3.5 MB at 256x144: clips up to 16 s keep every 0.5 s, longer ones fewer
THUMB_MAX_SIDE = 256


class _Thumbs(FrameGrid):
    """Frames every THUMB_STEP_S of the analysis decode, thinned (every other one dropped, sampling half as often)
    whenever more than THUMB_CAPACITY are kept."""

    def __init__(self, duration_s: float):
        super().__init__(1.0 / THUMB_STEP_S, max_side=THUMB_MAX_SIDE, end_s=duration_s)
        self.k, self.stride = 0, 1
        self.kept: dict[int, tuple[float, np.ndarray]] = {}

    def advance(self) -> None:
        while True:
            self.k += 1
            super().advance()
            if self.next_t is None or self.k % self.stride == 0:
                return

    def add(self, t: float, img: np.ndarray) -> None:
        self.kept[self.k] = (t, img)
        if len(self.kept) > THUMB_CAPACITY:
            self.stride *= 2
            self.kept = {k: v for k, v in self.kept.items() if k % self.stride == 0}


_THUMB_MEMO: "OrderedDict[tuple, list[tuple[float, np.ndarray]]]" = OrderedDict()
_THUMB_MEMO_SIZE = 4


def _thumb_key(path) -> tuple:
    st = Path(path).stat()
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def _remember_thumbs(path, thumbs: _Thumbs) -> None:
    with _MEMO_LOCK:
        key = _thumb_key(path)
        _THUMB_MEMO[key] = [thumbs.kept[k] for k in sorted(thumbs.kept)]
        _THUMB_MEMO.move_to_end(key)
        while len(_THUMB_MEMO) > _THUMB_MEMO_SIZE:
            _THUMB_MEMO.popitem(last=False)


def thumbnails(path) -> list[tuple[float, np.ndarray]] | None:
    """(time, RGB uint8 at most THUMB_MAX_SIDE) frames kept by this process's analysis decode of ``path``; None when
    it was not decoded here (its analysis came from the disk cache, or was evicted)."""
    with _MEMO_LOCK:
        return _THUMB_MEMO.get(_thumb_key(path))
