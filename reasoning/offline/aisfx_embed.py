"""aiSFX sound-effects embeddings (PyPI ``aisfx`` 0.1.2, model CC BY 4.0) without librosa.

The package's own front-end imports librosa (not installed), and its ``load_weights`` fails on torch >= 2.6
because the checkpoint pickles numpy scalars. So we rebuild the input exactly as
``aisfx/spectrogram/spectrogram_librosa.py`` + ``aisfx/inference.py`` do, with torch alone:

  mono, 44.1 kHz, peak-normalised → power mel spectrogram (n_fft 2048, hop 1024, Hann, centred with zero
  padding as librosa 0.9's default pad_mode="constant", 96 **HTK** mels 0–22050 Hz, each filter normalised to
  unit **L1** sum: the package passes ``htk=True, norm=1.0``, which is not librosa's Slaney default)
  → log10(1e4·S + 1) → divided by 9.4578 (the package's "original" min/max normalisation)
  → blocks of 100 frames (~2.3 s), hop 50 → ``EmbeddingNet`` → 512-d per block.

The package's librosa path returns (mels, frames); the model and its Essentia path use (frames, mels), which
is what we feed. The checkpoint loads with ``weights_only=True`` and an allow-list of the three numpy globals
it pickles. Only the embedding trunk is built; the nine classifier heads have no published class names.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from store.atomic import part_path

log = logging.getLogger(__name__)

SAMPLE_RATE = 44100
N_FFT = 2048
HOP = 1024
N_MELS = 96
F_MIN, F_MAX = 0.0, 22050.0
LOG_SCALE = 1e4
NORM_MAX = 9.457798957824707  # aisfx.preprocessing.spectrogram_normalize(spec_norm="original"): mn=0, mx=this
BLOCK = 100
BLOCK_HOP = 50                 # emb_hop_size 0.5, as in the package's main()
EMBED_DIM = 512
VERSION = "aisfx-0.1.2/X-Sequential-CE"
LICENSE = "CC BY 4.0 (Ma & Lerch, ISMIR 2022)"


class AisfxUnavailable(RuntimeError):
    pass


def checkpoint_path() -> Path | None:
    spec = importlib.util.find_spec("aisfx")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "models" / "checkpoint.pth"
    return p if p.exists() else None


def availability() -> tuple[bool, str]:
    """(available, why-not) without loading the model."""
    if checkpoint_path() is None:
        return False, "aisfx is not installed (pip install --no-deps aisfx==0.1.2)"
    return True, ""


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(state_dict, ds_dict) with weights_only=True; the pickle holds numpy int64 scalars and their dtype."""
    import torch
    from numpy._core.multiarray import scalar

    # The checkpoint was written with numpy 1.x, so the scalar reconstructor is named numpy.core.multiarray.scalar.
    allowed = [(scalar, "numpy.core.multiarray.scalar"), np.dtype, type(np.dtype(np.int64))]
    with torch.serialization.safe_globals(allowed):
        state, ds_dict = torch.load(str(path), map_location="cpu", weights_only=True)
    return state, ds_dict


def build_model(state: dict):
    """The CrossNet embedding trunk (``EmbeddingNet('max', 3, 1, 64)``) with the checkpoint's weights."""
    from aisfx.models.cnn2d import EmbeddingNet

    net = EmbeddingNet("max", 3, 1, 64)
    prefix = "embedding_net."
    net.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    return net.eval()


# ---- front-end ----------------------------------------------------------------------------------------
def prepare(audio: np.ndarray, sr: int) -> np.ndarray:
    """Down-mix, resample to 44.1 kHz and peak-normalise, as the package's loader does."""
    from store.media import resample

    x = np.asarray(audio, dtype=np.float32)
    x = x.mean(axis=0) if x.ndim == 2 else x
    if sr != SAMPLE_RATE:
        x = resample(x, sr, SAMPLE_RATE)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return (x / peak if peak > 0 else x).astype(np.float32)


@lru_cache(maxsize=1)
def _window():
    import torch

    return torch.hann_window(N_FFT, periodic=True, dtype=torch.float32)


def htk_mel_fbanks(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int):
    """torchaudio's ``melscale_fbanks(..., norm=None, mel_scale="htk")``, the same float32 operations in the same
    order (equal to the bit, see the tests) without importing torchaudio (≈ 0.1 s of a first dub)."""
    import torch

    def hz_to_mel(freq: float) -> float:
        return 2595.0 * math.log10(1.0 + (freq / 700.0))

    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down_slopes = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up_slopes = slopes[:, 2:] / f_diff[1:]
    return torch.max(torch.zeros(1), torch.min(down_slopes, up_slopes))


