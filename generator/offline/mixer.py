"""Placing sounds on the plan's timeline and mastering the mix (44.1 kHz stereo float32).

Impacts are aligned on their own attack (a recording rarely starts exactly on its transient), spans
are filled by looping with equal-power crossfades, and the master bus normalises loudness toward
-20 LUFS (BS.1770, pyloudnorm's numbers), then a look-ahead limiter keeps peaks under the ceiling.

Memory does not grow with the clip: placed sounds are ``Clip``s rendered on demand, the ``Timeline`` mixes
them a block at a time, and ``master_blocks`` makes two passes over those blocks (measure, then gain, limit
and write), so an hour-long soundtrack is never held whole. ``master`` is the same code over one array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d

SR = 44100
BLOCK = 1 << 18  # timeline samples mixed at a time (~6 s): the render's working memory is a few of these
MEASURE_BLOCK = 1 << 20  # samples per step when a bed measures its own level
KEEP_BUILT = 60 * SR  # at most this much audio (all sounds together) stays built between gain staging and mixing
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


def place_stereo(x: np.ndarray, pan: float, point_source: bool,
                 gains: tuple[float, float] | None = None) -> np.ndarray:
    """Point sources are folded to mono, then panned; beds keep their width and are balanced."""
    x = np.atleast_2d(x)
    if point_source or x.shape[0] == 1:
        mono = x.mean(axis=0)
        x = np.stack([mono, mono])
    gl, gr = gains if gains is not None else pan_gains(pan)
    return np.stack([x[0] * gl, x[1] * gr]).astype(np.float32)


# ---- clips: placed sounds rendered on demand ------------------------------------------------------------
class Clip:
    """A sound placed at ``at`` for ``length`` samples; ``render(a, b)`` gives its samples [a, b) as float32 (2, b-a).

    A clip may cache what it needs while it is being mixed; ``release`` drops that (it is rebuilt if asked again).
    """

    at: int = 0
    length: int = 0
    scale: float = 1.0  # set by the renderer's gain staging (layers under the impacts); applied when mixed

    def render(self, a: int, b: int) -> np.ndarray:
        raise NotImplementedError

    def peak_level(self, keep: bool = False) -> float:
        """Loudest 50 ms RMS of the placed sound (linear, channels averaged), before ``scale``. ``keep``: leave it
        built for the mix that follows (the timeline releases it after mixing)."""
        x = self.render(0, self.length)
        if not keep:
            self.release()
        return float(envelope(x, 0.05).max()) if x.size else 0.0

    def release(self) -> None:
        pass


class LazyClip(Clip):
    """A short sound built by a deterministic ``make()`` when first mixed and dropped after (impacts, short beds)."""

    def __init__(self, at: int, make: Callable[[], np.ndarray], length: int | None = None):
        self.at, self._make = at, make
        self._x: np.ndarray | None = None
        if length is None:
            length = self._get().shape[-1]
            self.release()
        self.length = int(length)

    def _get(self) -> np.ndarray:
        if self._x is None:
            self._x = self._make()
        return self._x

    def render(self, a: int, b: int) -> np.ndarray:
        return self._get()[:, a:b]

    def release(self) -> None:
        self._x = None


def edge_ramps(fade_in: int, fade_out: int) -> tuple[np.ndarray, np.ndarray]:
    """``fade``'s raised-cosine curves (float32)."""
    up = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade_in, dtype=np.float32))
    down = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, fade_out, dtype=np.float32))
    return up, down


