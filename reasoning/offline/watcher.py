"""The offline watcher: a deterministic perception → template pipeline that writes the sound plan.

No vision-language model ships with its weights on PyPI, so this watcher does not pretend to be one:
timing, sides and shots come from the visual analysis (``motion``), what is on screen from ImageNet
labels on a few keyframes (``labels``), and the words from a reviewed table (``vocabulary``). A real
VLM backend replaces it through the same Watcher protocol.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contract.options import BackendOptions
from reasoning.offline import vocabulary as vocab
from reasoning.offline.motion import VisualAnalysis, analysis_cache_path, analyze_video, contacts
from contract.plan import CAPTION_MAX_WORDS, Event, EventKind, Plan, Provenance
from contract.protocols import WatchResult
from store.media import FrameGrid, VideoInfo, probe, stream_frames

log = logging.getLogger(__name__)

NAME = "offline"
MODEL_ID = "offline:motion+efficientnet_lite0"
PROMPT_VERSION = "offline-watch-v1"
LOW_CONFIDENCE = 0.3  # mean top-1 probability below which the labels are called a guess
_MIN_SHOT_S = 0.3
_IMPACT_LEN_S = 0.25
_MAX_LISTED_TIMES = 6
# Evidence before specificity (issue 9): a specific source is named only when the shot's keyframes agree on it
# and its labels carry this much probability per keyframe; otherwise generic, understated sounds.
SPECIFIC_MASS = 0.5
SPECIFIC_MIN_FRAMES = 2
# Impacts go only on contacts (``motion.contacts``); weaker motion is carried by the movement layer.
IMPACT_GAIN_RANGE_DB = (-10.0, 0.0)
# Movement: a texture whose level follows the motion energy second by second (what a soundtrack's loudness does).
MOVE_CHUNK_S = 0.5
MOVE_OVERLAP_S = 0.1  # = the renderer's fade on continuous sounds: neighbours crossfade
MOVE_MIN_MOTION = 0.03  # of the clip's 95th-percentile motion (one spike must not make the rest "still")
MOVE_TOP_DB = -6.0  # gain at the reference motion; the level falls with motion energy (10·log10)
BED_GAIN_DB = -24.0
_EVIDENCE_MAX = 240


@dataclass
class Shot:
    start_s: float
    end_s: float
    keyframes: list[float] = field(default_factory=list)
    labels: list[list[tuple[int, tuple[str, ...], float]]] = field(default_factory=list)  # per keyframe
    rules: list[tuple[vocab.SoundRule, float]] = field(default_factory=list)
    outdoor: bool | None = None  # coarse cue from the keyframes' colours (None: no frames)
    specific: vocab.SoundRule | None = None  # set only when the labels are strong and consistent
    why: str = ""  # the evidence, in words

    @property
    def top(self) -> vocab.SoundRule:
        """The rule the shot's sounds come from: the specific source when the evidence holds, else generic."""
        if self.specific is not None:
            return self.specific
        return vocab.GENERIC_OUTDOOR if self.outdoor else vocab.GENERIC_INDOOR

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def split_shots(duration_s: float, cuts: list[float]) -> list[Shot]:
    """Shots between scene cuts; slivers shorter than _MIN_SHOT_S join their neighbour."""
    edges = [0.0] + [c for c in sorted(cuts) if _MIN_SHOT_S <= c <= duration_s - _MIN_SHOT_S] + [duration_s]
    merged = [edges[0]]
    for e in edges[1:-1]:
        if e - merged[-1] >= _MIN_SHOT_S:
            merged.append(e)
    merged.append(duration_s)
    return [Shot(a, b) for a, b in zip(merged[:-1], merged[1:]) if b > a]


def plan_keyframes(shots: list[Shot], max_frames: int, per_shot: int) -> None:
    """A bounded number of keyframe times, spread inside shots; long shots first when frames are short."""
    budget = max(1, max_frames)
    order = sorted(range(len(shots)), key=lambda i: -shots[i].duration_s)
    counts = [0] * len(shots)
    for _ in range(per_shot):
        for i in order:
            if budget and counts[i] < per_shot:
                counts[i] += 1
                budget -= 1
    for shot, n in zip(shots, counts):
        shot.keyframes = [round(shot.start_s + shot.duration_s * (j + 1) / (n + 1), 3) for j in range(n)]


