"""Find model weights on this machine: a local folder, or the Hugging Face cache; never a surprise download.

The project runs where no model hub is reachable, so a missing model must fail fast with one line that says how
to bring the weights over, instead of a stack trace from deep inside ``from_pretrained``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from contract.errors import ModelMissing

log = logging.getLogger(__name__)

_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class ModelKind:
    """What a role needs: its default hub id, the CLI flag that overrides it, the file(s) that prove it is there."""

    name: str
    default_id: str
    flag: str
    required: tuple[str, ...] = ("config.json",)
    weights: tuple[str, ...] = ("*.safetensors", "*.bin")  # at least one must match (folder kinds)
    filename: str | None = None  # single-file models (a checkpoint inside a repo)
    license: str = ""


KINDS: dict[str, ModelKind] = {
    "metaclip": ModelKind("metaclip", "facebook/metaclip-h14-fullcc2.5b", "--metaclip", license="CC-BY-NC-4.0"),
    "t5": ModelKind("t5", "google/t5-v1_1-xl", "--t5", license="Apache-2.0"),
    "synchformer": ModelKind("synchformer", "liuhuadai/ThinkSound", "--synchformer", required=(),
                             filename="synchformer_state_dict.pth",
                             license="ThinkSound terms (research/education only)"),
}


def kind_of(kind: str | ModelKind) -> ModelKind:
    if isinstance(kind, ModelKind):
        return kind
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(sorted(KINDS))})") from None


def offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it only once, at import)."""
    from huggingface_hub import constants

    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hf_cache_dir() -> Path:
    """The hub cache folder per the documented precedence, read at call time: HF_HUB_CACHE, HF_HOME/hub, default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _how_to_get(k: ModelKind, model_id: str) -> str:
    what = f"{model_id} {k.filename}" if k.filename else model_id
    local = f"the {k.filename} file" if k.filename else "a local folder"
    return (f"on a connected machine run `hf download {what}` (older huggingface_hub: `huggingface-cli download "
            f"{what}`), then copy its HF cache to {hf_cache_dir()} (or set HF_HOME), or pass {local} via {k.flag} PATH")


def _is_repo_id(text: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _check_complete(path: Path, k: ModelKind, label: str) -> Path:
    missing = [f for f in k.required if not (path / f).exists()]
    if k.filename is None and k.weights and not any(any(path.glob(w)) for w in k.weights):
        missing.append("weights (" + " or ".join(k.weights) + ")")
    if missing:
        raise ModelMissing(f"{k.name} model {label}: folder {path} lacks {', '.join(missing)}; "
                           f"pass a complete model folder via {k.flag} PATH")
    return path


def _local(model_id_or_path: str | Path, k: ModelKind) -> Path | None:
    p = Path(model_id_or_path).expanduser()
    if not p.exists():
        return None
    if k.filename is None:
        if not p.is_dir():
            raise ModelMissing(f"{k.name} model {p}: is a file; pass the model folder via {k.flag} PATH")
        return _check_complete(p, k, str(p))
    if p.is_dir():
        f = p / k.filename
        if not f.is_file():
            raise ModelMissing(f"{k.name} checkpoint: folder {p} has no {k.filename}; pass the file via {k.flag} PATH")
        return f
    return p


def resolve_model(model_id_or_path: str | Path | None, kind: str | ModelKind, *, allow_download: bool = False,
                  revision: str | None = None) -> Path:
    """Local path of a model folder (or, for single-file kinds, of the checkpoint file).

    A path that exists is used as is. A hub id is looked up in the HF cache only; it is downloaded solely when
    ``allow_download`` is true and HF_HUB_OFFLINE is not set. Anything else raises ``ModelMissing`` (one line).
    """
    k = kind_of(kind)
    ident = str(model_id_or_path or k.default_id)
    found = _local(ident, k)
    if found is not None:
        return found
    if not _is_repo_id(ident):
        raise ModelMissing(f"{k.name} model {ident!r}: no such folder or file, and not a hub id; "
                           f"pass an existing path via {k.flag} PATH")
    local_only = not allow_download or offline()
    if allow_download and local_only:
        log.warning("HF_HUB_OFFLINE is set: looking for %s in the local cache only", ident)
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hf_cache_dir()
    try:
        if k.filename:
            return Path(hf_hub_download(ident, k.filename, revision=revision, cache_dir=cache,
                                        local_files_only=local_only))
        path = Path(snapshot_download(ident, revision=revision, cache_dir=cache, local_files_only=local_only))
    except OSError as exc:  # LocalEntryNotFoundError, hub HTTP errors and disk errors are all OSError
        if not local_only and not isinstance(exc, LocalEntryNotFoundError):
            raise ModelMissing(f"{k.name} model {ident} could not be downloaded ({type(exc).__name__}); "
                               + _how_to_get(k, ident)) from None
        raise ModelMissing(f"{k.name} model {ident} is not in the local Hugging Face cache {cache}; "
                           + _how_to_get(k, ident)) from None
    return _check_complete(path, k, ident)


def describe_model(model_id_or_path: str | Path | None, kind: str | ModelKind) -> dict:
    """The ``describe()`` fields for one model (``foleyloop models``), without loading it."""
    k = kind_of(kind)
    ident = str(model_id_or_path or k.default_id)
    try:
        where = resolve_model(ident, k)
    except ModelMissing as exc:
        return {"available": False, "where": "", "why": str(exc), "model_id": ident, "license": k.license}
    return {"available": True, "where": str(where), "why": "", "model_id": ident, "license": k.license}


def fingerprint_dir(path: Path, patterns: tuple[str, ...] = ("*.json", "*.safetensors", "*.bin", "*.pth",
                                                             "*.model", "*.txt")) -> str:
    """Cheap identity of local weights (names, sizes, mtimes; HF snapshots: the commit), for cache keys."""
    import hashlib

    path = Path(path)
    snap = path if path.is_dir() else path.parent
    if snap.parent.name == "snapshots":  # <cache>/models--org--name/snapshots/<commit>: the commit says it all
        return snap.name if path.is_dir() else f"{snap.name}:{path.name}"
    files = [path] if path.is_file() else sorted(f for pat in patterns for f in path.glob(pat))
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]
