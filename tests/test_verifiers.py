"""DeSync through models/desync.py (oracle-exact), the critic verifiers behind the Critic protocol (tiny random models
loaded by the real loading code), composite critics and the ``verified`` preset in the backend registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent import backends
from agent.config import RunConfig
from contract.memory import SLOTS
from contract.plan import Event, Plan
from models.desync import DesyncScorer, write_checkpoint
from store.media import write_audio
from tests.conftest import load_oracle
from tests.eval_fixtures import write_tiny_synchformer
from tests.helpers import tiny_clip
from tests.test_eval_models import tiny_aes_dir, tiny_clap_dir  # noqa: F401  (module fixtures)


@pytest.fixture(autouse=True)
def _no_hub_models(tmp_path, monkeypatch):
    """No real weights anywhere: the HF cache is an empty folder for every test here."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    yield
    backends.clear_cache()


@pytest.fixture(scope="module")
def tiny_sync(tmp_path_factory, one_torch_thread):
    return write_tiny_synchformer(tmp_path_factory.mktemp("tiny_sync"))


@pytest.fixture(scope="module")
def clip5(tmp_path_factory):
    """A 5.2 s silent clip (random frames) and a matching 5.2 s stereo track."""
    d = tmp_path_factory.mktemp("clip5")
    video = tiny_clip(d / "v.mp4", seconds=5.2, size=48, seed=3)
    rng = np.random.default_rng(4)
    audio = (0.1 * rng.standard_normal((2, int(44100 * 5.2)))).astype(np.float32)
    return video, write_audio(d / "a.wav", audio, 44100), audio


def plan(duration: float = 5.2, caption: str = "a dog barks twice") -> Plan:
    return Plan(caption=caption, semantic="dog barks", duration_s=duration,
                events=[Event(id="e1", label="dog bark", start_s=1.0, end_s=1.5)])


# ---- DeSync -----------------------------------------------------------------------------------------------------

def test_desync_module_reproduces_the_oracle(tmp_path, one_torch_thread):
    """The tiny full oracle saved as a checkpoint + its config: our DeSync path gives the oracle's logits and value."""
    from models.synchformer.model import desync_from_logits

    data = load_oracle("synchformer_full_tiny.pt")
    write_checkpoint(tmp_path, data["state_dict"], oracle_config=data["config"])
    s = DesyncScorer(tmp_path)
    assert s.describe() == {"available": True, "where": str(tmp_path / "synchformer_state_dict.pth"), "why": ""}
    want = data["outputs"]
    logits = s.rate(data["inputs"]["vfeats"], data["inputs"]["afeats"])  # (2 clips, first/last, 21)
    torch.testing.assert_close(logits[:, 0], want["logits_first"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[:, 1], want["logits_last"], atol=1e-5, rtol=1e-5)
    per_clip = s.desync(logits)
    grid = torch.tensor(data["config"]["class_grid"])
    assert float(per_clip.mean()) == float(want["desync"])
    assert float(per_clip.mean()) == desync_from_logits(want["logits_first"], want["logits_last"], grid)
    afeats = s.load().model.extract_afeats(data["inputs"]["mel"])
    torch.testing.assert_close(afeats, want["afeats_from_mel"], atol=1e-5, rtol=1e-5)


def test_desync_rates_only_the_first_and_last_windows_as_the_full_path_does(tiny_sync, tmp_path, one_torch_thread):
    """9.8 s → 29 windows: the scorer computes 28 of them; logits equal the model's all-windows offset_logits."""
    video = tiny_clip(tmp_path / "v.mp4", seconds=10.0, size=48, seed=5)
    rng = np.random.default_rng(6)
    audio = (0.1 * rng.standard_normal((1, 44100 * 10))).astype(np.float32)
    s = DesyncScorer(tiny_sync)
    frames = s.frames(video, 9.8)
    assert frames.shape == (245, 3, 224, 224) and frames.dtype == torch.uint8
    ours = s.logits(frames, audio, 44100, 9.8)
    full = s.load().model.offset_logits(frames, torch.from_numpy(audio), 44100, 9.8)[0]
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-5)
    offs = s.model.cfg.fusion.class_grid()[full.argmax(-1)]
    assert float(s.desync(ours[None])[0]) == pytest.approx(float(offs.abs().mean()), abs=1e-6)