KEY_STEP_S = 0.1  # keyframes are taken from this grid (the nearest grid time to each wanted time)
KEY_MAX_SIDE = 256
KEY_POOL = 256  # grid frames kept from the analysis pass (~28 MB at 16:9): exact without seeking up to 25.6 s


class KeyframePool(FrameGrid):
    """Keyframe candidates collected during the analysis decode, so labels need no second pass.

    Keyframe times depend on the shots, which are known only after the pass, so the pool keeps frames on the
    0.1 s grid; when it holds more than ``capacity`` it drops every other one and samples half as often, so
    memory stays bounded on long clips. ``frames_for`` answers from the pool where it can and seeks for the
    rest: either way each time gets the frame of its nearest grid time, as a plain 10 fps decode would.
    """

    def __init__(self, duration_s: float, step: float = KEY_STEP_S, max_side: int = KEY_MAX_SIDE,
                 capacity: int = KEY_POOL):
        super().__init__(1.0 / step, max_side=max_side, end_s=duration_s)
        self.capacity = max(2, int(capacity))
        self.k = 0  # grid index of next_t
        self.stride = 1
        self.kept: dict[int, np.ndarray] = {}

    def advance(self) -> None:
        while True:  # the same accumulated grid times as a 10 fps decode, thinned to multiples of the stride
            self.k += 1
            super().advance()
            if self.next_t is None or self.k % self.stride == 0:
                return

    def add(self, t: float, img: np.ndarray) -> None:
        self.kept[self.k] = img
        if len(self.kept) > self.capacity:
            self.stride *= 2
            self.kept = {k: v for k, v in self.kept.items() if k % self.stride == 0}

    def grid(self) -> np.ndarray:
        """Accumulated grid times below the clip's end (as ``iter_frames`` produces them)."""
        times, t = [], 0.0
        while t < self.end_s:
            times.append(t)
            t += self.step
        return np.asarray(times)

    def frames_for(self, video: Path, times: list[float]) -> list[np.ndarray | None]:
        """The frame nearest each time (ties to the earlier grid time), from the pool or by seeking."""
        if not times:
            return []
        grid = self.grid()
        if self.seen_t is not None:  # grid times after the last frame have no frame (a decode never yields them)
            grid = grid[grid <= self.seen_t + 1e-6]
        if not len(grid):
            return [None] * len(times)
        ks = [int(np.argmin(np.abs(grid - w))) for w in times]
        missing = sorted({k for k in ks if k not in self.kept})
        if missing:
            fetch = FrameGrid(times=[float(grid[k]) for k in missing], max_side=self.max_side)
            got = {t: img for _, t, img in stream_frames(video, {"keys": fetch})}
            for k in missing:
                if float(grid[k]) in got:
                    self.kept[k] = got[float(grid[k])]
        have = sorted(self.kept)
        fallback = self.kept[have[0]] if have else None
        return [self.kept.get(k, fallback) for k in ks]


