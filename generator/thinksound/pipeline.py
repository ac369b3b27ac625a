"""ThinkSound as library calls (diffusers-style): injected components, checked inputs, typed start points.

``ThinkSoundPipeline`` composes five components, in the order a render uses them (``model_cpu_offload_seq``):
T5 and MetaCLIP (text), Synchformer (video; loaded at the first video render), MM-DiT, VAE. Each component is
either a ready object or a ``Slot``: a key, a size and a loader for the process's one model cache
(``contract.memory.SLOTS``, role "renderer"). A render fetches what it needs and drops the references when it
returns, so the device manager (agent/devices.py) can release them between stages; the pipeline frees nothing
itself. Pipelines built from the same spec share the loaded modules through the cache keys.

One render: ``check_inputs`` → features (cached on disk) → ``prepare_latents`` (per-seed noise) → Euler sampling
from a ``StartPoint`` under ``torch.inference_mode()`` → VAE decode. ``generate_batch`` puts several clips of one
duration bucket (and their CFG pairs) into each MM-DiT forward.
"""

from __future__ import annotations

import logging
import math
import pickle
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from contract import memory
from contract.errors import BackendError, BadWeights

from .checkpoint import CheckpointError, load_mmdit, load_vae, resolve_auto_dtype, resolve_device, resolve_dtype
from .mmdit import FULL_CONFIG, MMDiT, build_mmdit, fit_length, param_count
from .sampler import FRESH, RectifiedFlowEuler, StartPoint
from .sequence import LATENT_RATE, MIN_DURATION_S, SAMPLE_RATE, VAE_DOWNSAMPLING, SequenceConfig
from .vae import FULL_VAE_CONFIG, OobleckVAE, build_vae, to_pcm_int16
from .weights import SYNC_NAME, WeightsDir, default_weights_dir

log = logging.getLogger(__name__)

DEFAULT_METACLIP = "facebook/metaclip-h14-fullcc2.5b"
DEFAULT_T5 = "google/t5-v1_1-xl"
DEFAULT_STEPS = 24
DEFAULT_CFG_SCALE = 5.0
DEFAULT_MAX_BATCH = 8
ROLE = "renderer"  # the model-cache role agent/devices.py releases for this backend
COMPILE_BACKEND = "inductor"


# ---- spec, requests, results -------------------------------------------------------------------------------


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@dataclass(frozen=True)
class PipelineSpec:
    """Everything that determines the loaded models and how they run."""

    weights: Path
    metaclip: str = DEFAULT_METACLIP
    t5: str = DEFAULT_T5
    synchformer: str | None = None  # None → <weights>/synchformer_state_dict.pth
    device: str = "cpu"
    dtype: str = "auto"  # MM-DiT and feature encoders; see checkpoint.resolve_auto_dtype
    cache_dir: Path | None = None  # None → $FOLEYLOOP_HOME/cache/features
    compile: bool = False  # torch.compile the MM-DiT forward and the VAE decoder
    vae_dtype: str = "fp32"  # the VAE runs once per render; bf16 costs ~12 % RMS on random weights (bench)
    max_batch: int = DEFAULT_MAX_BATCH  # clips per MM-DiT forward in generate_batch

    @classmethod
    def from_options(cls, opts: Mapping[str, Any], device: str = "cpu", dtype: str = "auto") -> "PipelineSpec":
        """Renderer options (``dict(cfg.params)``); an option ``dtype`` overrides the run's dtype."""
        weights = Path(opts["weights"]).expanduser() if opts.get("weights") else default_weights_dir()
        cache = opts.get("cache_dir")
        if cache is None:
            from store.db import default_home

            cache = default_home() / "cache" / "features"
        max_batch = int(opts.get("max_batch") or DEFAULT_MAX_BATCH)
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        return cls(weights=weights, metaclip=str(opts.get("metaclip") or DEFAULT_METACLIP),
                   t5=str(opts.get("t5") or DEFAULT_T5),
                   synchformer=str(opts["synchformer"]) if opts.get("synchformer") else None,
                   device=device, dtype=str(opts.get("dtype") or dtype), cache_dir=Path(cache).expanduser(),
                   compile=_flag(opts.get("compile", False)), vae_dtype=str(opts.get("vae_dtype") or "fp32"),
                   max_batch=max_batch)

    @classmethod
    def from_config(cls, cfg) -> "PipelineSpec":
        return cls.from_options(dict(cfg.params), cfg.device, cfg.dtype)


