"""Long and multi-shot videos (issue 12, part 1): the split, per-segment plans, seamless joins, per-segment
critique and refinement that re-renders only what changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent import segments as S
from contract import segments as cs
from contract.plan import Critique, Event, Finding, Plan, PlanInvalid, SegmentScore
from contract.protocols import RefineResult, RenderResult
from store.media import read_audio, write_audio
from tests.segment_clips import join_report

SR = 44100


def _plan(duration: float, events: list[Event], segments=None) -> Plan:
    return Plan(caption="test", temporal="t", events=events, duration_s=duration, segments=segments)


# ---- the split ---------------------------------------------------------------------------------------------------
def test_split_follows_cuts_sub_splits_long_shots_and_merges_slivers():
    cuts = [20.0, 21.0, 50.0, 90.0]
    impacts = [35.0, 36.0, 70.0, 71.0]
    parts = cs.split(125.0, cuts, 30.0, cues=["a", "a", "a", "b", "b"], avoid=impacts)
    cs.check_tiling(parts, 125.0)
    starts = [p.start_s for p in parts]
    assert 20.0 not in starts and 21.0 in starts  # the 1 s sliver 20–21 joined its neighbour
    assert {50.0, 90.0} <= set(starts)
    for p in parts:
        assert p.render_s <= 30.0 + 1e-6  # every render fits the renderer's window
        if p.start_s in (21.0, 50.0, 90.0):
            assert p.cut
    for p in parts[1:]:  # no impact sits in a sub-split's crossfade
        if not p.cut:
            assert all(abs(t - p.start_s) > p.xfade_in_s / 2 for t in impacts)
    scene = {p.start_s: p.scene for p in parts}
    assert scene[0.0] == scene[21.0] != scene[50.0] == scene[90.0]  # a cut to another cue starts a new scene


def test_short_single_shot_clip_is_not_segmented_and_serialises_as_before(tmp_path):
    plan = _plan(8.0, [Event(id="e1", label="thud", start_s=1.0, end_s=1.2)])
    out = S.attach(plan, {"cuts": [], "shots": []}, tmp_path / "unused.mp4", _info(8.0), 30.0)
    assert out is plan and out.segments is None
    assert "segments" not in json.loads(plan.to_json())
    old = json.loads(plan.to_json())  # a plan stored before segments existed still loads
    assert Plan.from_stored(old).segments is None


def test_segments_must_tile_the_plan():
    parts = cs.split(60.0, [30.0], 40.0)
    data = json.loads(_plan(60.0, [], parts).to_json())
    data["segments"][1]["start_s"] = 31.0
    with pytest.raises(PlanInvalid, match="gap"):
        Plan.from_json(data)
    data["segments"] = data["segments"][:1]
    with pytest.raises(PlanInvalid, match="span"):
        Plan.from_json(data)


def _info(duration: float):
    from store.media import VideoInfo

    return VideoInfo(path="x.mp4", duration_s=duration, fps=25.0, width=32, height=32, rotation=0,
                     n_frames=int(duration * 25), has_audio=False, audio_rate=None, audio_channels=None,
                     video_codec="h264", container="mp4", size_bytes=1)


# ---- per-segment plans ---------------------------------------------------------------------------------------
def _segmented():
    parts = cs.split(90.0, [30.0, 60.0], 40.0, cues=["street", "street", "forest"])
    events = [Event(id="bed", label="traffic", kind="ambience", start_s=0.0, end_s=90.0, gain_db=-20),
              Event(id="across", label="door slam", start_s=29.9, end_s=30.6),
              Event(id="late", label="bird", start_s=70.0, end_s=70.3)]
    return _plan(90.0, events, parts)


def test_an_event_across_a_boundary_is_rendered_once_and_beds_follow_the_scene():
    plan = _segmented()
    subs = [cs.sub_plan(plan, k) for k in range(len(plan.segments))]
    holders = [k for k, sp in enumerate(subs) if sp.event("across")]
    assert holders == [0]
    assert [k for k, sp in enumerate(subs) if sp.event("late")] == [2]
    # the bed continues across the cut at 30 s (same scene) but not into the forest (another scene)
    assert subs[1].event("bed") is not None and subs[2].event("bed") is None
    for s, sp in zip(plan.segments, subs):
        assert sp.duration_s == pytest.approx(s.render_s)
        assert sp.segments is None
    assert subs[2].event("late").start_s == pytest.approx(70.0 - plan.segments[2].render_start_s)


def test_a_bed_starting_at_a_cut_in_coarser_rounding_belongs_to_the_next_segment():
    """Seen on a real lecture clip: the cut at 13.5333 s, the watcher's new bed at 13.533 s (plan times are rounded
    to the millisecond). The bed went to the previous segment, was cut off at its end, and the last 3.7 s rendered
    as digital silence."""
    parts = cs.split(17.266, [13.5333], 30.0, cues=["hall", "blackboard"])
    events = [Event(id="amb0", label="air", kind="ambience", start_s=0.0, end_s=13.533, gain_db=-24),
              Event(id="amb1", label="air", kind="ambience", start_s=13.533, end_s=17.266, gain_db=-24)]
    plan = _plan(17.266, events, parts)
    assert plan.segments[1].start_s == pytest.approx(13.5333)
    last = cs.sub_plan(plan, 1)
    bed = last.event("amb1")
    assert bed is not None and bed.end_s == pytest.approx(last.duration_s)
    assert cs.sub_plan(plan, 0).event("amb1") is None


def test_merge_puts_a_refined_segment_back_and_leaves_the_others_identical():
    plan = _segmented()
    same = cs.merge(plan, 1, cs.sub_plan(plan, 1))
    assert [e.model_dump() for e in same.events] == [e.model_dump() for e in plan.events]
    sub = cs.sub_plan(plan, 2)
    moved = [e.model_dump() | ({"start_s": e.start_s + 0.5, "end_s": e.end_s + 0.5} if e.id == "late" else {})
             for e in sub.events] + [{"id": "bed", "label": "clash", "start_s": 1.0, "end_s": 1.1}]
    refined = sub.derive("refiner", events=moved, temporal="bird a little later")
    new = cs.merge(plan, 2, refined, seed=9)
    assert new.event("late").start_s == pytest.approx(70.5)
    assert new.event("bed").label == "traffic"  # a new event may not take another segment's id
    assert any(e.id != "bed" and e.label == "clash" for e in new.events)
    assert new.segments[2].seed == 9 and new.segments[2].sections == {"temporal": "bird a little later"}
    for k in (0, 1):  # the other segments' plans are unchanged: their audio is reused
        assert cs.sub_plan(new, k).to_json() == cs.sub_plan(plan, k).to_json()
    assert cs.sub_plan(new, 2).temporal == "bird a little later"


# ---- joins -----------------------------------------------------------------------------------------------------
def _bed(seconds: float, level: float, seed: int) -> np.ndarray:
    """A noise bed mastered on its own: different renders come out at different levels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, int(round(seconds * SR)))).astype(np.float32)
    smooth = np.convolve(x[0], np.ones(8) / 8, mode="same"), np.convolve(x[1], np.ones(8) / 8, mode="same")
    return (level * np.stack(smooth)).astype(np.float32)


