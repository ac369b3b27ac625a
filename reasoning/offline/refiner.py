"""The offline refiner: deterministic rules that act on the critic's hints.

Only findings of the failing dimensions are acted on, and only those dimensions' text sections are
rewritten (from the edited events); every other section is kept verbatim (cot.md refinement rule 2).
The seed is kept: a round differs from the one it starts from by the plan's edit alone (a new seed alone would
be a change no listener asked for, and one the independent measures cannot tell from noise).

Hints understood (produced by ``reasoning.offline.critic``):
  shift_all {by_s}                      every non-ambience event moves by by_s
  drop_or_shift {event, to_s?}          move the event to to_s, or drop it when no visual hit is near
  add_event {time_s, pan, near_event?}  move near_event there (or raise it if already there), else add an impact
  gain {by_db} / gain_event {event, by_db}
  pan {event, to}
  swap_sample {event}                   ``provenance.sample_variants[event] += 1``: the renderer takes the
                                        k-th best sample for that event's label (k = 0 is its normal choice)
  dc_block                              ``provenance.render_options["dc_block"] = True``: high-pass the mix
  gain_event (temporal)                 a layer that masks the impacts is softened

Rounds must matter (issue 9): the candidate moves are, in order, the hints' edits, "make doubtful sources
generic" (when semantic fails) and "soften the layers under the impacts" (when temporal fails). A move whose audio
would be inaudibly different from the plan it starts from is skipped; a refine asked again from the same plan
(the round it made before was not kept) takes the next audible move; when none is left the result carries
``stop`` with the reason, and the loop ends without rendering it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from contract.options import BackendOptions
from reasoning.offline import vocabulary as vocab
from contract.plan import DIMENSIONS, Critique, Event, EventKind, Plan
from contract.protocols import RefineResult
from store.media import VideoInfo

log = logging.getLogger(__name__)

NAME = "offline"
MODEL_ID = "offline-rules"
PROMPT_VERSION = "offline-rules-1"
GAIN_MIN, GAIN_MAX = -60.0, 12.0
ADDED_HIT_DB = -6.0       # an impact added where the plan had none to copy from
ALREADY_THERE_S = 0.03   # add_event on an event already at that time means it was inaudible: raise it
INAUDIBLE_BOOST_DB = 6.0
# Smallest changes a listener notices (level ~1 dB, timing ~10 ms, placement ~0.1 of the pan range).
AUDIBLE_DB, AUDIBLE_S, AUDIBLE_PAN = 1.0, 0.01, 0.1
SOFTEN_LAYERS_DB = -6.0
LAYER_FLOOR_DB = -18.0  # layers are not stepped back further than this
_GENERIC_LABELS = {lab for r in vocab.GENERIC for lab in (r.hit, r.move, r.bed)}
_OUTDOOR_WORDS = ("outdoor", "breeze", "wind", "meadow", "street", "field", "bird", "forest", "shore", "yard", "sky",
                  "traffic", "harbour", "open")
AESTHETIC_PHRASES = {
    "clip": "clean peaks without distortion",
    "quieter": "controlled level",
    "louder": "full, present level",
    "audible": "every sound clearly audible",
}


# ---- section text -------------------------------------------------------------------------------------
def _t(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _by_label(events: list[Event]) -> dict[str, list[Event]]:
    groups: dict[str, list[Event]] = {}
    for e in sorted(events, key=lambda e: e.start_s):
        groups.setdefault(e.label, []).append(e)
    return groups


def _listed(items: list[str], max_items: int) -> list[str]:
    return items if len(items) <= max_items else items[:max_items] + [f"{len(items) - max_items} more"]


def temporal_text(events: list[Event], duration_s: float, max_items: int = 6) -> str:
    """Order and timing in words, from the events."""
    parts = []
    for label, evs in _by_label(events).items():
        kind = evs[0].kind
        if kind == EventKind.ambience or (evs[0].start_s <= 0.05 and evs[0].end_s >= duration_s - 0.05):
            parts.append(f"{label} throughout")
        elif kind == EventKind.impact:
            times = _listed([_t(e.start_s) for e in evs], max_items)
            parts.append(f"{label} at {_join(times)} s")
        else:
            spans = _listed([f"{_t(e.start_s)}-{_t(e.end_s)}" for e in evs], max_items)
            parts.append(f"{label} {_join(spans)} s")
    return "; ".join(parts)


def pan_word(p: float) -> str:
    if p <= -0.6:
        return "hard left"
    if p < -0.2:
        return "left"
    if p <= 0.2:
        return "centre"
    return "right" if p < 0.6 else "hard right"


def spatial_text(events: list[Event], max_items: int = 6) -> str:
    """Position per event, from the pans."""
    parts = []
    for label, evs in _by_label(events).items():
        if evs[0].kind == EventKind.ambience:
            parts.append(f"{label} wide")
            continue
        words = [pan_word(e.pan) for e in evs]
        if len(set(words)) == 1:
            parts.append(f"{label} {words[0]}")
        else:
            parts.append(f"{label} " + ", ".join(_listed([f"{w} at {_t(e.start_s)} s" for w, e in zip(words, evs)],
                                                         max_items)))
    return "; ".join(parts)


def semantic_text(events: list[Event]) -> str:
    return ", ".join(_by_label(events)) if events else ""


def aesthetic_text(original: str, moods: list[str]) -> str:
    """The original words minus phrases an earlier round added, plus this round's."""
    kept = [p.strip() for p in original.split(",") if p.strip() and p.strip() not in AESTHETIC_PHRASES.values()]
    # "full, present level" contains a comma: drop its halves too
    kept = [p for p in kept if p not in ("full", "present level")]
    added = [AESTHETIC_PHRASES[m] for m in dict.fromkeys(moods)]
    return ", ".join(kept + added)


