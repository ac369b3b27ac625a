"""Media I/O through PyAV: probe, frame sampling, audio read/write, mux.

Every user-supplied path passes through ``probe`` first, which turns any decoding problem into a
``MediaError`` with a one-line message (the CLI maps it to exit code 2).

Frames: ``stream_frames`` decodes a video once and feeds several consumers (``FrameGrid``: a rate or a list of
times, an output size), seeking over what no consumer needs when sampling is sparse; ``iter_frames`` is its
one-consumer form. Audio: ``iter_audio``/``AudioFile`` read in blocks and ``AudioWriter`` writes in blocks, and
``mux`` streams a WAV, so long soundtracks are never held whole.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import av
import numpy as np

from store.atomic import part_path

MAX_SIDE_DEFAULT = 4096 * 4  # anything wider than this is refused before decoding a frame
AUDIO_EXTS = {".wav", ".flac"}


class MediaError(ValueError):
    """A user-facing problem with an input file (bad path, not a video, corrupt, zero length...)."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration_s: float
    fps: float
    width: int
    height: int
    rotation: int
    n_frames: int
    has_audio: bool
    audio_rate: int | None
    audio_channels: int | None
    video_codec: str
    container: str
    size_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown, after applying the rotation metadata."""
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _check_path(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{p}: no such file")
    if p.is_dir():
        raise MediaError(f"{p}: is a directory, not a video file")
    if p.stat().st_size == 0:
        raise MediaError(f"{p}: file is empty")
    return p


def _rotation(stream) -> int:
    try:
        side = stream.side_data  # PyAV >= 14 exposes the display matrix rotation here
        for key in ("DISPLAYMATRIX", "DisplayMatrix"):
            if key in side:
                return int(round(-float(side[key]))) % 360
    except (AttributeError, TypeError, KeyError, ValueError):
        pass
    rot = stream.metadata.get("rotate") if stream.metadata else None
    return int(rot) % 360 if rot else 0


def probe(path: str | Path, max_side: int = MAX_SIDE_DEFAULT) -> VideoInfo:
    """Open a video and describe it, or raise MediaError naming what is wrong."""
    p = _check_path(path)
    try:
        container = av.open(str(p))
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise MediaError(f"{p}: not a readable media file ({type(exc).__name__})") from None
    with container:
        if not container.streams.video:
            kind = "an audio-only file" if container.streams.audio else "a file without a video stream"
            raise MediaError(f"{p}: is {kind}; a video is required")
        vs = container.streams.video[0]
        ctx = vs.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width <= 0 or height <= 0:
            raise MediaError(f"{p}: video stream has no frame size (corrupt header?)")
        if max(width, height) > max_side:
            raise MediaError(f"{p}: frame size {width}x{height} is absurd (limit {max_side} px per side)")
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = float(rate) if rate else 0.0
        codec = ctx.name or "unknown"
        # Image files decode as a one-frame "video" (image2 / *_pipe demuxers).
        fmt = container.format.name or ""
        if "image2" in fmt or fmt.endswith("_pipe") or codec in {"png", "mjpeg", "bmp", "webp", "gif", "tiff"} and (
            vs.frames in (0, 1)
        ):
            raise MediaError(f"{p}: is a still image, not a video")
        duration = None
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        if (not duration) and container.duration is not None:
            duration = container.duration / av.time_base
        n_frames = int(vs.frames or 0)
        if not duration and n_frames and fps:
            duration = n_frames / fps
        # Verify the stream really decodes: truncated or corrupt files fail here, not mid-pipeline.
        first_ts, last_ts, decoded = _scan_decodable(container, vs)
        if decoded == 0:
            raise MediaError(f"{p}: no video frame could be decoded (truncated or corrupt)")
        if not duration or duration <= 0:
            duration = (last_ts - first_ts) + (1.0 / fps if fps else 0.0)
        if not duration or duration <= 0 or not math.isfinite(duration):
            raise MediaError(f"{p}: video has zero duration")
        if not fps:
            fps = decoded / duration
        if duration > 1.0 and not _tail_decodes(container, vs, duration):
            raise MediaError(f"{p}: video is truncated (no frame decodes near its end at {duration:.2f}s)")
        has_audio = bool(container.streams.audio)
        a = container.streams.audio[0] if has_audio else None
        return VideoInfo(
            path=str(p.resolve()), duration_s=round(duration, 6), fps=round(fps, 6), width=width, height=height,
            rotation=_rotation(vs), n_frames=n_frames or int(round(duration * fps)), has_audio=has_audio,
            audio_rate=int(a.codec_context.sample_rate) if a else None,
            audio_channels=int(a.codec_context.channels) if a else None,
            video_codec=codec, container=fmt, size_bytes=p.stat().st_size,
        )


def _scan_decodable(container, vs, max_frames: int = 3) -> tuple[float, float, int]:
    """Decode a few frames at the start, then seek near the end: catches truncation cheaply."""
    first = last = 0.0
    n = 0
    try:
        for frame in container.decode(vs):
            t = float(frame.time) if frame.time is not None else n / 25.0
            first = t if n == 0 else first
            last = t
            n += 1
            if n >= max_frames:
                break
    except (av.error.FFmpegError, ValueError) as exc:
        if n == 0:
            raise MediaError(f"{container.name}: video does not decode ({type(exc).__name__})") from None
    return first, last, n


def _tail_decodes(container, vs, duration: float) -> bool:
    """Seek to the last second and decode one frame: a file cut short (moov first, mdat cut) fails here."""
    try:
        target = max(0.0, duration - 1.0)
        container.seek(int(target / vs.time_base) + (vs.start_time or 0), stream=vs, backward=True)
        for frame in container.decode(vs):
            if frame.time is not None and frame.time >= target - 0.5:
                return True
        return False
    except (av.error.FFmpegError, ValueError, OverflowError):
        return False


class FrameGrid:
    """One consumer of a streaming decode: frames on a regular grid of ``fps`` (or at given ``times``).

    The frame handed out for a grid time is the first decoded frame at or after it (what ``iter_frames``
    has always returned). ``size`` is (width, height); ``max_side`` downscales keeping the aspect ratio.
    Subclasses may override ``advance`` to thin the grid while streaming (see the watcher's keyframe pool).
    """

    def __init__(self, fps: float | None = None, *, times: Sequence[float] | None = None,
                 size: tuple[int, int] | None = None, max_side: int | None = None,
                 start_s: float = 0.0, end_s: float | None = None):
        if times is None and (fps is None or fps <= 0):
            raise ValueError("fps must be positive")
        self.size, self.max_side, self.end_s = size, max_side, end_s
        self.step = 1.0 / fps if times is None else 0.0
        self._times = None if times is None else sorted(float(t) for t in times)
        self._i = 0
        self.next_t: float | None = start_s if times is None else (self._times[0] if self._times else None)
        self.seen_t: float | None = None  # time of the last frame decoded while this consumer was waiting
        self._check_end()

    def _check_end(self) -> None:
        if self.next_t is not None and self.end_s is not None and self.next_t >= self.end_s:
            self.next_t = None

    def advance(self) -> None:
        """Move to the next wanted time (None when this consumer is done)."""
        if self._times is None:
            self.next_t += self.step  # accumulated, as iter_frames always did: the times are part of the results
        else:
            self._i += 1
            self.next_t = self._times[self._i] if self._i < len(self._times) else None
        self._check_end()

    def out_size(self, width: int, height: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        if self.max_side is not None and max(width, height) > self.max_side:
            s = self.max_side / max(width, height)
            return max(2, int(round(width * s / 2)) * 2), max(2, int(round(height * s / 2)) * 2)
        return width, height


SEEK_GAP_S = 2.0  # seek ahead (instead of decoding through) when every consumer's next frame is this far away


def stream_frames(path: str | Path, consumers: Mapping[str, FrameGrid], seek_gap_s: float | None = SEEK_GAP_S
                  ) -> Iterator[tuple[str, float, np.ndarray]]:
    """One decode of ``path`` feeding several consumers at their own rates and sizes: yields (name, time_s, RGB
    uint8 HxWx3) in time order.

    Memory is bounded by one decoded frame (plus one converted image per distinct output size). Each frame is
    converted only when some consumer samples it, once per output size. When all consumers are sparse (their
    next time is more than ``seek_gap_s`` past the last decoded frame) the decoder seeks instead of decoding
    the frames in between; if a seek lands before what was already decoded (keyframes further apart than the
    gap), seeking is switched off for the rest of the pass. ``seek_gap_s=None`` never seeks.
    """
    active = {name: c for name, c in consumers.items() if c.next_t is not None}
    if not active:
        return
    with av.open(str(path)) as container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        frames = container.decode(vs)
        last_t = 0.0
        can_seek = seek_gap_s is not None and vs.time_base is not None
        sought: float | None = None  # the target of the last seek: never seek twice for one target
        before_seek: float | None = None
        while active:
            target = min(c.next_t for c in active.values())
            if can_seek and target != sought and target - last_t > seek_gap_s:
                try:
                    container.seek(int(target / vs.time_base) + (vs.start_time or 0), stream=vs, backward=True)
                    frames = container.decode(vs)
                    sought, before_seek = target, last_t
                except (av.error.FFmpegError, OverflowError, ValueError):
                    can_seek = False
            frame = next(frames, None)
            if frame is None:
                break
            t = float(frame.time) if frame.time is not None else 0.0
            if before_seek is not None:
                if t <= before_seek + 1e-6:  # landed where we already were: keyframes too sparse to gain
                    can_seek = False
                before_seek = None
            last_t = t
            images: dict[tuple[int, int], np.ndarray] = {}
            for name in list(active):
                c = active[name]
                c.seen_t = t
                if t + 1e-6 < c.next_t:
                    continue
                w, h = c.out_size(frame.width, frame.height)
                img = images.get((w, h))
                if img is None:
                    img = frame.to_ndarray(format="rgb24", width=w, height=h) \
                        if (w, h) != (frame.width, frame.height) else frame.to_ndarray(format="rgb24")
                    images[(w, h)] = img
                while c.next_t is not None and c.next_t <= t + 1e-6:
                    yield name, c.next_t, img
                    c.advance()
                if c.next_t is None:
                    del active[name]


def iter_frames(path: str | Path, fps: float, size: tuple[int, int] | None = None, max_side: int | None = None,
                start_s: float = 0.0, end_s: float | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time_s, RGB uint8 HxWx3) frames resampled to ``fps``, streaming (one consumer of ``stream_frames``).

    Each grid time gets the first frame at or after it. Memory stays bounded by one decoded frame; ``size`` is
    (width, height) and ``max_side`` downscales keeping the aspect ratio, so huge frames never reach the models
    at full size. Sparse rates seek over the frames they skip.
    """
    grid = FrameGrid(fps, size=size, max_side=max_side, start_s=start_s, end_s=end_s)
    for _, t, img in stream_frames(path, {"frames": grid}):
        yield t, img


def sample_frames(path: str | Path, fps: float, size: tuple[int, int] | None = None, max_side: int | None = None,
                  duration_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All frames at ``fps`` as (times (T,), frames (T,H,W,3) uint8)."""
    times, frames = [], []
    for t, img in iter_frames(path, fps, size=size, max_side=max_side, end_s=duration_s):
        times.append(t)
        frames.append(img)
    if not frames:
        raise MediaError(f"{path}: no frames could be sampled")
    return np.asarray(times, dtype=np.float64), np.stack(frames)


def _open_audio(path: str | Path, sample_rate: int | None, mono: bool) -> tuple[int, Iterator[np.ndarray]]:
    """(rate, blocks): the file is opened and checked now (MediaError before any work), decoded as iterated."""
    p = _check_path(path)
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise MediaError(f"{p}: not a readable audio file ({type(exc).__name__})") from None
    if not container.streams.audio:
        container.close()
        raise MediaError(f"{p}: has no audio stream")
    st = container.streams.audio[0]
    rate = sample_rate or int(st.codec_context.sample_rate)
    layout = "mono" if mono else ("stereo" if (st.codec_context.channels or 1) >= 2 else "mono")

    def blocks() -> Iterator[np.ndarray]:
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        n = 0
        with container:
            try:
                for frame in container.decode(st):
                    for out in resampler.resample(frame):
                        n += 1
                        yield out.to_ndarray()
            except av.error.FFmpegError as exc:
                if not n:
                    raise MediaError(f"{p}: audio does not decode ({type(exc).__name__})") from None
            for out in resampler.resample(None):
                n += 1
                yield out.to_ndarray()
        if not n:
            raise MediaError(f"{p}: audio stream is empty")

    return rate, blocks()


def iter_audio(path: str | Path, sample_rate: int | None = None, mono: bool = False) -> Iterator[np.ndarray]:
    """The first audio stream of any file as float32 (C, n) blocks (C = 1 or 2), streaming.

    ``sample_rate`` None keeps the file's rate; more than two channels are mixed down to stereo by
    libswresample. Opening problems raise MediaError here, before anything is decoded.
    """
    return _open_audio(path, sample_rate, mono)[1]


def read_audio(path: str | Path, sample_rate: int | None = None, mono: bool = False) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any file (wav, flac, mp3, ogg, mp4...) → float32 (C, N), rate."""
    rate, blocks = _open_audio(path, sample_rate, mono)
    audio = np.concatenate(list(blocks), axis=1).astype(np.float32, copy=False)
    return audio, rate


class AudioFile:
    """Random-access float32 reads of a WAV/FLAC file (soundfile): for soundtracks too long to hold whole."""

    def __init__(self, path: str | Path):
        import soundfile as sf

        p = _check_path(path)
        try:
            self._f = sf.SoundFile(str(p))
        except RuntimeError as exc:  # soundfile's LibsndfileError
            raise MediaError(f"{p}: not a readable WAV/FLAC file ({exc})") from None
        self.path, self.sr, self.channels, self.n = p, int(self._f.samplerate), int(self._f.channels), int(self._f.frames)

    @property
    def duration_s(self) -> float:
        return self.n / self.sr

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) clipped to the file → float32 (C, m)."""
        start, stop = max(0, int(start)), min(self.n, int(stop))
        if stop <= start:
            return np.zeros((self.channels, 0), np.float32)
        self._f.seek(start)
        return np.ascontiguousarray(self._f.read(stop - start, dtype="float32", always_2d=True).T)

    def blocks(self, size: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(offset, (C, m) block) over [start, stop)."""
        stop = self.n if stop is None else min(self.n, stop)
        for a in range(max(0, start), stop, size):
            yield a, self.read(a, min(stop, a + size))

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "AudioFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AudioWriter:
    """Write float (C, n) blocks as one 16-bit WAV or FLAC, atomically (a temp file renamed on success).

    Same conversion as ``write_audio`` (clip to ±1, PCM_16), for audio too long to hold in memory twice.
    """

    def __init__(self, path: str | Path, sample_rate: int, channels: int = 2):
        import soundfile as sf

        self.path = Path(path)
        if self.path.suffix.lower() not in AUDIO_EXTS:
            raise ValueError(f"unsupported audio extension {self.path.suffix!r} (use .wav or .flac)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = part_path(self.path)
        self._f = sf.SoundFile(str(self._tmp), "w", samplerate=sample_rate, channels=channels, subtype="PCM_16",
                               format="WAV" if self.path.suffix.lower() == ".wav" else "FLAC")
        self.frames = 0

    def write(self, block: np.ndarray) -> None:
        data = np.asarray(block, dtype=np.float32)
        data = data[None] if data.ndim == 1 else data
        self._f.write(np.clip(data.T, -1.0, 1.0))
        self.frames += data.shape[1]

    def __enter__(self) -> "AudioWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        self._f.close()
        if exc_type is None:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write float (C, N) audio as 16-bit WAV or FLAC by extension (soundfile)."""
    import soundfile as sf

    p = Path(path)
    if p.suffix.lower() not in AUDIO_EXTS:
        raise ValueError(f"unsupported audio extension {p.suffix!r} (use .wav or .flac)")
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim == 1:
        data = data[None]
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_path(p)
    try:
        sf.write(str(tmp), np.clip(data.T, -1.0, 1.0), sample_rate, subtype="PCM_16",
                 format="WAV" if p.suffix.lower() == ".wav" else "FLAC")
    except (sf.SoundFileError, OSError, AssertionError) as exc:  # soundfile asserts on a short write
        raise _write_failure(p, tmp, exc, need=data.size * 2 + 4096) from None
    tmp.replace(p)  # atomic: a killed process never leaves a half-written artifact
    return p


def _write_failure(p: Path, tmp: Path, exc: BaseException, need: int) -> OSError:
    """libsndfile says only "System error": name the cause (a full disk, a read-only folder) in one line."""
    import errno
    import os

    tmp.unlink(missing_ok=True)
    try:
        free = shutil.disk_usage(p.parent).free
    except OSError:
        free = None
    if getattr(exc, "errno", None) == errno.ENOSPC or (free is not None and free < need):
        return OSError(errno.ENOSPC, f"cannot write {p}: no space left on the device "
                                     f"({(free or 0) / 1e6:.1f} MB free, about {need / 1e6:.1f} MB needed)")
    if not os.access(p.parent, os.W_OK):
        return OSError(errno.EACCES, f"cannot write {p}: the folder is not writable")
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return OSError(getattr(exc, "errno", None) or errno.EIO, f"cannot write {p}: {detail}")


MUX_BLOCK = 1 << 18  # samples per streamed soundtrack block (~6 s at 44.1 kHz)


def mux(video: str | Path, audio: np.ndarray | str | Path, sample_rate: int | None, out: str | Path,
        keep_original: str = "drop", mix_gain: float = 0.5, codec: str | None = None,
        info: VideoInfo | None = None) -> Path:
    """Copy the video stream (no re-encode) and add ``audio`` as the soundtrack.

    ``audio`` is float (C, N) at ``sample_rate``, or the path of a WAV/FLAC file (its own rate; streamed in
    blocks, so an hour-long soundtrack is never held whole). ``keep_original``: "drop" removes the original
    track, "mix" mixes it under the new one at ``mix_gain``. AAC in mp4/mov/mkv, Opus in webm; the new track
    is cut (or padded) to the video's length. ``info`` saves a probe when the caller already has one.
    """
    if keep_original not in ("drop", "mix"):
        raise ValueError("keep_original must be 'drop' or 'mix'")
    video, out = Path(video), Path(out)
    info = info or probe(video)
    source: AudioFile | None = None
    if isinstance(audio, (str, Path)):
        if Path(audio).suffix.lower() in AUDIO_EXTS:
            source = AudioFile(audio)
            sample_rate, n_in, read = source.sr, source.n, source.read
        else:
            data, sample_rate = read_audio(audio)
            n_in, read = data.shape[1], (lambda a, b, d=data: d[:, a:b])
    else:
        if not sample_rate:
            raise ValueError("sample_rate is required with an audio array")
        data = np.asarray(audio, dtype=np.float32)
        data = data[None] if data.ndim == 1 else data
        n_in, read = data.shape[1], (lambda a, b, d=data: d[:, a:b])
    n = int(round(info.duration_s * sample_rate))

    def blocks() -> Iterator[np.ndarray]:
        orig = _Samples(iter_audio(video, sample_rate=sample_rate)) \
            if keep_original == "mix" and info.has_audio else None
        for a in range(0, n, MUX_BLOCK):
            b = min(n, a + MUX_BLOCK)
            x = read(a, min(b, n_in))
            x = np.repeat(x, 2, axis=0) if x.shape[0] == 1 else np.array(x, dtype=np.float32, copy=True)
            if x.shape[1] < b - a:
                x = np.pad(x, ((0, 0), (0, b - a - x.shape[1])))
            if orig is not None:
                o = orig.take(b - a)
                o = o if o.shape[0] == 2 else np.repeat(o[:1], 2, axis=0)
                x[:, :o.shape[1]] = x[:, :o.shape[1]] + mix_gain * o
            yield np.clip(x, -1.0, 1.0, out=x)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_path(out)
    fmt_codec = codec or ("libopus" if out.suffix.lower() == ".webm" else "aac")
    rate = 48000 if fmt_codec == "libopus" else sample_rate
    try:
        with av.open(str(video)) as src, av.open(str(tmp), "w") as dst:
            vin = src.streams.video[0]
            vout = dst.add_stream_from_template(vin)
            aout = dst.add_stream(fmt_codec, rate=rate, layout="stereo")
            for packet in src.demux(vin):
                if packet.size == 0:  # demuxer flush packet; Matroska keyframes legitimately have dts None
                    continue
                packet.stream = vout
                dst.mux(packet)
            stream = blocks() if rate == sample_rate else _resampled(blocks(), sample_rate, rate)
            _encode_audio_blocks(dst, aout, stream, rate)
    finally:
        if source is not None:
            source.close()
    tmp.replace(out)
    return out


class _Samples:
    """Exactly-sized takes from a stream of (C, m) blocks; a stream that runs out gives a shorter take."""

    def __init__(self, blocks: Iterable[np.ndarray]):
        self._it = iter(blocks)
        self._buf: list[np.ndarray] = []
        self._have = 0

    def take(self, k: int) -> np.ndarray:
        while self._have < k:
            nxt = next(self._it, None)
            if nxt is None:
                break
            self._buf.append(nxt)
            self._have += nxt.shape[1]
        if not self._buf:
            return np.zeros((2, 0), np.float32)
        joined = np.concatenate(self._buf, axis=1) if len(self._buf) > 1 else self._buf[0]
        head, rest = joined[:, :k], joined[:, k:]
        self._buf, self._have = ([rest] if rest.shape[1] else []), rest.shape[1]
        return head


def _resampled(blocks: Iterable[np.ndarray], src_rate: int, dst_rate: int) -> Iterator[np.ndarray]:
    """Stereo float32 blocks through libswresample (streaming; keeps its filter state across blocks)."""
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=dst_rate)
    for block in blocks:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block, dtype=np.float32), format="fltp",
                                           layout="stereo")
        frame.sample_rate = src_rate
        for o in resampler.resample(frame):
            yield o.to_ndarray()
    for o in resampler.resample(None):
        yield o.to_ndarray()


def _encode_audio(dst, stream, data: np.ndarray, rate: int) -> None:
    _encode_audio_blocks(dst, stream, [data], rate)


def _encode_audio_blocks(dst, stream, blocks: Iterable[np.ndarray], rate: int) -> None:
    """Encode stereo float blocks in frames of the codec's frame size (the last one may be short)."""
    frame_size = stream.codec_context.frame_size or 1024
    pts = 0

    def emit(chunk: np.ndarray) -> None:
        nonlocal pts
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk, dtype=np.float32), format="fltp",
                                           layout="stereo")
        frame.sample_rate = rate
        frame.pts = pts
        frame.time_base = Fraction(1, rate)
        pts += chunk.shape[1]
        for packet in stream.encode(frame):
            dst.mux(packet)

    carry = np.zeros((2, 0), np.float32)
    for block in blocks:
        data = np.concatenate([carry, block], axis=1) if carry.shape[1] else block
        full = data.shape[1] - data.shape[1] % frame_size
        for i in range(0, full, frame_size):
            emit(data[:, i:i + frame_size])
        carry = data[:, full:]
    if carry.shape[1]:
        emit(carry)
    for packet in stream.encode(None):
        dst.mux(packet)


def resample(audio: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    if src_rate == dst_rate:
        return audio
    from scipy.signal import resample_poly

    g = math.gcd(src_rate, dst_rate)
    return resample_poly(audio, dst_rate // g, src_rate // g, axis=-1).astype(np.float32)


def write_video(path: str | Path, frames: np.ndarray, fps: float, audio: np.ndarray | None = None,
                sample_rate: int = 44100) -> Path:
    """Encode RGB uint8 frames (T,H,W,3) as H.264 (+ optional AAC audio). Used for samples and tests."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(p), "w") as dst:
        vs = dst.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        vs.width, vs.height = int(frames.shape[2]), int(frames.shape[1])
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "23"}
        a_stream = dst.add_stream("aac", rate=sample_rate, layout="stereo") if audio is not None else None
        for img in frames:
            for packet in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                dst.mux(packet)
        for packet in vs.encode(None):
            dst.mux(packet)
        if a_stream is not None:
            data = np.asarray(audio, dtype=np.float32)
            data = np.repeat(data[None], 2, 0) if data.ndim == 1 else data
            _encode_audio(dst, a_stream, data, sample_rate)
    return p


def copy_file(src: str | Path, dst: str | Path) -> Path:
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst
