"""Long and multi-shot videos: split the plan at shot boundaries, render each segment inside the renderer's window,
join the pieces with equal-power crossfades, critique per segment and refine only the weak segments.

A layer around any Watcher/Renderer/Critic/Refiner: backends see an ordinary short plan, an ordinary short video
(a low-resolution proxy of their segment, written once per run by one streaming decode) and an ordinary audio
file. A segment's audio and critique are cached under a key of everything that decides them (renderer, the
segment's plan, seed, video window), so a refined round re-renders only the segments whose plan changed.
Memory is bounded by one segment: proxies are encoded frame by frame, the join streams to disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from contract import segments as seg
from contract.plan import DIMENSIONS, Critique, Finding, Plan, SegmentScore
from contract.protocols import RefineResult, RenderResult
from store import media
from store.atomic import part_path
from store.media import AudioWriter, FrameGrid, VideoInfo

log = logging.getLogger(__name__)

DEFAULT_MAX_S = 30.0  # the offline renderer's window: a configured length (options["segments"]["max_s"])
MIN_SEGMENT_S = 3.0  # shorter shots join their neighbour
PROXY_MAX_SIDE = 256  # segment videos for the backends: enough for 224² feature models, cheap to encode
PROXY_FPS = 25.0
CUT_FPS = 5.0  # the fallback shot detector's rate and size (only for watchers that report no cuts)
CUT_SIDE = 32
CUT_HIST = 0.4  # colour-histogram distance (0..1) between sampled frames that is a cut
SCENE_HIST = 0.3  # shots whose mean histograms are closer than this are one scene
LEVEL_S = 0.5  # the stretch either side of a crossfade whose floor levels are matched
MAX_STEP_DB = 30.0


# ---- the window and the split -------------------------------------------------------------------------------
def max_window_s(options: dict, renderer: Any) -> float:
    """The longest window a segment may take: the configured length, or less when the renderer has a window of
    its own (``max_window_s``, e.g. ThinkSound's ≈ 9 s)."""
    configured = float((options or {}).get("max_s", DEFAULT_MAX_S))
    own = getattr(renderer, "max_window_s", None)
    return min(configured, float(own)) if own else configured


def _hist(img: np.ndarray) -> np.ndarray:
    q = (img.astype(np.int32) // 32).reshape(-1, 3)
    h = np.concatenate([np.bincount(q[:, c], minlength=8) for c in range(3)]).astype(np.float64)
    return h / max(1.0, h.sum())


def detect_cuts(video: Path, info: VideoInfo) -> tuple[list[float], list[str]]:
    """Shot cuts by colour-histogram jumps between frames sampled at 5 fps, 32 px, and one scene cue per shot
    (shots with similar mean colours share a cue). For watchers that do not report their cuts."""
    grid = FrameGrid(CUT_FPS, max_side=CUT_SIDE, end_s=info.duration_s)
    cuts: list[float] = []
    shot_means: list[np.ndarray] = []
    prev, acc, n = None, None, 0
    for _, t, img in media.stream_frames(video, {"cuts": grid}):
        h = _hist(img)
        if prev is not None and 0.5 * np.abs(h - prev).sum() > CUT_HIST:
            cuts.append(round(t, 3))
            shot_means.append(acc / max(1, n))
            acc, n = None, 0
        acc = h if acc is None else acc + h
        n += 1
        prev = h
    if acc is not None:
        shot_means.append(acc / max(1, n))
    cues: list[str] = []
    for i, m in enumerate(shot_means):
        same = i > 0 and 0.5 * np.abs(m - shot_means[i - 1]).sum() < SCENE_HIST
        cues.append(cues[-1] if same else f"scene{i}")
    return cuts, cues


def _watcher_cuts(meta: dict) -> tuple[list[float], list[str]] | None:
    """Cuts and per-shot cues a watcher already found on its own decode (the offline watcher: shots + top rule)."""
    cuts = meta.get("cuts") if isinstance(meta, dict) else None
    if cuts is None:
        return None
    shots = meta.get("shots") or []
    cues = []
    for s in shots:
        rules = s.get("rules") or [] if isinstance(s, dict) else []
        cues.append(str(rules[0][0]) if rules and isinstance(rules[0], (list, tuple)) else "")
    return [float(c) for c in cuts], cues


def _caption(sub: Plan) -> str:
    """The segment's own sounds, loudest share of its time first: the renderer's caption for that window."""
    weight: dict[str, float] = {}
    for e in sub.events:
        weight[e.label] = weight.get(e.label, 0.0) + max(0.25, e.end_s - e.start_s)
    return ", ".join(sorted(weight, key=lambda k: -weight[k])[:3])[:200]


def _temporal(sub: Plan, max_times: int = 6) -> str:
    """The segment's own timing in its own seconds (the plan's temporal section speaks of the whole video): the
    beds, then each sound's first few start times."""
    beds = sorted({e.label for e in sub.events if str(getattr(e.kind, "value", e.kind)) in seg.BED_KINDS})
    times: dict[str, list[float]] = {}
    for e in sorted(sub.events, key=lambda e: e.start_s):
        if str(getattr(e.kind, "value", e.kind)) not in seg.BED_KINDS:
            times.setdefault(e.label, []).append(e.start_s)
    parts = [f"{', '.join(beds)} throughout"] if beds else []
    for label, ts in times.items():
        shown = ", ".join(f"{t:.1f}" for t in ts[:max_times]) + (" …" if len(ts) > max_times else "")
        parts.append(f"{label} at {shown} s")
    return "; ".join(parts)[:2000]


def attach(plan: Plan, meta: dict, video: Path, info: VideoInfo, window_s: float) -> Plan:
    """The watcher's plan with its segments when the video needs more than one window (longer than ``window_s``
    or cut into shots of at least MIN_SEGMENT_S); otherwise the plan unchanged (no ``segments``)."""
    found = _watcher_cuts(meta)
    if found is None and info.duration_s <= window_s:
        cuts, cues = detect_cuts(video, info) if info.duration_s >= 2 * MIN_SEGMENT_S else ([], [])
    elif found is None:
        cuts, cues = detect_cuts(video, info)
    else:
        cuts, cues = found
    impacts = [e.start_s for e in plan.events if str(getattr(e.kind, "value", e.kind)) not in seg.BED_KINDS]
    parts = seg.split(plan.duration_s, cuts, window_s, cues=cues, min_s=MIN_SEGMENT_S, avoid=impacts)
    if len(parts) < 2:
        return plan
    segmented = plan.model_copy(update={"segments": parts})
    subs = [seg.sub_plan(segmented, p.index) for p in parts]
    parts = [p.model_copy(update={"caption": _caption(sp),
                                  "sections": {"temporal": _temporal(sp)} if sp.events else {}})
             for p, sp in zip(parts, subs)]
    return Plan.model_validate(plan.model_dump() | {"segments": [p.model_dump() for p in parts]},
                               context={"stored": True})


# ---- proxies: each segment's stretch of video as a small file -------------------------------------------------
@dataclass
class Proxy:
    path: Path
    info: VideoInfo


def video_key(video: Path) -> str:
    st = os.stat(video)
    return hashlib.sha256(f"{Path(video).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def proxies(video: Path, info: VideoInfo, segments: Sequence[seg.Segment], cache_dir: Path) -> list[Proxy]:
    """One low-resolution clip per segment window, all written by one streaming decode (cached: a resumed run or a
    later round finds them). At most the overlapping neighbours' encoders are open at once."""
    folder = Path(cache_dir) / video_key(video)
    paths = [folder / f"{s.index:04d}_{s.render_start_s:.3f}_{s.render_end_s:.3f}.mp4" for s in segments]
    todo = {s.index: s for s, p in zip(segments, paths) if not p.exists()}
    if todo:
        folder.mkdir(parents=True, exist_ok=True)
        fps = min(PROXY_FPS, info.fps) if info.fps and info.fps > 0 else PROXY_FPS
        grids = {str(k): FrameGrid(fps, max_side=PROXY_MAX_SIDE, start_s=s.render_start_s, end_s=s.render_end_s)
                 for k, s in todo.items()}
        open_: dict[int, _Encoder] = {}
        try:
            for name, _, img in media.stream_frames(video, grids):
                k = int(name)
                if k not in open_:
                    for j in [j for j in open_ if j < k - 1]:
                        open_.pop(j).close(paths[j])
                    open_[k] = _Encoder(paths[k], fps, img)
                open_[k].add(img)
            for j in sorted(open_):
                open_.pop(j).close(paths[j])
        finally:
            for enc in open_.values():
                enc.abort()
        for k, s in todo.items():  # a window past the last decodable frame: black frames of its length
            if not paths[k].exists():
                _still(paths[k], fps, s.render_s, (16, 16))
    return [Proxy(p, media.probe(p)) for p in paths]


class _Encoder:
    def __init__(self, path: Path, fps: float, first: np.ndarray):
        import av

        self.tmp = part_path(path)
        self.h, self.w = (first.shape[0] // 2) * 2 or 2, (first.shape[1] // 2) * 2 or 2
        self.container = av.open(str(self.tmp), "w")
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.w, self.h, "yuv420p"
        # Tiny frames are coded losslessly (compression noise there is as large as the motion the critic looks for);
        # larger ones near-losslessly (crf 12), so that a long video's proxies stay a few MB a minute.
        self.stream.options = {"preset": "ultrafast", "crf": "0" if self.w * self.h <= 128 * 128 else "12"}

    def add(self, img: np.ndarray) -> None:
        import av

        frame = np.ascontiguousarray(_fit(img, self.h, self.w))
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self.container.mux(packet)

    def close(self, path: Path) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
        self.tmp.replace(path)

    def abort(self) -> None:
        try:
            self.container.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def _fit(img: np.ndarray, h: int, w: int) -> np.ndarray:
    out = img[:h, :w]
    if out.shape[0] < h or out.shape[1] < w:
        out = np.pad(out, ((0, h - out.shape[0]), (0, w - out.shape[1]), (0, 0)), mode="edge")
    return out


def _still(path: Path, fps: float, seconds: float, size: tuple[int, int]) -> None:
    enc = _Encoder(path, fps, np.zeros((size[1], size[0], 3), np.uint8))
    for _ in range(max(1, int(math.ceil(seconds * fps)))):
        enc.add(np.zeros((size[1], size[0], 3), np.uint8))
    enc.close(path)


# ---- rendering and joining ------------------------------------------------------------------------------------
def seed_of(plan: Plan, k: int, seed: int) -> int:
    s = (plan.segments or [])[k].seed
    return seed if s is None else s


def segment_key(renderer: Any, sub: Plan, seed: int, video_key: str, window: tuple[float, float],
                renderer_key: str = "") -> str:
    """Everything that decides a segment's audio: the renderer and its options, the segment's plan (not its id or
    authorship), the seed and the stretch of video."""
    plan = sub.model_dump(mode="json", exclude={"plan_id"})
    prov = plan.pop("provenance", {})
    plan["extras"] = {k: v for k, v in prov.items() if k not in ("author", "backend", "model_id", "prompt_version",
                                                                    "round", "parent_plan_id", "segment")}
    data = {"renderer": [getattr(renderer, "name", ""), getattr(renderer, "model_id", ""), renderer_key], "plan": plan,
            "seed": int(seed), "video": video_key, "window": [round(window[0], 4), round(window[1], 4)]}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:24]


@dataclass
class SegmentRun:
    """The per-run parts of segmented work: where segment audio is cached, the proxies, the video's identity."""

    cache_dir: Path
    proxies: list[Proxy] | None
    video_key: str
    renderer_key: str = ""  # the renderer's options (weights, steps, dtype …): two configs never share audio

    def audio_path(self, key: str) -> Path:
        return self.cache_dir / f"{key}.wav"

    def proxy(self, k: int) -> tuple[Path | None, VideoInfo | None]:
        if self.proxies is None:
            return None, None
        return self.proxies[k].path, self.proxies[k].info


def prepare(plan: Plan, video: Path | None, info: VideoInfo | None, cache_root: Path,
            renderer_key: str = "") -> SegmentRun:
    cache_root = Path(cache_root)
    (cache_root / "segments").mkdir(parents=True, exist_ok=True)
    if video is None or info is None:
        return SegmentRun(cache_root / "segments", None, "", renderer_key)
    return SegmentRun(cache_root / "segments", proxies(Path(video), info, plan.segments or [], cache_root / "proxies"),
                      video_key(Path(video)), renderer_key)


def _keys(renderer: Any, plan: Plan, seed: int, sr: SegmentRun) -> list[tuple[Plan, int, str]]:
    out = []
    for s in plan.segments or []:
        sub = seg.sub_plan(plan, s.index)
        sd = seed_of(plan, s.index, seed)
        out.append((sub, sd, segment_key(renderer, sub, sd, sr.video_key, (s.render_start_s, s.render_end_s),
                                              sr.renderer_key)))
    return out


def render(renderer: Any, plan: Plan, seed: int, out_path: Path, sr: SegmentRun) -> RenderResult:
    """Render the segments that have no cached audio, then join all of them into ``out_path``."""
    rendered, reused = [], []
    keys = _keys(renderer, plan, seed, sr)
    for (sub, sd, key), s in zip(keys, plan.segments or []):
        path = sr.audio_path(key)
        if path.exists():
            reused.append(s.index)
            continue
        video, vinfo = sr.proxy(s.index)
        with tempfile.TemporaryDirectory(dir=sr.cache_dir) as tmp:
            res = renderer.render(sub, video, vinfo, sd, Path(tmp) / "segment.wav")
            _to_wav(res.audio_path, path)
        rendered.append(s.index)
    rate, g = join([sr.audio_path(k) for _, _, k in keys], plan.segments or [], out_path)
    meta = {"segments": {"count": len(keys), "rendered": rendered, "reused": reused,
                         "gains_db": [[round(a, 2), round(b, 2)] for a, b in g]}}
    return RenderResult(Path(out_path), rate, plan.duration_s, meta)


def prune(renderer: Any, done: Sequence[tuple[Plan, int]], keep: tuple[Plan, int], sr: SegmentRun) -> int:
    """Drop the cached segment audio (and critiques) of finished rounds ``done`` that the kept round does not use:
    a long video's rounds would otherwise hold its whole soundtrack once more per round. Returns files removed.
    Only this run's own keys are touched; a later fork simply renders what it needs again."""
    wanted = {k for _, _, k in _keys(renderer, keep[0], keep[1], sr)}
    removed = 0
    for plan, seed in done:
        if not plan.segments:
            continue
        for _, _, key in _keys(renderer, plan, seed, sr):
            if key in wanted:
                continue
            for path in [sr.audio_path(key), sr.cache_dir / f"{key}.own.wav",
                         *sr.cache_dir.glob(f"{key}.*.critique.json")]:
                try:
                    path.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def same_audio_as(renderer: Any, plan: Plan, seed: int, earlier: Sequence[tuple[int, Plan, int]]) -> int | None:
    """Index of an earlier round whose every segment would render the same audio as ``plan``'s (by the renderer's
    optional ``fingerprint`` of each segment's own plan, else by the segment's cache key); None otherwise. The
    whole plan's fingerprint cannot tell: it does not know what a segment's own extras and seed change."""
    fingerprint = getattr(renderer, "fingerprint", None)
    sr = SegmentRun(Path("."), None, "")

    def identity(p: Plan, sd: int) -> list:
        return [fingerprint(sub, s) if fingerprint is not None else key for sub, s, key in _keys(renderer, p, sd, sr)]

    mine = identity(plan, seed)
    for index, p, sd in earlier:
        if p.segments is not None and len(p.segments) == len(plan.segments or []) and identity(p, sd) == mine:
            return index
    return None


def _to_wav(src: Path, dst: Path) -> None:
    """A segment's render into the cache as a WAV (atomically)."""
    if Path(src).suffix.lower() == ".wav":
        tmp = part_path(dst)
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
    else:
        audio, rate = media.read_audio(src)
        media.write_audio(dst, audio, rate)


def _stereo(x: np.ndarray) -> np.ndarray:
    if x.shape[0] == 2:
        return x
    return np.repeat(x[:1], 2, axis=0) if x.shape[0] == 1 else x[:2]


def _fit_len(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[1] >= n:
        return x[:, :n]
    return np.pad(x, ((0, 0), (0, n - x.shape[1])))


def _level_db(x: np.ndarray, rate: int) -> float | None:
    """The floor level of a stretch (median RMS of its 50 ms windows, so an impact does not move it); None when
    silent."""
    w = max(1, int(0.05 * rate))
    n = x.shape[1] // w
    if n == 0:
        return None
    rms = np.sqrt(np.mean(np.square(x[:, :n * w].reshape(x.shape[0], n, w), dtype=np.float64), axis=(0, 2)))
    level = float(np.median(rms))
    return 20 * math.log10(level) if level > 1e-4 else None


def gains(parts: Sequence[Path], segments: Sequence[seg.Segment]) -> list[tuple[float, float]]:
    """A gain ramp (dB at the window's start, at its end) per segment so that neighbours meet at one level: each
    render is mastered on its own (a quiet stretch comes out as loud as a busy one), so at every boundary the
    floor level of the half-second before the crossfade (one render) and after it (the other) is compared and
    the louder side is brought down to the quieter (at most MAX_STEP_DB). Only cuts, never boosts: nothing can
    clip; and each ramp depends on its own two boundaries only, so nothing drifts down a long chain."""
    ramps = [[0.0, 0.0] for _ in segments]
    for i in range(len(segments) - 1):
        s, t = segments[i], segments[i + 1]
        lo, hi = t.window_start_s, s.window_end_s  # the crossfade; its neighbourhoods are compared
        with media.AudioFile(parts[i]) as fa, media.AudioFile(parts[i + 1]) as fb:
            la = _level_db(fa.read(round((lo - LEVEL_S - s.render_start_s) * fa.sr),
                                   round((lo - s.render_start_s) * fa.sr)), fa.sr)
            lb = _level_db(fb.read(round((hi - t.render_start_s) * fb.sr),
                                   round((hi + LEVEL_S - t.render_start_s) * fb.sr)), fb.sr)
        if la is None or lb is None:
            continue
        d = max(-MAX_STEP_DB, min(MAX_STEP_DB, la - lb))
        ramps[i][1], ramps[i + 1][0] = -max(0.0, d), -max(0.0, -d)
    return [(a, b) for a, b in ramps]


def join(parts: Sequence[Path], segments: Sequence[seg.Segment], out_path: Path
         ) -> tuple[int, list[tuple[float, float]]]:
    """Segments' audio into one file: each render fitted to its sample count, its rolls dropped, level-matched
    (``gains``), and neighbours crossfaded with equal-power gains (cos/sin) over their overlap. One segment in memory
    at a time. Returns the sample rate and the gains."""
    g = gains(parts, segments)
    rate = None
    tail: np.ndarray | None = None
    writer: AudioWriter | None = None
    try:
        for i, (path, s) in enumerate(zip(parts, segments)):
            x, r = media.read_audio(path)
            if rate is None:
                rate = r
                writer = AudioWriter(out_path, rate, channels=2)
                writer.__enter__()
            elif r != rate:
                x = media.resample(x, r, rate)
            ra, rb = round(s.render_start_s * rate), round(s.render_end_s * rate)
            wa, wb = round(s.window_start_s * rate), round(s.window_end_s * rate)
            x = _fit_len(_stereo(x), rb - ra)[:, wa - ra:wb - ra]
            if g[i] != (0.0, 0.0):
                x = x * (10 ** (np.linspace(g[i][0], g[i][1], x.shape[1]) / 20)).astype(np.float32)
            n_out = wb - round(segments[i + 1].window_start_s * rate) if i + 1 < len(segments) else 0
            if tail is not None:
                n = tail.shape[1]
                t = (np.arange(n, dtype=np.float64) + 0.5) / n
                writer.write((tail * np.cos(0.5 * np.pi * t) + x[:, :n] * np.sin(0.5 * np.pi * t)).astype(np.float32))
                x = x[:, n:]
            writer.write(x[:, :x.shape[1] - n_out])
            tail = x[:, x.shape[1] - n_out:] if n_out > 0 else None
        if writer is not None:
            writer.__exit__(None, None, None)
    except BaseException as exc:
        if writer is not None:
            writer.__exit__(type(exc), exc, None)
        raise
    return int(rate or 44100), g


# ---- critique per segment ---------------------------------------------------------------------------------------
def critique(critic: Any, renderer: Any, plan: Plan, seed: int, sr: SegmentRun,
             rendered: Sequence[int] | None = None) -> Critique:
    """Each segment's plan judged against its own audio and video by the critic; the round's scores are the
    segments' scores weighted by their length. A segment whose audio and plan did not change keeps its critique."""
    parts: list[SegmentScore] = []
    weights: list[float] = []
    for (sub, sd, key), s in zip(_keys(renderer, plan, seed, sr), plan.segments or []):
        audio = sr.audio_path(key)
        if not audio.exists():  # the cache was cleared: render this one again
            video, vinfo = sr.proxy(s.index)
            with tempfile.TemporaryDirectory(dir=sr.cache_dir) as tmp:
                _to_wav(renderer.render(sub, video, vinfo, sd, Path(tmp) / "segment.wav").audio_path, audio)
        # The critic's version is part of the key: a critic that judges differently must not reuse old verdicts.
        tag = "-".join(str(x) for x in (getattr(critic, "name", "critic"), getattr(critic, "version", None)) if x)
        cached = sr.cache_dir / f"{key}.{tag}.own.critique.json"
        reused = cached.exists()
        if reused:
            crit = Critique.from_json(cached.read_text())
        else:
            crit = _critique_own_span(critic, sub, s, audio, sr, key)
            tmp = part_path(cached)
            tmp.write_text(crit.to_json())
            tmp.replace(cached)
        parts.append(SegmentScore(index=s.index, start_s=s.start_s, end_s=s.end_s, scores=crit.scores,
                                  overall=crit.overall, findings=crit.findings,
                                  rendered=rendered is None or s.index in rendered, reused_critique=reused))
        weights.append(s.end_s - s.start_s)
    scores: dict[str, float | None] = {}
    for d in DIMENSIONS:
        got = [(p.scores.get(d), w) for p, w in zip(parts, weights) if p.scores.get(d) is not None]
        scores[d] = float(sum(v * w for v, w in got) / sum(w for _, w in got)) if got else None
    findings = [Finding(target=f.target, dimension=f.dimension, problem=f"segment {p.index} "
                        f"({p.start_s:.1f}–{p.end_s:.1f} s): {f.problem}"[:2000], suggestion=f.suggestion)
                for p in parts for f in p.findings]
    return Critique(scores=scores, findings=findings, segments=parts)


_HINT_TIMES = ("time_s", "to_s")


def _critique_own_span(critic: Any, sub: Plan, s: "seg.Segment", audio: Path, sr: SegmentRun, key: str) -> Critique:
    """The critic judges the segment's own span only: its pre- and post-roll are its neighbours' (they judge
    them), so a neighbour's contact or a crossfade must not score here. The audio, the proxy and the plan are cut
    to the span; hint times come back in the segment plan's time (render start = 0), which its refiner edits."""
    video, vinfo = sr.proxy(s.index)
    lo = max(0.0, s.start_s - s.render_start_s)
    hi = max(lo, min(sub.duration_s, s.end_s - s.render_start_s))
    if lo <= 1e-6 and hi >= sub.duration_s - 1e-6:
        return critic.critique(sub, audio, video, vinfo)
    own_audio = sr.cache_dir / f"{key}.own.wav"
    if not own_audio.exists():
        wave, rate = media.read_audio(audio)
        media.write_audio(own_audio, wave[:, int(round(lo * rate)):int(round(hi * rate))], rate)
    if video is not None:
        video, vinfo = _own_proxy(video, vinfo, lo, hi)
    crit = critic.critique(_own_plan(sub, lo, hi), own_audio, video, vinfo)
    findings = []
    for f in crit.findings:
        hint = dict(f.hint or {})
        for x in _HINT_TIMES:
            if isinstance(hint.get(x), (int, float)):
                hint[x] = round(float(hint[x]) + lo, 4)
        findings.append(f.model_copy(update={"hint": hint}))
    return crit.model_copy(update={"findings": findings})


def _own_plan(sub: Plan, lo: float, hi: float) -> Plan:
    """``sub`` cut to [lo, hi) of its time and shifted to start at 0 (events outside the span left out)."""
    events = []
    for e in sub.events:
        if e.start_s >= hi or max(e.end_s, e.start_s) < lo:
            continue
        start = max(0.0, e.start_s - lo)
        events.append(e.model_copy(update={"start_s": round(start, 4),
                                           "end_s": round(max(start, min(hi, e.end_s) - lo), 4)}))
    return sub.model_copy(update={"duration_s": round(hi - lo, 4), "events": events})


def _own_proxy(video: Path, vinfo: VideoInfo | None, lo: float, hi: float) -> tuple[Path, VideoInfo]:
    """The segment proxy cut to [lo, hi) (cached beside it): one more pass over a small low-resolution clip."""
    path = video.with_name(f"{video.stem}_own_{lo:.3f}_{hi:.3f}.mp4")
    if not path.exists():
        fps = vinfo.fps if vinfo is not None and vinfo.fps and vinfo.fps > 0 else PROXY_FPS
        enc = None
        try:
            for _, _, img in media.stream_frames(video, {"own": FrameGrid(fps, start_s=lo, end_s=hi)}):
                enc = enc or _Encoder(path, fps, img)
                enc.add(img)
            if enc is not None:
                enc.close(path)
                enc = None
        finally:
            if enc is not None:
                enc.abort()
        if not path.exists():  # nothing decodable in the span: the whole proxy, as before
            return video, media.probe(video)
    return path, media.probe(path)


def weak_segments(crit: Critique, thresholds: dict[str, float]) -> list[int]:
    """Segments with a dimension under its threshold; if none is (the mean failed on no single one), the worst."""
    parts = crit.segments or []
    weak = [p.index for p in parts
            if any(v is not None and v < thresholds.get(d, 0.0) for d, v in p.scores.items())]
    if not weak and parts:
        weak = [min(parts, key=lambda p: (p.overall if p.overall is not None else 1.0, p.index)).index]
    return weak


def own_findings(plan: Plan, k: int, findings: Sequence[Finding]) -> list[Finding]:
    """Segment ``k``'s findings less those about its pre-roll or post-roll: a time there belongs to the
    neighbour (it judges that span itself, and ``seg.merge`` drops what is added there), so a hint to add or
    move a sound into a roll would only give a round that renders the same audio."""
    s = (plan.segments or [])[k]
    lo, hi = s.start_s - s.render_start_s, s.end_s - s.render_start_s
    out = []
    for f in findings:
        at = [f.hint[x] for x in ("time_s", "to_s") if isinstance((f.hint or {}).get(x), (int, float))]
        if f.hint and f.hint.get("action") in ("add_event", "drop_or_shift") and at \
                and not any(lo <= t < hi for t in at):
            continue
        out.append(f)
    return out


def refine(refiner: Any, plan: Plan, crit: Critique, thresholds: dict[str, float], round_index: int, seed: int,
           sr: SegmentRun) -> RefineResult:
    """The refiner rewrites the weak segments only, each from its own plan and critique; everything else stays
    byte-identical, so its audio is reused when the round renders."""
    by_index = {p.index: p for p in crit.segments or []}
    new = plan
    changes: list[str] = []
    prompt_version = raw = ""
    stopped: list[str] = []
    aimed: set[str] | None = set()  # None once a segment's refine does not say what it acted on
    for k in weak_segments(crit, thresholds):
        part = by_index[k]
        sub = seg.sub_plan(new, k)
        sub_crit = Critique(scores=part.scores, findings=own_findings(new, k, part.findings))
        failing = sub_crit.failing(thresholds) or [d for d, v in part.scores.items() if v is not None]
        sd = seed_of(new, k, seed)
        video, vinfo = sr.proxy(k)
        res = refiner.refine(sub, sub_crit, failing, round_index, sd, video=video, info=vinfo)
        if getattr(res, "stop", ""):  # nothing audible left to try here: this segment stays as it is
            stopped.append(f"segment {k}: {res.stop}")
            continue
        new = seg.merge(new, k, res.plan, seed=res.seed if res.seed != sd else None)
        changes += [f"segment {k}: {c}" for c in res.changes]
        said = getattr(res, "aimed_at", None)
        aimed = None if aimed is None or said is None else aimed | set(said)
        prompt_version, raw = res.prompt_version or prompt_version, (raw + "\n" + res.raw_output).strip()
    if not changes and stopped:  # every weak segment is done: the loop stops instead of rendering the same
        return RefineResult(plan=plan, seed=seed, changes=stopped, stop="; ".join(stopped)[:2000])
    changes += stopped
    out = plan.derive("refiner", events=[e.model_dump() for e in new.events],
                      segments=[s.model_dump() for s in new.segments or []])
    return RefineResult(plan=out, seed=seed, changes=changes, raw_output=raw[:200_000], prompt_version=prompt_version,
                        aimed_at=None if aimed is None else [d for d in DIMENSIONS if d in aimed])