# ---- rules --------------------------------------------------------------------------------------------
class _Edit:
    """Mutable working copy of the events with a log of what changed."""

    def __init__(self, plan: Plan, round_index: int):
        self.plan = plan
        self.events: dict[str, dict] = {e.id: e.model_dump() for e in plan.events}
        self.order = [e.id for e in plan.events]
        self.changes: list[str] = []
        self.touched: set[str] = set()           # dimensions whose content changed
        self.moods: list[str] = []
        self.variants: dict[str, int] = dict(getattr(plan.provenance, "sample_variants", None) or {})
        self.render_options: dict = dict(getattr(plan.provenance, "render_options", None) or {})
        self.round = round_index
        self._added = 0

    def move(self, eid: str, start: float, why: str) -> None:
        e = self.events[eid]
        start = min(max(0.0, start), self.plan.duration_s)
        length = e["end_s"] - e["start_s"]
        old = e["start_s"]
        e["start_s"], e["end_s"] = round(start, 4), round(start + length, 4)
        self.changes.append(f"temporal: moved '{e['label']}' ({eid}) {old:.2f}s -> {start:.2f}s ({why})")
        self.touched.add("temporal")

    def gain(self, eid: str, by_db: float, dim: str, why: str) -> None:
        e = self.events[eid]
        new = min(GAIN_MAX, max(GAIN_MIN, e["gain_db"] + by_db))
        clamp = "" if abs(new - (e["gain_db"] + by_db)) < 1e-9 else f", clamped to {new:+.1f} dB"
        self.changes.append(f"{dim}: gain of '{e['label']}' ({eid}) {e['gain_db']:+.1f} -> {new:+.1f} dB ({why}{clamp})")
        e["gain_db"] = round(new, 2)
        self.touched.add(dim)

    def gain_all(self, by_db: float, dim: str, why: str) -> None:
        clamped = []
        for e in self.events.values():
            new = min(GAIN_MAX, max(GAIN_MIN, e["gain_db"] + by_db))
            if abs(new - (e["gain_db"] + by_db)) > 1e-9:
                clamped.append(e["id"])
            e["gain_db"] = round(new, 2)
        extra = f" (clamped to {GAIN_MIN:+.0f}..{GAIN_MAX:+.0f} dB for {', '.join(clamped)})" if clamped else ""
        self.changes.append(f"{dim}: overall gain {by_db:+.1f} dB ({why}){extra}")
        self.touched.add(dim)

    def add(self, time_s: float, pan: float) -> str:
        impacts = [e for e in self.events.values() if e["kind"] == EventKind.impact]
        if impacts:
            near = min(impacts, key=lambda e: abs(e["start_s"] - time_s))
            label, length, gain = near["label"], max(0.05, near["end_s"] - near["start_s"]), near["gain_db"]
        else:  # nothing to borrow from: the generic hit, a little under full level (when in doubt, understate)
            label, length, gain = _generic_label(EventKind.impact, _outdoor(self)), 0.25, ADDED_HIT_DB
        self._added += 1
        eid = f"r{self.round}a{self._added}"
        while eid in self.events:
            eid += "x"
        start = min(max(0.0, time_s), self.plan.duration_s)
        self.events[eid] = Event(id=eid, label=label, kind=EventKind.impact, start_s=round(start, 4),
                                 end_s=round(start + length, 4), gain_db=gain, pan=max(-1.0, min(1.0, pan)),
                                 confidence=0.6).model_dump()
        self.order.append(eid)
        self.changes.append(f"temporal: added '{label}' ({eid}) at {start:.2f}s, pan {pan:+.2f} (visible impact without sound)")
        self.touched.add("temporal")
        return eid

    def drop(self, eid: str, why: str) -> None:
        e = self.events.pop(eid)
        self.order.remove(eid)
        self.changes.append(f"temporal: dropped '{e['label']}' ({eid}) at {e['start_s']:.2f}s ({why})")
        self.touched.add("temporal")  # a sync decision: a semantic score that moves with it is a side effect

    def result_events(self) -> list[Event]:
        return [Event.model_validate(self.events[i]) for i in self.order]