def test_join_has_no_click_gap_or_level_jump_at_any_boundary(tmp_path):
    plan = _plan(75.0, [], cs.split(75.0, [25.0], 30.0, cues=["a", "b"]))
    levels = [0.05, 0.4, 0.1, 0.3]
    parts = []
    for s, lv in zip(plan.segments, levels):
        p = tmp_path / f"{s.index}.wav"
        write_audio(p, _bed(s.render_s, lv, s.index), SR)
        parts.append(p)
    out = tmp_path / "joined.wav"
    S.join(parts, plan.segments, out)
    audio, sr = read_audio(out)
    assert audio.shape[1] == round(75.0 * SR)
    report = join_report(audio, sr, plan.segments)
    assert len(report) == len(plan.segments) - 1
    for r in report:
        assert r["join_step"] <= r["inside_step"], r
        assert r["level_jump_db"] <= 1.0, r
    # the measure does catch what the join prevents: butt-joined renders jump by several dB
    naive = np.concatenate([read_audio(p)[0][:, round((s.window_start_s - s.render_start_s) * SR):
                                            round((s.window_end_s - s.render_start_s) * SR)]
                            for p, s in zip(parts, plan.segments)], axis=1)
    assert max(r["level_jump_db"] for r in join_report(naive, SR, plan.segments)) > 3.0


