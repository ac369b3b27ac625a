import av
import numpy as np
import pytest

from store import media
from tests.helpers import tiny_clip


def _moving_square(n=50, size=(96, 64)):
    frames = np.zeros((n, size[1], size[0], 3), np.uint8)
    for i in range(n):
        x = int(i * (size[0] - 8) / (n - 1))
        frames[i, 20:28, x:x + 8] = 255
    return frames


def test_probe_reports_streams_and_duration(tmp_path):
    sr = 44100
    audio = np.sin(np.linspace(0, 2 * np.pi * 440 * 2, 2 * sr)).astype(np.float32) * 0.3
    p = media.write_video(tmp_path / "a.mp4", _moving_square(50), 25, audio=audio, sample_rate=sr)
    info = media.probe(p)
    assert (info.width, info.height, info.fps) == (96, 64, 25.0)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert info.has_audio and info.audio_rate == sr and info.audio_channels == 2


@pytest.mark.parametrize("fps", [5.0, 8.0, 25.0])
def test_frame_sampling_rate_and_order(tmp_path, fps):
    p = media.write_video(tmp_path / "m.mp4", _moving_square(50), 25)
    times, frames = media.sample_frames(p, fps)
    assert len(times) == pytest.approx(2.0 * fps, abs=1)
    assert np.allclose(np.diff(times), 1 / fps)
    xs = [np.argwhere(f[..., 0] > 128)[:, 1].mean() for f in frames]
    assert np.all(np.diff(xs) >= 0)  # the square moves right over time


def test_huge_frames_are_downscaled_on_read(tmp_path):
    p = media.write_video(tmp_path / "big.mp4", np.zeros((3, 720, 1280, 3), np.uint8), 25)
    _, frames = media.sample_frames(p, 25, max_side=160)
    assert frames.shape[1:] == (90, 160, 3)


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_audio_round_trip(tmp_path, ext):
    sr = 44100
    x = np.stack([np.linspace(-0.5, 0.5, sr), np.linspace(0.5, -0.5, sr)]).astype(np.float32)
    p = media.write_audio(tmp_path / f"a{ext}", x, sr)
    y, rate = media.read_audio(p)
    assert rate == sr and y.shape == x.shape
    assert np.abs(y - x).max() < 1e-3


def test_mux_copies_video_and_spans_it(tmp_path):
    src = tiny_clip(tmp_path / "v.mp4", seconds=3)
    audio = np.random.default_rng(0).uniform(-0.1, 0.1, (2, 44100 * 2)).astype(np.float32)  # shorter than video
    out = media.mux(src, audio, 44100, tmp_path / "o.mp4")
    with av.open(str(src)) as a, av.open(str(out)) as b:
        pa = [bytes(p) for p in a.demux(a.streams.video[0]) if p.size]
        pb = [bytes(p) for p in b.demux(b.streams.video[0]) if p.size]
    assert pa == pb  # stream copied, not re-encoded
    y, sr = media.read_audio(out)
    assert y.shape[1] / sr == pytest.approx(3.0, abs=0.05)


def test_mux_mix_keeps_original_under_new_track(tmp_path):
    sr = 44100
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * sr) / sr)).astype(np.float32)
    src = media.write_video(tmp_path / "v.mp4", _moving_square(75), 25, audio=tone, sample_rate=sr)
    silence = np.zeros((2, 3 * sr), np.float32)
    dropped = media.read_audio(media.mux(src, silence, sr, tmp_path / "d.mp4", keep_original="drop"))[0]
    mixed = media.read_audio(media.mux(src, silence, sr, tmp_path / "m.mp4", keep_original="mix"))[0]
    assert np.abs(dropped).max() < 1e-3 and np.abs(mixed).max() > 0.1


@pytest.mark.parametrize("container", ["mkv", "webm", "mov"])
def test_other_containers(tmp_path, container):
    src = tiny_clip(tmp_path / "v.mp4", seconds=2)
    codec = "libvpx-vp9" if container == "webm" else "libx264"
    path = tmp_path / f"v.{container}"
    with av.open(str(src)) as s, av.open(str(path), "w") as d:
        vs = d.add_stream(codec, rate=25)
        vs.width = vs.height = 64
        vs.pix_fmt = "yuv420p"
        for f in s.decode(video=0):
            for p in vs.encode(f.reformat(format="yuv420p")):
                d.mux(p)
        for p in vs.encode(None):
            d.mux(p)
    info = media.probe(path)
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    out = media.mux(path, np.zeros((2, 88200), np.float32), 44100, tmp_path / f"o.{container}")
    assert media.probe(out).has_audio


# ---- one streaming decode for several consumers, seeking when sparse, streamed audio -------------------------