def outdoor_cue(frames: list[np.ndarray]) -> bool | None:
    """Open sky or vegetation in the picture: blue-dominant bright pixels in the upper third, or green-dominant
    pixels anywhere, over 15 % of the frame. A coarse cue, robust where ImageNet labels are not."""
    votes = []
    for img in frames:
        if img is None:
            continue
        x = np.asarray(img, dtype=np.float32) / 255.0
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        top = slice(0, max(1, x.shape[0] // 3))
        sky = ((b[top] > r[top] + 0.05) & (b[top] > 0.45)).mean()
        green = ((g > r + 0.04) & (g > b + 0.02) & (g > 0.2)).mean()
        votes.append(sky > 0.15 or green > 0.15)
    return None if not votes else sum(votes) * 2 >= len(votes)


def judge_shot(shot: Shot) -> None:
    """Name a specific source only when every keyframe's labels lead to the same rule with enough mass."""
    per_frame = [vocab.rank(frame) for frame in shot.labels if frame]
    if not per_frame:
        shot.specific, shot.why = None, "no image labels"
        return
    tops = [r[0][0] for r in per_frame]
    name = tops[0].name
    mass = float(np.mean([dict((r.name, m) for r, m in ranks).get(name, 0.0) for ranks in per_frame]))
    best = max((f[0] for f in shot.labels if f), key=lambda lab: lab[2])
    consistent = all(t.name == name for t in tops)
    enough = len(per_frame) >= SPECIFIC_MIN_FRAMES or mass >= 2 * SPECIFIC_MASS
    ok = consistent and enough and mass >= SPECIFIC_MASS and tops[0] is not vocab.FALLBACK
    shot.specific = tops[0] if ok else None
    shot.why = (f"{len(per_frame)} keyframes, top label '{best[1][0]}' {best[2]:.2f}; rule '{name}' "
                f"{mass:.2f}/frame{'' if consistent else ', keyframes disagree'}"
                f"{'' if ok else ' (weak: generic sounds)'}")


def _fmt_times(times: list[float], limit: int = _MAX_LISTED_TIMES) -> str:
    shown = ", ".join(f"{t:.1f}" for t in times[:limit])
    more = len(times) - limit
    return shown + (f" and {more} more" if more > 0 else "") + " s"


def _side_word(pan: float) -> str:
    return "left" if pan < -0.25 else "right" if pan > 0.25 else "centre"


class OfflineWatcher:
    name = NAME
    model_id = MODEL_ID

    def __init__(self, cache_dir: str | Path | None = None, fps: float = 25.0, max_side: int = 160,
                 max_frames: int = 12, frames_per_shot: int = 2, use_labels: bool = True, classifier=None):
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.fps, self.max_side = float(fps), int(max_side)
        self.max_frames, self.frames_per_shot = int(max_frames), int(frames_per_shot)
        self.use_labels = use_labels
        self._classifier = classifier  # anything with top_labels(frames, k); None → the shared EfficientNet

    # ---- loading -------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the image classifier now (idempotent), so a run can time loading apart from its rounds."""
        if self.use_labels and self._classifier is None:
            from reasoning.offline.labels import LabelerUnavailable, get_classifier

            try:
                self._classifier = get_classifier()
            except (LabelerUnavailable, ImportError, OSError, RuntimeError) as exc:
                log.warning("offline watcher: image labels unavailable (%s: %s)", type(exc).__name__, exc)

    # ---- perception ----------------------------------------------------------------------------------
    def _label(self, video: Path, shots: list[Shot], pool: KeyframePool | None) -> str:
        """Fill each shot's labels and rules; returns why labels are missing ('' when they are there)."""
        if not self.use_labels:
            return "labels disabled by config"
        times = [t for s in shots for t in s.keyframes]
        try:
            clf = self._classifier
            if clf is None:
                from reasoning.offline.labels import get_classifier

                clf = self._classifier = get_classifier()
            frames = pool.frames_for(video, times)
            k = 0
            for shot in shots:
                shot.outdoor = outdoor_cue(frames[k:k + len(shot.keyframes)])
                k += len(shot.keyframes)
            per_frame = iter(clf.top_labels(frames, k=5))
        except Exception as exc:  # noqa: BLE001 - any failure of the optional classifier degrades, never crashes
            log.warning("offline watcher: image labels unavailable (%s: %s); using generic sound words",
                        type(exc).__name__, exc)
            return f"{type(exc).__name__}: {exc}"
        for shot in shots:
            shot.labels = [[(lab.index, tuple(lab.synonyms), float(lab.prob)) for lab in next(per_frame)]
                           for _ in shot.keyframes]
        return ""

    # ---- plan writing --------------------------------------------------------------------------------
    def watch(self, video: Path, info: VideoInfo | None = None) -> WatchResult:
        video = Path(video)
        info = info or probe(video)
        duration = float(info.duration_s)
        # Keyframe candidates ride along on the analysis decode: one pass over the video for the whole watch.
        pool = KeyframePool(duration) if self.use_labels else None
        vis = analyze_video(video, info, fps=self.fps, max_side=self.max_side, cache_dir=self.cache_dir,
                            extra={"keys": pool} if pool else None,
                            on_frame=(lambda _name, t, img: pool.add(t, img)) if pool else None)
        shots = split_shots(duration, vis.cuts)
        plan_keyframes(shots, self.max_frames, self.frames_per_shot)
        missing = self._label(video, shots, pool)
        for shot in shots:
            shot.rules = vocab.rank(lab for frame in shot.labels for lab in frame)
            judge_shot(shot)
        top1 = [frame[0][2] for s in shots for frame in s.labels if frame]
        confidence = float(np.mean(top1)) if top1 else 0.0
        plan = self._plan(vis, shots, duration, confidence, bool(missing))
        meta = {
            "shots": [{"start_s": s.start_s, "end_s": s.end_s, "keyframes": s.keyframes,
                       "rules": [(r.name, round(m, 3)) for r, m in s.rules[:3]],
                       "labels": [[(syn[0], round(p, 3)) for _, syn, p in frame] for frame in s.labels]}
                      for s in shots],
            "label_confidence": round(confidence, 3),
            "specific": [s.specific.name if s.specific else None for s in shots],
            "outdoor": [s.outdoor for s in shots],
            "labels_missing": missing,
            "onsets": vis.onsets, "cuts": vis.cuts,
        }
        if self.cache_dir is not None:
            meta["analysis_path"] = str(analysis_cache_path(video, self.cache_dir, self.fps, self.max_side))
        return WatchResult(plan=plan, model_id=self.model_id, prompt_version=PROMPT_VERSION,
                           raw_output=json.dumps(meta, default=str), meta=meta)

    def _plan(self, vis: VisualAnalysis, shots: list[Shot], duration: float, confidence: float,
              missing: bool) -> Plan:
        events = self._events(vis, shots, duration, confidence)
        weights: dict[str, float] = {}
        for s in shots:  # the rules the sounds actually come from (generic where the labels were weak)
            weights[s.top.name] = weights.get(s.top.name, 0.0) + s.duration_s
        ranked = [vocab.rule(n) for n, _ in sorted(weights.items(), key=lambda kv: -kv[1])] or [vocab.FALLBACK]
        main = ranked[:2]
        uncertain = [f"{s.start_s:.1f}-{s.end_s:.1f} s: {s.why}"[:_EVIDENCE_MAX] for s in shots
                     if s.specific is None][:32]
        if missing:
            uncertain.insert(0, "no image labels: every sound is generic")
        if not any(e.kind == EventKind.impact for e in events):
            uncertain.append("no clear contact or abrupt change seen: no impacts planned")
        sections = self._sections(vis, shots, events, main, confidence, missing)
        plan = Plan(caption=self._caption(events, main), events=events, duration_s=duration,
                    negatives=vocab.negatives(main), uncertain=uncertain[:32],
                    provenance=Provenance(author="watcher", backend=NAME, model_id=MODEL_ID,
                                          prompt_version=PROMPT_VERSION),
                    **sections[0])
        for alt in sections[1:]:  # shorter wordings until the CoT fits T5's 77 tokens
            if plan.cot_budget_report()["fits"]:
                break
            plan = plan.model_copy(update=alt)
        return plan

    def _events(self, vis: VisualAnalysis, shots: list[Shot], duration: float, confidence: float) -> list[Event]:
        def shot_at(t: float) -> Shot:
            return next((s for s in shots if s.start_s <= t < s.end_s), shots[-1])

        events: list[Event] = []
        strongest = max(vis.onset_strengths, default=0.0)
        n_hit = 0
        for t, s in zip(*contacts(vis)):  # weak changes, first frames and codec pulses are not contacts
            if t >= duration:
                continue
            n_hit += 1
            rel = s / strongest if strongest > 0 else 0.0
            shot = shot_at(t)
            gain = float(np.clip(20 * math.log10(max(rel, 1e-3)), *IMPACT_GAIN_RANGE_DB)) - 2.0
            why = (f"visual onset at {t:.2f} s, strength {s:.3f} ({rel:.2f} of the clip's strongest); "
                   f"sound from {'labels: ' + shot.specific.name if shot.specific else 'coarse cues (generic)'}")
            events.append(Event(id=f"hit{n_hit}", label=shot.top.hit, kind=EventKind.impact,
                                start_s=round(t, 3), end_s=round(min(duration, t + _IMPACT_LEN_S), 3),
                                gain_db=round(gain, 1), pan=round(vis.balance_over(t - 0.1, t + 0.1), 2),
                                confidence=round(0.5 + 0.5 * rel, 2), evidence=why[:_EVIDENCE_MAX]))
        n = 0
        ref = float(np.percentile(vis.motion, 95)) if len(vis.motion) else 0.0
        for shot in shots:
            for a, b, level in self._movement_chunks(vis, shot, ref):
                n += 1
                why = f"motion energy {level:.2f} (of the clip's 95th percentile) over {a:.1f}-{b:.1f} s; {shot.why}"
                events.append(Event(id=f"move{n}", label=shot.top.move, kind=EventKind.continuous,
                                    start_s=round(a, 3), end_s=round(b, 3),
                                    gain_db=round(MOVE_TOP_DB + 10 * math.log10(level), 1),
                                    pan=round(vis.balance_over(a, b), 2),
                                    confidence=round(float(np.clip(0.3 + confidence, 0.0, 1.0)), 2),
                                    evidence=why[:_EVIDENCE_MAX]))
        for i, shot in enumerate(shots):
            cue = "outdoor" if shot.outdoor else "indoor" if shot.outdoor is not None else "unknown"
            why = f"shot {shot.start_s:.1f}-{shot.end_s:.1f} s, colours look {cue}; {shot.why}"
            events.append(Event(id=f"amb{i + 1}", label=shot.top.bed, kind=EventKind.ambience,
                                start_s=round(shot.start_s, 3), end_s=round(shot.end_s, 3), gain_db=BED_GAIN_DB,
                                pan=0.0, confidence=round(float(np.clip(confidence, 0.05, 1.0)), 2),
                                evidence=why[:_EVIDENCE_MAX]))
        return sorted(events, key=lambda e: (e.start_s, e.kind.value))

    @staticmethod
    def _movement_chunks(vis: VisualAnalysis, shot: Shot, ref: float) -> list[tuple[float, float, float]]:
        """(start, end, motion / ref) pieces of about MOVE_CHUNK_S where something moves, overlapping by
        MOVE_OVERLAP_S so their fades cross: the texture's level steps with the motion energy, not one flat level."""
        out = []
        if len(vis.times) == 0 or ref <= 1e-6:
            return out
        t = shot.start_s
        while t < shot.end_s - 0.1:
            b = min(shot.end_s, t + MOVE_CHUNK_S)
            if shot.end_s - b < 0.2:
                b = shot.end_s
            inside = (vis.times >= t) & (vis.times < b)
            level = min(1.0, float(vis.motion[inside].mean()) / ref) if inside.any() else 0.0
            if level >= MOVE_MIN_MOTION:
                out.append((max(shot.start_s, t - MOVE_OVERLAP_S / 2), min(shot.end_s, b + MOVE_OVERLAP_S / 2), level))
            t = b
        return out

    @staticmethod
    def _caption(events: list[Event], main: list[vocab.SoundRule]) -> str:
        """What one hears, most specific wording that fits CAPTION_MAX_WORDS."""
        hit = next((e.label for e in events if e.kind == EventKind.impact), "")
        move, bed = main[0].move, main[0].bed
        if hit and hit.split()[-1] in move:  # "footstep" + "footsteps": say it once
            hit = ""
        lead = f"{hit} and {move}" if hit else move
        for text in (f"{lead} over {bed}", lead, move):
            if len(text.split()) <= CAPTION_MAX_WORDS:
                return text
        return " ".join(move.split()[:CAPTION_MAX_WORDS])

    def _sections(self, vis: VisualAnalysis, shots: list[Shot], events: list[Event], main: list[vocab.SoundRule],
                  confidence: float, missing: bool) -> list[dict]:
        """Full wording first, then progressively shorter ones."""
        hits = [e for e in events if e.kind == EventKind.impact]
        moves = [e for e in events if e.kind == EventKind.continuous]
        hedge = " (guessed: no image labels)" if missing else \
            " (low-confidence labels)" if confidence < LOW_CONFIDENCE else ""
        srcs = "; ".join(dict.fromkeys(r.sources for r in main))
        hit_words = ", ".join(dict.fromkeys(e.label for e in hits[:3]))
        semantic_full = srcs + (f"; {hit_words} on impacts" if hit_words else "") + hedge
        semantic_short = main[0].sources + hedge

        t_parts = []
        if hits:
            t_parts.append(f"hits at {_fmt_times([e.start_s for e in hits])}")
        if moves:
            t_parts.append("movement " + ", ".join(f"{e.start_s:.1f}-{e.end_s:.1f} s" for e in moves[:3]))
        if vis.cuts and len(shots) > 1:
            t_parts.append(f"scene changes at {_fmt_times([s.start_s for s in shots[1:]])}")
        temporal_full = "; ".join(t_parts) if t_parts else "steady, nothing sudden"
        temporal_alts = [temporal_full]
        if hits:
            temporal_alts += [f"hits at {_fmt_times([e.start_s for e in hits], n)}" for n in (_MAX_LISTED_TIMES, 3)]
            temporal_alts.append(f"{len(hits)} hits from {hits[0].start_s:.1f} s")
        else:
            temporal_alts.append(temporal_full.split(";")[0])

        total = sum(s.duration_s for s in shots)
        outdoor = sum(s.duration_s for s in shots if s.top.outdoor) >= 0.5 * total
        hard = sum(s.duration_s for s in shots if s.top.hard) >= 0.5 * total
        texture = "crisp, punchy transients" if hard else "soft, natural detail"
        aesthetic = f"{texture} over {'a light outdoor' if outdoor else 'a quiet, dry'} bed, close-miked"

        if hits:
            sides = [_side_word(e.pan) for e in hits]
            if len(set(sides)) == 1:
                spatial = f"hits on the {sides[0]}" if sides[0] != "centre" else "hits centred"
            elif all(a != b for a, b in zip(sides, sides[1:])):
                spatial = "hits alternate " + " and ".join(dict.fromkeys(sides))
            else:
                spatial = "hits mostly " + Counter(sides).most_common(1)[0][0]
        elif moves:
            spatial = f"movement mostly {_side_word(vis.balance_over(0.0, vis.duration_s))}"
        else:
            spatial = "nothing moves; a wide, centred bed"
        for m in moves[:1]:
            a, b = vis.balance_over(m.start_s, m.start_s + 0.5), vis.balance_over(m.end_s - 0.5, m.end_s)
            if abs(b - a) > 0.4:
                spatial += f"; motion crosses {_side_word(a)} to {_side_word(b)}"
        # Timing is what vision measures best, so the sound words shrink first and the times last.
        full = {"semantic": semantic_full, "temporal": temporal_full, "aesthetic": aesthetic, "spatial": spatial}
        terse = dict(full, semantic=semantic_short, spatial=spatial.split(";")[0])
        shorter = dict(terse, aesthetic=texture)
        return [full, terse, shorter] + [dict(shorter, temporal=t) for t in temporal_alts[1:]]


def _opts(cfg: BackendOptions) -> dict:
    o = dict(cfg.params)
    return {"cache_dir": o.get("cache_dir"), "fps": float(o.get("fps", 25.0)), "max_side": int(o.get("max_side", 160)),
            "max_frames": int(o.get("max_frames", 12)), "frames_per_shot": int(o.get("frames_per_shot", 2)),
            "use_labels": bool(o.get("labels", True))}


def make(cfg: BackendOptions) -> OfflineWatcher:
    return OfflineWatcher(**_opts(cfg))


def describe(cfg: BackendOptions) -> dict:
    from reasoning.offline import labels

    lab = labels.describe()
    why = "" if lab["available"] else f"runs without image labels: {lab['why']}"
    return {"available": True, "where": lab.get("where") or "embedded (motion analysis only)", "why": why,
            "model_id": MODEL_ID, "license": f"code Apache-2.0; EfficientNet-Lite0 weights {labels.LICENSE}"}
