"""What the picture shows, for the offline critic: ImageNet labels on keyframes the critic samples itself.

The critic grades the render against the picture, never against the plan's labels or the watcher's choices
(issue 9): keyframes are spread over the shots of the video analysis (``motion``), labelled with the
EfficientNet-Lite0 classifier (``labels``, the same model object as the watcher's, used as a model only), and
kept per video (in memory and as JSON under ``cache_dir``): the picture does not change between rounds.

``PictureSupport`` says how much of the picture's label mass speaks for a sound label: MiniLM similarity of
the sound label to each ImageNet class's names and to what that class sounds like (``vocabulary``'s reviewed
``sources`` line: "golden retriever" alone says nothing about barking), weighted by the class's probability.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reasoning.offline import vocabulary as vocab
from store.atomic import part_path

log = logging.getLogger(__name__)

VERSION = "picture-1"
KEYFRAMES_MAX = 8         # keyframes per video (EfficientNet-Lite0: ~15 ms each on CPU, once per video)
# Keyframes come from the thumbnails the analysis decode keeps (``motion.thumbnails``, every 0.5 s or sparser on
# long clips), so labelling costs no second decode; only an analysis read from the disk cache makes it seek.
KEYFRAMES_PER_SHOT = 2
KEY_MAX_SIDE = 256
TOP_K = 5
MIN_SHOT_S = 0.3
# Text similarity of a sound label to a picture class (all-MiniLM-L6-v2 cosine), measured on the bank's
# descriptions vs classes: "dog barking, two dogs bark repeatedly" vs golden retriever / Saluki (with the dog
# rule's sound line) 0.55-0.59, vs a cat / horse / owl picture 0.29-0.35; "keyboard tapping" vs computer keyboard
# 0.56; unrelated pairs 0.0-0.30. 0.30 -> 0, 0.55 -> 1.
REL_LO, REL_HI = 0.30, 0.55
# A sound is fully supported when classes relevant to it carry this much probability per keyframe (the watcher
# asks 0.5 of one rule before it names a specific source; the critic is a little more lenient).
SUPPORT_MASS = 0.4


@dataclass
class PictureLabels:
    """Top-k ImageNet labels on keyframes, with the shots they stand for."""

    duration_s: float
    shots: list[tuple[float, float]]
    times: list[float]                                     # keyframe times (s)
    shot_of: list[int]                                     # the shot of each keyframe
    labels: list[list[tuple[int, str, float]]]             # per keyframe: (ImageNet index, names, probability)
    model_id: str = ""
    missing: str = ""                                      # why there are no labels ('' when there are)
    _texts: dict = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("_texts", None)
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "PictureLabels":
        d = json.loads(text)
        return cls(duration_s=float(d["duration_s"]), shots=[tuple(s) for s in d["shots"]], times=d["times"],
                   shot_of=d["shot_of"], labels=[[(int(i), str(n), float(p)) for i, n, p in f] for f in d["labels"]],
                   model_id=d.get("model_id", ""), missing=d.get("missing", ""))

    @classmethod
    def from_texts(cls, duration_s: float, texts: Sequence[str]) -> "PictureLabels":
        """No picture (text-to-audio): the request's own words stand for it, each with an equal share of the mass."""
        d = max(float(duration_s), 1e-3)
        labels = [(-1 - i, t, 1.0 / len(texts)) for i, t in enumerate(texts)]
        return cls(duration_s=d, shots=[(0.0, d)], times=[0.0], shot_of=[0], labels=[labels], model_id="text")

    def keyframes_for(self, start_s: float, end_s: float) -> list[int]:
        """Keyframes of the shots that overlap [start_s, end_s]; the nearest keyframe when those have none."""
        shots = {i for i, (a, b) in enumerate(self.shots) if a < end_s and b > start_s}
        ks = [k for k, s in enumerate(self.shot_of) if s in shots and self.labels[k]]
        if ks or not self.times:
            return ks
        mid = 0.5 * (start_s + end_s)
        have = [k for k in range(len(self.times)) if self.labels[k]]
        return [min(have, key=lambda k: abs(self.times[k] - mid))] if have else []

    def classes(self, start_s: float = 0.0, end_s: float | None = None) -> list[tuple[int, str, float]]:
        """(index, names, mass) of the classes seen in the keyframes for that span; mass = mean probability over
        those keyframes (a class one keyframe of four shows at 0.8 has 0.2: consistency is part of the evidence)."""
        ks = self.keyframes_for(start_s, self.duration_s if end_s is None else end_s)
        mass: dict[int, float] = {}
        names: dict[int, str] = {}
        for k in ks:
            for idx, name, p in self.labels[k]:
                mass[idx] = mass.get(idx, 0.0) + p / len(ks)
                names[idx] = name
        return sorted(((i, names[i], m) for i, m in mass.items()), key=lambda x: -x[2])

    def summary(self, n: int = 3) -> str:
        top = self.classes()[:n]
        return ", ".join(f"{name.split(',')[0]} {m:.2f}" for _, name, m in top) or "nothing recognised"


