"""ThinkSound as library calls: load once, then generate (video/text → audio), vary or inpaint existing audio.

The renderer and the `text`/`edit` commands call this; model code stays out of both. One pipeline per weights
configuration per process (``ThinkSoundPipeline.get``): loading MM-DiT, VAE, MetaCLIP and T5 is the slow part,
and the MM-DiT is switched between durations in place (``set_sequence``), so a lock serialises renders.
"""

from __future__ import annotations

import logging
import math
import pickle
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract.errors import BackendError, BadWeights
from contract.memory import make_room

from .checkpoint import CheckpointError, load_thinksound, resolve_device, resolve_dtype
from .mmdit import fit_length
from .sampler import Inpaint, RectifiedFlowEuler
from .sequence import LATENT_RATE, SAMPLE_RATE, VAE_DOWNSAMPLING, SequenceConfig
from .vae import to_pcm_int16
from .weights import SYNC_NAME, WeightsDir, default_weights_dir

log = logging.getLogger(__name__)

DEFAULT_METACLIP = "facebook/metaclip-h14-fullcc2.5b"
DEFAULT_T5 = "google/t5-v1_1-xl"
DEFAULT_STEPS = 24
DEFAULT_CFG_SCALE = 5.0
MIN_DURATION_S = 1.0  # SequenceConfig: CLIP/sync token counts use int(d)


@dataclass(frozen=True)
class PipelineSpec:
    """Everything that determines the loaded models (the per-process cache key)."""

    weights: Path
    metaclip: str = DEFAULT_METACLIP
    t5: str = DEFAULT_T5
    synchformer: str | None = None  # None → <weights>/synchformer_state_dict.pth
    device: str = "cpu"
    dtype: str = "fp32"
    cache_dir: Path | None = None  # None → $FOLEYLOOP_HOME/cache/features

    @classmethod
    def from_options(cls, opts: dict, device: str = "cpu", dtype: str = "fp32") -> "PipelineSpec":
        weights = Path(opts["weights"]).expanduser() if opts.get("weights") else default_weights_dir()
        cache = opts.get("cache_dir")
        if cache is None:
            from store.db import default_home

            cache = default_home() / "cache" / "features"
        return cls(weights=weights, metaclip=str(opts.get("metaclip") or DEFAULT_METACLIP),
                   t5=str(opts.get("t5") or DEFAULT_T5),
                   synchformer=str(opts["synchformer"]) if opts.get("synchformer") else None,
                   device=device, dtype=dtype, cache_dir=Path(cache).expanduser())

    @classmethod
    def from_config(cls, cfg) -> "PipelineSpec":
        return cls.from_options(dict(cfg.params), cfg.device, cfg.dtype)


@dataclass
class Generation:
    """Raw decoded audio (float, not normalised), its latents, and what it took."""

    audio: np.ndarray  # (2, n) float32 at 44.1 kHz
    latents: torch.Tensor  # (1, 64, N) on the CPU
    meta: dict = field(default_factory=dict)

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE


def peak_normalise(audio: np.ndarray | torch.Tensor) -> np.ndarray:
    """predict.py post-processing (peak → full scale, int16 truncation) as float32 in [-1, 1]."""
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    return (to_pcm_int16(x).numpy().astype(np.float32) / 32767.0)


def stereo_44k(audio: np.ndarray, rate: int) -> np.ndarray:
    """(C, n) or (n,) at any rate → (2, n') float32 at 44.1 kHz (mono is duplicated, extra channels dropped)."""
    from store.media import resample

    a = np.asarray(audio, dtype=np.float32)
    a = a[None] if a.ndim == 1 else a
    a = resample(a, rate, SAMPLE_RATE)
    return np.repeat(a[:1], 2, axis=0) if a.shape[0] == 1 else a[:2]


def latent_window(start_s: float, end_s: float, n_latents: int) -> tuple[int, int]:
    """Latent frames [lo, hi) covering [start_s, end_s): widened outward to whole frames."""
    if not (math.isfinite(start_s) and math.isfinite(end_s)) or end_s <= start_s or start_s < 0:
        raise ValueError(f"edit window must satisfy 0 <= start < end, got {start_s}..{end_s}")
    lo = max(0, math.floor(start_s * LATENT_RATE))
    hi = min(n_latents, math.ceil(end_s * LATENT_RATE))
    if hi <= lo:
        raise ValueError(f"edit window {start_s}..{end_s} s lies outside the {n_latents / LATENT_RATE:.2f} s audio")
    return lo, hi


def _make_room_on_gpu(gb: float) -> list[str]:
    """Ask the process's model cache to release what would not fit next to the generator."""
    try:
        return list(make_room(gb) or [])
    except Exception as exc:  # noqa: BLE001 - freeing memory is best effort, never the reason a render fails
        log.warning("could not release model memory before loading ThinkSound: %s", exc)
        return []