def test_desync_needs_4_8_seconds(tiny_sync, tmp_path):
    video = tiny_clip(tmp_path / "short.mp4", seconds=3.0, size=48)
    with pytest.raises(ValueError, match=r"needs ≥ 4.8 s"):
        DesyncScorer(tiny_sync).score(video, np.zeros((2, 44100 * 3), np.float32), 44100)


def test_desync_unavailable_says_how_to_get_it(tmp_path):
    d = DesyncScorer().describe()
    assert d["available"] is False
    assert d["why"].startswith("Synchformer liuhuadai/ThinkSound not found — synchformer_state_dict.pth is not in "
                               "the local Hugging Face cache")
    assert "hf download liuhuadai/ThinkSound synchformer_state_dict.pth" in d["why"]
    (tmp_path / "weights").mkdir()
    assert "folder has no synchformer_state_dict.pth" in DesyncScorer(tmp_path / "weights").describe()["why"]
    torch.save({"not": torch.zeros(1)}, tmp_path / "weights" / "synchformer_state_dict.pth")
    from models.weights import ModelUnavailable

    with pytest.raises(ModelUnavailable, match="does not load as the full Synchformer"):
        DesyncScorer(tmp_path / "weights").load()


# ---- verifiers behind the Critic protocol --------------------------------------------------------------------

def _opts(name: str, **params):
    return backends.options_for("critic", RunConfig(critic="offline", options={"critic": params}), name)


def test_desync_verifier_fills_temporal_and_releases_its_model(tiny_sync, clip5):
    from reasoning.verifiers import desync

    video, wav, _ = clip5
    v = desync.make(_opts("desync", synchformer=str(tiny_sync)))
    seen = {}
    real_measure = v.measure

    def spy(*a, **k):
        seen["loaded"] = dict(SLOTS.roles())
        return real_measure(*a, **k)

    v.measure = spy
    c = v.critique(plan(), wav, video, None)
    assert seen["loaded"] == {v.cache_key: "critic"}  # loaded through the model cache, as a critic model
    assert v.cache_key not in SLOTS.loaded()  # and released after the call
    info = c.scorers[0]
    assert (info.name, info.dimension) == ("desync", "temporal") and info.raw is not None
    assert c.scores["temporal"] == pytest.approx(max(0.0, 1.0 - info.raw))
    assert {k for k, s in c.scores.items() if s is not None} == {"temporal"}
    assert "over the first 5.2 s" in info.note and "first 4.8 s" in info.note  # the shorter of video and audio
    # No video (text-to-audio): not measured, the reason in the note and a finding, no number.
    c = v.critique(plan(), wav, None, None)
    assert c.scores["temporal"] is None and c.scorers[0].raw is None
    assert c.scorers[0].note.startswith("not measured: no video")


