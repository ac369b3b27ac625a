"""Reference-based metrics: how close a generated track is to a clip's original soundtrack.

Both tracks are compared as mono float arrays at one rate (``ClipAudio``, 16 kHz by default). Everything here is
numpy/scipy and shares no code with the critic (``reasoning/offline``): the point is an independent check.

Units: times and lags in seconds, correlations are Pearson r in [-1, 1], F1/precision/recall in [0, 1]. A value that
is undefined (a constant envelope, no onsets anywhere) is ``None`` with a ``*_why`` key saying why, never a fake 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.ndimage import maximum_filter1d, median_filter
from scipy.optimize import linear_sum_assignment

from store.media import read_audio, resample

SR = 16000  # common analysis rate (Hz)
N_FFT = 1024  # 64 ms window at 16 kHz
HOP = 160  # 10 ms hop → 100 frames per second
N_MELS = 64
TOP_DB = 80.0  # log-mel floor below the clip's maximum: keeps dither/noise in silence from making onsets
SILENCE_ABS = 1e-4  # |x| below this counts as digital silence (≈ -80 dBFS)


@dataclass(frozen=True)
class ClipAudio:
    """A mono track at a known rate; ``samples`` is float32 (n,)."""

    samples: np.ndarray
    sr: int

    @classmethod
    def from_array(cls, audio: np.ndarray, sr: int, target_sr: int = SR) -> "ClipAudio":
        """(C, n) or (n,) float audio → mono mean of channels, resampled to ``target_sr``."""
        a = np.asarray(audio, dtype=np.float32)
        if a.ndim == 2:
            a = a.mean(axis=0)
        if a.ndim != 1:
            raise ValueError(f"audio must be (n,) or (C, n), got shape {np.shape(audio)}")
        a = resample(a, int(sr), int(target_sr)) if int(sr) != int(target_sr) else a
        return cls(np.ascontiguousarray(a, dtype=np.float32), int(target_sr))

    @classmethod
    def from_file(cls, path: str | Path, target_sr: int = SR) -> "ClipAudio":
        audio, sr = read_audio(path, sample_rate=target_sr, mono=True)
        return cls(audio[0].astype(np.float32), sr)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sr


def align(gen: ClipAudio, ref: ClipAudio) -> tuple[ClipAudio, ClipAudio]:
    """Same rate (resampling ``gen`` to ``ref``'s) and same length (the shorter): metrics compare sample for sample."""
    if gen.sr != ref.sr:
        gen = ClipAudio.from_array(gen.samples, gen.sr, target_sr=ref.sr)
    n = min(len(gen.samples), len(ref.samples))
    return ClipAudio(gen.samples[:n], gen.sr), ClipAudio(ref.samples[:n], ref.sr)


# ----------------------------------------------------------------------------------------------- spectral front end

def _mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 30.0, fmax: float | None = None) -> np.ndarray:
    """Triangular HTK-mel filters, (n_mels, n_fft//2+1), each normalised to unit area (Slaney-style)."""
    fmax = fmax or sr / 2
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    fb *= (2.0 / (hi - lo))
    return fb.astype(np.float32)


_FB_CACHE: dict[tuple, np.ndarray] = {}


def log_mel(clip: ClipAudio, n_fft: int = N_FFT, hop: int = HOP, n_mels: int = N_MELS) -> np.ndarray:
    """Log-mel power spectrogram in dB, (n_mels, frames); frame k is centred at k*hop/sr seconds.

    Floored at ``TOP_DB`` below the loudest bin so that near-silence reads as flat, not as noise.
    """
    x = clip.samples.astype(np.float32)
    pad = n_fft // 2
    x = np.pad(x, (pad, pad))
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n_frames = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    frames = x[idx] * np.hanning(n_fft).astype(np.float32)[None, :]
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (frames, bins)
    key = (clip.sr, n_fft, n_mels)
    if key not in _FB_CACHE:
        _FB_CACHE[key] = _mel_filterbank(clip.sr, n_fft, n_mels)
    mel = _FB_CACHE[key] @ power.T.astype(np.float32)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return np.maximum(db, db.max() - TOP_DB).astype(np.float32)