# ---- rendering only what changed --------------------------------------------------------------------------------
class CountingRenderer:
    """A bed whose level follows the plan's gains, mastered per render; counts its renders."""

    name, model_id = "counting", "counting-1"

    def __init__(self):
        self.calls: list[float] = []

    def render(self, plan, video, info, seed, out_path):
        self.calls.append(plan.duration_s)
        gain = 10 ** (max((e.gain_db for e in plan.events), default=-20.0) / 20)
        write_audio(out_path, _bed(plan.duration_s, 0.3 * gain, seed), SR)
        return RenderResult(Path(out_path), SR, plan.duration_s, {})


class ScoringCritic:
    """Scores a segment by its bed's gain: a bed quieter than -10 dB is 'weak' on aesthetic."""

    name = "scoring"

    def __init__(self):
        self.calls = 0

    def critique(self, plan, audio, video, info):
        self.calls += 1
        gain = max((e.gain_db for e in plan.events if e.kind.value == "ambience"), default=-60.0)
        s = 0.9 if gain > -10 else 0.3
        return Critique(scores={"semantic": 0.9, "temporal": 0.9, "aesthetic": s, "spatial": 0.9})


class LouderRefiner:
    name, model_id = "louder", "louder-1"

    def __init__(self):
        self.seen: list[str] = []

    def refine(self, plan, critique, failing, round_index, seed, video=None, info=None):
        self.seen.append(plan.plan_id)
        events = [e.model_dump() | ({"gain_db": -6.0} if e.kind.value == "ambience" else {}) for e in plan.events]
        return RefineResult(plan=plan.derive("refiner", events=events), seed=seed, changes=["louder bed"])


def test_a_refined_round_renders_only_the_weak_segments(tmp_path):
    parts = cs.split(100.0, [25.0, 50.0, 75.0], 40.0, cues=["a", "b", "c", "d"])
    events = [Event(id=f"bed{i}", label="wind", kind="ambience", start_s=25.0 * i, end_s=25.0 * (i + 1),
                    gain_db=-20.0 if i in (1, 3) else -3.0) for i in range(4)]
    plan = _plan(100.0, events, parts)
    renderer, critic, refiner = CountingRenderer(), ScoringCritic(), LouderRefiner()
    run = S.prepare(plan, None, None, tmp_path / "cache")
    first = S.render(renderer, plan, 0, tmp_path / "r0.wav", run)
    assert len(renderer.calls) == 4 and first.meta["segments"]["rendered"] == [0, 1, 2, 3]
    crit = S.critique(critic, renderer, plan, 0, run, first.meta["segments"]["rendered"])
    assert [p.index for p in crit.segments if p.scores["aesthetic"] < 0.5] == [1, 3]
    assert crit.scores["aesthetic"] == pytest.approx(0.6)
    thresholds = {"semantic": 0.5, "temporal": 0.5, "aesthetic": 0.5, "spatial": 0.5}
    assert S.weak_segments(crit, thresholds) == [1, 3]
    refined = S.refine(refiner, plan, crit, thresholds, 1, 0, run)
    assert refiner.seen == [f"{plan.plan_id}-s1", f"{plan.plan_id}-s3"]
    assert refined.plan.event("bed1").gain_db == -6.0 and refined.plan.event("bed0").gain_db == -3.0
    renderer.calls.clear()
    second = S.render(renderer, refined.plan, 0, tmp_path / "r1.wav", run)
    assert second.meta["segments"]["rendered"] == [1, 3] and second.meta["segments"]["reused"] == [0, 2]
    assert len(renderer.calls) == 2
    critic.calls = 0
    crit2 = S.critique(critic, renderer, refined.plan, 0, run, second.meta["segments"]["rendered"])
    assert critic.calls == 2  # unchanged segments keep their critique
    assert [p.rendered for p in crit2.segments] == [False, True, False, True]
    assert crit2.scores["aesthetic"] == pytest.approx(0.9)
    audio, sr = read_audio(second.audio_path)
    assert audio.shape[1] == round(100.0 * SR)
    assert Critique.from_json(crit2.to_json()).segments[1] == SegmentScore.model_validate(
        crit2.segments[1].model_dump())
    critic.calls, critic.version = 0, "2"  # a new critic version judges every segment again
    S.critique(critic, renderer, refined.plan, 0, run, second.meta["segments"]["rendered"])
    assert critic.calls == 4
    # when the run ends, the audio only the dropped round used leaves the cache; the kept round's stays
    def segment_wavs():  # rendered segment audio (not the own-span cuts the critic judged)
        return [p for p in run.cache_dir.glob("*.wav") if not p.name.endswith(".own.wav")]

    assert len(segment_wavs()) == 6
    own = len(list(run.cache_dir.glob("*.own.wav")))
    # 2 WAVs, their 2 own-span cuts and their 2 critiques
    assert S.prune(renderer, [(plan, 0)], (refined.plan, 0), run) == 6
    assert len(segment_wavs()) == 4 and len(list(run.cache_dir.glob("*.own.wav"))) == own - 2
    renderer.calls.clear()
    S.render(renderer, refined.plan, 0, tmp_path / "r2.wav", run)
    assert renderer.calls == []


