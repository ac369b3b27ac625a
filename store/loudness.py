"""BS.1770-4 integrated loudness measured block by block: the same numbers as ``pyloudnorm``, bounded memory.

``pyloudnorm.Meter.integrated_loudness`` copies the whole signal as float64 and filters it in one go, which for an
hour of stereo at 44.1 kHz is several GB. This meter runs the same K-weighting filters (pyloudnorm's own
coefficients, ``lfilter`` with carried state) over blocks, keeps only the 400 ms of filtered signal a gating block
needs, and applies pyloudnorm's gating code unchanged; the tests check it equals pyloudnorm.
"""

from __future__ import annotations

import warnings

import numpy as np

_G = (1.0, 1.0, 1.0, 1.41, 1.41)  # BS.1770 channel gains (L, R, C, Ls, Rs)
T_G = 0.400  # gating block (s)
OVERLAP = 0.75


class LoudnessMeter:
    """Feed float (C, n) blocks in order with ``add``; ``integrated()`` gives LUFS (None when shorter than a block)."""

    def __init__(self, rate: int, channels: int):
        import pyloudnorm
        from scipy.signal import lfilter, lfilter_zi

        if channels > 5:
            raise ValueError("Audio must have five channels or less.")
        self.rate, self.channels = rate, channels
        self._lfilter = lfilter
        self._stages = [(f.b, f.a, f.passband_gain) for f in pyloudnorm.Meter(rate)._filters.values()]
        self._zi = [np.zeros((channels, len(lfilter_zi(b, a)))) for b, a, _ in self._stages]
        self.n = 0  # samples seen
        self._buf = np.zeros((channels, 0))  # filtered samples from _buf_start on
        self._buf_start = 0
        self._z: list[np.ndarray] = []  # mean square per channel, one entry per finished gating block
        self._j = 0  # next gating block

    def _bounds(self, j: int) -> tuple[int, int]:
        step = 1.0 - OVERLAP
        return int(T_G * (j * step) * self.rate), int(T_G * (j * step + 1) * self.rate)

    def add(self, block: np.ndarray) -> None:
        x = np.asarray(block, dtype=np.float64)
        x = x[None] if x.ndim == 1 else x
        if x.shape[0] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {x.shape[0]}")
        for i, (b, a, gain) in enumerate(self._stages):
            y, self._zi[i] = self._lfilter(b, a, x, axis=-1, zi=self._zi[i])
            x = gain * y
        self._buf = np.concatenate([self._buf, x], axis=1) if self._buf.shape[1] else x
        self.n += x.shape[1]
        self._drain(final=False)

    def _drain(self, final: bool) -> None:
        end = self._buf_start + self._buf.shape[1]
        while True:
            lo, hi = self._bounds(self._j)
            if final:
                if self._j >= self._n_blocks():
                    break
            elif hi > end:
                break
            seg = self._buf[:, max(0, lo - self._buf_start):max(0, min(hi, end) - self._buf_start)]
            self._z.append(np.array([np.sum(np.square(seg[c])) for c in range(self.channels)]) / (T_G * self.rate))
            self._j += 1
        keep_from = self._bounds(self._j)[0]
        if keep_from > self._buf_start:
            drop = min(keep_from - self._buf_start, self._buf.shape[1])
            self._buf = self._buf[:, drop:]
            self._buf_start += drop

    def _n_blocks(self) -> int:
        t = self.n / self.rate
        return int(np.round((t - T_G) / (T_G * (1.0 - OVERLAP)))) + 1

    def integrated(self) -> float | None:
        """Integrated gated loudness (LUFS), exactly pyloudnorm's gating; None below one 400 ms block."""
        if self.n < T_G * self.rate:
            return None
        self._drain(final=True)
        z = np.stack(self._z[:self._n_blocks()], axis=1)  # (channels, blocks)
        gains = _G[:self.channels]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            l = [-0.691 + 10.0 * np.log10(np.sum([gains[i] * z[i, j] for i in range(self.channels)]))
                 for j in range(z.shape[1])]
            j_abs = [j for j, lj in enumerate(l) if lj >= -70.0]
            z_avg = [np.mean([z[i, j] for j in j_abs]) for i in range(self.channels)]
            gamma_r = -0.691 + 10.0 * np.log10(np.sum([gains[i] * z_avg[i] for i in range(self.channels)])) - 10.0
            j_g = [j for j, lj in enumerate(l) if (lj > gamma_r and lj > -70.0)]
            z_avg = np.nan_to_num(np.array([np.mean([z[i, j] for j in j_g]) for i in range(self.channels)]))
        with np.errstate(divide="ignore"):
            return float(-0.691 + 10.0 * np.log10(np.sum([gains[i] * z_avg[i] for i in range(self.channels)])))


def integrated_loudness_blocks(blocks, rate: int, channels: int) -> float | None:
    """LUFS of a signal given as an iterable of (C, n) blocks."""
    meter = LoudnessMeter(rate, channels)
    for block in blocks:
        meter.add(block)
    return meter.integrated()
