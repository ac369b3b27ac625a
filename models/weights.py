"""Find model weights on this machine — a local folder or the Hugging Face cache — and never download them.

No model hub is reachable where foleyloop runs, so an absent model must fail at once with one line saying how to
bring the weights over (``ModelUnavailable``), not with a stack trace from inside ``from_pretrained``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

class ModelUnavailable(RuntimeError):
    """A model's weights are not on this machine; ``str()`` is ``"<model> not found — <how to get it>"``."""

    def __init__(self, model: str, how_to_get: str):
        self.model, self.how_to_get = model, how_to_get
        super().__init__(f"{model} not found — {how_to_get}")


def hf_cache_dir() -> Path:
    """The hub cache folder, read at call time: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "huggingface" / "hub"


def how_to_get(repo_id: str) -> str:
    return (f"on a connected machine run `hf download {repo_id}`, copy its Hugging Face cache to {hf_cache_dir()} "
            f"(or set HF_HOME), or pass a local model folder")


def looks_like_repo_id(text: str) -> bool:
    """'org/name' with hub-legal characters, and not a path (no leading ./ / ~, one slash)."""
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        return False
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _missing(folder: Path, required: Sequence[str], weights: Sequence[str]) -> list[str]:
    """Names in ``required`` that are absent ("a|b": either will do); weights need one match of any pattern."""
    missing = [f.replace("|", " or ") for f in required if not any((folder / a).is_file() for a in f.split("|"))]
    if weights and not any(any(folder.glob(w)) for w in weights):
        missing.append("weights (" + " or ".join(weights) + ")")
    return missing


def resolve(ref: str | Path, *, name: str, default_repo: str, required: Sequence[str] = ("config.json",),
            weights: Sequence[str] = ("*.safetensors", "*.bin")) -> Path:
    """Local folder holding model ``ref``: an existing folder as is, or a hub id's snapshot in the HF cache.

    The cache is read with ``local_files_only=True`` always: evaluation never triggers a download. Anything
    absent or incomplete raises ``ModelUnavailable`` naming ``name`` (e.g. "CLAP laion/larger_clap_general").
    """
    text = str(ref)
    p = Path(text).expanduser()
    if p.exists() or not looks_like_repo_id(text):
        if not p.is_dir():
            what = "is a file, not a model folder" if p.exists() else "no such folder"
            raise ModelUnavailable(f"{name} {text}", f"{what}; " + how_to_get(default_repo))
        if miss := _missing(p, required, weights):
            raise ModelUnavailable(f"{name} {text}", f"folder lacks {', '.join(miss)}; " + how_to_get(default_repo))
        return p
    from huggingface_hub import snapshot_download

    cache = hf_cache_dir()
    try:
        folder = Path(snapshot_download(text, cache_dir=cache, local_files_only=True))
    except (OSError, ValueError):  # LocalEntryNotFoundError is an OSError; a bad cache layout may be a ValueError
        raise ModelUnavailable(f"{name} {text}", f"not in the local Hugging Face cache {cache}; " + how_to_get(text)) \
            from None
    if miss := _missing(folder, required, weights):
        raise ModelUnavailable(f"{name} {text}", f"cached snapshot {folder} lacks {', '.join(miss)}; "
                               + how_to_get(text))
    return folder


def describe(ref: str | Path, **kw) -> dict:
    """{"available", "where", "why"} for ``resolve(ref, **kw)``, without loading anything."""
    try:
        return {"available": True, "where": str(resolve(ref, **kw)), "why": ""}
    except ModelUnavailable as exc:
        return {"available": False, "where": "", "why": str(exc)}
