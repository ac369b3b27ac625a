"""Segments of a long or multi-shot video: what part of the timeline each render covers, and how a whole plan is
cut into per-segment plans and put back together.

Renderers have a window (ThinkSound ≈ 9 s; the offline mixer a configured length), so a long video is rendered
segment by segment and the pieces are joined with crossfades. Segments tile the timeline: segment k owns
``[start_s, end_s)``; its render window reaches ``xfade_in_s / 2`` before and ``xfade_out_s / 2`` after, and
neighbours overlap by the crossfade. An event belongs to the one segment where it starts (rendered once); a bed
that goes on past its segment is rendered, clipped, in the following segments of the same scene as well.

Pure data and arithmetic: no audio, no video, no backend.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING, Annotated, Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from contract.plan import Event, Plan

Num = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Int = Annotated[int, Field(strict=True)]

MAX_SEGMENTS = 2000  # 1 h at 2 s a segment: more is a malformed plan, not a video
TILE_TOLERANCE_S = 1e-3
BED_KINDS = ("ambience", "continuous", "music")
ROLL_S = 0.5  # rendered beyond each crossfade and dropped at the join: a renderer's own edge fades land there
OWNER_TOLERANCE_S = 0.005  # well under a video frame
EDGE_S = 0.25  # a bed that starts/ends this close to a boundary is carried through it
SECTION_NAMES = ("semantic", "temporal", "aesthetic", "spatial")


class Segment(BaseModel):
    """One stretch of the timeline rendered in one window (times in seconds of the whole video)."""

    model_config = ConfigDict(extra="forbid")

    index: Int = Field(ge=0)
    start_s: Num = Field(ge=0.0)
    end_s: Num = Field(gt=0.0)
    xfade_in_s: Num = Field(default=0.0, ge=0.0, le=10.0)  # overlap with the previous segment, centred on start_s
    xfade_out_s: Num = Field(default=0.0, ge=0.0, le=10.0)  # overlap with the next one, centred on end_s
    cut: bool = False  # start_s is a shot cut (else the start of the video or a sub-split of one long shot)
    scene: Int = Field(default=0, ge=0)  # neighbours with one scene number continue their beds across the boundary
    # Per-segment rewrites by the refiner (empty: the plan's own); the renderer's caption and CoT for this window.
    caption: str = Field(default="", max_length=200)
    sections: dict[str, str] = Field(default_factory=dict)
    seed: Int | None = Field(default=None, ge=0)  # render seed of this segment (None: the round's)
    extras: dict[str, Any] = Field(default_factory=dict)  # provenance extras for this window (render options...)

    @model_validator(mode="after")
    def _ordered(self) -> "Segment":
        if self.end_s <= self.start_s:
            raise ValueError(f"segment {self.index}: end_s {self.end_s} <= start_s {self.start_s}")
        for k, v in self.sections.items():
            if k not in SECTION_NAMES:
                raise ValueError(f"segment {self.index}: unknown section {k!r}")
            if len(v) > 2000:
                raise ValueError(f"segment {self.index}: section {k} is over 2000 characters")
        return self

    @property
    def window_start_s(self) -> float:
        return max(0.0, self.start_s - self.xfade_in_s / 2)

    @property
    def window_end_s(self) -> float:
        return self.end_s + self.xfade_out_s / 2

    @property
    def window_s(self) -> float:
        return self.window_end_s - self.window_start_s

    @property
    def render_start_s(self) -> float:
        """Where this segment's render starts: its window less a pre-roll that the join drops."""
        return max(0.0, self.window_start_s - (ROLL_S if self.xfade_in_s > 0 else 0.0))

    @property
    def render_end_s(self) -> float:
        return self.window_end_s + (ROLL_S if self.xfade_out_s > 0 else 0.0)

    @property
    def render_s(self) -> float:
        return self.render_end_s - self.render_start_s

    def span_text(self) -> str:
        return f"{self.start_s:.2f}–{self.end_s:.2f} s"


