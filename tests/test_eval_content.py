"""The soundtrack-content check: pitched (voiced/musical) energy vs aperiodic effects, on synthetic tracks."""

import numpy as np

from evaluation.content import FOLEY_MAX_PERIODIC, mostly_foley, periodic_share
from evaluation.metrics import ClipAudio

SR = 16000


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * SR)) / SR


def _impacts(seconds: float = 6.0, seed: int = 0) -> np.ndarray:
    """Decaying noise bursts twice a second: knocks and thuds, no pitch."""
    t = _t(seconds)
    return np.random.default_rng(seed).normal(size=t.size) * np.exp(-(t % 0.5) * 25) * 0.3


def _voice(seconds: float, f0: float = 140.0) -> np.ndarray:
    """A syllabic harmonic stack (a voiced-speech stand-in): pitched partials under a 4 Hz envelope."""
    t = _t(seconds)
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return wave * np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * 0.3


def _clip(x: np.ndarray) -> ClipAudio:
    return ClipAudio(np.asarray(x, np.float32), SR)


def test_impacts_are_foley_and_a_voice_is_not():
    fx = periodic_share(_clip(_impacts()))
    assert fx["periodic_energy_share"] < 0.05 and mostly_foley(_clip(_impacts())) is True
    v = periodic_share(_clip(_voice(4.0)))
    assert v["periodic_energy_share"] > 0.8 and mostly_foley(_clip(_voice(4.0))) is False


def test_short_loud_commentary_over_long_effects_is_not_foley_by_energy():
    """The launch-video case: effects fill most of the time, but a short, louder voice carries most energy."""
    fx = _impacts(8.0) * 0.3
    mix = fx.copy()
    mix[: 2 * SR] += _voice(2.0) * 3.0
    share = periodic_share(_clip(mix))
    assert share["periodic_time_share"] < 0.5  # most of the time is effects …
    assert share["periodic_energy_share"] > FOLEY_MAX_PERIODIC  # … but not most of the energy
    assert mostly_foley(_clip(mix)) is False
    quiet = fx.copy()
    quiet[: 2 * SR] += _voice(2.0) * 0.05  # the same voice far under the effects: still a foley track
    assert mostly_foley(_clip(quiet)) is True


def test_silence_has_no_verdict():
    assert periodic_share(_clip(np.zeros(SR)))["periodic_energy_share"] is None
    assert mostly_foley(_clip(np.zeros(SR))) is None