def _gop_clip(path, seconds: float, gop: int, size=(32, 32), fps: int = 25):
    """A moving-square clip with a keyframe every ``gop`` frames (so seeking has somewhere to land)."""
    from fractions import Fraction

    n = int(seconds * fps)
    with av.open(str(path), "w") as dst:
        vs = dst.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        vs.options = {"preset": "ultrafast", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        for i in range(n):
            img = np.zeros((size[1], size[0], 3), np.uint8)
            img[..., 0] = i % 256  # every frame differs, so a wrong frame is caught
            x = int(i * (size[0] - 8) / max(1, n - 1))
            img[8:16, x:x + 8] = 255
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                dst.mux(p)
        for p in vs.encode(None):
            dst.mux(p)
    return path


def test_stream_frames_feeds_consumers_from_one_decode(tmp_path, monkeypatch):
    from tests.helpers import DecodeCounter

    p = media.write_video(tmp_path / "m.mp4", _moving_square(50), 25)
    separate = {
        "motion": list(media.iter_frames(p, 25.0, max_side=48, end_s=2.0)),
        "clip": list(media.iter_frames(p, 8.0, end_s=2.0)),
        "fixed": list(media.iter_frames(p, 5.0, size=(32, 32))),
    }
    counter = DecodeCounter(monkeypatch)
    consumers = {"motion": media.FrameGrid(25.0, max_side=48, end_s=2.0), "clip": media.FrameGrid(8.0, end_s=2.0),
                 "fixed": media.FrameGrid(5.0, size=(32, 32))}
    together: dict[str, list] = {k: [] for k in consumers}
    for name, t, img in media.stream_frames(p, consumers):
        together[name].append((t, img))
    assert len(counter.passes(p)) == 1 and counter.passes(p)[0]["frames"] == 50
    for name, frames in separate.items():
        assert [t for t, _ in together[name]] == [t for t, _ in frames]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(together[name], frames))


def test_sparse_sampling_seeks_instead_of_decoding_everything(tmp_path, monkeypatch):
    from tests.helpers import DecodeCounter

    p = _gop_clip(tmp_path / "g.mp4", seconds=40.0, gop=25)
    linear = list(media.stream_frames(p, {"k": media.FrameGrid(0.2, max_side=16)}, seek_gap_s=None))
    counter = DecodeCounter(monkeypatch)
    seeking = list(media.iter_frames(p, 0.2, max_side=16))  # one frame every 5 s
    assert [t for _, t, _ in linear] == [t for t, _ in seeking] and len(seeking) == 8
    assert all(np.array_equal(a, b) for (_, _, a), (_, b) in zip(linear, seeking))
    decoded = counter.passes(p)[0]["frames"]
    assert decoded < 0.4 * 1000, decoded  # ~one GOP per sample, not the 1000 frames of a linear pass


def test_seeking_gives_up_when_keyframes_are_too_sparse(tmp_path, monkeypatch):
    from tests.helpers import DecodeCounter

    p = _gop_clip(tmp_path / "g.mp4", seconds=12.0, gop=300)  # a single keyframe
    counter = DecodeCounter(monkeypatch)
    got = list(media.iter_frames(p, 0.25, max_side=16))
    assert len(got) == 3
    assert counter.passes(p)[0]["frames"] <= 300 + 60  # one wasted GOP at most, never a decode per sample


def test_mux_streams_a_wav_and_leaves_the_callers_array_alone(tmp_path):
    sr = 44100
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * sr) / sr)).astype(np.float32)
    src = media.write_video(tmp_path / "v.mp4", _moving_square(75), 25, audio=tone, sample_rate=sr)
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 3 * sr)).astype(np.float32)
    wav = media.write_audio(tmp_path / "x.wav", x, sr)
    q, _ = media.read_audio(wav)  # what the WAV holds (16-bit)
    before = q.copy()
    from_array = media.read_audio(media.mux(src, q, sr, tmp_path / "a.mp4", keep_original="mix"))[0]
    assert np.array_equal(q, before)  # mixing the original track used to write into the caller's array
    from_path = media.read_audio(media.mux(src, wav, None, tmp_path / "p.mp4", keep_original="mix",
                                           info=media.probe(src)))[0]
    assert from_path.shape == from_array.shape and np.array_equal(from_path, from_array)


def test_audio_writer_writes_what_write_audio_writes(tmp_path):
    x = np.random.default_rng(2).uniform(-1.2, 1.2, (2, 100_000)).astype(np.float32)
    whole = media.write_audio(tmp_path / "whole.wav", x, 44100)
    with media.AudioWriter(tmp_path / "blocks.wav", 44100) as w:
        for a in range(0, x.shape[1], 30_000):
            w.write(x[:, a:a + 30_000])
    assert (tmp_path / "blocks.wav").read_bytes() == whole.read_bytes()
    assert not list(tmp_path.glob("*.part*"))
    with pytest.raises(RuntimeError), media.AudioWriter(tmp_path / "failed.wav", 44100) as w:
        w.write(x[:, :10])
        raise RuntimeError("killed mid-write")
    assert not (tmp_path / "failed.wav").exists() and not list(tmp_path.glob("*.part*"))
    f = media.AudioFile(whole)
    assert f.n == x.shape[1] and np.array_equal(np.concatenate([b for _, b in f.blocks(7000)], axis=1),
                                                media.read_audio(whole)[0])


def _write_many(args):
    path, seed = args
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (2, 4410)).astype(np.float32)
    try:
        for _ in range(20):
            media.write_audio(path, x, 44100)
    except OSError as exc:
        return repr(exc)
    return None


def test_processes_filling_one_cache_entry_at_once_all_succeed(tmp_path):
    """Two evaluations sharing a cache folder wrote the same segment file under one temporary name; the second
    rename found nothing (FileNotFoundError, a failed clip). Each writer now renames its own file."""
    from concurrent.futures import ProcessPoolExecutor

    path = tmp_path / "entry.wav"
    with ProcessPoolExecutor(4) as pool:
        errors = [e for e in pool.map(_write_many, [(path, k) for k in range(8)]) if e]
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["entry.wav"] and media.read_audio(path)[0].shape == (2, 4410)