@dataclass(frozen=True)
class GenerationRequest:
    """One clip to generate: video(+text) → audio, or text-only when video is None."""

    caption: str
    cot: str
    duration_s: float
    video: str | Path | None = None
    seed: int = 0
    steps: int = DEFAULT_STEPS
    cfg_scale: float = DEFAULT_CFG_SCALE

    @property
    def sequence(self) -> SequenceConfig:
        """Renders shorter than 1 s run at the 1 s minimum and are trimmed afterwards."""
        return SequenceConfig(max(float(self.duration_s), MIN_DURATION_S))


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


def check_inputs(duration_s: float | None, steps: int, cfg_scale: float, *, seed: int = 0,
                 strength: float | None = None, window: tuple[float, float] | None = None,
                 mode: str = "generate") -> None:
    """Validate one request before anything loads; ValueError with one clear line otherwise.

    mode: "generate", "variation" (strength in 0..1) or "window" (strength in (0, 1], window inside the audio
    of ``duration_s`` seconds).
    """
    if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float)) or not math.isfinite(duration_s) \
            or duration_s <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration_s!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if isinstance(cfg_scale, bool) or not isinstance(cfg_scale, (int, float)) or not math.isfinite(cfg_scale) \
            or cfg_scale < 0:
        raise ValueError(f"cfg_scale must be a finite number >= 0 (1 = no guidance), got {cfg_scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if mode == "generate":
        if strength is not None or window is not None:
            raise ValueError("strength and window only apply to edits (variation, window)")
        return
    if mode not in ("variation", "window"):
        raise ValueError(f"unknown mode {mode!r}")
    s = strength
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
        raise ValueError(f"strength must be a number, got {s!r}")
    if mode == "variation":
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"strength must be in 0..1, got {s}")
        return
    if not 0.0 < s <= 1.0:
        raise ValueError(f"strength for a window edit must be in (0, 1], got {s}")
    if window is None or len(window) != 2:
        raise ValueError(f"a window edit needs (start_s, end_s), got {window!r}")
    latent_window(float(window[0]), float(window[1]), max(1, math.ceil(duration_s * SAMPLE_RATE / VAE_DOWNSAMPLING)))


# ---- components through the one model cache ----------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """A component loaded on first use through ``contract.memory.SLOTS`` (never held by the pipeline)."""

    key: str
    size_gb: Callable[[], float]
    load: Callable[[], Any]
    role: str = ROLE

    @property
    def loaded(self) -> bool:
        return self.key in memory.SLOTS.loaded()

    def get(self) -> Any:
        size = 0.0 if self.loaded else float(self.size_gb())
        return memory.SLOTS.get(self.key, size, self.load, role=self.role)


class CompiledFn:
    """``torch.compile(fn)`` with an eager fallback: a failure to compile or run it warns once, then runs fn."""

    def __init__(self, fn: Callable, what: str) -> None:
        self.fn, self.what = fn, what
        self.error: str | None = None
        self.warm: set = set()
        self._lock = threading.Lock()
        try:
            self.compiled: Callable | None = torch.compile(fn, backend=COMPILE_BACKEND, dynamic=False)
        except Exception as exc:  # noqa: BLE001 - any failure means: run eagerly
            self.compiled = None
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self.compiled = None
        self.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        warnings.warn(f"torch.compile of the {self.what} failed ({self.error}); running it eagerly",
                      RuntimeWarning, stacklevel=3)

    @property
    def status(self) -> str:
        return "eager (compile failed)" if self.compiled is None else "compiled"

    def __call__(self, *args):
        if self.compiled is None:
            return self.fn(*args)
        try:
            return self.compiled(*args)
        except Exception as exc:  # noqa: BLE001 - compile errors surface on the first call
            if not _is_compile_error(exc):
                raise  # the model's own error (bad shapes, OOM): compiling is not the problem
            self._fail(exc)
            return self.fn(*args)

    def warm_up(self, key: Any, run: Callable[[], Any]) -> float:
        """Compile for one input shape (``run`` calls this function once, result discarded) outside the
        timed work; returns the seconds spent, 0 when that shape is already compiled or compiling failed."""
        with self._lock:
            if self.compiled is None or key in self.warm:
                return 0.0
            t0 = time.perf_counter()
            run()
            self.warm.add(key)
            return time.perf_counter() - t0