def test_segment_audio_is_shared_only_by_runs_with_the_same_renderer_options(tmp_path):
    """The cache lives under the home, across runs: a run with other renderer options (steps, weights, dtype) must
    render its own audio, not reuse another configuration's."""
    parts = cs.split(60.0, [30.0], 40.0, cues=["a", "b"])
    events = [Event(id=f"bed{i}", label="wind", kind="ambience", start_s=30.0 * i, end_s=30.0 * (i + 1))
              for i in range(2)]
    plan = _plan(60.0, events, parts)
    renderer = CountingRenderer()
    steps8 = S.prepare(plan, None, None, tmp_path / "cache", renderer_key='["thinksound", {"steps": 8}]')
    steps24 = S.prepare(plan, None, None, tmp_path / "cache", renderer_key='["thinksound", {"steps": 24}]')
    S.render(renderer, plan, 0, tmp_path / "a.wav", steps8)
    again = S.render(renderer, plan, 0, tmp_path / "b.wav", steps8)
    other = S.render(renderer, plan, 0, tmp_path / "c.wav", steps24)
    assert again.meta["segments"]["reused"] == [0, 1]
    assert other.meta["segments"]["rendered"] == [0, 1] and len(renderer.calls) == 4


# ---- a 2-minute multi-scene clip, end to end on the offline default -------------------------------------------------
THRESHOLDS = {"semantic": 0.0, "temporal": 0.76, "aesthetic": 0.0, "spatial": 0.0}

@pytest.fixture(scope="module")
def multiscene(tmp_path_factory):
    from agent import backends, runs
    from agent.config import RunConfig
    from store.db import Store
    from tests.segment_clips import make_multiscene_clip

    tmp = tmp_path_factory.mktemp("multiscene")
    clip = make_multiscene_clip(tmp / "multi.mp4")
    store = Store(tmp / "home" / "fl.db")
    # temporal is the only bar, set so that some segments pass it and some do not (the length-weighted mean fails)
    cfg = RunConfig(rounds=2, device="cpu", thresholds=THRESHOLDS)
    runs.dub(store, clip, cfg, out=tmp / "out.mp4")
    yield store, store.list_runs()[0]
    backends.clear_cache()


def test_multiscene_clip_is_planned_per_segment_at_its_shot_cuts(multiscene):
    from tests.segment_clips import shot_cuts

    store, run = multiscene
    r0 = store.rounds(run.id)[0]
    plan = Plan.from_stored(r0.plan_json)
    assert plan.segments and len(plan.segments) >= 4
    for s in plan.segments:
        assert s.render_s <= S.DEFAULT_MAX_S + 1e-6
        if s.cut:
            assert min(abs(s.start_s - c) for c in shot_cuts()) < 0.25, s
    assert sum(s.cut for s in plan.segments) >= 3  # the colour changes at 54, 74 and 100 s
    crit = Critique.from_json(r0.critique_json)
    assert [p.index for p in crit.segments] == [s.index for s in plan.segments]


