"""Placing sounds on the plan's timeline and mastering the mix (44.1 kHz stereo float32).

Impacts are aligned on their own attack (a recording rarely starts exactly on its transient), spans
are filled by looping with equal-power crossfades, and the master bus normalises loudness toward
-20 LUFS with pyloudnorm, then a look-ahead limiter keeps peaks under the ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d

SR = 44100
PREROLL_S = 0.003  # keep a few ms before the attack so the transient is not clipped by the fade-in

# Reference levels (dBFS) each source is normalised to before the event's gain_db: impacts by their
# loudest 50 ms, beds by their RMS. The master then sets the absolute loudness.
REFERENCE_DB = {"impact": -14.0, "continuous": -22.0, "ambience": -28.0, "speech": -24.0, "music": -24.0}


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def envelope(audio: np.ndarray, win_s: float = 0.002) -> np.ndarray:
    """Centred short-time RMS (over channels), one value per sample."""
    power = np.mean(np.atleast_2d(audio).astype(np.float64) ** 2, axis=0)
    win = max(1, int(win_s * SR))
    return np.sqrt(np.maximum(uniform_filter1d(power, size=win, mode="constant"), 0.0))  # rounding can dip below 0


def first_onset(audio: np.ndarray) -> int:
    """Sample index where the first strong transient starts (0 for sounds without one).

    The first crossing of a quarter of the way from the noise floor to the peak envelope finds the
    first real event (not the loudest one); walking back to 5 % finds where its attack begins.
    """
    env = envelope(audio)
    if env.size == 0:
        return 0
    peak, floor = float(env.max()), float(np.percentile(env, 10))
    if peak < 1e-5 or peak < 2.0 * floor:
        return 0  # stationary texture: no attack to align
    above = np.flatnonzero(env >= floor + 0.25 * (peak - floor))
    i = int(above[0])
    lower = floor + 0.05 * (peak - floor)
    start = max(0, i - int(0.03 * SR))
    quiet = np.flatnonzero(env[start:i] < lower)
    return start + int(quiet[-1]) + 1 if quiet.size else start


def active_span(audio: np.ndarray, rel_db: float = -40.0) -> tuple[int, int]:
    """[start, end) of the part louder than ``rel_db`` below the peak (drops silent head and tail)."""
    env = envelope(audio, 0.01)
    if env.size == 0 or env.max() <= 0:
        return 0, audio.shape[-1]
    idx = np.flatnonzero(env >= env.max() * db_to_gain(rel_db))
    return int(idx[0]), int(idx[-1]) + 1


def fade(x: np.ndarray, fade_in: int, fade_out: int) -> np.ndarray:
    """Raised-cosine fades, in place-safe (returns a copy)."""
    y = np.array(x, dtype=np.float32, copy=True)
    n = y.shape[-1]
    fi, fo = min(fade_in, n), min(fade_out, n)
    if fi > 0:
        y[..., :fi] *= (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fi, dtype=np.float32)))
    if fo > 0:
        y[..., n - fo:] *= (0.5 + 0.5 * np.cos(np.linspace(0, np.pi, fo, dtype=np.float32)))
    return y


def impact_segment(audio: np.ndarray, onset: int, length_s: float) -> tuple[np.ndarray, int]:
    """Cut an impact from just before its attack; returns (segment, samples of pre-roll before the onset)."""
    pre = min(onset, int(PREROLL_S * SR))
    _, end = active_span(audio)
    stop = min(max(end, onset + 1), onset + max(1, int(length_s * SR)))
    seg = audio[:, onset - pre:stop]
    tail = int(min(0.25 * SR, max(0.02 * SR, 0.15 * seg.shape[-1])))
    return fade(seg, pre, tail), pre


def fill(audio: np.ndarray, n: int, rng: np.random.Generator, xfade_s: float = 0.15) -> np.ndarray:
    """Exactly ``n`` samples from the active part of ``audio``: a random excerpt, or seamless loops."""
    if n <= 0:
        return np.zeros((audio.shape[0], 0), np.float32)
    a, b = active_span(audio)
    src = audio[:, a:b]
    length = src.shape[-1]
    if length >= n:
        off = int(rng.integers(0, length - n + 1))
        return np.ascontiguousarray(src[:, off:off + n], dtype=np.float32)
    src = np.roll(src, -int(rng.integers(0, length)), axis=-1) if length > 1 else src
    xf = max(1, min(int(xfade_s * SR), length // 3))
    step = length - xf
    ramp = np.linspace(0, np.pi / 2, xf, dtype=np.float32)
    fade_in, fade_out = np.sin(ramp), np.cos(ramp)  # equal power: uncorrelated loops keep their level
    out = np.zeros((src.shape[0], n + length), np.float32)
    pos = 0
    while pos < n:
        piece = src.copy()
        if pos > 0:
            piece[:, :xf] *= fade_in
        piece[:, length - xf:] *= fade_out
        out[:, pos:pos + length] += piece
        pos += step
    return out[:, :n]


def normalise(x: np.ndarray, kind: str) -> np.ndarray:
    """Scale a source to the reference level of its kind (so gain_db means the same for every sample)."""
    if kind == "impact":
        level = float(envelope(x, 0.05).max()) if x.size else 0.0
    else:
        level = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
    if level < 1e-7:
        return x.astype(np.float32)
    return (x * (db_to_gain(REFERENCE_DB.get(kind, -22.0)) / level)).astype(np.float32)


def pan_gains(pan: float) -> tuple[float, float]:
    """Equal-power law, scaled so the centre is unity per channel: (√2·cos θ, √2·sin θ), θ = (pan+1)·π/4."""
    theta = (float(np.clip(pan, -1.0, 1.0)) + 1.0) * np.pi / 4
    return float(np.sqrt(2) * np.cos(theta)), float(np.sqrt(2) * np.sin(theta))


def place_stereo(x: np.ndarray, pan: float, point_source: bool) -> np.ndarray:
    """Point sources are folded to mono, then panned; beds keep their width and are balanced."""
    x = np.atleast_2d(x)
    if point_source or x.shape[0] == 1:
        mono = x.mean(axis=0)
        x = np.stack([mono, mono])
    gl, gr = pan_gains(pan)
    return np.stack([x[0] * gl, x[1] * gr]).astype(np.float32)


class Bus:
    """A stereo timeline; sources that run past either end are cut."""

    def __init__(self, n: int):
        self.data = np.zeros((2, n), np.float32)

    def add(self, x: np.ndarray, at: int) -> None:
        n = self.data.shape[-1]
        lo, hi = max(0, at), min(n, at + x.shape[-1])
        if hi > lo:
            self.data[:, lo:hi] += x[:, lo - at:hi - at]


@dataclass
class MasterInfo:
    lufs_in: float | None
    gain_db: float
    lufs_out: float | None
    peak_db: float
    limited: bool

    def to_dict(self) -> dict:
        r = lambda v: None if v is None else round(float(v), 2)  # noqa: E731
        return {"lufs_in": r(self.lufs_in), "gain_db": r(self.gain_db), "lufs_out": r(self.lufs_out),
                "peak_db": r(self.peak_db), "limited": self.limited}


def dc_block(x: np.ndarray, cutoff_hz: float = 20.0) -> np.ndarray:
    """High-pass below hearing: removes DC offset and sub-sonic rumble that waste headroom."""
    from scipy.signal import butter, sosfilt

    return sosfilt(butter(2, cutoff_hz, btype="highpass", fs=SR, output="sos"), x, axis=-1).astype(np.float32)


def loudness(x: np.ndarray) -> float | None:
    """Integrated loudness (LUFS) with pyloudnorm; None for silence or clips under one 400 ms block."""
    if x.shape[-1] < int(0.4 * SR) + 1:
        return None
    import pyloudnorm

    value = float(pyloudnorm.Meter(SR).integrated_loudness(x.T.astype(np.float64)))
    return value if np.isfinite(value) else None


def limit(x: np.ndarray, ceiling_db: float = -1.0, lookahead_s: float = 0.005) -> tuple[np.ndarray, bool]:
    """Look-ahead peak limiter: a smoothed gain curve that never lets |x| exceed the ceiling.

    The gain is the minimum over ±lookahead, then averaged over half that window, so it glides into
    each peak instead of clipping it, and every sample stays at or under its own required gain.
    """
    ceiling = db_to_gain(ceiling_db)
    peak = np.abs(x).max(axis=0)
    if peak.size == 0 or peak.max() <= ceiling:
        return x.astype(np.float32), False
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    look = max(1, int(lookahead_s * SR))
    gain = uniform_filter1d(minimum_filter1d(need, size=2 * look + 1), size=look + 1)
    y = x * np.minimum(gain, need)[None]  # the min() only guards float rounding
    return y.astype(np.float32), True


def master(x: np.ndarray, target_lufs: float = -20.0, ceiling_db: float = -1.0,
           max_gain_db: float = 30.0) -> tuple[np.ndarray, MasterInfo]:
    """Loudness-normalise toward ``target_lufs`` (bounded gain), then limit peaks."""
    lufs_in = loudness(x)
    if lufs_in is None:
        rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
        lufs_in_est = 20 * np.log10(rms) - 0.7 if rms > 1e-7 else None  # short clip: RMS stands in
    else:
        lufs_in_est = lufs_in
    gain_db = 0.0 if lufs_in_est is None else float(np.clip(target_lufs - lufs_in_est, -max_gain_db, max_gain_db))
    y, limited = limit(x * db_to_gain(gain_db), ceiling_db)
    peak = float(np.abs(y).max()) if y.size else 0.0
    # Gain alone shifts loudness exactly; only the limiter needs a second measurement.
    lufs_out = loudness(y) if limited else (None if lufs_in is None else lufs_in + gain_db)
    return y, MasterInfo(lufs_in, gain_db, lufs_out, 20 * np.log10(peak) if peak > 0 else -120.0, limited)