def check_tiling(segments: Sequence[Segment], duration_s: float) -> None:
    """Segments must cover [0, duration] in order, without gaps, and agree on their shared crossfades."""
    if not segments:
        raise ValueError("segments: an empty list (leave the field out for an unsegmented plan)")
    if len(segments) > MAX_SEGMENTS:
        raise ValueError(f"{len(segments)} segments, over the limit of {MAX_SEGMENTS}")
    if abs(segments[0].start_s) > TILE_TOLERANCE_S or abs(segments[-1].end_s - duration_s) > TILE_TOLERANCE_S:
        raise ValueError(f"segments must span 0–{duration_s:g} s, they span "
                         f"{segments[0].start_s:g}–{segments[-1].end_s:g} s")
    if segments[0].xfade_in_s or segments[-1].xfade_out_s:
        raise ValueError("the first segment has no crossfade in and the last none out")
    for i, s in enumerate(segments):
        if s.index != i:
            raise ValueError(f"segment {i} has index {s.index}")
    for a, b in zip(segments[:-1], segments[1:]):
        if abs(a.end_s - b.start_s) > TILE_TOLERANCE_S:
            raise ValueError(f"segments {a.index} and {b.index} leave a gap or overlap at {a.end_s:g} s")
        if abs(a.xfade_out_s - b.xfade_in_s) > 1e-6:
            raise ValueError(f"segments {a.index} and {b.index} disagree on their crossfade")
        if a.xfade_out_s > min(a.end_s - a.start_s, b.end_s - b.start_s):
            raise ValueError(f"the crossfade between segments {a.index} and {b.index} is longer than a segment")


# ---- splitting the timeline --------------------------------------------------------------------------------
def split(duration_s: float, cuts: Sequence[float], max_s: float, *, cues: Sequence[str] | None = None,
          min_s: float = 3.0, cut_xfade_s: float = 0.05, scene_xfade_s: float = 0.25, split_xfade_s: float = 1.0,
          avoid: Sequence[float] = ()) -> list[Segment]:
    """Segments at shot cuts; shots shorter than ``min_s`` join their neighbour; a shot too long for one window of
    ``max_s`` seconds is sub-split evenly with ``split_xfade_s`` of overlap, the split points nudged off the times
    in ``avoid`` (impacts) so that no impact sits in a crossfade. ``cues`` (one coarse description per shot, e.g.
    its top label) set the scenes: a cut between shots with the same cue keeps the scene (beds continue, a
    ``scene_xfade_s`` crossfade), a cut to another cue starts a new one (a short ``cut_xfade_s``).
    """
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration {duration_s!r} is not a positive number of seconds")
    if max_s <= split_xfade_s + 2 * ROLL_S + 1.0:
        raise ValueError(f"a segment window of {max_s:g} s is too short (crossfades and pre-rolls take "
                         f"{split_xfade_s + 2 * ROLL_S:g} s)")
    edges = [0.0] + sorted(c for c in cuts if 0.0 < c < duration_s) + [duration_s]
    shot_cues = list(cues) if cues is not None and len(cues) == len(edges) - 1 else ["" for _ in edges[:-1]]
    shots = [(a, b, c) for a, b, c in zip(edges[:-1], edges[1:], shot_cues)]
    merged: list[list] = []  # [start, end, cue]: short shots go to their neighbour
    for a, b, c in shots:
        if merged and (b - a < min_s or merged[-1][1] - merged[-1][0] < min_s):
            merged[-1][1] = b
        else:
            merged.append([a, b, c])
    if len(merged) > 1 and merged[-1][1] - merged[-1][0] < min_s:
        merged[-2][1] = merged.pop()[1]
    avoid = sorted(avoid)
    core_max = max_s - split_xfade_s - 2 * ROLL_S
    pieces: list[tuple[float, float, bool, str]] = []  # start, end, starts at a cut, cue
    for i, (a, b, c) in enumerate(merged):
        n = max(1, math.ceil((b - a) / core_max - 1e-9))
        bounds = [a] + [_nudge(a + (b - a) * j / n, avoid, split_xfade_s, a, b, core_max) for j in range(1, n)] + [b]
        for j in range(n):
            pieces.append((bounds[j], bounds[j + 1], j == 0 and i > 0, c))
    scene, out = 0, []
    for k, (a, b, is_cut, c) in enumerate(pieces):
        if k == 0:
            xin = 0.0
        elif is_cut:
            same = bool(c) and c == pieces[k - 1][3]
            scene += 0 if same else 1
            xin = scene_xfade_s if same else cut_xfade_s
        else:
            xin = split_xfade_s
        out.append(dict(index=k, start_s=round(a, 4), end_s=round(b, 4), xfade_in_s=xin, cut=is_cut, scene=scene))
    for k in range(len(out) - 1):
        out[k]["xfade_out_s"] = out[k + 1]["xfade_in_s"]
    out[-1]["end_s"] = float(duration_s)
    return [Segment(**s) for s in out]