def test_multiscene_joins_are_seamless_in_every_round(multiscene):
    store, run = multiscene
    for r in store.rounds(run.id):
        plan = Plan.from_stored(r.plan_json)
        audio, sr = read_audio(store.artifact_path(r.audio_artifact_id))
        assert audio.shape[1] == pytest.approx(plan.duration_s * sr, abs=2)
        for j in join_report(audio, sr, plan.segments):
            assert j["join_step"] <= j["inside_step"], (r.index, j)
            assert j["level_jump_db"] <= 1.0, (r.index, j)


def test_a_segmented_refine_says_what_its_segments_aimed_at(tmp_path):
    """The loop counts gains only where the refine aimed: the union over the rewritten segments; unknown (None)
    as soon as one segment's refiner does not say."""
    parts = cs.split(100.0, [25.0, 50.0, 75.0], 40.0, cues=["a", "b", "c", "d"])
    events = [Event(id=f"bed{i}", label="wind", kind="ambience", start_s=25.0 * i, end_s=25.0 * (i + 1),
                    gain_db=-20.0 if i in (1, 3) else -3.0) for i in range(4)]
    plan = _plan(100.0, events, parts)
    renderer, critic = CountingRenderer(), ScoringCritic()
    run = S.prepare(plan, None, None, tmp_path / "cache")
    first = S.render(renderer, plan, 0, tmp_path / "r0.wav", run)
    crit = S.critique(critic, renderer, plan, 0, run, first.meta["segments"]["rendered"])
    thresholds = {"semantic": 0.5, "temporal": 0.5, "aesthetic": 0.5, "spatial": 0.5}

    class Saying(LouderRefiner):
        def __init__(self, said):
            super().__init__()
            self.said = list(said)

        def refine(self, plan, *a, **k):
            res = super().refine(plan, *a, **k)
            res.aimed_at = self.said.pop(0)
            return res

    assert S.refine(Saying([["spatial"], ["aesthetic"]]), plan, crit, thresholds, 1, 0, run).aimed_at == \
        ["aesthetic", "spatial"]
    assert S.refine(Saying([["aesthetic"], None]), plan, crit, thresholds, 1, 0, run).aimed_at is None
    assert S.refine(LouderRefiner(), plan, crit, thresholds, 1, 0, run).aimed_at is None


def test_multiscene_refined_round_rerenders_only_the_weak_segments(multiscene):
    store, run = multiscene
    rounds = store.rounds(run.id)
    assert len(rounds) == 2
    weak = S.weak_segments(Critique.from_json(rounds[0].critique_json), THRESHOLDS)
    n = len(Plan.from_stored(rounds[0].plan_json).segments)
    assert weak and len(weak) < n
    meta = json.loads(rounds[1].timings_json)["render_meta"]["segments"]
    assert meta["rendered"] and set(meta["rendered"]) <= set(weak)
    assert sorted(meta["rendered"] + meta["reused"]) == list(range(n))
    p0, p1 = (Plan.from_stored(r.plan_json) for r in rounds)
    for k in range(n):  # exactly the segments whose own plan changed were rendered again
        changed = cs.sub_plan(p0, k).model_dump(exclude={"plan_id", "provenance"}) != \
            cs.sub_plan(p1, k).model_dump(exclude={"plan_id", "provenance"}) or p0.segments[k] != p1.segments[k]
        assert changed == (k in meta["rendered"]), k
    # the finished run keeps one cached render per segment, its best round's (and the own-span cuts its critic read)
    cached = list((store.home / "cache" / "segments").glob("*.wav"))
    assert len([p for p in cached if not p.name.endswith(".own.wav")]) == n
    assert {p.name.split(".")[0] for p in cached if p.name.endswith(".own.wav")} <= {p.stem for p in cached}


