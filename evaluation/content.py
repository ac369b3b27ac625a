"""What a reference soundtrack is made of, measured: how much of its energy is periodic (voiced speech, song,
tonal music) rather than aperiodic (impacts, friction, wind, roar, most foley).

The issue's foley targets apply to clips "whose soundtrack is mostly foley"; a corpus label typed by hand can be
wrong (a launch video whose loudest seconds are the commentator), so the label is checked against this figure.
Tonal effects (bird calls, whistles, a steady hum) count as pitched too: the measure errs towards "not foley", so a
clip it calls foley is one whose targets are fair to hold it to.
Numpy/scipy only, no code shared with the critic.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfiltfilt

from evaluation.metrics import ClipAudio

FRAME_S = 0.064
HOP_S = 0.02
F0_RANGE_HZ = (70.0, 500.0)  # voices and most pitched instruments' fundamentals
PERIODIC_NCCF = 0.6  # normalised autocorrelation peak at or above this: the frame repeats itself (pitched)
FLOOR_DB = 50.0  # frames this far under the loudest do not count (room noise, dither)
FOLEY_MAX_PERIODIC = 0.25  # a "foley" clip keeps pitched frames under this share of its energy


def _frames(x: np.ndarray, n: int, hop: int) -> np.ndarray:
    if len(x) < n:
        x = np.pad(x, (0, n - len(x)))
    count = 1 + (len(x) - n) // hop
    idx = np.arange(n)[None, :] + hop * np.arange(count)[:, None]
    return x[idx]


def periodicity(clip: ClipAudio) -> tuple[np.ndarray, np.ndarray]:
    """Per frame (HOP_S apart): the normalised autocorrelation peak over F0_RANGE_HZ lags, and the frame energy."""
    sr = clip.sr
    x = np.asarray(clip.samples, dtype=np.float64)
    if len(x) > 27:
        x = sosfiltfilt(butter(4, (60.0, min(2000.0, sr / 2 - 1)), btype="bandpass", fs=sr, output="sos"), x)
    n, hop = int(FRAME_S * sr), int(HOP_S * sr)
    fr = _frames(x, n, hop)
    fr = fr - fr.mean(axis=1, keepdims=True)
    energy = (fr ** 2).sum(axis=1)
    lo, hi = int(sr / F0_RANGE_HZ[1]), int(sr / F0_RANGE_HZ[0])
    spec = np.fft.rfft(fr * np.hanning(n), n=2 * n, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :n]
    lags = np.arange(n)
    # unbiased by the shrinking overlap, normalised by the zero lag
    ac = ac / np.maximum(n - lags, 1)[None, :] * n
    peak = ac[:, lo:hi + 1].max(axis=1) / np.maximum(ac[:, 0], 1e-20)
    return np.clip(peak, 0.0, 1.0), energy


def periodic_share(clip: ClipAudio) -> dict:
    """Share of the audible energy in periodic frames, and of the audible time. None (with why) for silence."""
    peak, energy = periodicity(clip)
    if energy.size == 0 or energy.max() <= 1e-12:
        return {"periodic_energy_share": None, "periodic_time_share": None, "periodic_why": "silent soundtrack"}
    audible = energy >= energy.max() * 10 ** (-FLOOR_DB / 10)
    pitched = audible & (peak >= PERIODIC_NCCF)
    return {"periodic_energy_share": float(energy[pitched].sum() / energy[audible].sum()),
            "periodic_time_share": float(pitched.sum() / max(1, audible.sum())), "periodic_why": None}


def mostly_foley(clip: ClipAudio) -> bool | None:
    share = periodic_share(clip)["periodic_energy_share"]
    return None if share is None else share < FOLEY_MAX_PERIODIC