@lru_cache(maxsize=1)
def mel_filters():
    """(n_freqs, 96) HTK triangular filters, each normalised to unit sum (librosa ``norm=1.0``)."""
    import torch

    fb = htk_mel_fbanks(N_FFT // 2 + 1, F_MIN, F_MAX, N_MELS, SAMPLE_RATE)
    sums = fb.sum(dim=0, keepdim=True)
    return (fb / torch.where(sums > 0, sums, torch.ones_like(sums))).to(torch.float32)


def log_mel(y: np.ndarray) -> np.ndarray:
    """Normalised log-mel (frames, 96) float32 of a prepared 44.1 kHz mono signal (float32 math: the critic's
    hot path; within 1e-5 of a float64 computation)."""
    import torch

    x = torch.as_tensor(np.asarray(y, dtype=np.float32))
    spec = torch.stft(x, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT,
                      window=_window(),
                      center=True, pad_mode="constant", return_complex=True)
    power = spec.abs() ** 2                       # (freqs, frames)
    mel = power.T @ mel_filters()                 # (frames, mels)
    return (torch.log10(mel * LOG_SCALE + 1.0) / NORM_MAX).to(torch.float32).numpy()


def blocks(spec: np.ndarray) -> np.ndarray:
    """(n, 100, 96) blocks, hop 50, last partial block dropped, short input zero-padded to one block."""
    t = spec.shape[0]
    n = max(1, (t - BLOCK) // BLOCK_HOP + 1) if t >= BLOCK else 1
    padded = np.vstack([spec, np.zeros((BLOCK, spec.shape[1]), dtype=spec.dtype)])
    return np.stack([padded[i * BLOCK_HOP: i * BLOCK_HOP + BLOCK] for i in range(n)])


# ---- model --------------------------------------------------------------------------------------------
class AisfxEmbedder:
    """Clip-level aiSFX embeddings: the mean of the per-block embeddings."""

    name = "aisfx"
    version = VERSION

    def __init__(self, model):
        self.model = model
        self._lock = threading.Lock()

    def embed_blocks(self, audio: np.ndarray, sr: int) -> np.ndarray:
        import torch

        b = blocks(log_mel(prepare(audio, sr)))
        with self._lock, torch.inference_mode():
            return self.model(torch.from_numpy(b)).numpy()

    def embed(self, audio: np.ndarray, sr: int) -> np.ndarray:
        return self.embed_blocks(audio, sr).mean(axis=0)

    def embed_many(self, segments: list[np.ndarray], sr: int) -> list[np.ndarray]:
        """One forward pass for several clips (a round's events), each the mean of its blocks."""
        import torch

        if not segments:
            return []
        per = [blocks(log_mel(prepare(s, sr))) for s in segments]
        with self._lock, torch.inference_mode():
            out = self.model(torch.from_numpy(np.concatenate(per))).numpy()
        bounds = np.cumsum([0] + [len(b) for b in per])
        return [out[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])]

    def embed_file(self, path: str | Path) -> np.ndarray:
        from store.media import read_audio

        audio, sr = read_audio(path, sample_rate=SAMPLE_RATE, mono=True)
        return self.embed(audio, sr)


_model_lock = threading.Lock()
_embedder: AisfxEmbedder | None = None


def get_embedder() -> AisfxEmbedder:
    """The process-wide embedder (loaded once); raises AisfxUnavailable naming what is missing."""
    global _embedder
    with _model_lock:
        if _embedder is None:
            path = checkpoint_path()
            if path is None:
                raise AisfxUnavailable(availability()[1])
            try:
                _embedder = AisfxEmbedder(build_model(load_checkpoint(path)[0]))
            except (ImportError, RuntimeError, OSError, KeyError) as exc:
                raise AisfxUnavailable(f"aisfx checkpoint {path} did not load: {exc}") from exc
        return _embedder


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a, b) / (na * nb)) if na > 0 and nb > 0 else 0.0


# ---- reference embeddings (what a label should sound like) --------------------------------------------
def default_cache_dir() -> Path:
    """$FOLEYLOOP_HOME/cache (the same place as the sample bank's caches)."""
    home = os.environ.get("FOLEYLOOP_HOME")
    return (Path(home) if home else Path.home() / ".foleyloop").expanduser() / "cache"


class FileReferences:
    """Reference embeddings from labelled recordings: the mean embedding of the files for a label.

    Each file's embedding is cached on disk (``cache_dir``/aisfx, keyed by model version, path, size and
    mtime), so later runs neither decode the recordings again nor run the CNN on them.
    """

    def __init__(self, embedder: Any, files: dict[str, list[str | Path]] | Callable[[str], list[Path]],
                 cache_dir: str | Path | None = None):
        self.embedder = embedder
        self._files = files
        self._cache: dict[str, np.ndarray | None] = {}
        self._lock = threading.Lock()
        self.cache_dir = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "aisfx"

    def _paths(self, label: str) -> list[Path]:
        if callable(self._files):
            return [Path(p) for p in self._files(label)]
        return [Path(p) for p in self._files.get(label, self._files.get(label.lower(), []))]

    def _cache_path(self, path: Path) -> Path:
        st = path.stat()
        version = getattr(self.embedder, "version", type(self.embedder).__name__)
        key = hashlib.sha256(f"{version}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
        return self.cache_dir / f"{path.stem}-{key}.npy"

    def file_embedding(self, path: Path) -> np.ndarray:
        cached = self._cache_path(path)
        if cached.is_file():
            try:
                return np.load(cached, allow_pickle=False)
            except (OSError, ValueError) as exc:
                log.warning("re-embedding %s: cached embedding unreadable (%s)", path.name, exc)
        emb = np.asarray(self.embedder.embed_file(path))
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = part_path(cached)
            np.save(tmp, emb, allow_pickle=False)
            tmp.replace(cached)
        except OSError as exc:  # a read-only cache costs speed, not the score
            log.warning("could not cache the aiSFX embedding of %s (%s)", path.name, exc)
        return emb

    def __call__(self, label: str) -> np.ndarray | None:
        with self._lock:
            if label in self._cache:
                return self._cache[label]
        embs = []
        for p in self._paths(label):
            try:
                embs.append(self.file_embedding(p))
            except (OSError, ValueError) as exc:
                log.warning("reference %s for %r unreadable (%s)", p, label, exc)
        ref = np.mean(embs, axis=0) if embs else None
        with self._lock:
            self._cache[label] = ref
        return ref