def test_show_and_plan_print_the_segments(multiscene, capsys):
    from agent.cli import main

    store, run = multiscene
    assert main(["--db", str(store.db_path), "show", run.id]) == 0
    out = capsys.readouterr().out
    n = len(Plan.from_stored(store.rounds(run.id)[0].plan_json).segments)
    assert f"segments: {n}" in out and "round 0.1" in out
    assert main(["--db", str(store.db_path), "plan", run.id, "--segment", "1"]) == 0
    sub = Plan.from_json(capsys.readouterr().out)
    assert sub.provenance.model_extra["segment"] == 1 and sub.duration_s <= S.DEFAULT_MAX_S
    assert main(["--db", str(store.db_path), "plan", run.id, "--segment", str(n)]) == 2


def test_segment_length_flag_is_checked_before_any_work(tmp_path, capsys):
    from agent.cli import main
    from agent.cli.dub import segment_options

    assert segment_options(0) == {"enabled": False} and segment_options(9) == {"max_s": 9.0}
    for bad in ("2.5", "nan", "-1", "5000"):
        assert main(["--db", str(tmp_path / "fl.db"), "dub", str(tmp_path / "none.mp4"), "--segment-s", bad]) == 2
        assert "--segment-s" in capsys.readouterr().err
    assert not (tmp_path / "fl.db").exists()


def test_each_segment_gets_its_own_caption_and_timing(tmp_path):
    parts_meta = {"cuts": [40.0], "shots": [{"rules": [["street", 0.9]]}, {"rules": [["forest", 0.8]]}]}
    events = [Event(id="bed", label="traffic", kind="ambience", start_s=0.0, end_s=40.0),
              Event(id="b2", label="birdsong", kind="ambience", start_s=40.0, end_s=80.0),
              Event(id="h1", label="door slam", start_s=10.0, end_s=10.3),
              Event(id="h2", label="twig snap", start_s=50.0, end_s=50.2)]
    plan = S.attach(_plan(80.0, events), parts_meta, tmp_path / "unused.mp4", _info(80.0), 45.0)
    assert [s.start_s for s in plan.segments] == [0.0, 40.0] and plan.segments[1].scene == 1
    first, second = plan.segments
    assert first.caption.startswith("traffic") and "door slam" in first.caption
    assert second.caption.startswith("birdsong") and "traffic" not in second.caption
    assert second.sections["temporal"] == \
        f"birdsong throughout; twig snap at {50.0 - second.render_start_s:.1f} s"
    assert cs.sub_plan(plan, 1).temporal == second.sections["temporal"]


def test_weak_segments_with_nothing_left_to_try_stop_the_loop(tmp_path):
    parts = cs.split(60.0, [30.0], 40.0, cues=["a", "b"])
    events = [Event(id=f"bed{i}", label="wind", kind="ambience", start_s=30.0 * i, end_s=30.0 * (i + 1),
                    gain_db=-20.0) for i in range(2)]
    plan = _plan(60.0, events, parts)
    renderer, critic = CountingRenderer(), ScoringCritic()
    run = S.prepare(plan, None, None, tmp_path / "cache")
    S.render(renderer, plan, 0, tmp_path / "r0.wav", run)
    crit = S.critique(critic, renderer, plan, 0, run)
    thresholds = {"semantic": 0.5, "temporal": 0.5, "aesthetic": 0.5, "spatial": 0.5}

    class Done:
        name, model_id = "done", "done-1"

        def refine(self, plan, critique, failing, round_index, seed, video=None, info=None):
            return RefineResult(plan=plan, seed=seed, stop="no audible change")

    res = S.refine(Done(), plan, crit, thresholds, 1, 0, run)
    assert res.stop == "segment 0: no audible change; segment 1: no audible change"
    # a segment's own change is what tells rounds apart: the same plan again is the same audio, per segment
    assert S.same_audio_as(renderer, plan, 0, [(0, plan, 0)]) == 0
    louder = S.refine(LouderRefiner(), plan, crit, thresholds, 1, 0, run).plan
    assert S.same_audio_as(renderer, louder, 0, [(0, plan, 0)]) is None


