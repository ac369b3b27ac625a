"""Procedural sounds for when the bank has nothing close (or is not installed): filtered-noise beds and hits.

Everything is shaped noise, so it is cheap, seedable and free of licence questions. Each preset has a
description so it can be chosen by the same text match that picks recordings.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import butter, fftconvolve, sosfilt

SR = 44100


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str  # "bed" (fills a span) or "hit" (starts on its first sample)
    description: str


PRESETS: tuple[Preset, ...] = (
    Preset("wind", "bed", "wind blowing, gusts of wind, breeze outdoors"),
    Preset("room_tone", "bed", "quiet indoor room tone, faint air hum, near silence"),
    Preset("rain", "bed", "rain falling, steady drizzle and raindrops"),
    Preset("traffic", "bed", "distant traffic rumble, cars and engines on a city road"),
    Preset("murmur", "bed", "crowd murmur, indistinct speech of people talking"),
    Preset("rustle", "bed", "soft rustle of movement, cloth and fabric brushing, light rustling"),
    Preset("thud", "hit", "dull low thud, heavy footstep, object dropped, body fall"),
    Preset("click", "hit", "sharp click, tap, tick, light footstep"),
)
BY_NAME = {p.name: p for p in PRESETS}


@functools.lru_cache(maxsize=64)
def _sos(kind: str, freq, order: int = 2):
    """Filter design is the same for every call with these arguments (and costs more than filtering a short piece)."""
    return butter(order, freq, btype=kind, fs=SR, output="sos")


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal((2, n), dtype=np.float32)  # independent channels: a wide, natural bed


def _slow(rng: np.random.Generator, n: int, rate_hz: float, lo: float, hi: float) -> np.ndarray:
    """A smooth random envelope between lo and hi, changing about ``rate_hz`` times a second."""
    k = int(np.ceil(n / SR * rate_hz)) + 2
    knots = rng.uniform(lo, hi, k)
    coarse = np.linspace(0, k - 1, max(2, n // 64))  # evaluated every 64 samples, then interpolated
    i = np.minimum(coarse.astype(int), k - 2)
    w = (1 - np.cos(np.pi * (coarse - i))) / 2  # raised-cosine between knots: no corners
    env = knots[i] * (1 - w) + knots[i + 1] * w
    return np.interp(np.linspace(0, len(env) - 1, n), np.arange(len(env)), env).astype(np.float32)


def _rms_norm(x: np.ndarray, rms: float = 0.1) -> np.ndarray:
    cur = float(np.sqrt(np.mean(x ** 2))) if x.size else 0.0
    return (x * (rms / cur)).astype(np.float32) if cur > 1e-12 else x.astype(np.float32)


def _wind(rng, n):
    low = sosfilt(_sos("lowpass", 350), _noise(rng, n), axis=-1)
    high = sosfilt(_sos("bandpass", (700, 1800)), _noise(rng, n), axis=-1)
    gust = _slow(rng, n, 0.4, 0.25, 1.0)
    return low * gust + 0.5 * high * gust ** 2  # stronger gusts are brighter


def _room_tone(rng, n):
    return sosfilt(_sos("lowpass", 250), _noise(rng, n), axis=-1) + 0.05 * sosfilt(
        _sos("bandpass", (1000, 4000)), _noise(rng, n), axis=-1)


def _rain(rng, n):
    bed = sosfilt(_sos("highpass", 1500), _noise(rng, n), axis=-1) * 0.3
    drops = np.zeros((2, n), np.float32)
    count = rng.poisson(80 * n / SR)
    drops[rng.integers(0, 2, count), rng.integers(0, n, count)] = rng.uniform(0.2, 1.0, count)
    kernel = rng.standard_normal(int(0.004 * SR)) * np.exp(-np.linspace(0, 6, int(0.004 * SR)))
    patter = sosfilt(_sos("highpass", 2500), fftconvolve(drops, kernel[None], axes=-1)[:, :n], axis=-1)
    return bed + patter


def _traffic(rng, n):
    rumble = sosfilt(_sos("lowpass", 120), _noise(rng, n), axis=-1)
    engine = sosfilt(_sos("bandpass", (180, 600)), _noise(rng, n), axis=-1) * 0.4
    passing = _slow(rng, n, 0.25, 0.3, 1.0)  # cars passing: slow swells
    return (rumble + engine) * passing


def _murmur(rng, n, voices: int = 6):
    out = np.zeros((2, n), np.float32)
    for v in range(voices):
        band = sosfilt(_sos("bandpass", (250 + 40 * v, 2500)), rng.standard_normal(n), axis=-1)
        syll = _slow(rng, n, 4.0 + rng.uniform(-1, 1), 0.0, 1.0) ** 2  # ~4 syllables a second
        pan = rng.uniform(0.2, 0.8)
        out += np.stack([band * syll * (1 - pan), band * syll * pan])
    return out


def _rustle(rng, n):
    """Brushing cloth: band-passed noise in short, irregular swells (low crest, so it never reads as hits)."""
    hiss = sosfilt(_sos("bandpass", (700, 4000)), _noise(rng, n), axis=-1) * 0.35
    body = sosfilt(_sos("bandpass", (120, 700)), _noise(rng, n), axis=-1)
    swell = _slow(rng, n, 3.0, 0.8, 1.0)
    return (hiss + body) * swell


def _thud(rng, length_s: float = 0.35):
    n = int(length_s * SR)
    t = np.arange(n) / SR
    f0 = rng.uniform(55, 85)
    body = np.sin(2 * np.pi * f0 * t * (1 + 0.3 * np.exp(-t / 0.02))) * np.exp(-t / 0.09)
    knock = sosfilt(_sos("lowpass", 900), rng.standard_normal(n)) * np.exp(-t / 0.012)
    x = body + 0.6 * knock / (np.abs(knock).max() + 1e-9)
    return np.stack([x, x]).astype(np.float32)


def _click(rng, length_s: float = 0.05):
    n = int(length_s * SR)
    t = np.arange(n) / SR
    snap = sosfilt(_sos("highpass", 2000), rng.standard_normal(n)) * np.exp(-t / 0.003)
    ping = np.sin(2 * np.pi * rng.uniform(2500, 4000) * t) * np.exp(-t / 0.006)
    x = snap / (np.abs(snap).max() + 1e-9) + 0.3 * ping
    return np.stack([x, x]).astype(np.float32)


_BEDS = {"rustle": _rustle, "wind": _wind, "room_tone": _room_tone, "rain": _rain, "traffic": _traffic, "murmur": _murmur}
_HITS = {"thud": _thud, "click": _click}


def bed(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """(2, n) float32 stereo bed at about -20 dBFS RMS."""
    if n <= 0:
        return np.zeros((2, 0), np.float32)
    return _rms_norm(np.asarray(_BEDS[name](rng, n), np.float32))


def hit(name: str, rng: np.random.Generator) -> np.ndarray:
    """(2, m) float32 hit whose attack is its first sample (so placing it at t puts the onset at t)."""
    x = _HITS[name](rng)
    return (x * (0.8 / (np.abs(x).max() + 1e-9))).astype(np.float32)


REFERENCE_SEED = 20240907
REFERENCE_S = 100 * 1024 / SR  # one aiSFX block: what the critic compares a window of the render with
REFERENCE_HIT_EVERY_S = 0.6


def reference_recordings(cache_dir: str | Path) -> list[tuple[str, Path]]:
    """Every preset rendered once (fixed seed) to a WAV under ``cache_dir``, labelled by its plain name (the first
    clause of its description): the critic's reference recordings must include what the renderer synthesises,
    or a procedural rustle is named after the nearest recording (a sizzling sauna) and judged as that."""
    from store.media import write_audio

    out = []
    folder = Path(cache_dir) / "procedural-refs"
    n = int(REFERENCE_S * SR)
    for p in PRESETS:
        path = folder / f"{p.name}-s{REFERENCE_SEED}-v1.wav"
        if not path.is_file():
            rng = np.random.default_rng(REFERENCE_SEED)
            if p.kind == "bed":
                x = bed(p.name, n, rng)
            else:
                x = np.zeros((2, n), np.float32)
                for start in range(int(0.05 * SR), n, int(REFERENCE_HIT_EVERY_S * SR)):
                    h = hit(p.name, rng)[:, :n - start]
                    x[:, start:start + h.shape[1]] += h
            try:
                folder.mkdir(parents=True, exist_ok=True)
                write_audio(path, x, SR)  # atomic: a writer's own temporary name, then a rename
            except OSError:
                continue  # no reference for it, rather than no critic
        out.append((p.description.split(",")[0].strip(), path))
    return out
