"""Signal features the offline critic needs: onsets, loudness, peaks, silence, stereo balance.

Pure numpy/scipy (plus pyloudnorm for BS.1770 loudness) so the critic runs on any CPU without a model.
Audio arrays are float (C, N) in -1..1, as ``store.media.read_audio`` returns them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

EPS = 1e-12
ONSET_HOP_S = 0.010       # onset envelope rate: 100 frames/s resolves the critic's ±80 ms tolerance easily
ONSET_WIN_S = 0.023       # ~1024 samples at 44.1 kHz: short windows keep onset times close to the attack
ONSET_LOG_GAMMA = 100.0   # log(1 + γ|X|) compression, as in common spectral-flux onset detectors
ONSET_MIN_GAP_S = 0.05    # two hits closer than this are heard as one
ONSET_DELTA = 0.06        # peak must exceed the local median by this fraction of the envelope maximum
ONSET_LOCAL_RATIO = 1.5   # ... and be this many times the local median
ONSET_FLOOR_DBFS = -50.0  # ignore "onsets" in frames quieter than this (noise, reverb tails)
SILENCE_DBFS = -60.0      # a 50 ms frame below this RMS counts as silent


def to_2d(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float64)
    return a[None] if a.ndim == 1 else a


def mono(audio: np.ndarray) -> np.ndarray:
    return to_2d(audio).mean(axis=0)


def db(x: float | np.ndarray) -> float | np.ndarray:
    return 20.0 * np.log10(np.maximum(np.abs(x), EPS))


# ---- onsets -----------------------------------------------------------------------------------------
@dataclass
class OnsetResult:
    times: np.ndarray        # (T,) frame times (s)
    envelope: np.ndarray     # (T,) spectral-flux onset strength, >= 0
    onsets: list[float]      # picked onset times (s)
    strengths: list[float]   # envelope value at each onset, relative to the envelope maximum
    levels_db: list[float]   # RMS level (dBFS) of the ~23 ms right after each onset

    def salience(self) -> list[float]:
        """Loudness relative to the loudest onset, in sone-like units (half per -10 dB)."""
        if not self.levels_db:
            return []
        top = max(self.levels_db)
        return [float(2.0 ** ((lv - top) / 10.0)) for lv in self.levels_db]


def onset_envelope(audio: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectral flux of the log-compressed magnitude STFT (channels mixed down)."""
    x = mono(audio)
    hop = max(1, int(round(sr * ONSET_HOP_S)))
    n_fft = 1 << int(math.ceil(math.log2(max(16, sr * ONSET_WIN_S))))
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    # Frames centred on their timestamps (boundary zero padding), so times[k] = k * hop / sr.
    _, t, z = signal.stft(x, fs=sr, window="hann", nperseg=n_fft, noverlap=n_fft - hop, boundary="zeros",
                          padded=True, detrend=False)
    mag = np.log1p(ONSET_LOG_GAMMA * np.abs(z) * n_fft / 2)  # n_fft/2 ≈ sum(hann): undo scipy's scaling
    flux = np.zeros(mag.shape[1])
    flux[1:] = np.maximum(mag[:, 1:] - mag[:, :-1], 0.0).sum(axis=0)
    # The zero padding before t=0 makes any sound present at the start look like an attack.
    flux[t < n_fft / 2 / sr] = 0.0
    return t, flux


def frame_rms_db(audio: np.ndarray, sr: int, times: np.ndarray, win_s: float) -> np.ndarray:
    """RMS level (dBFS) of the mono mix in a window centred on each time."""
    x = mono(audio)
    half = max(1, int(round(win_s * sr / 2)))
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    idx = np.clip(np.round(times * sr).astype(int), 0, x.size)
    lo, hi = np.clip(idx - half, 0, x.size), np.clip(idx + half, 0, x.size)
    energy = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    return 10.0 * np.log10(np.maximum(energy, EPS))


def detect_onsets(audio: np.ndarray, sr: int, delta: float = ONSET_DELTA,
                  floor_dbfs: float = ONSET_FLOOR_DBFS) -> OnsetResult:
    """Peak-pick the flux envelope against a moving-median threshold; drop peaks in near-silent frames."""
    times, env = onset_envelope(audio, sr)
    peak = float(env.max()) if env.size else 0.0
    if peak <= EPS:
        return OnsetResult(times, env, [], [], [])
    frames_per_s = 1.0 / ONSET_HOP_S
    local = ndimage.median_filter(env, size=max(3, int(0.3 * frames_per_s) | 1), mode="nearest")
    above = env - local
    idx, _ = signal.find_peaks(above, height=delta * peak, distance=max(1, int(ONSET_MIN_GAP_S * frames_per_s)))
    idx = idx[env[idx] >= ONSET_LOCAL_RATIO * local[idx]]  # stationary noise wobbles, it does not jump
    # The attack must be audible right after the flux peak.
    level = frame_rms_db(audio, sr, times[idx] + ONSET_WIN_S / 2, ONSET_WIN_S) if idx.size else np.zeros(0)
    loud = level > floor_dbfs
    idx, level = idx[loud], level[loud]
    return OnsetResult(times, env, [float(times[i]) for i in idx], [float(env[i] / peak) for i in idx],
                       [float(x) for x in level])


