"""Signal features the offline critic needs: onsets, loudness, peaks, silence, stereo balance.

Pure numpy/scipy (plus pyloudnorm's filters for BS.1770 loudness) so the critic runs on any CPU without a model.
Audio is float (C, N) in -1..1, as ``store.media.read_audio`` returns it, or a ``Signal`` over a WAV file: every
feature works block by block (``BLOCK`` samples, float64 only inside a block), so an hour-long render is never
held in memory as float64, and a render streamed from disk is never held at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy import ndimage, signal

EPS = 1e-12
BLOCK = 1 << 19           # samples per processing block (~12 s at 44.1 kHz)
ONSET_HOP_S = 0.010       # onset envelope rate: 100 frames/s resolves the critic's ±80 ms tolerance easily
ONSET_WIN_S = 0.023       # ~1024 samples at 44.1 kHz: short windows keep onset times close to the attack
ONSET_LOG_GAMMA = 100.0   # log(1 + γ|X|) compression, as in common spectral-flux onset detectors
ONSET_MIN_GAP_S = 0.05    # two hits closer than this are heard as one
ONSET_DELTA = 0.06        # peak must exceed the local median by this fraction of the envelope maximum
ONSET_LOCAL_RATIO = 1.5   # ... and be this many times the local median
ONSET_FLOOR_DBFS = -50.0  # ignore "onsets" in frames quieter than this (noise, reverb tails)
SILENCE_DBFS = -60.0      # a 50 ms frame below this RMS counts as silent


class Signal:
    """(C, n) audio read in blocks, from an array or an open ``store.media.AudioFile``.

    ``n`` may exceed the data: the rest reads as zeros (the critic judges the plan's whole timeline).
    Reads return float64, so features computed block by block equal the whole-array computation.
    """

    def __init__(self, data: np.ndarray | None = None, sr: int | None = None, file=None, n: int | None = None):
        if file is not None:
            self._data, self._file, self.sr, self.channels, avail = None, file, int(file.sr), int(file.channels), int(file.n)
        else:
            a = np.asarray(data)
            a = a[None] if a.ndim == 1 else a
            self._data, self._file, self.sr, self.channels, avail = a, None, sr, int(a.shape[0]), int(a.shape[1])
        self.available = avail
        self.n = avail if n is None else int(n)

    @property
    def shape(self) -> tuple[int, int]:
        return self.channels, self.n

    def read(self, start: int, stop: int) -> np.ndarray:
        """float64 (C, stop - start); outside [0, available) reads as zeros."""
        start, stop = int(start), int(stop)
        out = np.zeros((self.channels, max(0, stop - start)))
        a, b = max(0, start), min(self.available, stop)
        if b > a:
            out[:, a - start:b - start] = self._data[:, a:b] if self._file is None else self._file.read(a, b)
        return out

    def mono(self, start: int, stop: int) -> np.ndarray:
        return self.read(start, stop).mean(axis=0)

    def blocks(self, size: int = BLOCK) -> Iterator[tuple[int, np.ndarray]]:
        for a in range(0, self.n, size):
            yield a, self.read(a, min(self.n, a + size))


def as_signal(audio, sr: int | None = None) -> Signal:
    return audio if isinstance(audio, Signal) else Signal(audio, sr)


def to_2d(audio) -> np.ndarray:
    """The whole signal as float64 (C, N): only for short audio (tests, event segments)."""
    if isinstance(audio, Signal):
        return audio.read(0, audio.n)
    a = np.asarray(audio, dtype=np.float64)
    return a[None] if a.ndim == 1 else a


def channels(audio) -> int:
    return as_signal(audio).channels


def n_samples(audio) -> int:
    return as_signal(audio).n


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


def onset_envelope(audio, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectral flux of the log-compressed magnitude STFT (channels mixed down).

    Frames are those of ``scipy.signal.stft(boundary="zeros", padded=True)`` (centred on their timestamps, so
    times[k] = k * hop / sr, Hann window, "spectrum" scaling), computed a block of frames at a time.
    """
    x = as_signal(audio, sr)
    hop = max(1, int(round(sr * ONSET_HOP_S)))
    n_fft = 1 << int(math.ceil(math.log2(max(16, sr * ONSET_WIN_S))))
    half = n_fft // 2
    n = max(x.n, n_fft)  # short input is zero-padded to one window
    padded = n + 2 * half
    padded += (-(padded - n_fft) % hop) % hop
    t = np.arange(half, padded - half + 1, hop) / float(sr)
    t -= half / sr
    window = signal.get_window("hann", n_fft)
    scale = 1.0 / window.sum()
    flux = np.zeros(len(t))
    prev = None
    per = max(1, BLOCK // hop)
    for k0 in range(0, len(t), per):
        k1 = min(len(t), k0 + per)
        seg = x.mono(k0 * hop - half, (k1 - 1) * hop + half)  # padded index k*hop is sample k*hop - half
        frames = np.lib.stride_tricks.sliding_window_view(seg, n_fft)[::hop]
        mag = np.log1p(ONSET_LOG_GAMMA * np.abs(np.fft.rfft(frames * window, axis=-1) * scale) * n_fft / 2)
        both = mag if prev is None else np.vstack([prev, mag])  # the previous block's last frame leads
        flux[k1 - (len(both) - 1):k1] = np.maximum(both[1:] - both[:-1], 0.0).sum(axis=1)
        prev = mag[-1:]
    # The zero padding before t=0 makes any sound present at the start look like an attack.
    flux[t < n_fft / 2 / sr] = 0.0
    return t, flux


def _window_energy(x: Signal, lo: np.ndarray, hi: np.ndarray, channel: int | None) -> np.ndarray:
    """Mean square of the mono mix (or one channel) over each [lo, hi), from block-local cumulative sums."""
    out = np.zeros(len(lo))
    order = np.argsort(lo, kind="stable")
    i = 0
    while i < len(order):
        a = int(lo[order[i]])
        j = i
        b = a
        while j < len(order) and int(hi[order[j]]) - a <= BLOCK:
            b = max(b, int(hi[order[j]]))
            j += 1
        j = max(j, i + 1)
        b = max(b, int(hi[order[i]]))
        seg = x.mono(a, b) if channel is None else x.read(a, b)[channel]
        csum = np.concatenate([[0.0], np.cumsum(seg * seg)])
        q = order[i:j]
        out[q] = (csum[hi[q] - a] - csum[lo[q] - a]) / np.maximum(hi[q] - lo[q], 1)
        i = j
    return out


def frame_rms_db(audio, sr: int, times: np.ndarray, win_s: float, channel: int | None = None) -> np.ndarray:
    """RMS level (dBFS) of the mono mix (or one channel) in a window centred on each time."""
    x = as_signal(audio, sr)
    half = max(1, int(round(win_s * sr / 2)))
    idx = np.clip(np.round(np.asarray(times) * sr).astype(int), 0, x.n)
    lo, hi = np.clip(idx - half, 0, x.n), np.clip(idx + half, 0, x.n)
    energy = _window_energy(x, lo, hi, channel)
    return 10.0 * np.log10(np.maximum(energy, EPS))


def detect_onsets(audio, sr: int, delta: float = ONSET_DELTA,
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


def rms_envelope(audio, sr: int, times: np.ndarray, win_s: float = 0.04) -> np.ndarray:
    """Linear RMS of the mono mix around each time (for envelope correlation)."""
    return 10.0 ** (frame_rms_db(audio, sr, times, win_s) / 20.0)


# ---- level and quality --------------------------------------------------------------------------------
def integrated_loudness(audio, sr: int) -> float | None:
    """BS.1770-4 integrated loudness (LUFS), pyloudnorm's numbers block by block; None when the clip is shorter
    than one 400 ms block."""
    from store.loudness import integrated_loudness_blocks

    x = as_signal(audio, sr)
    if x.n < int(0.4 * sr) + 1:
        return None
    return integrated_loudness_blocks((b for _, b in x.blocks()), sr, x.channels)


def true_peak_dbtp(audio, sr: int, oversample: int = 4) -> float:
    """Peak of the 4x-oversampled signal (BS.1770 true-peak approximation), in dBTP.

    Block by block with a margin wider than the polyphase filter, so each block's interior equals the
    whole-signal ``resample_poly`` output.
    """
    x = as_signal(audio, sr)
    if x.n == 0:
        return float(db(0.0))
    if x.n <= 8:
        return float(db(np.max(np.abs(x.read(0, x.n)))))
    margin = 16 * oversample  # resample_poly's filter reaches 10 input samples each side for these ratios
    peak = 0.0
    step = BLOCK // oversample  # the oversampled block is the size of a normal one
    for a in range(0, x.n, step):
        b = min(x.n, a + step)
        lo, hi = max(0, a - margin), min(x.n, b + margin)
        up = signal.resample_poly(x.read(lo, hi), oversample, 1, axis=-1)
        inner = up[:, (a - lo) * oversample:(b - lo) * oversample]
        peak = max(peak, float(np.max(np.abs(inner))))
    return float(db(peak))


def clipping_ratio(audio, threshold: float = 0.999) -> float:
    """Fraction of samples at or beyond full scale (what 16-bit clipping leaves in a decoded file)."""
    x = as_signal(audio)
    if not x.n:
        return 0.0
    count = sum(int(np.count_nonzero(np.abs(b) >= threshold)) for _, b in x.blocks())
    return count / (x.n * x.channels)


def frame_levels_db(audio, sr: int, frame_s: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(frame start times, RMS dBFS) over non-overlapping frames of the mono mix."""
    x = as_signal(audio, sr)
    n = max(1, int(round(frame_s * sr)))
    count = max(1, x.n // n)
    per = max(1, BLOCK // n)
    levels = np.empty(count)
    for f0 in range(0, count, per):
        f1 = min(count, f0 + per)
        frames = x.mono(f0 * n, f1 * n).reshape(f1 - f0, n)
        levels[f0:f1] = 10.0 * np.log10(np.maximum((frames * frames).mean(axis=1), EPS))
    return np.arange(count) * n / sr, levels


def silence_ratio(audio, sr: int, threshold_dbfs: float = SILENCE_DBFS,
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


def segment(audio, sr: int, start_s: float, end_s: float) -> np.ndarray:
    """float64 (C, m) samples [int(start·sr), int(end·sr))."""
    x = as_signal(audio, sr)
    a = min(x.n, max(0, int(start_s * sr)))
    return x.read(a, min(x.n, max(a, int(end_s * sr))))


def span_rms_db(audio, sr: int, start_s: float, end_s: float) -> float:
    """RMS level (dBFS) over all channels of samples [int(start·sr), ceil(end·sr)), a block at a time (a bed
    can span the whole clip)."""
    x = as_signal(audio, sr)
    lo = min(x.n, max(0, int(start_s * sr)))
    hi = min(x.n, max(lo, int(math.ceil(end_s * sr))))
    if hi <= lo:
        return float(10.0 * np.log10(EPS))
    total = 0.0
    for a in range(lo, hi, BLOCK):
        seg = x.read(a, min(hi, a + BLOCK))
        total += float(np.sum(seg * seg))
    return float(10.0 * np.log10(max(total / ((hi - lo) * x.channels), EPS)))


def dc_offset(audio) -> float:
    """Largest per-channel mean."""
    x = as_signal(audio)
    if not x.n:
        return 0.0
    total = sum(b.sum(axis=1) for _, b in x.blocks())
    return float(np.max(np.abs(total / x.n)))


def clipped_share(audio, sr: int, start_s: float, end_s: float, threshold: float = 0.999) -> int:
    """How many samples (any channel at full scale) have times t = index / sr with start_s <= t <= end_s."""
    x = as_signal(audio, sr)
    lo = min(x.n, max(0, int(math.floor(start_s * sr)) - 1))
    hi = min(x.n, max(lo, int(math.ceil(end_s * sr)) + 2))
    count = 0
    for a in range(lo, hi, BLOCK):
        b = min(hi, a + BLOCK)
        idx = a + np.flatnonzero((np.abs(x.read(a, b)) >= threshold).any(axis=0))
        t = idx / sr
        count += int(np.count_nonzero((t >= start_s) & (t <= end_s)))
    return count


def clipped_samples(audio, threshold: float = 0.999) -> int:
    """Samples where any channel is at full scale."""
    x = as_signal(audio)
    return sum(int(np.count_nonzero((np.abs(b) >= threshold).any(axis=0))) for _, b in x.blocks())


# ---- stereo -------------------------------------------------------------------------------------------
def balance_envelope(audio, sr: int, times: np.ndarray, win_s: float = 0.08
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(balance, energy) around each time: (E_R - E_L) / (E_R + E_L) in [-1, 1] (-1 = all left).

    Mono input gives balance 0 everywhere.
    """
    x = as_signal(audio, sr)
    if x.channels < 2:
        e = 10.0 ** (frame_rms_db(x, sr, times, win_s) / 10.0)
        return np.zeros_like(e), e
    el = 10.0 ** (frame_rms_db(x, sr, times, win_s, channel=0) / 10.0)
    er = 10.0 ** (frame_rms_db(x, sr, times, win_s, channel=1) / 10.0)
    total = el + er
    return np.where(total > 2 * EPS, (er - el) / np.maximum(total, EPS), 0.0), total / 2


def balance_to_pan(balance: np.ndarray | float) -> np.ndarray | float:
    """Invert the constant-power pan law (L=cos θ, R=sin θ, θ=(p+1)π/4), for which balance = sin(pπ/2)."""
    return 2.0 / np.pi * np.arcsin(np.clip(balance, -1.0, 1.0))
