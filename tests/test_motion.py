"""Visual analysis (reasoning.offline.motion) against synthetic clips whose answers are known."""

from __future__ import annotations

import time

import numpy as np
import pytest

from reasoning.offline.motion import VisualAnalysis, analysis_cache_path, analyze_video
from store.media import iter_frames, probe, read_audio, write_video
from store.synthetic import impact_clicks, make_impact_clip, make_static_clip, render_impact_frames

TOL_S = 0.040  # ±1 frame at 25 fps


def _matched(found: list[float], truth: list[float], tol: float = TOL_S) -> bool:
    return len(found) == len(truth) and all(abs(f - t) <= tol for f, t in zip(sorted(found), sorted(truth)))


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("motion")


LAYOUTS = [
    (25.0, (0.8, 1.9, 3.1), 4.0, 0),
    (30.0, (0.8, 1.9, 3.1), 4.0, 1),
    (25.0, (0.5, 1.3, 1.9, 2.5, 3.4), 4.0, 2),
    (30.0, (1.02, 2.5), 3.5, 3),
    (25.0, (0.62, 1.5, 2.2), 3.0, 4),
    (30.0, (0.45, 1.17, 2.61, 3.3), 4.0, 5),
]


@pytest.mark.parametrize("fps,impacts,duration,seed", LAYOUTS)
def test_onsets_and_sides_match_the_ball(tmp, fps, impacts, duration, seed):
    clip = make_impact_clip(tmp / f"ball_{seed}.mp4", duration_s=duration, impacts=impacts, fps=fps, seed=seed)
    a = analyze_video(clip.path)
    assert _matched(a.onsets, clip.impacts), (a.onsets, clip.impacts)
    assert len(a.onset_strengths) == len(a.onsets) and min(a.onset_strengths) > 0
    for t, side in zip(clip.impacts, clip.side_of_impact):
        bal = a.balance_over(t - 0.1, t + 0.1)
        assert np.sign(bal) == np.sign(side) and abs(bal - side) < 0.25, (t, bal, side)
    assert a.cuts == []


def test_signals_have_the_documented_shapes_and_ranges(tmp):
    clip = make_impact_clip(tmp / "big.mp4", duration_s=3.0, impacts=(0.7, 1.6, 2.4), size=(640, 360))
    a = analyze_video(clip.path, fps=25.0, max_side=160)
    n = int(round(3.0 * 25))
    assert a.frame_size == (160, 90)
    assert a.times.shape == a.motion.shape == a.onset_env.shape == a.balance.shape == (n,)
    assert np.allclose(np.diff(a.times), 0.04)
    assert 0.0 <= a.motion.min() and a.motion.max() == pytest.approx(1.0)
    assert a.onset_env.min() >= 0.0 and -1.0 <= a.balance.min() <= a.balance.max() <= 1.0
    # The envelope peaks at the impacts: its top samples sit within one frame of a ball hit.
    top = a.times[np.argsort(a.onset_env)[-3:]]
    assert all(min(abs(t - i) for i in clip.impacts) <= TOL_S for t in top), top


def test_a_lower_analysis_rate_keeps_onset_precision(tmp):
    clip = make_impact_clip(tmp / "rate.mp4", duration_s=3.0, impacts=(0.9, 2.1), fps=30.0, seed=7)
    a = analyze_video(clip.path, fps=10.0)
    assert a.fps == 10.0 and len(a.times) == 30
    assert _matched(a.onsets, clip.impacts)  # onsets come from the source frames, not the output grid


def test_static_clip_has_no_impacts_and_no_motion(tmp):
    clip = make_static_clip(tmp / "still.mp4", duration_s=3.0)
    a = analyze_video(clip.path)
    assert a.onsets == [] and a.cuts == []
    assert a.motion.max() < 0.05 and float(a.onset_env.max()) == 0.0
    assert a.balance_over(0.0, 3.0) == 0.0


def test_hard_cut_is_found_and_is_not_an_impact(tmp):
    first, _ = render_impact_frames(2.0, (0.7, 1.5), 25.0, seed=1)
    second, _ = render_impact_frames(2.0, (0.6, 1.4), 25.0, seed=2)
    path = write_video(tmp / "cut.mp4", np.concatenate([first, second]), 25.0)
    a = analyze_video(path)
    assert len(a.cuts) == 1 and abs(a.cuts[0] - 2.0) <= TOL_S
    assert all(abs(t - 2.0) > 0.08 for t in a.onsets), a.onsets
    assert _matched(a.onsets, [0.7, 1.5, 2.6, 3.4])


