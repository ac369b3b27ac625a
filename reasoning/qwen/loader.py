"""Finding, loading and releasing Qwen weights under a GPU memory budget.

Weights are looked up locally first (a directory, or the Hugging Face cache) without loading anything, so
``describe()`` can say whether a model is usable. Loading goes through the process-wide ``SLOTS``: models load
lazily, one at a time, and the least recently used one is released when the next would exceed the budget.

How the graph uses it (the VLM and the generator rarely fit on one GPU together):

    from reasoning.qwen import loader
    loader.make_room(gb_the_generator_needs)   # before renderer.render(); releases VLMs that do not fit
    loader.release()                           # at the end of a run, or whenever in doubt (frees everything)

Watcher/refiner/judge reload lazily on their next call, so releasing is always safe.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from contract.errors import BackendError, ModelMissing
from contract.memory import SLOTS, make_room, release  # noqa: F401  (the cache the Qwen models live in)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DTYPE_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2}
OVERHEAD = 1.2  # activations, KV cache and the vision tower's working set on top of the weights
# Licences from the model cards, used when a local copy carries no README front matter.
KNOWN_LICENSES = {"Qwen2.5-VL-3B": "qwen-research (non-commercial)", "Qwen2.5-VL-7B": "Apache-2.0",
                  "Qwen2.5-VL-32B": "Apache-2.0", "Qwen2.5-VL-72B": "qwen (Qwen licence, >100M MAU needs a grant)",
                  "Qwen2.5-Omni-3B": "qwen-research (non-commercial)", "Qwen2.5-Omni-7B": "Apache-2.0"}


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def looks_local(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).expanduser().exists()


def _has_weights(d: Path) -> bool:
    return (d / "config.json").is_file() and any(d.glob("*.safetensors"))


def how_to_get(ref: str) -> str:
    if looks_local(ref):
        return f"check the path, it must hold config.json and *.safetensors (e.g. from `huggingface-cli download " \
               f"{DEFAULT_MODEL} --local-dir DIR`)"
    return f"on a connected machine run `huggingface-cli download {ref}` (then copy the HF cache), or pass a local " \
           "path with --watcher-model PATH"


def find_weights(ref: str, cache_dir: str | None = None) -> Path | None:
    """The directory holding ``ref``'s weights, from a local path or the HF cache; never downloads or loads."""
    if looks_local(ref):
        p = Path(ref).expanduser()
        return p.resolve() if _has_weights(p) else None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        p = Path(snapshot_download(ref, cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError, ValueError):
        return None
    return p if _has_weights(p) else None


def resolve(ref: str, cache_dir: str | None = None) -> Path:
    """Local first; the hub only when ``HF_HUB_OFFLINE`` is not set. Absent → ``ModelMissing`` (one line)."""
    found = find_weights(ref, cache_dir)
    if found is not None:
        return found
    if looks_local(ref) or hub_offline():
        where = "at that path" if looks_local(ref) else "in the local Hugging Face cache (HF_HUB_OFFLINE is set)"
        raise ModelMissing(f"Qwen weights {ref!r} not found {where}; {how_to_get(ref)}")
    from huggingface_hub import snapshot_download

    log.warning("downloading %s from the Hugging Face hub (several GB; set HF_HUB_OFFLINE=1 to forbid)", ref)
    try:
        return Path(snapshot_download(ref, cache_dir=cache_dir))
    except Exception as exc:  # network, auth, disk: all mean "not available here"
        raise ModelMissing(f"Qwen weights {ref!r} could not be downloaded ({type(exc).__name__}); "
                           f"{how_to_get(ref)}") from None


def model_license(path: Path | None, ref: str) -> str:
    if path is not None and (path / "README.md").is_file():
        head = (path / "README.md").read_text(encoding="utf-8", errors="replace")[:4000]
        if m := re.search(r"^---\s*$(.*?)^---\s*$", head, re.MULTILINE | re.DOTALL):
            if lic := re.search(r"^license:\s*(\S+)", m.group(1), re.MULTILINE):
                return lic.group(1)
    name = Path(ref).name
    return next((v for k, v in KNOWN_LICENSES.items() if name.startswith(k)), "unknown: see the model card")


def estimate_gb(path: Path, dtype: str) -> float:
    """Device memory the model will need, from the weight files on disk scaled to the load dtype."""
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    stored = 2
    try:
        cfg = json.loads((path / "config.json").read_text())
        name = str(cfg.get("torch_dtype") or cfg.get("dtype") or cfg.get("text_config", {}).get("dtype") or "")
        stored = 4 if "32" in name else 2
    except (OSError, ValueError):
        pass
    return size / 1e9 * DTYPE_BYTES.get(dtype, 4) / stored * OVERHEAD


@dataclass(frozen=True)
class ModelSpec:
    """What to load and how; equal specs share one loaded model across watcher, refiner and judge."""

    ref: str = DEFAULT_MODEL
    device: str = "cpu"
    dtype: str = "fp32"
    attn_implementation: str = "sdpa"
    cache_dir: str | None = None
    kind: str = "vl"  # "vl" (Qwen2.5-VL) or "omni" (Qwen2.5-Omni thinker)

    @property
    def key(self) -> str:
        return f"qwen-{self.kind}:{self.ref}@{self.device}/{self.dtype}/{self.attn_implementation}"


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    path: Path
    spec: ModelSpec

    @property
    def generator(self):
        """What to call ``generate`` on: the Omni thinker writes text; its talker is never loaded."""
        return self.model.thinker if self.spec.kind == "omni" else self.model


def _torch_dtype(name: str):
    import torch

    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if name not in table:
        raise BackendError(f"unknown dtype {name!r} (use fp32, bf16 or fp16)")
    return table[name]


def _load(spec: ModelSpec, path: Path) -> LoadedModel:
    import transformers
    from transformers import AutoProcessor

    cls = transformers.Qwen2_5OmniForConditionalGeneration if spec.kind == "omni" \
        else transformers.Qwen2_5_VLForConditionalGeneration
    kwargs: dict = {"dtype": _torch_dtype(spec.dtype), "local_files_only": True}
    if spec.kind == "omni":
        kwargs["enable_audio_output"] = False  # text only: skip the talker and token2wav weights
    if spec.device.startswith("cuda"):
        kwargs["device_map"] = spec.device
    try:
        model = cls.from_pretrained(str(path), attn_implementation=spec.attn_implementation, **kwargs)
    except (ImportError, ValueError) as exc:
        if spec.attn_implementation in ("sdpa", "eager"):
            raise
        log.warning("attn_implementation %r unavailable (%s); using sdpa", spec.attn_implementation, exc)
        model = cls.from_pretrained(str(path), attn_implementation="sdpa", **kwargs)
    if not spec.device.startswith("cuda"):
        model = model.to(spec.device)
    processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
    return LoadedModel(model=model.eval(), processor=processor, path=path, spec=spec)


def acquire(spec: ModelSpec, budget_gb: float | None = None) -> LoadedModel:
    """The loaded model for ``spec`` (lazy). Callers must not keep it beyond one call, or release cannot free it."""
    path = resolve(spec.ref, spec.cache_dir)
    return SLOTS.get(spec.key, estimate_gb(path, spec.dtype), lambda: _load(spec, path), budget_gb, role="vlm")