def _is_compile_error(exc: BaseException) -> bool:
    """Raised by dynamo/inductor (tracing, code generation, a missing C++ compiler), not by the model."""
    from torch._dynamo.exc import TorchDynamoException

    return isinstance(exc, TorchDynamoException) or type(exc).__module__.startswith(("torch._dynamo",
                                                                                     "torch._inductor"))


def _compiled(module: torch.nn.Module, attr: str, fn: Callable, what: str) -> CompiledFn:
    """One CompiledFn per loaded module (shared by every pipeline that shares the module)."""
    found = module.__dict__.get(attr)
    if found is None:
        found = CompiledFn(fn, what)
        module.__dict__[attr] = found
    return found


def _files_gb(paths: Sequence[Path], dtype: torch.dtype) -> float:
    """Weights in memory ≈ files on disk (published fp32) scaled to the target dtype, +20 %."""
    total = 0
    for p in paths:
        total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    return 1.2 * total * (torch.finfo(dtype).bits / 32) / 1e9


def _file_id(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}#{st.st_size}:{st.st_mtime_ns}"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---- the pipeline -------------------------------------------------------------------------------------------


class ThinkSoundPipeline:
    """MM-DiT + VAE + feature encoders; generate, vary or inpaint audio."""

    #: the order a render uses its components (diffusers' model_cpu_offload_seq); text encoders are idle after
    #: the features are computed, the VAE only runs at the end.
    model_cpu_offload_seq = ("t5", "metaclip", "synchformer", "mmdit", "vae")

    def __init__(self, *, mmdit: MMDiT | Slot, vae: OobleckVAE | Slot, metaclip: Any = None, t5: Any = None,
                 synchformer: Any = None, feature_cache: Any = None, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, compile: bool = False, max_batch: int = DEFAULT_MAX_BATCH,
                 vae_batch: int | None = None, weights: WeightsDir | None = None,
                 spec: PipelineSpec | None = None) -> None:
        """Components are loaded objects or Slots; metaclip/t5 may be None when only ``sample``/``decode`` run."""
        self.components: dict[str, Any] = {"t5": t5, "metaclip": metaclip, "synchformer": synchformer,
                                           "mmdit": mmdit, "vae": vae}
        if isinstance(mmdit, MMDiT):
            device = device if device is not None else mmdit.device
            dtype = dtype if dtype is not None else mmdit.dtype
        self.device = resolve_device(device if device is not None else "cpu")
        self.dtype = dtype if dtype is not None else torch.float32
        self.feature_cache = feature_cache
        self.compile = bool(compile)
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = int(max_batch)
        # batched VAE decoding is slower on CPU (bench part c); on CUDA several clips per call amortise launches
        self.vae_batch = vae_batch if vae_batch is not None else (4 if self.device.type == "cuda" else 1)
        self.weights, self.spec = weights, spec
        self.dtype_why = ""
        self._lock = threading.RLock()

    # ---- construction from a weights folder -----------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> "ThinkSoundPipeline":
        """Cheap: checks the weights folder (ModelMissing early) and declares the Slots; loads nothing."""
        weights = WeightsDir.open(spec.weights)
        device = resolve_device(spec.device)
        if spec.dtype == "auto":
            dtype, why = resolve_auto_dtype(device)
        else:
            dtype, why = resolve_dtype(spec.dtype, device), f"dtype {spec.dtype} as configured"
        vae_dtype = resolve_dtype(spec.vae_dtype, device)
        gemm = device.type == "cpu"  # conv-as-GEMM pays on CPU (bench part c); cuDNN convs stay on GPU
        tag = f"{device}:{_dtype_name(dtype)}"
        w = weights

        def mmdit_size() -> float:  # parameters × bytes; activations are small next to them
            return param_count(build_mmdit(w.mmdit_config or FULL_CONFIG, device="meta")) * dtype.itemsize / 1e9

        def vae_size() -> float:
            cfg = w.vae_config or FULL_VAE_CONFIG
            return param_count(build_vae(cfg, device="meta")) * vae_dtype.itemsize / 1e9

        def load_dit() -> MMDiT:
            try:
                return load_mmdit(w.light, config=w.mmdit_config, dtype=dtype, device=device, gemm_convs=gemm)
            except CheckpointError as exc:
                raise BadWeights(f"ThinkSound weights in {w.root}: {exc}") from exc

        def load_autoencoder() -> OobleckVAE:
            try:
                return load_vae(w.vae or w.light, config=w.vae_config, dtype=vae_dtype, device=device)
            except CheckpointError as exc:
                raise BadWeights(f"ThinkSound weights in {w.root}: {exc}") from exc

        def feature_slot(kind: str, ref: str) -> Slot:
            from generator.features import MetaCLIPFeatures, T5Features, resolve_model

            make = MetaCLIPFeatures if kind == "metaclip" else T5Features
            return Slot(f"thinksound.{kind}:{ref}:{tag}", lambda: _files_gb([resolve_model(ref, kind)], dtype),
                        lambda: make(ref, device=device, dtype=dtype))

        sync_path = Path(spec.synchformer) if spec.synchformer else (w.synchformer or (w.root / SYNC_NAME))
        sync = Slot(f"thinksound.synchformer:{sync_path}:{tag}",
                    lambda: _files_gb([sync_path], dtype) if sync_path.exists() else 0.1,
                    lambda: _load_sync(sync_path, device, dtype, w.sync_config))
        light_id = _file_id(w.light)
        vae_id = _file_id(w.vae) if w.vae else light_id
        pipe = cls(
            mmdit=Slot(f"thinksound.mmdit:{light_id}:{tag}:{'gemm' if gemm else 'conv'}", mmdit_size, load_dit),
            vae=Slot(f"thinksound.vae:{vae_id}:{device}:{_dtype_name(vae_dtype)}", vae_size, load_autoencoder),
            metaclip=feature_slot("metaclip", spec.metaclip), t5=feature_slot("t5", spec.t5), synchformer=sync,
            feature_cache=None, device=device, dtype=dtype, compile=spec.compile, max_batch=spec.max_batch,
            weights=weights, spec=spec)
        pipe.dtype_why = why
        if spec.cache_dir is not None:
            from generator.features import FeatureCache

            pipe.feature_cache = FeatureCache(spec.cache_dir)
        return pipe

    @classmethod
    def get(cls, spec: PipelineSpec) -> "ThinkSoundPipeline":
        """A pipeline for ``spec``. Pipelines of equal specs share their loaded modules via the cache keys."""
        return cls.from_spec(spec)

    # ---- components -------------------------------------------------------------------------------------------
    def _component(self, name: str) -> Any:
        c = self.components[name]
        if c is None:
            raise BackendError(f"this ThinkSound pipeline has no {name} component")
        return c.get() if isinstance(c, Slot) else c

    @property
    def mmdit(self) -> MMDiT:
        return self._component("mmdit")

    @property
    def vae(self) -> OobleckVAE:
        return self._component("vae")

    @property
    def loaded(self) -> bool:
        """Every component a text render needs is in the model cache (or was injected)."""
        return all(not isinstance(c, Slot) or c.loaded for n, c in self.components.items()
                   if n != "synchformer" and c is not None)

    def memory(self) -> list[dict]:
        """Components in offload order: cache key, whether loaded (for `foleyloop models` / debugging)."""
        out = []
        for name in self.model_cpu_offload_seq:
            c = self.components[name]
            if c is not None:
                out.append({"component": name, "key": c.key if isinstance(c, Slot) else "(injected)",
                            "loaded": c.loaded if isinstance(c, Slot) else True})
        return out

    def load(self, video: bool = False) -> dict:
        """Load what a text render needs (MM-DiT, VAE, MetaCLIP, T5; with ``video`` also Synchformer) into the
        model cache now."""
        t0 = time.perf_counter()
        parts = self._acquire(video=video)
        names = [n for n in self.model_cpu_offload_seq if n in parts]
        del parts
        return {"load_s": time.perf_counter() - t0, "loaded": names}

    def _acquire(self, video: bool, features: bool = True) -> dict[str, Any]:
        """The components of one render, in use order; references are dropped when the render returns."""
        names = [n for n in self.model_cpu_offload_seq
                 if (features or n in ("mmdit", "vae")) and (video or n != "synchformer")]
        with self._lock:
            parts = {n: self._component(n) for n in names}
        dit = parts["mmdit"]
        if features:
            clip, t5 = parts["metaclip"], parts["t5"]
            widths = {"MetaCLIP image projection": (clip.image_dim, dit.config.clip_dim),
                      "MetaCLIP text width": (clip.text_width, 1024), "T5 d_model": (t5.width, dit.config.text_dim)}
            bad = [f"{k} {got} (MM-DiT expects {want})" for k, (got, want) in widths.items() if got != want]
            if bad:
                where = self.weights.root if self.weights else "the injected MM-DiT"
                raise BadWeights(f"feature models do not fit the MM-DiT in {where}: {'; '.join(bad)}")
        if video and parts["synchformer"].dim != dit.config.sync_dim:
            raise BadWeights(f"Synchformer is {parts['synchformer'].dim} wide; the MM-DiT expects "
                             f"{dit.config.sync_dim}")
        return parts

    def _flow(self, dit: MMDiT) -> Callable | None:
        return _compiled(dit, "_foleyloop_compiled_flow", dit.predict_flow, "MM-DiT forward") \
            if self.compile else None

    def _decoder(self, vae: OobleckVAE) -> Callable | None:
        return _compiled(vae, "_foleyloop_compiled_decoder", vae.decoder, "VAE decoder") if self.compile else None

    # ---- conditioning ---------------------------------------------------------------------------------------
    def _extractor(self, parts: dict):
        from generator.features import FeatureExtractor

        return FeatureExtractor(parts["metaclip"], parts["t5"], parts.get("synchformer"), self.feature_cache)

    def conditions(self, parts: dict, request: GenerationRequest, seq: SequenceConfig) -> tuple[dict, dict]:
        """The four feature tensors of one clip (batch 1, fitted to ``seq``) and what producing them cost."""
        extractor, dit = self._extractor(parts), parts["mmdit"]
        meta: dict[str, Any] = {"timings": {}}

        def counted(fn):
            before = extractor.stats()
            out = fn()
            after = extractor.stats()
            return out, after["hits"] - before["hits"], after["misses"] - before["misses"]

        t0 = time.perf_counter()
        if request.video is not None:
            vf, hits, misses = counted(lambda: extractor.video_features(request.video, seq.duration_s))
            clip_f, sync_f = vf["clip_f"][None], vf["sync_f"][None]
            video_cache = "hit" if hits else "miss"
        else:  # text-only: the checkpoint's null video features stand in for the conditional branch too
            hits = misses = 0
            clip_f = dit.empty_clip_feat.detach().float().cpu().expand(1, seq.clip_seq_len, -1)
            sync_f = dit.empty_sync_feat.detach().float().cpu().expand(1, seq.sync_seq_len, -1)
            video_cache = "none"
        meta["timings"]["features_video_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        tf, th, tm = counted(lambda: extractor.text_features(request.caption, request.cot))
        meta["timings"]["features_text_s"] = time.perf_counter() - t1
        meta["feature_cache"] = {"hits": hits + th, "misses": misses + tm, "video": video_cache,
                                 "text_hits": th, "text_misses": tm}
        meta["t5_tokens"] = {k: v for k, v in extractor.t5.token_budget(request.cot or " ").items() if k != "kept"}
        feats = {"clip_f": fit_length(clip_f, seq.clip_seq_len), "sync_f": fit_length(sync_f, seq.sync_seq_len),
                 "text_f": tf["text_f"][None], "t5_f": tf["t5_f"][None]}
        return feats, meta

    # ---- latents, sampling, decoding ------------------------------------------------------------------------
    def prepare_latents(self, seeds: Sequence[int], seq: SequenceConfig, latent_dim: int = 64) -> torch.Tensor:
        """(B, latent_dim, N) starting noise: one CPU generator per seed, so a clip's noise does not depend on
        the batch it is rendered in (predict.py draws ``torch.randn(1, 64, N)`` after seeding)."""
        noise = [torch.randn(1, latent_dim, seq.latent_seq_len, generator=torch.Generator().manual_seed(int(s)))
                 for s in seeds]
        return torch.cat(noise).to(self.device)

    def sample(self, feats: Mapping[str, torch.Tensor], seq: SequenceConfig, seeds: Sequence[int], steps: int,
               cfg_scale: float, start: StartPoint = FRESH, *, dit: MMDiT | None = None,
               timings: dict | None = None) -> torch.Tensor:
        """Latents (B, 64, N) for B clips of one duration bucket: one MM-DiT forward per Euler step for all
        clips and their guidance rows. ``feats`` hold (B, ...) clip_f, sync_f, text_f, t5_f."""
        dit = dit if dit is not None else self.mmdit
        timings = timings if timings is not None else {}
        solver = RectifiedFlowEuler(steps)
        with torch.inference_mode():
            cond = dit.prepare_conditions(feats["clip_f"], feats["sync_f"], feats["text_f"], feats["t5_f"],
                                          cfg_scale, seq=seq)
            noise = self.prepare_latents(seeds, seq, dit.config.latent_dim)
            flow = self._flow(dit)

            def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return dit.predict_velocity(x, t, cond, cfg_scale, flow=flow)

            if flow is not None and not start.skip_sampling:  # compile for these shapes, timed on its own
                t1 = torch.ones(noise.shape[0], device=self.device)
                key = (tuple(noise.shape), dit.dtype, cond.cfg_batched)
                timings["compile_warmup_s"] = flow.warm_up(key, lambda: velocity(noise, t1))
            t0 = time.perf_counter()
            latents = solver.sample_from(velocity, noise, start.to(self.device))
            timings["sampling_s"] = time.perf_counter() - t0
        return latents

    def decode(self, latents: torch.Tensor, *, vae: OobleckVAE | None = None,
               timings: dict | None = None) -> np.ndarray:
        """(B, 64, N) → (B, 2, N·2048) float32, not normalised; a (1, 64, N) input gives (2, N·2048)."""
        vae = vae if vae is not None else self.vae
        decoder = self._decoder(vae)
        with torch.inference_mode():
            z = latents.to(vae.device, vae.dtype)
            if decoder is not None and timings is not None:
                first = z[: self.vae_batch]
                timings["decode_warmup_s"] = decoder.warm_up((tuple(first.shape), vae.dtype),
                                                             lambda: decoder(first))
            t0 = time.perf_counter()
            audio = vae.decode(z, batch_size=self.vae_batch, decoder=decoder).float().cpu().numpy()
            if timings is not None:
                timings["decode_s"] = time.perf_counter() - t0
        return audio[0] if audio.shape[0] == 1 else audio

    def latents_for(self, n_samples: int) -> int:
        """Latent frames whose decode covers n_samples (edits keep every input sample; renders use predict.py's)."""
        return max(1, math.ceil(n_samples / self._downsampling()))

    def _downsampling(self) -> int:
        if self.weights is not None and self.weights.vae_config is not None:
            return self.weights.vae_config.downsampling_ratio
        vae = self.components["vae"]
        return vae.config.downsampling_ratio if isinstance(vae, OobleckVAE) else VAE_DOWNSAMPLING

    def encode(self, audio: np.ndarray, n_latents: int) -> torch.Tensor:
        """(2, n) 44.1 kHz → VAE mean latents (1, 64, n_latents); audio padded/cut to n_latents·2048 samples."""
        vae = self.vae
        n = n_latents * vae.config.downsampling_ratio
        a = np.asarray(audio, dtype=np.float32)[:, :n]
        a = np.pad(a, ((0, 0), (0, n - a.shape[1])))
        with torch.inference_mode():
            mean, _ = vae.encode(torch.from_numpy(a)[None])
            mean = mean.float().cpu()
        return mean.clone()  # a normal tensor: callers may modify it outside inference mode

    # ---- the shared render body -----------------------------------------------------------------------------
    def _render(self, requests: Sequence[GenerationRequest], seq: SequenceConfig, start: StartPoint = FRESH,
                out_samples: int | None = None, edit: dict | None = None,
                load_s: float = 0.0) -> list[Generation]:
        """One group (same bucket, steps and cfg): features → sample (one batch) → decode."""
        video = any(r.video is not None for r in requests)
        t0 = time.perf_counter()
        parts = self._acquire(video)
        load_s += time.perf_counter() - t0
        dit = parts["mmdit"]
        per_clip = [self.conditions(parts, r, seq) for r in requests]
        feats = {k: torch.cat([f[k] for f, _ in per_clip]) for k in ("clip_f", "sync_f", "text_f", "t5_f")}
        steps, cfg_scale = requests[0].steps, requests[0].cfg_scale
        timings: dict[str, float] = {}
        latents = self.sample(feats, seq, [r.seed for r in requests], steps, cfg_scale, start, dit=dit,
                              timings=timings)
        audio = self.decode(latents, vae=parts["vae"], timings=timings)
        audio = audio[None] if audio.ndim == 2 else audio
        latents = latents.float().cpu().clone()  # leave inference mode: plain tensors for the caller
        compiled = self._flow(dit).status if self.compile else None
        del parts, dit
        out = []
        for i, (req, (_, meta)) in enumerate(zip(requests, per_clip)):
            a = audio[i]
            if out_samples is not None:  # edits: exactly the input's length
                a = np.pad(a[:, :out_samples], ((0, 0), (0, max(0, out_samples - a.shape[1]))))
            elif req.duration_s < MIN_DURATION_S:  # rendered at the 1 s minimum; keep what was asked for
                a = a[:, : round(req.duration_s * SAMPLE_RATE)]
            meta["timings"] |= timings | {"load_s": load_s}
            meta |= {"duration_s": float(req.duration_s), "latent_seq_len": seq.latent_seq_len, "steps": steps,
                     "cfg_scale": cfg_scale, "seed": int(req.seed), "video": req.video is not None,
                     "device": str(self.device), "dtype": _dtype_name(self.dtype), "batch_size": len(requests)}
            if self.dtype_why:
                meta["dtype_why"] = self.dtype_why
            if compiled is not None:
                meta["compile"] = compiled
            if edit is not None:
                meta["edit"] = edit
            out.append(Generation(audio=np.ascontiguousarray(a), latents=latents[i : i + 1], meta=meta))
        return out

    # ---- public operations ----------------------------------------------------------------------------------
    def generate(self, caption: str, cot: str, duration_s: float, *, video: str | Path | None = None, seed: int = 0,
                 steps: int = DEFAULT_STEPS, cfg_scale: float = DEFAULT_CFG_SCALE) -> Generation:
        """Video(+text) → audio, or text-only when video is None (predict.py's `video_exist = False`)."""
        return self.generate_batch([GenerationRequest(caption, cot, duration_s, video, seed, steps, cfg_scale)])[0]

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Several clips at once, results in request order. Clips of one duration bucket with equal steps and
        cfg_scale share each MM-DiT forward (up to ``max_batch`` clips, i.e. 2·max_batch rows with guidance);
        every clip's noise comes from its own seed, so it matches its separate render within fp32 rounding."""
        requests = list(requests)
        for r in requests:  # all checked before any work starts
            check_inputs(r.duration_s, r.steps, r.cfg_scale, seed=r.seed)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.sequence.bucket, r.steps, float(r.cfg_scale)), []).append(i)
        results: list[Generation | None] = [None] * len(requests)
        for idx in groups.values():
            for lo in range(0, len(idx), self.max_batch):
                chunk = idx[lo : lo + self.max_batch]
                gens = self._render([requests[i] for i in chunk], requests[chunk[0]].sequence)
                for i, g in zip(chunk, gens):
                    results[i] = g
        return results  # type: ignore[return-value]

    def __call__(self, caption: str, cot: str, duration_s: float, **kw) -> Generation:
        return self.generate(caption, cot, duration_s, **kw)

    def variation(self, audio: np.ndarray, caption: str, cot: str, strength: float, *,
                  video: str | Path | None = None, seed: int = 0, steps: int = DEFAULT_STEPS,
                  cfg_scale: float = DEFAULT_CFG_SCALE) -> Generation:
        """Audio-to-audio: encode, noise to t = strength, sample back under the new text (0 = unchanged decode)."""
        a = np.asarray(audio, dtype=np.float32)
        check_inputs(a.shape[-1] / SAMPLE_RATE, steps, cfg_scale, seed=seed, strength=strength, mode="variation")
        seq = SequenceConfig.for_samples(a.shape[1], self._downsampling())
        t0 = time.perf_counter()
        x0 = self.encode(a, seq.latent_seq_len)
        start = StartPoint(x0, t_start=float(strength))
        req = GenerationRequest(caption, cot, a.shape[1] / SAMPLE_RATE, video, seed, steps, cfg_scale)
        return self._render([req], seq, start, a.shape[1], {"mode": "variation", "strength": strength},
                            load_s=time.perf_counter() - t0)[0]

    def inpaint(self, audio: np.ndarray, window: tuple[float, float], caption: str, cot: str, *,
                strength: float = 1.0, video: str | Path | None = None, seed: int = 0,
                steps: int = DEFAULT_STEPS, cfg_scale: float = DEFAULT_CFG_SCALE) -> Generation:
        """Regenerate only `window` (seconds); outside it the known latents are re-imposed at every step."""
        a = np.asarray(audio, dtype=np.float32)
        check_inputs(a.shape[-1] / SAMPLE_RATE, steps, cfg_scale, seed=seed, strength=strength, window=window,
                     mode="window")
        seq = SequenceConfig.for_samples(a.shape[1], self._downsampling())
        n = seq.latent_seq_len
        lo, hi = latent_window(float(window[0]), float(window[1]), n)
        t0 = time.perf_counter()
        x0 = self.encode(a, n)
        mask = torch.zeros(1, 1, n)
        mask[..., lo:hi] = 1.0
        req = GenerationRequest(caption, cot, a.shape[1] / SAMPLE_RATE, video, seed, steps, cfg_scale)
        edit = {"mode": "window", "strength": strength, "window_s": list(window), "latent_window": [lo, hi]}
        return self._render([req], seq, StartPoint(x0, t_start=float(strength), mask=mask), a.shape[1], edit,
                            load_s=time.perf_counter() - t0)[0]


def _load_sync(path: Path, device: torch.device, dtype: torch.dtype, cfg):
    """Synchformer for video renders; a bad file is BadWeights with the reason, a missing one ModelMissing."""
    from generator.features import SyncFeatures
    from models.synchformer import CheckpointMismatchError

    try:
        return SyncFeatures(path, device=device, dtype=dtype, cfg=cfg)
    except BackendError:  # ModelMissing: already one clear line
        raise
    except (pickle.UnpicklingError, CheckpointMismatchError, RuntimeError, EOFError) as exc:
        detail = " ".join(str(exc).split())[:1000]
        raise BadWeights(f"Synchformer checkpoint {path} was refused ({type(exc).__name__}: {detail}); "
                         "it must be a plain tensor dict holding `vfeat_extractor.*`") from exc