def plan_shots(duration_s: float, cuts: Sequence[float]) -> list[tuple[float, float]]:
    """Shots between the analysis's scene cuts (slivers shorter than MIN_SHOT_S join a neighbour)."""
    edges = [0.0]
    for c in sorted(cuts):
        if MIN_SHOT_S <= c <= duration_s - MIN_SHOT_S and c - edges[-1] >= MIN_SHOT_S:
            edges.append(float(c))
    edges.append(float(duration_s))
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def keyframe_times(shots: list[tuple[float, float]], budget: int = KEYFRAMES_MAX,
                   per_shot: int = KEYFRAMES_PER_SHOT) -> tuple[list[float], list[int]]:
    """(times, shot index) spread inside the shots; long shots get their frames first when the budget is short."""
    order = sorted(range(len(shots)), key=lambda i: -(shots[i][1] - shots[i][0]))
    counts = [0] * len(shots)
    left = max(1, budget)
    for _ in range(per_shot):
        for i in order:
            if left and counts[i] < per_shot:
                counts[i] += 1
                left -= 1
    times, shot_of = [], []
    for i, ((a, b), n) in enumerate(zip(shots, counts)):
        for j in range(n):
            times.append(round(a + (b - a) * (j + 1) / (n + 1), 3))
            shot_of.append(i)
    return times, shot_of


def _model_id(classifier: Any) -> str:
    return str(getattr(classifier, "model_id", None) or type(classifier).__name__)


def keyframes(video: Path, times: list[float]) -> dict[float, np.ndarray]:
    """The frame for each time: the nearest thumbnail the analysis decode kept (no second decode), else by seeking."""
    from reasoning.offline.motion import THUMB_STEP_S, thumbnails

    thumbs = thumbnails(video)
    if thumbs:
        got = {}
        stamps = np.array([t for t, _ in thumbs])
        for t in times:
            i = int(np.argmin(np.abs(stamps - t)))
            got[float(t)] = thumbs[i][1]
        return got
    from store.media import FrameGrid, stream_frames

    log.debug("%s: no thumbnails from an analysis decode (every %.1f s); seeking keyframes", video, THUMB_STEP_S)
    return {float(t): img for _, t, img in stream_frames(video, {"keys": FrameGrid(times=times, max_side=KEY_MAX_SIDE)})}


def label_picture(video: Path, visual: Any, classifier: Any) -> PictureLabels:
    """Keyframes spread over the shots (bounded size), labelled by ``classifier.top_labels(frames, k)``."""
    duration = float(visual.duration_s)
    shots = plan_shots(duration, list(visual.cuts)) or [(0.0, max(duration, 1e-3))]
    times, shot_of = keyframe_times(shots)
    got = keyframes(video, times)
    keep = [k for k, t in enumerate(times) if float(t) in got]
    frames = [got[float(times[k])] for k in keep]
    per_frame = classifier.top_labels(frames, k=TOP_K) if frames else []
    labels: list[list[tuple[int, str, float]]] = [[] for _ in times]
    for k, labs in zip(keep, per_frame):
        labels[k] = [(int(lab.index), ", ".join(lab.synonyms), float(lab.prob)) for lab in labs]
    return PictureLabels(duration_s=duration, shots=shots, times=times, shot_of=shot_of, labels=labels,
                         model_id=_model_id(classifier), missing="" if frames else "no frame decoded")