def _apply_temporal(ed: _Edit, hints: list[dict]) -> None:
    for h in hints:  # a layer that masks the impacts
        if h.get("action") == "gain_event" and h.get("event") in ed.events:
            ed.gain(h["event"], float(h["by_db"]), "temporal", str(h.get("reason", "it masks the impacts"))[:80])
    for h in (h for h in hints if h.get("action") == "shift_all"):
        by = float(h["by_s"])
        for eid in ed.order:
            e = ed.events[eid]
            if e["kind"] != EventKind.ambience:
                start = min(max(0.0, e["start_s"] + by), ed.plan.duration_s)
                e["end_s"] = round(max(start, e["end_s"] + by), 4)
                e["start_s"] = round(start, 4)
        ed.changes.append(f"temporal: shifted every event by {by:+.3f}s (consistent audio/video lag)")
        ed.touched.add("temporal")
        break  # one global shift per round
    moved: dict[str, float] = {}
    for h in hints:
        if h.get("action") == "drop_or_shift" and h.get("event") in ed.events and h.get("to_s") is not None:
            ed.move(h["event"], float(h["to_s"]), "its sound matched no visible impact; one is there")
            moved[h["event"]] = float(h["to_s"])
    for h in hints:
        if h.get("action") != "add_event":
            continue
        t, near = float(h["time_s"]), h.get("near_event")
        if near in moved and abs(moved[near] - t) < 1e-6:
            continue
        if near in ed.events:
            if abs(ed.events[near]["start_s"] - t) <= ALREADY_THERE_S:
                ed.gain(near, INAUDIBLE_BOOST_DB, "temporal", "in place but not heard")
            else:
                ed.move(near, t, "nearest event for a visible impact without sound")
            moved[near] = t
        else:
            ed.add(t, float(h.get("pan", 0.0)))
    for h in hints:
        if h.get("action") == "drop_or_shift" and h.get("event") in ed.events and h["event"] not in moved:
            ed.drop(h["event"], "its sound matched no visible impact")


def _apply(ed: _Edit, dim: str, hints: list[dict]) -> None:
    if dim == "temporal":
        _apply_temporal(ed, hints)
        return
    swapped: set[str] = set()
    for h in hints:
        action, eid = h.get("action"), h.get("event")
        if action == "gain":
            ed.gain_all(float(h["by_db"]), dim, h.get("reason", "loudness"))
            ed.moods.append("clip" if h.get("reason") in ("clip", "true_peak")
                            else "louder" if float(h["by_db"]) > 0 else "quieter")
        elif action == "gain_event" and eid in ed.events:
            by = float(h["by_db"])
            ed.gain(eid, by, dim, "event level")
            ed.moods.append("audible" if by > 0 else "clip")
        elif action == "pan" and eid in ed.events:
            e = ed.events[eid]
            to = max(-1.0, min(1.0, float(h["to"])))
            ed.changes.append(f"{dim}: pan of '{e['label']}' ({eid}) {e['pan']:+.2f} -> {to:+.2f} (follow the picture)")
            e["pan"] = round(to, 3)
            ed.touched.add(dim)
        elif action == "swap_sample" and eid in ed.events and ed.events[eid]["label"] in _GENERIC_LABELS:
            continue  # a generic sound is generic on purpose: another take of it fixes no doubt about the source
        elif action == "swap_sample" and eid in ed.events and eid not in swapped:
            swapped.add(eid)
            k = ed.variants.get(eid, 0) + 1
            ed.variants[eid] = k
            ed.changes.append(f"{dim}: '{ed.events[eid]['label']}' ({eid}) uses sample variant {k} "
                              f"({h.get('reason', 'did not sound like its label')})")
            if h.get("reason") == "silent":
                ed.moods.append("audible")
            ed.touched.add(dim)
        elif action == "make_generic" and eid in ed.events:
            _make_generic(ed, {ed.events[eid]["label"]})
        elif action == "dc_block" and not ed.render_options.get("dc_block"):
            ed.render_options["dc_block"] = True
            ed.changes.append(f"{dim}: asked the renderer to high-pass the mix (DC offset)")
            ed.touched.add(dim)