def test_cache_roundtrip_and_reuse(tmp):
    clip = make_impact_clip(tmp / "cached.mp4", duration_s=2.5, impacts=(0.8, 1.7), seed=3)
    cache = tmp / "cache"
    a = analyze_video(clip.path, cache_dir=cache)
    path = analysis_cache_path(clip.path, cache)
    assert path.exists() and path.suffix == ".npz"
    b = VisualAnalysis.from_npz(path)
    for f in ("times", "motion", "onset_env", "balance"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert (a.onsets, a.onset_strengths, a.cuts, a.frame_size, a.fps, a.duration_s) == \
        (b.onsets, b.onset_strengths, b.cuts, b.frame_size, b.fps, b.duration_s)
    # A second call reads the cache instead of decoding: prove it by planting a marker in the file.
    b.onsets = [1.234]
    b.to_npz(path)
    assert analyze_video(clip.path, cache_dir=cache).onsets == [1.234]
    # Other settings are another cache entry.
    assert analysis_cache_path(clip.path, cache, fps=10.0) != path


def test_analysis_is_deterministic(tmp):
    clip = make_impact_clip(tmp / "det.mp4", duration_s=2.0, impacts=(0.6, 1.4), seed=5)
    a, b = analyze_video(clip.path), analyze_video(clip.path)
    assert a.onsets == b.onsets and np.array_equal(a.onset_env, b.onset_env) and np.array_equal(a.motion, b.motion)


def test_balance_over_weights_by_motion():
    t = np.arange(10) / 10.0
    motion = np.array([0, 0, 1, 1, 0, 0, 0, 3, 1, 0], dtype=np.float32)
    balance = np.array([0, 0, -1, -0.5, 1, 1, 1, 0.5, -0.5, 1], dtype=np.float32)
    a = VisualAnalysis(1.0, 10.0, t, motion, motion.copy(), [], [], [], balance, (16, 9))
    assert a.balance_over(0.2, 0.3) == pytest.approx(-0.75)
    assert a.balance_over(0.7, 0.8) == pytest.approx((3 * 0.5 - 0.5) / 4)
    assert a.balance_over(0.4, 0.6) == 0.0  # nothing moves there, whatever the balance says
    assert a.balance_over(0.31, 0.33) == pytest.approx(-0.5)  # empty window: nearest sample


def test_analysis_is_fast(tmp):
    """10 s of 640x360 at 25 fps: well under 1 s of CPU beyond decoding."""
    clip = make_impact_clip(tmp / "long.mp4", duration_s=10.0, impacts=(1.0, 2.2, 3.5, 5.0, 6.1, 7.7, 9.0),
                            size=(640, 360))
    info = probe(clip.path)
    t0 = time.process_time()
    n = sum(1 for _ in iter_frames(clip.path, 25.0, max_side=160, end_s=info.duration_s))
    decode = time.process_time() - t0
    t0 = time.process_time()
    a = analyze_video(clip.path, info)
    total = time.process_time() - t0
    assert n == 250 and _matched(a.onsets, clip.impacts)
    assert total - decode < 1.0, (total, decode)


def test_synthetic_clip_with_audio_knocks_on_the_right_side(tmp):
    clip = make_impact_clip(tmp / "sound.mp4", duration_s=3.0, impacts=(0.8, 2.0), audio=True, seed=2)
    info = probe(clip.path)
    assert info.has_audio and info.audio_channels == 2 and info.n_frames == 75
    audio, sr = read_audio(clip.path)
    for t, pan in zip(clip.impacts, clip.side_of_impact):
        seg = audio[:, int((t - 0.05) * sr):int((t + 0.1) * sr)]
        quiet = audio[:, int((t - 0.4) * sr):int((t - 0.2) * sr)]
        left, right = np.sqrt((seg ** 2).mean(axis=1))
        assert max(left, right) > 20 * np.sqrt((quiet ** 2).mean()) + 1e-4
        assert (right > left) == (pan > 0)
    clicks = impact_clicks(clip.impacts, clip.side_of_impact, 3.0)
    assert clicks.shape == (2, 3 * 44100) and np.abs(clicks).max() <= 1.0


def test_synthetic_frames_are_deterministic_and_validated():
    a, pans_a = render_impact_frames(1.0, (0.5,), 25.0, size=(64, 48), seed=9)
    b, pans_b = render_impact_frames(1.0, (0.5,), 25.0, size=(64, 48), seed=9)
    assert a.shape == (25, 48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and pans_a == pans_b
    with pytest.raises(ValueError):
        render_impact_frames(1.0, (1.5,), 25.0)


def test_one_analysis_per_video_whatever_cache_dirs_are_given(tmp, monkeypatch):
    """The watcher may have a cache dir and the critic none (or another): the video is still decoded once."""
    from reasoning.offline import motion

    from tests.helpers import DecodeCounter

    clip = make_impact_clip(tmp / "shared.mp4", duration_s=2.0, impacts=(0.7, 1.4), seed=6)
    monkeypatch.setattr(motion, "_MEMO", type(motion._MEMO)())
    counter = DecodeCounter(monkeypatch)
    a = analyze_video(clip.path, cache_dir=tmp / "watcher-cache")
    b = analyze_video(clip.path)  # the critic's call, no cache dir
    c = analyze_video(clip.path, cache_dir=tmp / "critic-cache")  # another dir: written from the memo
    assert len(counter.passes(clip.path)) == 1
    assert b.onsets == a.onsets == c.onsets and np.array_equal(b.motion, a.motion)
    assert analysis_cache_path(clip.path, tmp / "critic-cache").exists()


def test_analysis_state_per_frame_is_a_few_numbers(tmp):
    """Per-frame features live in flat arrays (no Python object per value): ~400 bytes a frame."""
    from reasoning.offline.motion import _Accumulator

    acc = _Accumulator(160, 90)
    rng = np.random.default_rng(0)
    for i in range(300):
        acc.add(i / 25, rng.integers(0, 255, (90, 160, 3), dtype=np.uint8))
    per_frame = (acc._bands._data.nbytes + acc._stats._data.nbytes + acc._times._data.nbytes) / 300
    assert per_frame < 500 and acc.col_mass.shape == (299, 8) and acc.total.shape == (299,)
