"""CLAP and Audiobox Aesthetics scorers: tiny random models saved to disk, loaded through the real loading code."""

import numpy as np
import pytest

from models.weights import ModelUnavailable


@pytest.fixture(scope="module")
def tiny_clap_dir(tmp_path_factory, one_torch_thread):
    """A tiny ClapModel + ClapProcessor (byte-level BPE RoBERTa tokenizer trained here) in a folder."""
    from tests.eval_fixtures import write_tiny_clap

    return write_tiny_clap(tmp_path_factory.mktemp("tiny_clap"))


def test_clap_scores_through_the_real_loader(tiny_clap_dir):
    from models.clap import ClapScorer

    s = ClapScorer(tiny_clap_dir)
    assert s.describe() == {"available": True, "where": str(tiny_clap_dir), "why": ""}
    rng = np.random.default_rng(0)
    audio = 0.1 * rng.standard_normal((2, 16000 * 5)).astype(np.float32)  # 5 s stereo at 16 kHz: 3 windows of 2 s
    e = s.audio_embedding(audio, 16000)
    assert e.shape == (8,) and np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
    a = s.score(audio, 16000, "a dog barks twice")
    assert -1.0 <= a <= 1.0
    assert s.score(audio, 16000, "a dog barks twice") == a  # deterministic (no random crop)
    assert s.score(audio, 16000, "rain on a tin roof") != a
    s.release()
    assert s.model is None
    assert ClapScorer(tiny_clap_dir).score(audio, 16000, "a dog barks twice") == pytest.approx(a, abs=1e-6)


def test_clap_unavailable(tmp_path, monkeypatch):
    from models.clap import ClapScorer

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    d = ClapScorer().describe()
    assert d["available"] is False and d["where"] == ""
    assert d["why"].startswith("CLAP laion/larger_clap_general not found — not in the local Hugging Face cache")
    with pytest.raises(ModelUnavailable, match=r"^CLAP .*missing-dir not found — no such folder"):
        ClapScorer(tmp_path / "missing-dir").score(np.zeros(16000, np.float32), 16000, "x")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match="lacks preprocessor_config.json or processor_config.json, weights"):
        ClapScorer(tmp_path / "half").load()


def test_hf_cache_snapshot_is_found(tmp_path, monkeypatch, tiny_clap_dir):
    """A hub id resolves to its snapshot folder in the HF cache layout (models--org--name/snapshots/<commit>)."""
    import shutil

    from models.clap import ClapScorer

    cache = tmp_path / "hub"
    snap = cache / "models--laion--larger_clap_general" / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_clap_dir, snap)
    (cache / "models--laion--larger_clap_general" / "refs").mkdir()
    (cache / "models--laion--larger_clap_general" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert ClapScorer().describe() == {"available": True, "where": str(snap), "why": ""}


@pytest.fixture(scope="module")
def tiny_aes_dir(tmp_path_factory, one_torch_thread):
    """A tiny AesMultiOutput saved with save_pretrained (the encoder size is a module constant: patched small)."""
    from tests.eval_fixtures import tiny_aes_patch, write_tiny_aesthetics

    mp = tiny_aes_patch()
    yield write_tiny_aesthetics(tmp_path_factory.mktemp("tiny_aes"))
    mp.undo()


def test_aesthetics_scores_through_the_real_loader(tiny_aes_dir):
    from models.aesthetics import AestheticsScorer

    s = AestheticsScorer(tiny_aes_dir)
    assert s.describe()["available"] is True
    rng = np.random.default_rng(1)
    audio = 0.1 * rng.standard_normal((1, 44100 * 12)).astype(np.float32)  # 12 s: two windows, one padded
    out = s.score(audio, 44100)
    assert set(out) == {"PQ", "PC", "CE", "CU"} and all(np.isfinite(v) for v in out.values())
    # De-normalised: a tiny random head's output is O(1), scaled by std 1.5 around each axis' mean.
    for ax, mean in {"CE": 5.0, "CU": 6.0, "PC": 7.0, "PQ": 8.0}.items():
        assert abs(out[ax] - mean) < 1.5 * 5
    assert s.score(audio, 44100) == out
    short = s.score(audio[:, :44100 * 3], 44100)
    assert short != out


def test_aesthetics_unavailable(tmp_path, monkeypatch):
    from models.aesthetics import AestheticsScorer

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    why = AestheticsScorer().describe()["why"]
    assert why.startswith("Audiobox Aesthetics facebook/audiobox-aesthetics not found — ")
    assert "hf download facebook/audiobox-aesthetics" in why
    with pytest.raises(ModelUnavailable):
        AestheticsScorer().score(np.zeros(16000, np.float32), 16000)