def _size_gb(paths: list[Path], dtype: torch.dtype) -> float:
    """Weights in memory ≈ files on disk (fp32 light ckpt; published fp32) scaled to the target dtype, +20 %."""
    total = 0
    for p in paths:
        total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    scale = torch.finfo(dtype).bits / 32
    return 1.2 * total * scale / 1e9


class ThinkSoundPipeline:
    """MM-DiT + VAE + feature extractors (Synchformer only once a video is rendered)."""

    _instances: dict[PipelineSpec, "ThinkSoundPipeline"] = {}
    _instances_lock = threading.Lock()

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        self.weights = WeightsDir.open(spec.weights)  # ModelMissing early, before anything loads
        self.device = resolve_device(spec.device)
        self.dtype = resolve_dtype(spec.dtype, self.device)
        self.mmdit = self.vae = self.extractor = None
        self._lock = threading.RLock()

    @classmethod
    def get(cls, spec: PipelineSpec) -> "ThinkSoundPipeline":
        with cls._instances_lock:
            if spec not in cls._instances:
                cls._instances[spec] = cls(spec)
            return cls._instances[spec]

    @classmethod
    def forget_all(cls) -> None:
        """Drop every cached pipeline (tests; freeing memory between unrelated jobs)."""
        with cls._instances_lock:
            cls._instances.clear()

    @property
    def loaded(self) -> bool:
        return self.mmdit is not None

    # ---- loading ----------------------------------------------------------------------------------------------
    def load(self) -> dict:
        """Load MM-DiT, VAE, MetaCLIP and T5 once; returns {"load_s", "released"} (zeros when already loaded)."""
        with self._lock:
            if self.loaded:
                return {"load_s": 0.0, "released": []}
            t0 = time.perf_counter()
            released = []
            if self.device.type == "cuda":
                released = _make_room_on_gpu(_size_gb(self.weights.files() + self._feature_paths(), self.dtype))
            w = self.weights
            try:
                models = load_thinksound(w.light, w.vae, SequenceConfig(9), dtype=self.dtype, device=self.device,
                                         config=w.mmdit_config, vae_config=w.vae_config)
            except CheckpointError as exc:
                raise BadWeights(f"ThinkSound weights in {w.root}: {exc}") from exc
            from generator.features import FeatureCache, FeatureExtractor, MetaCLIPFeatures, T5Features

            kw = dict(device=self.device, dtype=self.dtype)
            clip, t5 = MetaCLIPFeatures(self.spec.metaclip, **kw), T5Features(self.spec.t5, **kw)
            cfg = models.mmdit.config
            widths = {"MetaCLIP image projection": (clip.image_dim, cfg.clip_dim),
                      "MetaCLIP text width": (clip.text_width, 1024), "T5 d_model": (t5.width, cfg.text_dim)}
            bad = [f"{k} {got} (MM-DiT expects {want})" for k, (got, want) in widths.items() if got != want]
            if bad:
                raise BadWeights(f"feature models do not fit the MM-DiT in {w.root}: {'; '.join(bad)}")
            self.extractor = FeatureExtractor(clip, t5, None, FeatureCache(self.spec.cache_dir))
            self.mmdit, self.vae = models.mmdit, models.vae
            dt = time.perf_counter() - t0
            log.info("ThinkSound loaded from %s in %.1f s", w.root, dt)
            return {"load_s": dt, "released": released}

    def _feature_paths(self) -> list[Path]:
        from generator.features import resolve_model

        return [resolve_model(self.spec.metaclip, "metaclip"), resolve_model(self.spec.t5, "t5")]

    def _sync(self):
        """Synchformer, loaded at the first video render (text-only use never needs it)."""
        if self.extractor.sync is None:
            from generator.features import SyncFeatures
            from models.synchformer import CheckpointMismatchError

            path = self.spec.synchformer or self.weights.synchformer or (self.weights.root / SYNC_NAME)
            try:
                sync = SyncFeatures(path, device=self.device, dtype=self.dtype, cfg=self.weights.sync_config)
            except BackendError:  # ModelMissing: already one clear line
                raise
            except (pickle.UnpicklingError, CheckpointMismatchError, RuntimeError, EOFError) as exc:
                detail = " ".join(str(exc).split())[:1000]
                raise BadWeights(f"Synchformer checkpoint {path} was refused ({type(exc).__name__}: {detail}); "
                                   "it must be a plain tensor dict holding `vfeat_extractor.*`") from exc
            if sync.dim != self.mmdit.config.sync_dim:
                raise BadWeights(f"Synchformer {path} is {sync.dim} wide; the MM-DiT expects "
                                   f"{self.mmdit.config.sync_dim}")
            self.extractor.sync = sync
        return self.extractor.sync

    # ---- conditioning -----------------------------------------------------------------------------------------
    def _counted(self, fn):
        before = self.extractor.stats()
        out = fn()
        after = self.extractor.stats()
        return out, after["hits"] - before["hits"], after["misses"] - before["misses"]

    def conditions(self, caption: str, cot: str, seq: SequenceConfig, video: str | Path | None) -> tuple[dict, dict]:
        """The four feature tensors (batch 1, fitted to `seq`) and what producing them cost."""
        meta: dict[str, Any] = {"timings": {}}
        cfg = self.mmdit.config
        t0 = time.perf_counter()
        if video is not None:
            self._sync()
            vf, hits, misses = self._counted(lambda: self.extractor.video_features(video, seq.duration_s))
            clip_f, sync_f = vf["clip_f"][None], vf["sync_f"][None]
            video_cache = "hit" if hits else "miss"
        else:  # text-only: the checkpoint's null video features stand in for the conditional branch too
            hits = misses = 0
            clip_f = self.mmdit.empty_clip_feat.detach().float().cpu().expand(1, seq.clip_seq_len, -1)
            sync_f = self.mmdit.empty_sync_feat.detach().float().cpu().expand(1, seq.sync_seq_len, -1)
            video_cache = "none"
        meta["timings"]["features_video_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        tf, th, tm = self._counted(lambda: self.extractor.text_features(caption, cot))
        meta["timings"]["features_text_s"] = time.perf_counter() - t1
        meta["feature_cache"] = {"hits": hits + th, "misses": misses + tm, "video": video_cache,
                                 "text_hits": th, "text_misses": tm}
        meta["t5_tokens"] = {k: v for k, v in self.extractor.t5.token_budget(cot or " ").items() if k != "kept"}
        feats = {"clip_f": fit_length(clip_f, cfg.clip_seq_len), "sync_f": fit_length(sync_f, cfg.sync_seq_len),
                 "text_f": tf["text_f"][None], "t5_f": tf["t5_f"][None]}
        return feats, meta

    # ---- sampling ---------------------------------------------------------------------------------------------
    def _sample(self, feats: dict, seed: int, steps: int, cfg_scale: float, *, x0: torch.Tensor | None = None,
                t_start: float = 1.0, inpaint: Inpaint | None = None) -> torch.Tensor:
        m = self.mmdit
        cond = m.prepare_conditions(feats["clip_f"], feats["sync_f"], feats["text_f"], feats["t5_f"], cfg_scale)
        gen = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(1, m.config.latent_dim, m.config.latent_seq_len, generator=gen).to(self.device)
        if x0 is not None:
            x0 = x0.to(self.device)
        if inpaint is not None:
            inpaint = Inpaint(inpaint.known.to(self.device), inpaint.mask.to(self.device))
        velocity = lambda x, t: m.predict_velocity(x, t, cond, cfg_scale)  # noqa: E731
        return RectifiedFlowEuler(steps).sample(velocity, noise, x0=x0, t_start=t_start, inpaint=inpaint)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(1, 64, N) → (2, N·2048) float32, not normalised."""
        with torch.no_grad():
            return self.vae.decode(latents)[0].float().cpu().numpy()

    def latents_for(self, n_samples: int) -> int:
        """Latent frames whose decode covers n_samples (edits keep every input sample; renders use predict.py's)."""
        ratio = self.weights.vae_config.downsampling_ratio if self.weights.vae_config else VAE_DOWNSAMPLING
        return max(1, math.ceil(n_samples / ratio))

    def encode(self, audio: np.ndarray, n_latents: int) -> torch.Tensor:
        """(2, n) 44.1 kHz → VAE mean latents (1, 64, n_latents); audio padded/cut to n_latents·2048 samples."""
        n = n_latents * self.vae.config.downsampling_ratio
        a = np.asarray(audio, dtype=np.float32)[:, :n]
        a = np.pad(a, ((0, 0), (0, n - a.shape[1])))
        with torch.no_grad():
            mean, _ = self.vae.encode(torch.from_numpy(a)[None])
        return mean.float().cpu()

    def _run(self, caption: str, cot: str, duration_s: float, video, seed: int, steps: int, cfg_scale: float,
             prepare=None, n_latents: int | None = None) -> Generation:
        """Shared body: load, set duration, features, (prepare x0/inpaint), sample, decode, timings."""
        if not (duration_s and math.isfinite(duration_s) and duration_s > 0):
            raise BackendError(f"ThinkSound needs a positive duration, got {duration_s!r}")
        with self._lock:
            load = self.load()  # outside no_grad: weights must not be created as inference tensors
            return self._run_loaded(load, caption, cot, duration_s, video, seed, steps, cfg_scale, prepare,
                                    n_latents)

    @torch.no_grad()
    def _run_loaded(self, load: dict, caption: str, cot: str, duration_s: float, video, seed: int, steps: int,
                    cfg_scale: float, prepare, n_latents: int | None) -> Generation:
        seq = SequenceConfig(max(float(duration_s), MIN_DURATION_S))
        self.mmdit.set_sequence(seq, **({"latent_seq_len": n_latents} if n_latents else {}))
        n = self.mmdit.config.latent_seq_len
        feats, meta = self.conditions(caption, cot, seq, video)
        extra = prepare(n) if prepare is not None else {}
        t0 = time.perf_counter()
        if extra.get("skip_sampling"):
            latents = extra["x0"].to(self.device)
        else:
            latents = self._sample(feats, seed, steps, cfg_scale, x0=extra.get("x0"),
                                   t_start=extra.get("t_start", 1.0), inpaint=extra.get("inpaint"))
        t1 = time.perf_counter()
        audio = self.decode(latents)
        t2 = time.perf_counter()
        if "out_samples" in extra:  # edits: exactly the input's length
            n = extra["out_samples"]
            audio = np.pad(audio[:, :n], ((0, 0), (0, max(0, n - audio.shape[1]))))
        elif duration_s < MIN_DURATION_S:  # rendered at the 1 s minimum; keep what was asked for
            audio = audio[:, : round(duration_s * SAMPLE_RATE)]
        meta["timings"] |= {"sampling_s": t1 - t0, "decode_s": t2 - t1, "load_s": load["load_s"]}
        meta |= {"duration_s": float(duration_s), "latent_seq_len": n, "steps": steps,
                 "cfg_scale": cfg_scale, "seed": int(seed), "video": video is not None,
                 "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                 "released_for_memory": load["released"]}
        if "edit" in extra:
            meta["edit"] = extra["edit"]
        return Generation(audio=audio, latents=latents.float().cpu(), meta=meta)

    # ---- public operations ------------------------------------------------------------------------------------
    def generate(self, caption: str, cot: str, duration_s: float, *, video: str | Path | None = None, seed: int = 0,
                 steps: int = DEFAULT_STEPS, cfg_scale: float = DEFAULT_CFG_SCALE) -> Generation:
        """Video(+text) → audio, or text-only when video is None (predict.py's `video_exist = False`)."""
        return self._run(caption, cot, duration_s, video, seed, steps, cfg_scale)

    def variation(self, audio: np.ndarray, caption: str, cot: str, strength: float, *,
                  video: str | Path | None = None, seed: int = 0, steps: int = DEFAULT_STEPS,
                  cfg_scale: float = DEFAULT_CFG_SCALE) -> Generation:
        """Audio-to-audio: encode, noise to t = strength, sample back under the new text (0 = unchanged decode)."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in 0..1, got {strength}")
        a = np.asarray(audio, dtype=np.float32)

        def prepare(n: int) -> dict:
            return {"x0": self.encode(a, n), "t_start": max(strength, 1e-6), "skip_sampling": strength <= 0.0,
                    "out_samples": a.shape[1], "edit": {"mode": "variation", "strength": strength}}

        return self._run(caption, cot, a.shape[1] / SAMPLE_RATE, video, seed, steps, cfg_scale, prepare,
                         self.latents_for(a.shape[1]))

    def inpaint(self, audio: np.ndarray, window: tuple[float, float], caption: str, cot: str, *,
                strength: float = 1.0, video: str | Path | None = None, seed: int = 0,
                steps: int = DEFAULT_STEPS, cfg_scale: float = DEFAULT_CFG_SCALE) -> Generation:
        """Regenerate only `window` (seconds); outside it the known latents are re-imposed at every step."""
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength for a window edit must be in (0, 1], got {strength}")
        a = np.asarray(audio, dtype=np.float32)

        def prepare(n: int) -> dict:
            x0 = self.encode(a, n)
            lo, hi = latent_window(window[0], window[1], n)
            mask = torch.zeros(1, 1, n)
            mask[..., lo:hi] = 1.0
            return {"x0": x0, "t_start": strength, "inpaint": Inpaint(x0, mask), "out_samples": a.shape[1],
                    "edit": {"mode": "window", "strength": strength, "window_s": list(window),
                             "latent_window": [lo, hi]}}

        return self._run(caption, cot, a.shape[1] / SAMPLE_RATE, video, seed, steps, cfg_scale, prepare,
                         self.latents_for(a.shape[1]))