def test_a_segment_is_not_refined_for_what_its_roll_shows(tmp_path):
    """A visible impact in a segment's pre-roll belongs to the previous segment: the refiner of this segment must
    not be asked to add a sound there (the merge would drop it and the round would render the same audio)."""
    parts = cs.split(60.0, [30.0], 40.0, cues=["a", "b"])
    plan = _plan(60.0, [Event(id=f"bed{i}", label="wind", kind="ambience", start_s=30.0 * i, end_s=30.0 * (i + 1),
                              gain_db=-20.0) for i in range(2)], parts)
    roll = parts[1].start_s - parts[1].render_start_s
    assert roll > 0.2
    in_roll = Finding(target="temporal", dimension="temporal", problem="visible impact without sound",
                      hint={"action": "add_event", "time_s": roll / 2, "pan": 0.0})
    inside = Finding(target="temporal", dimension="temporal", problem="visible impact without sound",
                     hint={"action": "add_event", "time_s": roll + 2.0, "pan": 0.0})
    crit = Critique(scores={"semantic": 0.9, "temporal": 0.9, "aesthetic": 0.9, "spatial": 0.9}, segments=[
        SegmentScore(index=0, start_s=0.0, end_s=parts[0].end_s, scores={"semantic": 0.9, "temporal": 0.9,
                                                                        "aesthetic": 0.9, "spatial": 0.9}),
        SegmentScore(index=1, start_s=parts[1].start_s, end_s=60.0, findings=[in_roll, inside],
                     scores={"semantic": 0.9, "temporal": 0.1, "aesthetic": 0.9, "spatial": 0.9})])
    seen: list[list[float]] = []

    class Recording:
        name, model_id = "recording", "recording-1"

        def refine(self, plan, critique, failing, round_index, seed, video=None, info=None):
            seen.append([f.hint["time_s"] for f in critique.findings if f.hint])
            return RefineResult(plan=plan, seed=seed, stop="nothing")

    run = S.prepare(plan, None, None, tmp_path / "cache")
    S.refine(Recording(), plan, crit, {"semantic": 0.5, "temporal": 0.5, "aesthetic": 0.5, "spatial": 0.5}, 1, 0, run)
    assert seen == [[roll + 2.0]]


def test_a_segment_is_judged_on_its_own_span_not_its_rolls(tmp_path):
    """The critic of segment 1 hears and sees only 30-60 s (a contact in its pre-roll is segment 0's, which judges
    it); its hint times come back in the segment plan's time, where its refiner edits."""
    parts = cs.split(60.0, [30.0], 40.0, cues=["a", "b"])
    events = [Event(id=f"bed{i}", label="wind", kind="ambience", start_s=30.0 * i, end_s=30.0 * (i + 1),
                    gain_db=-20.0) for i in range(2)]
    events.append(Event(id="hit", label="thud", kind="impact", start_s=29.9, end_s=30.0))  # segment 0's, in 1's roll
    plan = _plan(60.0, events, parts)
    seen = []

    class Recording:
        name, version = "recording", "1"

        def critique(self, plan, audio, video, info):
            wave, rate = read_audio(audio)
            seen.append((round(wave.shape[1] / rate, 2), plan.duration_s, sorted(e.id for e in plan.events)))
            return Critique(scores={"semantic": 0.9, "temporal": 0.9, "aesthetic": 0.9, "spatial": 0.9},
                            findings=[Finding(target="temporal", dimension="temporal", problem="p",
                                              hint={"action": "add_event", "time_s": 1.0, "pan": 0.0})])

    run = S.prepare(plan, None, None, tmp_path / "cache")
    S.render(CountingRenderer(), plan, 0, tmp_path / "r0.wav", run)
    crit = S.critique(Recording(), CountingRenderer(), plan, 0, run)
    lo = [s.start_s - s.render_start_s for s in parts]
    assert [x[0] for x in seen] == pytest.approx([s.end_s - s.start_s for s in parts], abs=0.02)
    assert [x[1] for x in seen] == pytest.approx([s.end_s - s.start_s for s in parts], abs=0.02)
    assert "hit" in seen[0][2] and "hit" not in seen[1][2]
    assert [p.findings[0].hint["time_s"] for p in crit.segments] == pytest.approx([1.0 + x for x in lo])