class BedClip(Clip):
    """``fill`` → ``fade`` → ``normalise`` → ``place_stereo`` of a looped source, computed for any sample range.

    The values equal the whole-array pipeline (the same float32 operations in the same order), so a bed of an
    hour costs a block of memory, not an hour. ``source()`` gives the (2, m) material; it is called again
    after ``release``. Random draws happen here, in ``fill``'s order: an excerpt offset, or a loop rotation.
    """

    def __init__(self, at: int, span: int, source: Callable[[], np.ndarray], rng: np.random.Generator | None,
                 fades: tuple[int, int], kind: str, gain: float, pan: float, point: bool,
                 xfade_s: float = 0.15, offset: int | None = None):
        self.at, self.length, self._source = at, int(span), source
        self._src: np.ndarray | None = None
        src = self._loop_source()
        length = src.shape[-1]
        if offset is not None:  # an excerpt chosen by the caller (no draw)
            self._mode, self._off = "excerpt", int(offset)
        elif length >= self.length:
            self._mode, self._off = "excerpt", int(rng.integers(0, length - self.length + 1))
        else:
            self._mode = "loop"
            self._roll = int(rng.integers(0, length)) if length > 1 else 0
            self._xf = max(1, min(int(xfade_s * SR), length // 3))
            ramp = np.linspace(0, np.pi / 2, self._xf, dtype=np.float32)
            self._fade_in, self._fade_out = np.sin(ramp), np.cos(ramp)
        self._channels = src.shape[0]
        self.release()  # the loop rotation applies from the next read on
        self._fi, self._fo = min(fades[0], self.length), min(fades[1], self.length)
        self._up, self._down = edge_ramps(self._fi, self._fo)
        self.kind = kind
        # normalise: the RMS of the whole faded fill, measured block by block (and its loudest 50 ms on the way)
        total, env_max = 0.0, 0.0
        for a in range(0, self.length, MEASURE_BLOCK):
            x = self._faded(a, min(self.length, a + MEASURE_BLOCK)).astype(np.float64)
            total += float(np.sum(x * x))
            env_max = max(env_max, float(envelope(x, 0.05).max()) if x.size else 0.0)
        level = float(np.sqrt(total / (self._channels * self.length))) if self.length else 0.0
        self._norm = None if level < 1e-7 else db_to_gain(REFERENCE_DB.get(kind, -22.0)) / level
        self._peak = env_max * (self._norm or 1.0) * gain
        self._gain, self._point = gain, point
        self._gl, self._gr = pan_gains(pan)
        self.release()

    def _loop_source(self) -> np.ndarray:
        if self._src is None:
            audio = self._source()
            a, b = active_span(audio)
            src = audio[:, a:b]
            if getattr(self, "_mode", None) == "loop" and self._roll:
                src = np.roll(src, -self._roll, axis=-1)
            self._src = src
        return self._src

    def release(self) -> None:
        self._src = None

    def _filled(self, a: int, b: int) -> np.ndarray:
        src = self._loop_source()
        if self._mode == "excerpt":
            return np.ascontiguousarray(src[:, self._off + a:self._off + b], dtype=np.float32)
        length, xf = src.shape[-1], self._xf
        step = length - xf
        out = np.zeros((src.shape[0], b - a), np.float32)
        k = max(0, (a - length) // step)
        while k * step < b:
            pos = k * step
            lo, hi = max(a, pos), min(b, pos + length)
            if hi > lo:
                piece = src[:, lo - pos:hi - pos].copy()
                i0, i1 = lo - pos, hi - pos
                if pos > 0 and i0 < xf:
                    piece[:, :min(xf, i1) - i0] *= self._fade_in[i0:min(xf, i1)]
                if i1 > length - xf:
                    j0 = max(i0, length - xf)
                    piece[:, j0 - i0:] *= self._fade_out[j0 - (length - xf):i1 - (length - xf)]
                out[:, lo - a:hi - a] += piece
            k += 1
        return out

    def _faded(self, a: int, b: int) -> np.ndarray:
        y = self._filled(a, b)
        n = self.length
        if a < self._fi:
            y[..., :min(b, self._fi) - a] *= self._up[a:min(b, self._fi)]
        if b > n - self._fo:
            j0 = max(a, n - self._fo)
            y[..., j0 - a:] *= self._down[j0 - (n - self._fo):b - (n - self._fo)]
        return y

    def peak_level(self, keep: bool = False) -> float:
        return self._peak  # measured with the normalising pass (blocks meet at MEASURE_BLOCK: a close bound)

    def render(self, a: int, b: int) -> np.ndarray:
        x = self._faded(a, b)
        if self._norm is not None:
            x = (x * self._norm).astype(np.float32)
        return place_stereo(x * self._gain, 0.0, self._point, gains=(self._gl, self._gr))


class Timeline:
    """Clips on a stereo timeline of ``n`` samples, mixed a block at a time (in the order they were added)."""

    def __init__(self, n: int):
        self.n = int(n)
        self.clips: list[Clip] = []

    def add(self, clip: Clip) -> None:
        if clip.length > 0 and clip.at < self.n and clip.at + clip.length > 0:
            self.clips.append(clip)

    def blocks(self, size: int = BLOCK) -> Iterator[np.ndarray]:
        for a in range(0, self.n, size):
            b = min(self.n, a + size)
            out = np.zeros((2, b - a), np.float32)
            for clip in self.clips:
                lo, hi = max(a, clip.at), min(b, clip.at + clip.length)
                if hi > lo:
                    x = clip.render(lo - clip.at, hi - clip.at)
                    out[:, lo - a:hi - a] += x if clip.scale == 1.0 else x * np.float32(clip.scale)
                if clip.at + clip.length <= b and clip.at + clip.length > a:
                    clip.release()
            yield out


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
    return _DCBlock(cutoff_hz)(x)


class _DCBlock:
    """``dc_block`` with its filter state carried across blocks (same output as filtering the whole)."""

    def __init__(self, cutoff_hz: float = 20.0):
        from scipy.signal import butter

        self.sos = butter(2, cutoff_hz, btype="highpass", fs=SR, output="sos")
        self.zi: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from scipy.signal import sosfilt

        if self.zi is None:
            self.zi = np.zeros((self.sos.shape[0],) + x.shape[:-1] + (2,))
        y, self.zi = sosfilt(self.sos, x, axis=-1, zi=self.zi)
        return y.astype(np.float32)


def _limit_segment(x: np.ndarray, ceiling: float, lookahead_s: float, a: int, b: int) -> np.ndarray:
    """Limited samples [a, b) of ``x`` (which may carry context on either side)."""
    need = np.minimum(1.0, ceiling / np.maximum(np.abs(x).max(axis=0), 1e-12))
    look = max(1, int(lookahead_s * SR))
    gain = uniform_filter1d(minimum_filter1d(need, size=2 * look + 1), size=look + 1)
    y = x[:, a:b] * np.minimum(gain, need)[None, a:b]  # the min() only guards float rounding
    return y.astype(np.float32)


def master(x: np.ndarray, target_lufs: float = -20.0, ceiling_db: float = -1.0,
           max_gain_db: float = 30.0) -> tuple[np.ndarray, MasterInfo]:
    """Loudness-normalise toward ``target_lufs`` (bounded gain), then limit peaks."""
    out: list[np.ndarray] = []
    info = master_blocks(lambda: iter([x]), x.shape[-1], out.append, target_lufs, ceiling_db, max_gain_db)
    return (np.concatenate(out, axis=1) if out else np.zeros((2, 0), np.float32)), info


def master_blocks(blocks: Callable[[], Iterator[np.ndarray]], n: int, write: Callable[[np.ndarray], None],
                  target_lufs: float = -20.0, ceiling_db: float = -1.0, max_gain_db: float = 30.0,
                  lookahead_s: float = 0.005) -> MasterInfo:
    """``master`` over a signal given as a re-iterable stream of (2, m) float32 blocks, output to ``write``.

    Pass 1 measures (loudness, RMS, peak); pass 2 applies the gain and, when the peak needs it, the limiter
    (each block with enough neighbouring samples that its gain curve equals the whole-signal one).
    """
    channels = 2
    first = True
    sumsq, peak_in = 0.0, 0.0
    from store.loudness import LoudnessMeter

    meter = LoudnessMeter(SR, channels) if n >= int(0.4 * SR) + 1 else None
    for blk in blocks():
        if first:
            channels, first = blk.shape[0], False
            if meter is not None and channels != 2:
                meter = LoudnessMeter(SR, channels)
        if meter is not None:
            meter.add(blk)
        sumsq += float(np.sum(blk.astype(np.float64) ** 2))
        if blk.size:
            peak_in = max(peak_in, float(np.abs(blk).max()))
    lufs_in = meter.integrated() if meter is not None else None
    lufs_in = lufs_in if lufs_in is not None and np.isfinite(lufs_in) else None
    if lufs_in is None:
        rms = float(np.sqrt(sumsq / (n * channels))) if n else 0.0
        lufs_in_est = 20 * np.log10(rms) - 0.7 if rms > 1e-7 else None  # short clip: RMS stands in
    else:
        lufs_in_est = lufs_in
    gain_db = 0.0 if lufs_in_est is None else float(np.clip(target_lufs - lufs_in_est, -max_gain_db, max_gain_db))
    g = db_to_gain(gain_db)
    ceiling = db_to_gain(ceiling_db)
    # max |x * g| in float32 is float32(max |x|) * float32(g): rounding is monotonic
    limited = n > 0 and float(np.float32(peak_in) * np.float32(g)) > ceiling
    out_meter = LoudnessMeter(SR, channels) if limited and n >= int(0.4 * SR) + 1 else None
    peak_out = 0.0

    def emit(y: np.ndarray) -> None:
        nonlocal peak_out
        if y.size:
            peak_out = max(peak_out, float(np.abs(y).max()))
        if out_meter is not None:
            out_meter.add(y)
        write(y)

    if not limited:
        for blk in blocks():
            emit((blk * g).astype(np.float32))
    else:
        margin = 2 * max(1, int(lookahead_s * SR)) + 2
        prev = np.zeros((channels, 0), np.float32)  # the tail of the block before (context)
        cur: np.ndarray | None = None
        for blk in blocks():
            nxt = (blk * g).astype(np.float32)
            if cur is not None:
                ctx = np.concatenate([prev, cur, nxt[:, :margin]], axis=1)
                emit(_limit_segment(ctx, ceiling, lookahead_s, prev.shape[1], prev.shape[1] + cur.shape[1]))
                prev = np.concatenate([prev, cur], axis=1)[:, -margin:]
            cur = nxt
        if cur is not None:
            ctx = np.concatenate([prev, cur], axis=1)
            emit(_limit_segment(ctx, ceiling, lookahead_s, prev.shape[1], ctx.shape[1]))
    lufs_out = None
    if limited:
        value = out_meter.integrated() if out_meter is not None else None
        lufs_out = value if value is not None and np.isfinite(value) else None
    elif lufs_in is not None:
        lufs_out = lufs_in + gain_db  # gain alone shifts loudness exactly; only the limiter needs a measurement
    return MasterInfo(lufs_in, gain_db, lufs_out, 20 * np.log10(peak_out) if peak_out > 0 else -120.0, limited)
