"""Reference metrics on synthetic tracks whose onsets, envelopes and silences are known by construction."""

import numpy as np
import pytest

from evaluation import metrics as M
from evaluation.metrics import ClipAudio

SR = M.SR


def bursts(times, dur=10.0, seed=0, noise=1e-3, burst_s=0.04, tone=None):
    """Decaying noise bursts (or tone bursts at ``tone`` Hz) at ``times`` over a quiet noise floor."""
    rng = np.random.default_rng(seed)
    x = noise * rng.standard_normal(int(dur * SR))
    n = int(burst_s * SR)
    env = np.exp(-np.arange(n) / (0.25 * n))
    for t in times:
        i = int(t * SR)
        src = np.sin(2 * np.pi * tone * np.arange(n) / SR) if tone else rng.standard_normal(n)
        x[i:i + n] += 0.5 * env[: len(x[i:i + n])] * src[: len(x[i:i + n])]
    return ClipAudio(x.astype(np.float32), SR)


TIMES = [0.5, 1.3, 2.1, 2.6, 3.7, 4.4, 5.2, 6.05, 6.9, 7.5, 8.3, 9.1]


def test_detect_onsets_finds_known_events():
    found = M.detect_onsets(bursts(TIMES))
    assert len(found) == len(TIMES)
    assert np.max(np.abs(found - np.asarray(TIMES))) < 0.03


def test_identical_tracks_f1_one_and_above_chance():
    c = bursts(TIMES)
    out = M.onset_metrics(c, c)
    assert out["onset_f1"] == 1.0 and out["onset_matched"] == len(TIMES)
    assert out["onset_f1_chance"] is not None and out["onset_f1_chance"] < 0.5
    assert out["onset_f1_above_chance"] == pytest.approx(1.0 - out["onset_f1_chance"])


def test_shift_by_300ms_gives_low_f1():
    ref = bursts(TIMES, seed=1)
    gen = bursts([t + 0.3 for t in TIMES], seed=2)
    assert M.onset_metrics(gen, ref)["onset_f1"] <= 0.2


def test_onset_f1_matching_is_one_to_one():
    # Two estimates near one reference onset count once; tolerance is inclusive.
    f = M.onset_f1([1.0], [0.95, 1.05])
    assert f["matched"] == 1 and f["precision"] == 0.5 and f["recall"] == 1.0
    assert M.onset_f1([1.0, 1.15], [1.1])["matched"] == 1
    # Greedy nearest-first would pair 1.1 with 1.15 and strand 1.0; optimal matching pairs both.
    assert M.onset_f1([1.0, 1.15], [1.08, 1.2])["matched"] == 2
    assert M.onset_f1([], [])["f1"] is None and M.onset_f1([], [])["f1_why"]
    assert M.onset_f1([1.0], [])["f1"] == 0.0


def test_chance_level_is_the_mean_over_shifts():
    ref = [1.0, 2.0, 3.0, 4.0]
    c = M.onset_f1_chance(ref, ref, duration_s=5.0, fractions=(0.1, 0.2))
    # +0.5 s misses every onset; +1 s wraps 4 → 0 and lands 3 of 4 on other onsets (a periodic track is easy to hit).
    assert c["chance_f1_shifts"] == [0.0, 0.75] and c["chance_f1"] == pytest.approx(0.375)


def test_envelope_xcorr_finds_the_lag():
    ref = bursts(TIMES, seed=3)
    gen = bursts([t + 0.2 for t in TIMES], seed=4)
    out = M.envelope_xcorr(gen, ref)
    assert out["xcorr_lag_s"] == pytest.approx(0.2, abs=0.02)
    assert out["xcorr_max"] > 0.8 > out["xcorr_at_zero"]


def test_rms_envelope_scaled_copy_and_constant():
    rng = np.random.default_rng(5)
    t = np.arange(10 * SR) / SR
    x = (0.1 + 0.4 * (np.sin(2 * np.pi * 0.3 * t) > 0)) * rng.standard_normal(t.size) * np.minimum(1, t)
    ref = ClipAudio(x.astype(np.float32), SR)
    gen = ClipAudio((0.3 * x).astype(np.float32), SR)
    out = M.rms_envelope_r(gen, ref)
    assert out["rms_r_1000ms"] == pytest.approx(1.0, abs=1e-6) and out["rms_r_250ms"] == pytest.approx(1.0, abs=1e-6)
    silent = ClipAudio(np.zeros_like(x, dtype=np.float32), SR)
    out = M.rms_envelope_r(silent, ref)
    assert out["rms_r_1000ms"] is None and "generated side is constant" in out["rms_r_1000ms_why"]
    out = M.envelope_xcorr(silent, ref)
    assert out["xcorr_max"] is None and out["xcorr_why"]