def _nudge(t: float, avoid: Sequence[float], xfade: float, lo: float, hi: float, core_max: float) -> float:
    """The split point nearest ``t`` (within a quarter window) whose crossfade holds none of the ``avoid`` times."""
    guard = xfade / 2 + 0.3
    reach = core_max / 4
    for step in range(0, 41):
        for sign in (1, -1):
            c = t + sign * reach * step / 40
            if lo + xfade < c < hi - xfade:
                i = bisect.bisect_left(avoid, c - guard)
                if i >= len(avoid) or avoid[i] > c + guard:
                    return c
    return t


# ---- a plan cut into segments and put back ------------------------------------------------------------------
def owner_of(segments: Sequence[Segment], t: float) -> int:
    """Index of the segment that owns time ``t`` (start_s <= t < end_s; the last one owns its end). Plan times are
    rounded more coarsely than boundaries, so ``t`` within ``OWNER_TOLERANCE_S`` before a boundary is the next
    segment's: a bed the watcher starts "at the cut" must not be cut off at the end of the previous segment."""
    starts = [s.start_s for s in segments]
    return max(0, min(len(segments) - 1, bisect.bisect_right(starts, t + OWNER_TOLERANCE_S) - 1))


def owners(plan: "Plan") -> dict[str, int]:
    """event id → owning segment: where the event starts, so an event across a boundary is rendered once."""
    segs = plan.segments or []
    return {e.id: owner_of(segs, e.start_s) for e in plan.events} if segs else {}


def _is_bed(e: "Event") -> bool:
    return str(getattr(e.kind, "value", e.kind)) in BED_KINDS


def _filter_extras(extras: dict, keep_ids: set[str], all_ids: set[str]) -> dict:
    """Provenance extras for a sub-plan: a mapping keyed by event ids (sample variants...) keeps its own ids only."""
    out = {}
    for k, v in extras.items():
        if isinstance(v, dict) and v and set(map(str, v)) <= all_ids:
            v = {i: x for i, x in v.items() if str(i) in keep_ids}
            if not v:
                continue
        out[k] = v
    return out


