"""ThinkSound feature extraction (spec thinksound.md §1.2–1.3, §2.7, §4) and the feature cache, on tiny models."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from generator.features import (FeatureCache, FeatureExtractor, MetaCLIPFeatures, SyncFeatures, T5Features,
                                 describe_model, num_clip_frames, num_sync_frames, num_sync_tokens, pad_to_square,
                                 resolve_model)
from models.hub import KINDS
from models.synchformer import SynchformerVisual, preprocess_sync_frames
from contract.errors import BackendError, ModelMissing
from store.media import sample_frames, write_video
from tests.tiny_models import (build_tiny_metaclip, build_tiny_synchformer, build_tiny_t5, install_in_hf_cache,
                               tiny_sync_config)

SYNC_DIM = 64  # shapes only; the 768-wide default is exercised once in test_sync_default_width
CLIP_ID = KINDS["metaclip"].default_id


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"clip": build_tiny_metaclip(root / "metaclip"), "t5": build_tiny_t5(root / "t5"),
            "sync": build_tiny_synchformer(root / "synch", dim=SYNC_DIM), "root": root}


@pytest.fixture(scope="module")
def models(dirs):
    return {"clip": MetaCLIPFeatures(dirs["clip"], batch_size=5), "t5": T5Features(dirs["t5"]),
            "sync": SyncFeatures(dirs["sync"], cfg=tiny_sync_config(SYNC_DIM).visual)}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Non-square noise clips at 25 fps: 2 s, 1 s (short) and 4 s (long); frames kept for direct comparisons."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(7)
    out = {}
    for name, seconds in (("two", 2.0), ("short", 1.0), ("long", 3.0)):
        frames = rng.integers(0, 256, (int(25 * seconds), 64, 96, 3), dtype=np.uint8)
        out[name] = write_video(root / f"{name}.mp4", frames, 25)
    return out


def _extractor(models, cache=None) -> FeatureExtractor:
    return FeatureExtractor(models["clip"], models["t5"], models["sync"], cache)


# --- the tiny models themselves -------------------------------------------------------------------------------------


def test_tiny_models_small_with_thinksound_widths(models):
    clip, t5 = models["clip"], models["t5"]
    assert sum(p.numel() for p in clip.model.parameters()) < 8_000_000
    assert sum(p.numel() for p in t5.model.parameters()) < 2_000_000
    assert (clip.text_width, clip.image_dim, t5.width) == (1024, 1024, 2048)
    ids = clip.tokenize(["Soft footsteps on gravel"])["input_ids"][0].tolist()
    tok = clip.processor.tokenizer
    assert len(ids) == 77 and ids[0] == tok.bos_token_id and tok.pad_token_id == tok.eos_token_id
    assert "<|endoftext|>" not in tok.tokenize("xyz quartz, 42 jazz!")  # every byte also exists as a word end
    t5_ids = t5.token_ids("Keep human voices minimal.")
    assert t5_ids[-1] == t5.tokenizer.eos_token_id == 1 and t5.tokenizer.pad_token_id == 0


# --- hub resolution -------------------------------------------------------------------------------------------------


def test_resolve_local_folder_and_hf_cache(dirs, monkeypatch, tmp_path):
    assert resolve_model(dirs["clip"], "metaclip") == dirs["clip"]
    assert resolve_model(dirs["sync"].parent, "synchformer") == dirs["sync"]  # a folder holding the .pth
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    snap = install_in_hf_cache(dirs["clip"], CLIP_ID, tmp_path / "hf" / "hub")
    install_in_hf_cache(dirs["sync"], KINDS["synchformer"].default_id, tmp_path / "hf" / "hub")
    assert resolve_model(CLIP_ID, "metaclip") == snap
    assert resolve_model(None, "synchformer") == snap.parents[2] / "models--liuhuadai--ThinkSound" / "snapshots" \
        / snap.name / "synchformer_state_dict.pth"
    hub_clip = MetaCLIPFeatures(CLIP_ID)
    assert hub_clip.fingerprint == f"{CLIP_ID}@{snap.name}"  # HF snapshots are identified by their commit
    assert describe_model(None, "metaclip")["available"] is True


def test_model_missing_offline_one_line(dirs, monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    calls, real = [], huggingface_hub.snapshot_download
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    with pytest.raises(ModelMissing) as err:
        resolve_model(CLIP_ID, "metaclip", allow_download=True)  # offline wins over allow_download
    msg = str(err.value)
    assert "\n" not in msg and CLIP_ID in msg and f"hf download {CLIP_ID}" in msg and "--metaclip PATH" in msg
    assert str(tmp_path / "empty" / "hub") in msg
    assert calls and all(kw["local_files_only"] for kw in calls)
    with pytest.raises(ModelMissing, match=r"synchformer_state_dict\.pth.*--synchformer PATH"):
        resolve_model(None, "synchformer")
    with pytest.raises(ModelMissing, match="--t5 PATH"):
        FeatureExtractor.load(metaclip=dirs["clip"], t5="google/t5-v1_1-xl", synchformer=dirs["sync"])
    info = describe_model(None, "t5")
    assert info["available"] is False and "google/t5-v1_1-xl" in info["why"]


def test_model_missing_bad_paths(tmp_path):
    with pytest.raises(ModelMissing, match="no such folder"):
        resolve_model(tmp_path / "nope" / "metaclip", "metaclip")
    (tmp_path / "partial").mkdir()
    with pytest.raises(ModelMissing, match="lacks config.json"):
        resolve_model(tmp_path / "partial", "metaclip")
    with pytest.raises(ModelMissing, match="has no synchformer_state_dict.pth"):
        resolve_model(tmp_path / "partial", "synchformer")
    (tmp_path / "partial" / "config.json").write_text("{}")
    with pytest.raises(ModelMissing, match=r"lacks weights \(\*\.safetensors or \*\.bin\)"):
        resolve_model(tmp_path / "partial", "t5")


def test_t5_tokenizer_failure_names_sentencepiece(dirs, tmp_path):
    import shutil

    broken = tmp_path / "t5"
    shutil.copytree(dirs["t5"], broken)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).unlink()
    (broken / "spiece.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(BackendError, match="sentencepiece"):
        T5Features(broken)


# --- video features -------------------------------------------------------------------------------------------------


def test_pad_to_square_extra_pixel_right_bottom():
    wide = np.full((3, 6, 3), 255, np.uint8)  # 3 rows: pad 1 on top, 2 at the bottom
    sq = pad_to_square(wide)
    assert sq.shape == (6, 6, 3)
    assert sq[:, 0, 0].tolist() == [0, 255, 255, 255, 0, 0]
    tall = np.full((5, 2, 3), 255, np.uint8)  # 2 columns: pad 1 left, 2 right
    assert pad_to_square(tall)[0, :, 0].tolist() == [0, 255, 255, 0, 0]
    assert np.array_equal(pad_to_square(sq), sq)


@pytest.mark.parametrize("duration, clip_n, sync_n", [(2.0, 16, 40), (1.5, 12, 24), (9.97, 79, 240), (5.0, 40, 112)])
def test_lengths_follow_reference(duration, clip_n, sync_n):
    assert num_clip_frames(duration) == clip_n
    assert num_sync_tokens(duration) == sync_n  # spec §2.7 examples: 9.97 s → 79 / 240, 5 s → 112


@pytest.fixture(scope="module")
def two_s(models, clips):
    return _extractor(models).video_features(clips["two"], 2.0)


def test_video_features_2s_non_square(models, clips, two_s):
    assert two_s["clip_f"].shape == (16, 1024) and two_s["sync_f"].shape == (40, SYNC_DIM)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in two_s.values())
    # streamed in batches of 5 == all 16 padded frames at once
    _, frames = sample_frames(clips["two"], 8, duration_s=2.0)
    torch.testing.assert_close(two_s["clip_f"], models["clip"].encode_images(list(frames)))
    assert not torch.allclose(two_s["clip_f"][0], two_s["clip_f"][1])  # different frames, different features


def test_sync_through_real_synchformer_checkpoint(models, dirs, clips, two_s):
    """The tiny file holds all branches (real layout); only vfeat_extractor is loaded, windows of 16 stride 8."""
    assert len(torch.load(dirs["sync"], weights_only=True)) > len(models["sync"].visual.state_dict())
    visual = SynchformerVisual.from_checkpoint(dirs["sync"], cfg=tiny_sync_config(SYNC_DIM).visual)
    ref = visual.extract(preprocess_sync_frames(sample_frames(clips["two"], 25)[1], n_frames=50))[0]
    assert ref.shape == (40, SYNC_DIM)
    torch.testing.assert_close(two_s["sync_f"], ref)


def test_short_video_repeats_last_frame(models, clips):
    feats = _extractor(models).video_features(clips["short"], 2.0)  # 1 s of video, 2 s asked
    clip_f, sync_f = feats["clip_f"], feats["sync_f"]
    assert clip_f.shape == (16, 1024) and sync_f.shape == (40, SYNC_DIM)
    for row in clip_f[8:]:
        torch.testing.assert_close(row, clip_f[7])
    assert not torch.allclose(clip_f[6], clip_f[7])
    # windows 3 (frames 24..39) and 4 (32..47) are all copies of frame 24 → equal tokens
    torch.testing.assert_close(sync_f[24:32], sync_f[32:40], atol=1e-5, rtol=1e-5)


def test_long_video_keeps_first_seconds(models, clips):
    ex = _extractor(models)
    feats = ex.video_features(clips["long"], 1.5)  # 3 s of video, the first 1.5 s asked
    assert feats["clip_f"].shape == (12, 1024) and feats["sync_f"].shape == (num_sync_tokens(1.5), SYNC_DIM) == (24, 64)
    _, first = sample_frames(clips["long"], 8, duration_s=1.5)
    torch.testing.assert_close(feats["clip_f"], models["clip"].encode_images(list(first)))
    with pytest.raises(ValueError, match="too short"):
        ex.video_features(clips["short"], 0.5)


def test_sync_default_width_768(tmp_path, clips):
    """The builder's default matches ThinkSound's sync width (MM-DiT sync_dim 768)."""
    sync = SyncFeatures(build_tiny_synchformer(tmp_path), cfg=tiny_sync_config().visual)
    out = sync.encode_frames(list(sample_frames(clips["short"], 25)[1]), num_sync_frames(1.0))
    assert out.shape == (16, 768)


# --- text features --------------------------------------------------------------------------------------------------


def test_text_features_shapes_and_truncation(models):
    ex = _extractor(models)
    feats = ex.text_features("a dog barking", "Start with a dog barking, then add wind in the trees.")
    assert feats["text_f"].shape == (77, 1024) and feats["t5_f"].shape == (77, 2048)
    states, pooled = models["clip"].encode_text("a dog barking")
    torch.testing.assert_close(feats["text_f"], states)
    assert pooled.shape == (1024,)
    other = ex.text_features("rain on a tin roof", "Start with rain on a tin roof.")
    assert not torch.allclose(other["text_f"], feats["text_f"]) and not torch.allclose(other["t5_f"], feats["t5_f"])
    # beyond 77 tokens nothing reaches the models
    long = " ".join(["Start with soft footsteps on gravel, then a dog barking."] * 12)
    a, b = ex.text_features(long, long), ex.text_features(long + " thunder", long + " Thunder rumbling.")
    torch.testing.assert_close(a["text_f"], b["text_f"])
    torch.testing.assert_close(a["t5_f"], b["t5_f"])


def test_t5_token_budget_is_exact(models):
    t5 = models["t5"]
    short = t5.token_budget("Keep human voices minimal.")
    assert short["fits"] and short["tokens"] == len(t5.token_ids("Keep human voices minimal.")) <= 77
    assert short["kept"] == "Keep human voices minimal."
    text = " ".join(["Layer in distant birds chirping, then thunder rumbling."] * 6)
    budget = t5.token_budget(text)
    assert not budget["fits"] and budget["overflow"] == budget["tokens"] - 77 > 0
    assert text.startswith(budget["kept"].rstrip()) and len(budget["kept"]) < len(text)
    torch.testing.assert_close(t5.encode(text), t5.encode(budget["kept"]))  # the kept text is what the model sees


# --- cache ----------------------------------------------------------------------------------------------------------


def test_cache_hits_equal_fresh_and_key_follows_model(models, dirs, clips, tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "cache")
    ex = _extractor(models, cache)
    fresh = ex.video_features(clips["short"], 1.0)
    assert cache.stats() == {"hits": 0, "misses": 1}
    again = ex.video_features(clips["short"], 1.0)
    assert cache.stats() == {"hits": 1, "misses": 1}
    assert all(torch.equal(fresh[k], again[k]) for k in fresh)
    assert not list(cache.dir.glob("*.part")) and len(list(cache.dir.glob("*.safetensors"))) == 1
    ex.video_features(clips["short"], 0.8)  # other duration → other entry
    assert cache.misses == 2
    # same weights under another model id (HF cache) → another key
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    install_in_hf_cache(dirs["clip"], CLIP_ID, tmp_path / "hf" / "hub")
    other = FeatureExtractor(MetaCLIPFeatures(CLIP_ID), models["t5"], models["sync"], cache)
    other.video_features(clips["short"], 1.0)
    assert cache.stats() == {"hits": 1, "misses": 3}
    # text: caption and CoT are cached separately
    t1 = ex.text_features("a dog barking", "Start with a dog barking.")
    t2 = ex.text_features("a dog barking", "Start with a dog barking.")
    assert cache.stats() == {"hits": 3, "misses": 5} and all(torch.equal(t1[k], t2[k]) for k in t1)
    ex.text_features("a dog barking", "Add wind in the trees.")
    assert cache.stats() == {"hits": 4, "misses": 6}


def test_cache_recomputes_unreadable_entry(tmp_path, caplog):
    cache = FeatureCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(6.0).view(2, 3)}

    cache.get_or_compute("k", compute)
    cache.path("k").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="generator.features.cache"):
        out = cache.get_or_compute("k", compute)
    assert len(calls) == 2 and torch.equal(out["x"], torch.arange(6.0).view(2, 3)) and "unreadable" in caplog.text
    assert torch.equal(cache.get_or_compute("k", compute)["x"], out["x"]) and cache.hits == 1


def test_video_features_come_from_one_decode(models, clips, monkeypatch):
    """MetaCLIP's 8 fps and Synchformer's 25 fps frames are taken from the same streamed pass."""
    from tests.helpers import DecodeCounter

    counter = DecodeCounter(monkeypatch)
    feats = _extractor(models).compute_video(clips["two"], 2.0)
    assert len(counter.passes(clips["two"])) == 1 and counter.passes(clips["two"])[0]["frames"] <= 50
    assert feats["clip_f"].shape == (16, 1024) and feats["sync_f"].shape == (40, SYNC_DIM)
    _, frames = sample_frames(clips["two"], 8, duration_s=2.0)
    torch.testing.assert_close(feats["clip_f"], models["clip"].encode_images(list(frames)))