def onset_strength(clip: ClipAudio, hop: int = HOP) -> tuple[np.ndarray, float]:
    """Spectral flux: mean over mel bands of the half-wave-rectified log-mel increase. Returns (envelope, frame rate Hz).

    ``envelope[k]`` is the flux into frame k (the first value is 0).
    """
    S = log_mel(clip, hop=hop)
    flux = np.maximum(0.0, np.diff(S, axis=1)).mean(axis=0)
    return np.concatenate([[0.0], flux]).astype(np.float64), clip.sr / hop


def detect_onsets(clip: ClipAudio, delta: float = 0.07, median_s: float = 0.5, peak_s: float = 0.03,
                  min_gap_s: float = 0.05) -> np.ndarray:
    """Onset times (s): peaks of the max-normalised flux that beat a moving median by ``delta``.

    A peak must be the maximum within ±``peak_s`` and follow the previous onset by ≥ ``min_gap_s``. A track without
    any flux (silence, a constant tone after its start) has no onsets.
    """
    env, fps = onset_strength(clip)
    top = env.max() if env.size else 0.0
    if top <= 1e-6:  # < 1e-6 dB of mean log-mel rise anywhere: nothing starts
        return np.zeros(0)
    e = env / top
    med_w = max(3, int(round(median_s * fps)) | 1)
    thr = median_filter(e, size=med_w, mode="nearest") + delta
    peak_w = max(1, int(round(peak_s * fps)))
    is_peak = (e == maximum_filter1d(e, size=2 * peak_w + 1, mode="nearest")) & (e >= thr) & (e > 0)
    times, last = [], -np.inf
    for k in np.flatnonzero(is_peak):
        t = k / fps
        if t - last >= min_gap_s:
            times.append(t)
            last = t
    return np.asarray(times, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------- onset F1

def match_onsets(ref: Sequence[float], est: Sequence[float], tol_s: float = 0.1) -> int:
    """Size of the optimal one-to-one matching with |t_ref - t_est| ≤ tol (Hungarian on the time gaps)."""
    ref, est = np.asarray(ref, float), np.asarray(est, float)
    if ref.size == 0 or est.size == 0:
        return 0
    gap = np.abs(ref[:, None] - est[None, :])
    ok = gap <= tol_s + 1e-9
    # Maximise the number of matches first (cost -1 per allowed pair), break ties by the smaller total gap.
    cost = np.where(ok, -1.0 + gap / (tol_s * 10 * max(ref.size, est.size) + 1e-9), 0.0)
    rows, cols = linear_sum_assignment(cost)
    return int(ok[rows, cols].sum())


def onset_f1(ref: Sequence[float], est: Sequence[float], tol_s: float = 0.1) -> dict:
    """F1 / precision / recall of estimated onsets against reference onsets at ±``tol_s`` seconds.

    Both empty → ``f1`` None (nothing to agree on); one empty → 0 (a real miss, not undefined).
    """
    n_ref, n_est = len(ref), len(est)
    out = {"n_ref": n_ref, "n_est": n_est, "tol_s": tol_s}
    if n_ref == 0 and n_est == 0:
        return out | {"matched": 0, "precision": None, "recall": None, "f1": None,
                      "f1_why": "no onsets in either track"}
    m = match_onsets(ref, est, tol_s)
    p = m / n_est if n_est else 0.0
    r = m / n_ref if n_ref else 0.0
    f1 = 2 * m / (n_ref + n_est)
    return out | {"matched": m, "precision": p, "recall": r, "f1": f1, "f1_why": None}


def onset_f1_chance(ref: Sequence[float], est: Sequence[float], duration_s: float, tol_s: float = 0.1,
                    fractions: Sequence[float] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)) -> dict:
    """Chance level of ``onset_f1``: the estimated onsets circularly shifted by 20–80 % of the clip, mean F1.

    A generated track that merely has the right onset *density* scores about this much; only the excess over it
    says the onsets are where the picture needs them.
    """
    est = np.asarray(est, float)
    scores = []
    for f in fractions:
        shifted = np.sort((est + f * duration_s) % duration_s)
        scores.append(onset_f1(ref, shifted, tol_s)["f1"])
    valid = [s for s in scores if s is not None]
    return {"chance_f1": float(np.mean(valid)) if valid else None,
            "chance_f1_shifts": scores, "chance_shift_fractions": list(fractions)}