def test_clap_and_aesthetics_verifiers(tiny_clap_dir, tiny_aes_dir, clip5):  # noqa: F811
    from models.aesthetics import AestheticsScorer
    from models.clap import ClapScorer
    from reasoning.verifiers import aesthetics, clap

    video, wav, audio = clip5
    c = clap.make(_opts("clap", clap=str(tiny_clap_dir))).critique(plan(), wav, video, None)
    raw = ClapScorer(tiny_clap_dir).score(*_read(wav), "a dog barks twice")
    assert c.scorers[0].raw == pytest.approx(raw, abs=1e-5) and c.scorers[0].dimension == "semantic"
    assert c.scores["semantic"] == pytest.approx(min(1.0, max(0.0, (raw - 0.05) / 0.4)), abs=1e-5)
    assert "the plan caption: a dog barks twice" in c.scorers[0].note
    c = aesthetics.make(_opts("aesthetics", aesthetics=str(tiny_aes_dir))).critique(plan(), wav, video, None)
    want = AestheticsScorer(tiny_aes_dir).score(*_read(wav))
    assert c.scorers[0].raw == pytest.approx(want["PQ"], abs=1e-4)
    assert c.scores["aesthetic"] == pytest.approx(min(1.0, max(0.0, (want["PQ"] - 4) / 4)), abs=1e-4)
    assert "PC" in c.scorers[0].note and "CU" in c.scorers[0].note
    assert not SLOTS.loaded()


def _read(path):
    from store.media import read_audio

    return read_audio(path)


def test_score_maps_are_monotone_and_bounded():
    from reasoning.verifiers.aesthetics import AestheticsVerifier
    from reasoning.verifiers.clap import ClapVerifier
    from reasoning.verifiers.desync import DesyncVerifier

    d = DesyncVerifier(_opts("desync"))
    assert [d.to_score(x) for x in (0.0, 0.2, 0.4, 1.0, 2.0)] == pytest.approx([1.0, 0.8, 0.6, 0.0, 0.0])
    c = ClapVerifier(_opts("clap"))
    assert c.to_score(-0.3) == 0.0 and c.to_score(0.25) == pytest.approx(0.5) and c.to_score(0.9) == 1.0
    a = AestheticsVerifier(_opts("aesthetics"))
    assert a.to_score(2.0) == 0.0 and a.to_score(6.0) == pytest.approx(0.5) and a.to_score(9.5) == 1.0


# ---- registry: composites, the preset, the default ---------------------------------------------------------

def test_composite_names_are_known_when_every_part_is():
    names = backends.REGISTRY["critic"]
    assert "offline+desync+clap+aesthetics" in names and "desync" in names and "verified" in names
    for bad in ("offline+nope", "offline+", "offline+verified", "+clap"):
        assert bad not in names
    from agent.cli.common import build_config
    from contract.errors import UserError

    with pytest.raises(UserError, match="unknown critic backend 'offline\\+nope'"):
        build_config(critic="offline+nope", device="cpu")


def test_composite_merges_later_parts_over_the_dimensions_they_measure(fake_backends, tiny_clap_dir, clip5):  # noqa: F811
    video, wav, _ = clip5
    cfg = RunConfig(critic="fake+clap", options={"critic": {"clap": str(tiny_clap_dir)}})
    critic = backends.get("critic", cfg)
    assert critic.model_id == "fake+clap"
    fake_alone = backends.get("critic", cfg, name="fake").critique(plan(), wav, video, None)
    c = critic.critique(plan(), wav, video, None)
    raw = c.scorers[-1].raw
    assert raw is not None and c.scores["semantic"] == pytest.approx(min(1.0, max(0.0, (raw - 0.05) / 0.4)))
    for d in ("temporal", "aesthetic", "spatial"):
        assert c.scores[d] == fake_alone.scores[d]
    assert [f.problem for f in fake_alone.findings] == [f.problem for f in c.findings[:len(fake_alone.findings)]]
    assert [s.name for s in c.scorers] == [s.name for s in fake_alone.scorers] + ["clap"]
    assert c.overall == pytest.approx(np.mean([v for v in c.scores.values() if v is not None]))


def test_a_part_that_cannot_measure_leaves_the_earlier_value(fake_backends, tiny_sync, clip5):
    video, wav, _ = clip5
    cfg = RunConfig(critic="fake+desync", options={"critic": {"synchformer": str(tiny_sync)}})
    c = backends.get("critic", cfg).critique(plan(), wav, None, None)  # no video: DeSync cannot measure
    assert c.scores["temporal"] == 0.3 and c.scorers[-1].raw is None  # the fake critic's value stands


