"""Media I/O through PyAV: probe, frame sampling, audio read/write, mux.

Every user-supplied path passes through ``probe`` first, which turns any decoding problem into a
``MediaError`` with a one-line message (the CLI maps it to exit code 2).
"""

from __future__ import annotations

import hashlib
import math
import shutil
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

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


def iter_frames(path: str | Path, fps: float, size: tuple[int, int] | None = None, max_side: int | None = None,
                start_s: float = 0.0, end_s: float | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time_s, RGB uint8 HxWx3) frames resampled to ``fps`` (nearest earlier frame), streaming.

    Memory stays bounded by one decoded frame; ``size`` is (width, height) and ``max_side`` downscales
    keeping the aspect ratio, so huge frames never reach the models at full size.
    """
    if fps <= 0:
        raise ValueError("fps must be positive")
    with av.open(str(path)) as container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        step = 1.0 / fps
        next_t = start_s
        for frame in container.decode(vs):
            t = float(frame.time) if frame.time is not None else 0.0
            if end_s is not None and next_t >= end_s:
                break
            if t + 1e-6 < next_t:
                continue
            w, h = frame.width, frame.height
            if size is not None:
                w, h = size
            elif max_side is not None and max(w, h) > max_side:
                s = max_side / max(w, h)
                w, h = max(2, int(round(w * s / 2)) * 2), max(2, int(round(h * s / 2)) * 2)
            img = frame.to_ndarray(format="rgb24", width=w, height=h) if (w, h) != (frame.width, frame.height) \
                else frame.to_ndarray(format="rgb24")
            while next_t <= t + 1e-6 and (end_s is None or next_t < end_s):
                yield next_t, img
                next_t += step


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


def read_audio(path: str | Path, sample_rate: int | None = None, mono: bool = False) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any file (wav, flac, mp3, ogg, mp4...) → float32 (C, N), rate."""
    p = _check_path(path)
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise MediaError(f"{p}: not a readable audio file ({type(exc).__name__})") from None
    with container:
        if not container.streams.audio:
            raise MediaError(f"{p}: has no audio stream")
        st = container.streams.audio[0]
        rate = sample_rate or int(st.codec_context.sample_rate)
        layout = "mono" if mono else ("stereo" if (st.codec_context.channels or 1) >= 2 else "mono")
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        chunks = []
        try:
            for frame in container.decode(st):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
        except av.error.FFmpegError as exc:
            if not chunks:
                raise MediaError(f"{p}: audio does not decode ({type(exc).__name__})") from None
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks:
        raise MediaError(f"{p}: audio stream is empty")
    audio = np.concatenate(chunks, axis=1).astype(np.float32)
    return audio, rate


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
    tmp = p.with_name(p.name + ".part")
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


def mux(video: str | Path, audio: np.ndarray, sample_rate: int, out: str | Path, keep_original: str = "drop",
        mix_gain: float = 0.5, codec: str | None = None) -> Path:
    """Copy the video stream (no re-encode) and add ``audio`` as the soundtrack.

    ``keep_original``: "drop" removes the original track, "mix" mixes it under the new one at ``mix_gain``.
    AAC in mp4/mov/mkv, Opus in webm; the new track is cut to the video's length.
    """
    video, out = Path(video), Path(out)
    info = probe(video)
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim == 1:
        data = data[None]
    if data.shape[0] == 1:
        data = np.repeat(data, 2, axis=0)
    n = int(round(info.duration_s * sample_rate))
    data = data[:, :n] if data.shape[1] >= n else np.pad(data, ((0, 0), (0, n - data.shape[1])))
    if keep_original == "mix" and info.has_audio:
        orig, _ = read_audio(video, sample_rate=sample_rate)
        orig = orig if orig.shape[0] == 2 else np.repeat(orig[:1], 2, axis=0)
        m = min(n, orig.shape[1])
        data[:, :m] = data[:, :m] + mix_gain * orig[:, :m]
    elif keep_original not in ("drop", "mix"):
        raise ValueError("keep_original must be 'drop' or 'mix'")
    data = np.clip(data, -1.0, 1.0)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".part" + out.suffix)
    fmt_codec = codec or ("libopus" if out.suffix.lower() == ".webm" else "aac")
    rate = 48000 if fmt_codec == "libopus" else sample_rate
    if rate != sample_rate:
        data = resample(data, sample_rate, rate)
    with av.open(str(video)) as src, av.open(str(tmp), "w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        aout = dst.add_stream(fmt_codec, rate=rate, layout="stereo")
        for packet in src.demux(vin):
            if packet.size == 0:  # demuxer flush packet; Matroska keyframes legitimately have dts None
                continue
            packet.stream = vout
            dst.mux(packet)
        _encode_audio(dst, aout, data, rate)
    tmp.replace(out)
    return out


def _encode_audio(dst, stream, data: np.ndarray, rate: int) -> None:
    frame_size = stream.codec_context.frame_size or 1024
    pts = 0
    for i in range(0, data.shape[1], frame_size):
        chunk = np.ascontiguousarray(data[:, i:i + frame_size])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        frame.sample_rate = rate
        frame.pts = pts
        frame.time_base = Fraction(1, rate)
        pts += chunk.shape[1]
        for packet in stream.encode(frame):
            dst.mux(packet)
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