def _generic_label(kind: EventKind, outdoor: bool) -> str | None:
    rule = vocab.GENERIC_OUTDOOR if outdoor else vocab.GENERIC_INDOOR
    return {EventKind.impact: rule.hit, EventKind.continuous: rule.move, EventKind.ambience: rule.bed}.get(kind)


def _outdoor(ed: _Edit) -> bool:
    beds = " ".join(e["label"] for e in ed.events.values() if e["kind"] == EventKind.ambience).lower()
    return any(w in beds for w in _OUTDOOR_WORDS)


def _make_generic(ed: _Edit, labels: set[str] | None = None) -> None:
    """Doubtful specific sources become generic sounds that cannot be wrong in kind (speech and music stay).
    With ``labels`` (the critic heard those sources without support in the picture) only their events change:
    every event of a doubted label, since they share its sample; specific sources the critic did not doubt stay."""
    outdoor = _outdoor(ed)
    generic = _GENERIC_LABELS
    for eid in ed.order:
        e = ed.events[eid]
        if labels is not None and e["label"] not in labels:
            continue
        new = _generic_label(EventKind(e["kind"]), outdoor)
        if new and e["label"] not in generic:
            ed.changes.append(f"semantic: '{e['label']}' ({eid}) -> generic '{new}' (the specific source is doubtful)")
            e["label"] = new
            ed.touched.add("semantic")


def _soften_layers(ed: _Edit) -> None:
    """The layers under the impacts step back, so the contacts carry the timing. Asked of the renderer as
    ``render_options["layers_db"]`` (applied after its gain staging, which would undo a change of event gains)."""
    if not any(e["kind"] in (EventKind.continuous, EventKind.ambience) for e in ed.events.values()):
        return
    now = float(ed.render_options.get("layers_db") or 0.0)
    new = max(LAYER_FLOOR_DB, now + SOFTEN_LAYERS_DB)
    if new < now:
        ed.render_options["layers_db"] = new
        ed.changes.append(f"temporal: movement and beds {now:+.0f} -> {new:+.0f} dB under the impacts "
                          "(layers under the impacts step back)")
        ed.touched.add("temporal")


def _signature(events: list[Event]) -> dict[str, tuple]:
    return {e.id: (e.label, e.kind.value, e.start_s, e.end_s, e.gain_db, e.pan) for e in events}


def audible_change(old: Plan, events: list[Event], variants: dict, render_options: dict, seed: int,
                   old_seed: int) -> bool:
    """Whether rendering ``events`` (with these variants/options/seed) would sound different from ``old``."""
    if seed != old_seed:
        return True
    extra = old.provenance.model_extra or {}
    if dict(extra.get("sample_variants") or {}) != dict(variants) or \
            dict(extra.get("render_options") or {}) != dict(render_options):
        return True
    a, b = _signature(old.events), _signature(events)
    if a.keys() != b.keys():
        return True
    for k, (label, kind, start, end, gain, pan) in a.items():
        l2, k2, s2, e2, g2, p2 = b[k]
        if (label, kind) != (l2, k2) or abs(start - s2) >= AUDIBLE_S or abs(end - e2) >= AUDIBLE_S \
                or abs(gain - g2) >= AUDIBLE_DB or abs(pan - p2) >= AUDIBLE_PAN:
            return True
    return False