def onset_metrics(gen: ClipAudio, ref: ClipAudio, tol_s: float = 0.1) -> dict:
    """Onset F1 of the generated track against the reference, its chance level and the excess over chance."""
    gen, ref = align(gen, ref)
    g, r = detect_onsets(gen), detect_onsets(ref)
    f = onset_f1(r, g, tol_s)
    c = onset_f1_chance(r, g, ref.duration_s, tol_s)
    above = f["f1"] - c["chance_f1"] if f["f1"] is not None and c["chance_f1"] is not None else None
    return {"onset_f1": f["f1"], "onset_precision": f["precision"], "onset_recall": f["recall"],
            "onset_f1_why": f["f1_why"], "onsets_ref": f["n_ref"], "onsets_gen": f["n_est"],
            "onset_matched": f["matched"], "onset_tol_s": tol_s,
            "onset_f1_chance": c["chance_f1"], "onset_f1_above_chance": above}


# -------------------------------------------------------------------------------------------------- correlations

def pearson(a: np.ndarray, b: np.ndarray, what: str = "signal") -> tuple[float | None, str | None]:
    """Pearson r, or (None, reason) when it is undefined: too short, or either side constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size != b.size:
        raise ValueError(f"pearson: lengths differ ({a.size} vs {b.size})")
    if a.size < 3:
        return None, f"{what}: only {a.size} points"
    da, db = a - a.mean(), b - b.mean()
    na, nb = np.sqrt((da ** 2).sum()), np.sqrt((db ** 2).sum())
    scale_a, scale_b = max(np.abs(a).max(), 1.0), max(np.abs(b).max(), 1.0)
    if na <= 1e-9 * scale_a * np.sqrt(a.size):
        return None, f"{what}: generated side is constant"
    if nb <= 1e-9 * scale_b * np.sqrt(b.size):
        return None, f"{what}: reference side is constant"
    return float(np.clip((da * db).sum() / (na * nb), -1.0, 1.0)), None


def envelope_xcorr(gen: ClipAudio, ref: ClipAudio, max_lag_s: float = 1.0) -> dict:
    """Best-lag normalised cross-correlation of the onset-strength envelopes within ±``max_lag_s``.

    ``xcorr_lag_s`` > 0 means the generated events come *later* than the reference's. Each lag is a Pearson r over
    the overlapping frames, so a partial overlap cannot inflate the peak.
    """
    gen, ref = align(gen, ref)
    eg, fps = onset_strength(gen)
    er, _ = onset_strength(ref)
    n = min(len(eg), len(er))
    eg, er = eg[:n], er[:n]
    max_lag = min(int(round(max_lag_s * fps)), n - 3)
    out = {"xcorr_max": None, "xcorr_lag_s": None, "xcorr_at_zero": None, "xcorr_why": None}
    zero, why = pearson(eg, er, "onset envelope")
    if zero is None:
        return out | {"xcorr_why": why}
    best, best_lag = -np.inf, 0
    for lag in range(-max_lag, max_lag + 1):
        a, b = (eg[lag:], er[:n - lag]) if lag >= 0 else (eg[:n + lag], er[-lag:])
        r, _ = pearson(a, b)
        if r is not None and (r > best or (r == best and abs(lag) < abs(best_lag))):
            best, best_lag = r, lag
    return out | {"xcorr_max": float(best), "xcorr_lag_s": best_lag / fps, "xcorr_at_zero": zero}


def rms_envelope_db(clip: ClipAudio, window_s: float) -> np.ndarray:
    """RMS per non-overlapping window, in dBFS with a -100 dB floor (digital silence)."""
    w = max(1, int(round(window_s * clip.sr)))
    k = len(clip.samples) // w
    if k == 0:
        return np.zeros(0)
    x = clip.samples[: k * w].astype(np.float64).reshape(k, w)
    return 20.0 * np.log10(np.maximum(np.sqrt((x ** 2).mean(axis=1)), 1e-5))


def rms_envelope_r(gen: ClipAudio, ref: ClipAudio, windows_s: Sequence[float] = (1.0, 0.25)) -> dict:
    """Pearson r of the dB RMS envelopes at each window length (keys ``rms_r_1000ms``, ``rms_r_250ms``)."""
    gen, ref = align(gen, ref)
    out = {}
    for w in windows_s:
        key = f"rms_r_{int(round(w * 1000))}ms"
        r, why = pearson(rms_envelope_db(gen, w), rms_envelope_db(ref, w), f"RMS envelope at {w:g} s")
        out[key], out[key + "_why"] = r, why
    return out


def logmel_profile(clip: ClipAudio) -> np.ndarray:
    """Time-averaged log-mel (dB per band): the track's overall timbre/spectral balance."""
    return log_mel(clip).mean(axis=1)