class PictureCache:
    """Picture labels per video content: in memory for the process, and as JSON under ``cache_dir``."""

    def __init__(self, cache_dir: Path | None):
        self.cache_dir = cache_dir
        self._mem: dict[tuple, PictureLabels] = {}
        self._lock = threading.Lock()

    def get(self, video: Path, visual: Any, classifier_factory) -> PictureLabels:
        st = os.stat(video)
        key = (str(Path(video).resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._mem:
                return self._mem[key]
        classifier = classifier_factory()
        path = None
        if self.cache_dir is not None:
            from reasoning.offline.motion import video_sha256

            tag = "".join(c if c.isalnum() else "-" for c in _model_id(classifier))[:40]
            path = self.cache_dir / f"picture_{video_sha256(video)[:32]}_{VERSION}_{tag}_k{KEYFRAMES_MAX}.json"
            if path.is_file():
                try:
                    result = PictureLabels.from_json(path.read_text())
                    with self._lock:
                        self._mem[key] = result
                    return result
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.warning("ignoring unreadable picture-label cache %s (%s)", path, exc)
        result = label_picture(Path(video), visual, classifier)
        if path is not None and not result.missing:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = part_path(path)
                tmp.write_text(result.to_json())
                tmp.replace(path)
            except OSError as exc:
                log.warning("could not cache picture labels in %s (%s)", path, exc)
        with self._lock:
            self._mem[key] = result
        return result


def _rescale(cos: np.ndarray) -> np.ndarray:
    return np.clip((cos - REL_LO) / (REL_HI - REL_LO), 0.0, 1.0)


class PictureSupport:
    """support(label, span) in [0, 1]: the probability mass of picture classes that speak for the label."""

    def __init__(self, picture: PictureLabels, text_embedder: Any):
        self.picture = picture
        self.text = text_embedder
        self._class_text: dict[int, tuple[str, str]] = {}

    def _texts(self, idx: int, names: str) -> tuple[str, str]:
        if idx not in self._class_text:
            rule = vocab.match(idx, [s.strip() for s in names.split(",")]) if idx >= 0 else vocab.FALLBACK
            sound = "" if rule is vocab.FALLBACK else f"{rule.name}: {rule.sources}"
            self._class_text[idx] = (names, sound)
        return self._class_text[idx]

    def support(self, labels: Sequence[str], start_s: float, end_s: float) -> list[tuple[float, str]]:
        """Per label: (support 0..1, the picture class that speaks for it most)."""
        classes = self.picture.classes(start_s, end_s)
        if not classes or not labels:
            return [(0.0, "") for _ in labels]
        pic_texts: list[str] = []
        for idx, names, _ in classes:
            a, b = self._texts(idx, names)
            pic_texts += [a, b or a]
        emb = np.asarray(self.text.encode(list(labels) + pic_texts), dtype=np.float32)
        lab, pic = emb[:len(labels)], emb[len(labels):]
        rel = _rescale(lab @ pic.T).reshape(len(labels), len(classes), 2).max(axis=2)   # (labels, classes)
        mass = np.array([m for _, _, m in classes], dtype=np.float64)
        contrib = rel * mass[None, :]
        out = []
        for i in range(len(labels)):
            best = int(np.argmax(contrib[i]))
            why = classes[best][1].split(",")[0] if contrib[i, best] > 0 else ""
            out.append((float(min(1.0, contrib[i].sum() / SUPPORT_MASS)), why))
        return out