def sub_plan(plan: "Plan", k: int) -> "Plan":
    """The plan of segment ``k`` in its own time (0 = the start of its render, pre-roll included): its own events,
    the beds of earlier segments of the same scene that are still sounding, its caption and sections, its
    provenance extras. A bed that reaches a boundary is carried through the crossfade and the roll beyond it."""
    from contract.plan import Plan

    segs = plan.segments or []
    seg = segs[k]
    a, b = seg.render_start_s, seg.render_end_s
    first, last = k == 0, k == len(segs) - 1
    own = owners(plan)
    events = []
    for e in plan.events:
        j = own[e.id]
        if j == k or (j < k and _is_bed(e) and e.end_s > seg.start_s and all(s.scene == seg.scene for s in segs[j:k])):
            if not _is_bed(e):
                start, end = e.start_s - a, e.end_s - a
            else:
                start = 0.0 if (j < k or (not first and e.start_s <= seg.start_s + EDGE_S)) else e.start_s - a
                end = b - a if (not last and e.end_s >= seg.end_s - EDGE_S) else min(b, e.end_s) - a
        else:
            continue
        start = max(0.0, start)
        events.append(e.model_copy(update={"start_s": round(start, 4), "end_s": round(max(start, end), 4)}))
    ids = {e.id for e in events}
    extras = _filter_extras(dict(plan.provenance.model_extra or {}), ids, set(own)) | seg.extras
    declared = {f: getattr(plan.provenance, f) for f in type(plan.provenance).model_fields}
    prov = declared | extras | {"segment": k}
    sections = {n: seg.sections.get(n, getattr(plan, n)) for n in SECTION_NAMES}
    return Plan.model_validate({
        "schema_version": plan.schema_version, "plan_id": f"{plan.plan_id[:40]}-s{k}",
        "caption": seg.caption or plan.caption, **sections, "events": [e.model_dump() for e in events],
        "negatives": list(plan.negatives), "duration_s": round(b - a, 6), "provenance": prov},
        context={"stored": True})


def merge(plan: "Plan", k: int, refined: "Plan", seed: int | None = None) -> "Plan":
    """``plan`` with segment ``k`` replaced by ``refined`` (a rewrite of ``sub_plan(plan, k)``): the events ``k``
    owns (and any the refiner added) come back to the video's time; other segments' events, and changes made to
    beds borrowed from earlier segments, are left alone. New caption/sections/extras/seed go on the segment."""
    segs = list(plan.segments or [])
    seg = segs[k]
    a = seg.render_start_s
    own = owners(plan)
    base = sub_plan(plan, k)
    before = {e.id: e for e in base.events}
    original = {e.id: e for e in plan.events}
    borrowed = {e.id for e in base.events if own[e.id] != k}
    taken = {e.id for e in plan.events if own[e.id] != k}
    kept = [e for e in plan.events if own[e.id] != k]
    new_events = []
    for e in refined.events:
        if e.id in borrowed:
            continue
        eid = e.id
        while eid in taken:  # a refiner's new id that another segment already uses
            eid = (eid + "s")[-64:] if len(eid) < 64 else eid[:-1] + "s"
        old, was = before.get(e.id), original.get(e.id)
        # Times the refiner left alone keep the video's own values (a bed carried through a boundary was stretched);
        # a segment's refiner edits its own span only: what it adds in a roll or crossfade is its neighbour's.
        if old is not None and e.start_s == old.start_s:
            start = was.start_s
        elif old is None and not seg.start_s <= e.start_s + a < seg.end_s:
            continue
        else:
            start = min(max(e.start_s + a, seg.start_s), seg.end_s - 1e-3)
        taken.add(eid)
        end = was.end_s if old is not None and e.end_s == old.end_s else start + (e.end_s - e.start_s)
        new_events.append(e.model_copy(update={"id": eid, "start_s": round(start, 4),
                                               "end_s": round(max(start, end), 4)}))
    update: dict[str, Any] = {}
    if refined.caption != base.caption:
        update["caption"] = refined.caption
    sections = {n: getattr(refined, n) for n in SECTION_NAMES if getattr(refined, n) != getattr(base, n)}
    if sections:
        update["sections"] = seg.sections | sections
    base_extras = base.provenance.model_extra or {}
    new_extras = {x: v for x, v in (refined.provenance.model_extra or {}).items()
                  if x != "segment" and base_extras.get(x) != v}
    if new_extras:
        update["extras"] = seg.extras | new_extras
    if seed is not None:
        update["seed"] = seed
    segs[k] = seg.model_copy(update=update)
    events = sorted(kept + new_events, key=lambda e: (e.start_s, e.id))
    return plan.model_copy(update={"events": events, "segments": segs})