def rms_envelope(audio: np.ndarray, sr: int, times: np.ndarray, win_s: float = 0.04) -> np.ndarray:
    """Linear RMS of the mono mix around each time (for envelope correlation)."""
    return 10.0 ** (frame_rms_db(audio, sr, times, win_s) / 20.0)


# ---- level and quality --------------------------------------------------------------------------------
def integrated_loudness(audio: np.ndarray, sr: int) -> float | None:
    """BS.1770-4 integrated loudness (LUFS) via pyloudnorm; None when the clip is shorter than one 400 ms block."""
    import pyloudnorm

    data = to_2d(audio).T
    if data.shape[0] < int(0.4 * sr) + 1:
        return None
    meter = pyloudnorm.Meter(sr)
    return float(meter.integrated_loudness(data))


def true_peak_dbtp(audio: np.ndarray, sr: int, oversample: int = 4) -> float:
    """Peak of the 4x-oversampled signal (BS.1770 true-peak approximation), in dBTP."""
    a = to_2d(audio)
    up = signal.resample_poly(a, oversample, 1, axis=-1) if a.shape[-1] > 8 else a
    return float(db(np.max(np.abs(up)) if up.size else 0.0))


def clipping_ratio(audio: np.ndarray, threshold: float = 0.999) -> float:
    """Fraction of samples at or beyond full scale (what 16-bit clipping leaves in a decoded file)."""
    a = to_2d(audio)
    return float(np.mean(np.abs(a) >= threshold)) if a.size else 0.0


def frame_levels_db(audio: np.ndarray, sr: int, frame_s: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(frame start times, RMS dBFS) over non-overlapping frames of the mono mix."""
    x = mono(audio)
    n = max(1, int(round(frame_s * sr)))
    count = max(1, x.size // n)
    frames = np.pad(x, (0, max(0, count * n - x.size)))[: count * n].reshape(count, n)
    return np.arange(count) * n / sr, 10.0 * np.log10(np.maximum((frames * frames).mean(axis=1), EPS))


def silence_ratio(audio: np.ndarray, sr: int, threshold_dbfs: float = SILENCE_DBFS,
                  spans: list[tuple[float, float]] | None = None, frame_s: float = 0.05) -> float | None:
    """Fraction of silent frames, over the whole clip or only inside ``spans`` (None if no frame is inside)."""
    starts, levels = frame_levels_db(audio, sr, frame_s)
    mask = np.ones_like(levels, dtype=bool)
    if spans is not None:
        mids = starts + frame_s / 2
        mask = np.zeros_like(mask)
        for a, b in spans:
            mask |= (mids >= a) & (mids <= b)
    if not mask.any():
        return None
    return float(np.mean(levels[mask] < threshold_dbfs))


def span_rms_db(audio: np.ndarray, sr: int, start_s: float, end_s: float) -> float:
    x = to_2d(audio)[:, max(0, int(start_s * sr)): max(0, int(math.ceil(end_s * sr)))]
    return float(10.0 * np.log10(max(float((x * x).mean()) if x.size else 0.0, EPS)))


def dc_offset(audio: np.ndarray) -> float:
    """Largest per-channel mean."""
    a = to_2d(audio)
    return float(np.max(np.abs(a.mean(axis=1)))) if a.size else 0.0


# ---- stereo -------------------------------------------------------------------------------------------
def balance_envelope(audio: np.ndarray, sr: int, times: np.ndarray, win_s: float = 0.08
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(balance, energy) around each time: (E_R - E_L) / (E_R + E_L) in [-1, 1] (-1 = all left).

    Mono input gives balance 0 everywhere.
    """
    a = to_2d(audio)
    if a.shape[0] < 2:
        e = 10.0 ** (frame_rms_db(a, sr, times, win_s) / 10.0)
        return np.zeros_like(e), e
    el = 10.0 ** (frame_rms_db(a[:1], sr, times, win_s) / 10.0)
    er = 10.0 ** (frame_rms_db(a[1:2], sr, times, win_s) / 10.0)
    total = el + er
    return np.where(total > 2 * EPS, (er - el) / np.maximum(total, EPS), 0.0), total / 2


def balance_to_pan(balance: np.ndarray | float) -> np.ndarray | float:
    """Invert the constant-power pan law (L=cos θ, R=sin θ, θ=(p+1)π/4), for which balance = sin(pπ/2)."""
    return 2.0 / np.pi * np.arcsin(np.clip(balance, -1.0, 1.0))