class OfflineRefiner:
    """Refiner protocol implementation (deterministic, no model)."""

    name = NAME
    model_id = MODEL_ID

    def _moves(self, plan: Plan, critique: Critique, failing: list[str], round_index: int):
        """Candidate edits, in order of preference; each is a fresh _Edit of ``plan``."""
        def hints_move():
            ed = _Edit(plan, round_index)
            for dim in failing:
                _apply(ed, dim, [f.hint for f in critique.findings if f.dimension == dim and f.hint])
            return ed

        def generic_move():
            ed = _Edit(plan, round_index)
            _make_generic(ed)
            return ed

        def soften_move():
            ed = _Edit(plan, round_index)
            _soften_layers(ed)
            return ed

        yield "the critic's hints", hints_move
        if "semantic" in failing:
            yield "generic sounds for doubtful sources", generic_move
        if "temporal" in failing:
            yield "softer layers under the impacts", soften_move

    def refine(self, plan: Plan, critique: Critique, failing: list[str], round_index: int, seed: int,
               video: Path | None = None, info: VideoInfo | None = None) -> RefineResult:
        failing = [d for d in DIMENSIONS if d in failing]
        # Refines already made from this plan (rounds that were not kept): their moves are not repeated.
        tried = max(0, round_index - int(plan.provenance.round or 0) - 1)
        audible, skipped = [], []
        for what, make in self._moves(plan, critique, failing, round_index):
            ed = make()
            events = ed.result_events()
            if ed.changes and audible_change(plan, events, ed.variants, ed.render_options, seed, seed):
                audible.append((what, ed, events))
            else:
                skipped.append(what)
        if tried >= len(audible):
            why = "nothing failed" if not failing else (
                f"for {', '.join(failing)}: " + ("; ".join(f"{w}: no audible change" for w in skipped) or "no move")
                + (f"; {tried} earlier refine(s) from round {plan.provenance.round} already tried the rest"
                   if tried else ""))
            return RefineResult(plan=plan, seed=seed, changes=[f"stopped: {why}"], prompt_version=PROMPT_VERSION,
                                stop=why)
        what, ed, events = audible[tried]
        ed.changes.insert(0, f"move: {what}" + (f" (after {tried} earlier refine(s) from this plan)" if tried else ""))
        sections = {}
        if "temporal" in ed.touched and "temporal" in failing:
            sections["temporal"] = temporal_text(events, plan.duration_s)
        if "spatial" in ed.touched and "spatial" in failing:
            sections["spatial"] = spatial_text(events)
        if "semantic" in failing and {e.label for e in events} != {e.label for e in plan.events}:
            sections["semantic"] = semantic_text(events)
        if "aesthetic" in failing and ed.moods:
            sections["aesthetic"] = aesthetic_text(plan.aesthetic, ed.moods)
        prov = {"round": round_index, "backend": NAME, "model_id": MODEL_ID, "prompt_version": PROMPT_VERSION}
        if ed.variants:
            prov["sample_variants"] = ed.variants
        if ed.render_options:
            prov["render_options"] = ed.render_options
        new = plan.derive("refiner", events=[e.model_dump() for e in events], **sections, provenance=prov)
        new = _fit_budget(new, sections, events)
        for d, text in sections.items():
            ed.changes.append(f"{d}: section rewritten -> {getattr(new, d)!r}")
        return RefineResult(plan=new, seed=seed, changes=ed.changes, prompt_version=PROMPT_VERSION,
                            aimed_at=[d for d in DIMENSIONS if d in ed.touched])


def _fit_budget(plan: Plan, sections: dict, events: list[Event]) -> Plan:
    """Shorten the rewritten timing/placement lists until the CoT fits 77 tokens (or cannot shrink more)."""
    for max_items in (4, 2, 1):
        if plan.cot_budget_report()["fits"] or not ({"temporal", "spatial"} & set(sections)):
            break
        update = {}
        if "temporal" in sections:
            update["temporal"] = sections["temporal"] = temporal_text(events, plan.duration_s, max_items)
        if "spatial" in sections:
            update["spatial"] = sections["spatial"] = spatial_text(events, max_items)
        plan = plan.model_copy(update=update)
    return plan


def make(cfg: BackendOptions) -> OfflineRefiner:
    return OfflineRefiner()


def describe(cfg: BackendOptions) -> dict:
    return {"available": True, "where": "built in", "why": "", "model_id": MODEL_ID, "license": "Apache-2.0"}
