"""Find model weights on this machine — a local folder or the Hugging Face cache — and never download them.

No model hub is reachable where foleyloop runs, so an absent model must fail at once with one line saying how to
bring the weights over (``ModelUnavailable``), not with a stack trace from inside ``from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from contract.errors import ModelMissing
# One set of hub helpers for both front ends (this module for evaluation/verifiers, models.hub for generator
# features): the cache folder and the repo-id test live in models.hub.
from models.hub import _is_repo_id as looks_like_repo_id
from models.hub import hf_cache_dir

__all__ = ["ModelUnavailable", "describe", "describe_file", "hf_cache_dir", "how_to_get", "looks_like_repo_id",
           "resolve", "resolve_file"]


class ModelUnavailable(ModelMissing):
    """A model's weights are not on this machine; ``str()`` is ``"<model> not found — <how to get it>"``.

    A ``ModelMissing``, so the CLI maps it to exit 2 like every other absent model.
    """

    def __init__(self, model: str, how_to_get: str):
        self.model, self.how_to_get = model, how_to_get
        super().__init__(f"{model} not found — {how_to_get}")


def how_to_get(repo_id: str, filename: str | None = None) -> str:
    what = f"{repo_id} {filename}" if filename else repo_id
    local = f"pass the {filename} file (or a folder holding it)" if filename else "pass a local model folder"
    return (f"on a connected machine run `hf download {what}`, copy its Hugging Face cache to {hf_cache_dir()} "
            f"(or set HF_HOME), or {local}")


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


def resolve_file(ref: str | Path, *, name: str, default_repo: str, filename: str) -> Path:
    """A single-file checkpoint: ``ref`` is the file, a folder holding ``filename`` (e.g. ThinkSound's weights
    folder), or a hub id whose cached snapshot holds it. Never downloads; absent → ``ModelUnavailable``."""
    text = str(ref)
    p = Path(text).expanduser()
    if p.exists() or not looks_like_repo_id(text):
        if p.is_file():
            return p
        if p.is_dir():
            if (p / filename).is_file():
                return p / filename
            raise ModelUnavailable(f"{name} {text}", f"folder has no {filename}; " + how_to_get(default_repo, filename))
        raise ModelUnavailable(f"{name} {text}", "no such file or folder; " + how_to_get(default_repo, filename))
    from huggingface_hub import hf_hub_download

    cache = hf_cache_dir()
    try:
        return Path(hf_hub_download(text, filename, cache_dir=cache, local_files_only=True))
    except (OSError, ValueError):
        raise ModelUnavailable(f"{name} {text}", f"{filename} is not in the local Hugging Face cache {cache}; "
                               + how_to_get(text, filename)) from None


def describe_file(ref: str | Path, **kw) -> dict:
    """{"available", "where", "why"} for ``resolve_file(ref, **kw)``, without loading anything."""
    try:
        return {"available": True, "where": str(resolve_file(ref, **kw)), "why": ""}
    except ModelUnavailable as exc:
        return {"available": False, "where": "", "why": str(exc)}