def test_logmel_correlation_and_cross_clip_control():
    clips = [bursts(TIMES, seed=10 + i, tone=f, burst_s=0.3) for i, f in enumerate((300, 1200, 4000))]
    same = M.logmel_correlation(clips[1], clips[1])
    assert same["logmel_profile_r"] == pytest.approx(1.0) and same["logmel_frame_r"] == pytest.approx(1.0)
    for i in range(3):
        # A "generated" track: same tone, different burst times and noise.
        gen = bursts([t + 0.05 for t in TIMES[::2]], seed=20 + i, tone=(300, 1200, 4000)[i], burst_s=0.3)
        ctl = M.cross_clip_control(gen, clips, i)
        assert ctl["rank"] == 1 and ctl["own_r"] > ctl["mean_other_r"]
        assert len(ctl["all_r"]) == 3


def test_silence_dropouts():
    x = 0.1 * np.random.default_rng(6).standard_normal(10 * SR).astype(np.float32)
    x[2 * SR: int(2.8 * SR)] = 0.0  # 0.8 s dropout
    x[5 * SR: int(5.3 * SR)] = 0.0  # 0.3 s: too short to count
    x[int(8.5 * SR):] = 5e-5  # quiet but below 1e-4: a dropout to the end
    d = M.silence_dropouts(ClipAudio(x, SR))
    assert [(round(s["start_s"], 2), round(s["end_s"], 2)) for s in d] == [(2.0, 2.8), (8.5, 10.0)]
    assert M.dropouts_within(d, 1.0, 2.1) == d[:1] and M.dropouts_within(d, 3.0, 8.0) == []


def test_compare_is_flat_and_aligns_rates():
    ref = bursts(TIMES, seed=7)
    gen48 = ClipAudio.from_array(np.stack([ref.samples, ref.samples]), SR, target_sr=48000)
    out = M.compare(gen48, ref)
    assert out["sr"] == SR and out["onset_f1"] == 1.0
    assert out["rms_r_1000ms"] > 0.99 and out["gen_dropouts"] == []
    for k, v in out.items():
        assert v is None or isinstance(v, (int, float, str, list)), k


# ---- the loop's verdict: strict, and within the measures' seed noise ------------------------------------------

def test_a_fall_within_the_seed_noise_is_worse_strictly_but_not_within_noise():
    """Issue 9: re-rendering one plan with another seed already moves every reference measure, so a fall no larger
    than that noise must not make a kept round "worse" — while the strict verdict stays as it was."""
    from evaluation import measures as ms

    tol = ms.NOISE_TOLERANCE
    assert all(tol[m.key] >= 0 for m in ms.REFERENCE_DIRECTIONAL) and tol["xcorr_max"] > 0
    r0 = {"xcorr_max": 0.19, "logmel_profile_r": 0.92, "control_rank": 3, "onset_f1": 0.4}
    # xcorr falls by half its tolerance, the rank worsens by one, log-mel r rises by half its tolerance
    kept = {"xcorr_max": 0.19 - tol["xcorr_max"] / 2, "logmel_profile_r": 0.92 + tol["logmel_profile_r"] / 2,
            "control_rank": 4, "onset_f1": 0.4}
    strict, counts = ms.no_worse(r0, kept)
    assert strict is False and counts["worse_on"] == ["xcorr_max", "control_rank"] and counts["better"] == 1
    noisy, ncounts = ms.no_worse_within_noise(r0, kept)
    assert noisy is True and ncounts["worse_on"] == [] and (ncounts["better"], ncounts["tied"]) == (0, 4)
    assert ncounts["tolerance"] == tol  # the verdict says which tolerances it used

    # a fall beyond the tolerance is worse either way
    beyond = dict(kept, xcorr_max=0.19 - 1.5 * tol["xcorr_max"])
    assert ms.no_worse(r0, beyond)[0] is False
    noisy, ncounts = ms.no_worse_within_noise(r0, beyond)
    assert noisy is False and ncounts["worse_on"] == ["xcorr_max"]
    # a lower-is-better measure: a rank two places worse is within its (whole-rank) tolerance, three is not
    assert ms.no_worse_within_noise({"control_rank": 3}, {"control_rank": 3 + tol["control_rank"]})[0] is True
    assert ms.no_worse_within_noise({"control_rank": 3}, {"control_rank": 4 + tol["control_rank"]})[0] is False


def test_measures_without_a_measured_noise_stay_strict():
    from evaluation import measures as ms

    assert "clap" not in ms.NOISE_TOLERANCE and ms.NOISE_TOLERANCE["gen_dropout_s"] == 0.0
    assert ms.no_worse_within_noise({"clap": 0.30}, {"clap": 0.299})[0] is False  # a model measure
    assert ms.no_worse_within_noise({"gen_dropout_s": 0.0}, {"gen_dropout_s": 0.5})[0] is False
    assert ms.no_worse_within_noise({"clap": 0.30}, {"clap": 0.30 + 1e-7})[0] is True  # still within TIE_EPS
    # any tolerances can be given to the strict function
    assert ms.no_worse({"clap": 0.30}, {"clap": 0.29}, tolerance={"clap": 0.02})[0] is True
    assert ms.no_worse({}, {})[0] is None and ms.no_worse_within_noise({}, {})[0] is None