def test_verified_preset_stacks_the_verifiers_whose_weights_are_present(tiny_clap_dir):  # noqa: F811
    cfg = RunConfig(critic="verified", options={"critic": {"clap": str(tiny_clap_dir)}})
    critic = backends.get("critic", cfg)
    assert [n for n, _ in critic.parts] == ["offline", "clap"]
    rows = {r["name"]: r for r in backends.describe_all(cfg) if r["role"] == "critic"}
    assert rows["verified"]["available"] and rows["verified"]["where"] == "offline + clap"
    assert "desync unavailable: Synchformer" in rows["verified"]["why"]
    assert "aesthetics unavailable: Audiobox Aesthetics" in rows["verified"]["why"]
    assert rows["clap"]["available"] and rows["clap"]["where"] == str(tiny_clap_dir)
    assert rows["desync"]["available"] is False and "hf download liuhuadai/ThinkSound" in rows["desync"]["why"]


def test_an_explicit_verifier_without_weights_fails_at_load():
    from contract.errors import ModelMissing

    with pytest.raises(ModelMissing, match=r"^CLAP laion/larger_clap_general not found — "):
        backends.get("critic", RunConfig(critic="offline+clap"))


def test_real_model_path_defaults_to_the_verified_critic():
    assert RunConfig().critic == "offline"
    assert RunConfig(renderer="thinksound").critic == "offline"
    assert RunConfig(renderer="thinksound", watcher="qwen").critic == "verified"
    assert RunConfig(renderer="thinksound", watcher="qwen", critic="offline").critic == "offline"
    stored = RunConfig.model_validate_json(RunConfig(renderer="thinksound", watcher="qwen").model_dump_json())
    assert stored.critic == "verified"


def test_models_command_lists_the_verifiers(capsys):
    from agent.cli import main

    assert main(["models", "--json"]) == 0
    import json

    rows = {(r["role"], r["name"]): r for r in json.loads(capsys.readouterr().out)}
    for name in ("desync", "clap", "aesthetics", "verified"):
        assert ("critic", name) in rows
    assert rows[("critic", "clap")]["available"] is False
    assert rows[("critic", "clap")]["why"].startswith("unavailable: CLAP laion/larger_clap_general not found — ")


def test_desync_reuses_a_videos_visual_features_across_rounds(tiny_sync, clip5, monkeypatch):
    """Round 0 and the kept round share the video: its frames and visual features are computed once."""
    video, _, audio = clip5
    s = DesyncScorer(tiny_sync).load()
    calls = []
    real = s.model.extract_vfeats
    monkeypatch.setattr(s.model, "extract_vfeats", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = s.score(video, audio, 44100)
    n = len(calls)
    second = s.score(video, 0.5 * audio[::-1].copy(), 44100)
    assert n >= 1 and len(calls) == n  # no new visual pass for another track on the same video
    fresh = DesyncScorer(tiny_sync).score(video, 0.5 * audio[::-1].copy(), 44100)
    assert second == fresh and set(first) == set(second)


def test_clap_truncates_a_long_caption_to_the_models_positions(tiny_clap_dir, clip5):  # noqa: F811
    """The tiny CLAP has 64 text positions and a tokenizer saved without model_max_length: a 200-word caption
    used to index past the position table."""
    from models.clap import ClapScorer

    _, wav, _ = clip5
    cos = ClapScorer(tiny_clap_dir).score(*_read(wav), "a dog barks twice " * 50)
    assert -1.0 <= cos <= 1.0


def test_composite_names_resolve_to_the_composite_module():
    names = backends.REGISTRY["critic"]
    assert names["offline+clap"] == names.get("offline+clap") == "reasoning.verifiers.composite"
    assert names.get("offline+nope") is None and "offline+clap" not in list(names)  # listings show single names
    with pytest.raises(KeyError):
        names["offline+nope"]