def logmel_correlation(gen: ClipAudio, ref: ClipAudio) -> dict:
    """Spectral similarity: Pearson r of the time-averaged log-mel profiles, and mean per-frame r across bands.

    ``logmel_frame_r`` averages only frames where both sides have spectral shape (not silent/flat);
    ``logmel_frame_valid`` is the fraction of such frames.
    """
    gen, ref = align(gen, ref)
    Sg, Sr = log_mel(gen), log_mel(ref)
    prof, why = pearson(Sg.mean(axis=1), Sr.mean(axis=1), "log-mel profile")
    n = min(Sg.shape[1], Sr.shape[1])
    g, r = Sg[:, :n] - Sg[:, :n].mean(axis=0), Sr[:, :n] - Sr[:, :n].mean(axis=0)
    ng, nr = np.sqrt((g ** 2).sum(axis=0)), np.sqrt((r ** 2).sum(axis=0))
    ok = (ng > 1e-6) & (nr > 1e-6)
    frame_r = float(((g[:, ok] * r[:, ok]).sum(axis=0) / (ng[ok] * nr[ok])).mean()) if ok.any() else None
    return {"logmel_profile_r": prof, "logmel_profile_r_why": why, "logmel_frame_r": frame_r,
            "logmel_frame_r_why": None if ok.any() else "no frame with spectral shape on both sides",
            "logmel_frame_valid": float(ok.mean()) if n else 0.0}


def cross_clip_control(gen: ClipAudio, refs: Sequence[ClipAudio], own: int) -> dict:
    """Does clip ``own``'s generated track resemble its own reference more than the other clips' references?

    Log-mel profile r against every reference: ``rank`` 1 means the own reference is the closest. Without this
    control a high own-r could just mean "all soundtracks look alike".
    """
    rs = [logmel_correlation(gen, ref)["logmel_profile_r"] for ref in refs]
    own_r = rs[own]
    others = [r for i, r in enumerate(rs) if i != own and r is not None]
    rank = None if own_r is None else 1 + sum(r > own_r for r in others)
    return {"own_r": own_r, "mean_other_r": float(np.mean(others)) if others else None, "rank": rank,
            "n_clips": len(refs), "all_r": rs}


# ------------------------------------------------------------------------------------------------------ dropouts

def silence_dropouts(clip: ClipAudio, threshold: float = SILENCE_ABS, min_s: float = 0.5) -> list[dict]:
    """Spans of digital silence: every sample |x| < ``threshold`` for at least ``min_s`` seconds.

    Returns [{"start_s", "end_s", "duration_s"}], in time order.
    """
    quiet = np.abs(clip.samples) < threshold
    if not quiet.any():
        return []
    d = np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    min_n = int(round(min_s * clip.sr))
    return [{"start_s": s / clip.sr, "end_s": e / clip.sr, "duration_s": (e - s) / clip.sr}
            for s, e in zip(starts, ends) if e - s >= min_n]


def dropouts_within(dropouts: Sequence[dict], start_s: float, end_s: float) -> list[dict]:
    """The dropouts that overlap [start_s, end_s) — e.g. a planned ambience bed that must not go silent."""
    return [d for d in dropouts if d["start_s"] < end_s and d["end_s"] > start_s]


# ---------------------------------------------------------------------------------------------------------- all

def compare(gen: ClipAudio, ref: ClipAudio, tol_s: float = 0.1) -> dict:
    """Every reference metric for one clip, as one flat dict (see the module docstring for units)."""
    g, r = align(gen, ref)
    out = {"duration_s": g.duration_s, "gen_duration_s": gen.duration_s, "ref_duration_s": ref.duration_s,
           "sr": g.sr}
    out |= onset_metrics(g, r, tol_s)
    out |= envelope_xcorr(g, r)
    out |= rms_envelope_r(g, r)
    out |= logmel_correlation(g, r)
    drops = silence_dropouts(gen)
    out |= {"gen_dropouts": drops, "gen_dropout_s": float(sum(d["duration_s"] for d in drops))}
    return out
