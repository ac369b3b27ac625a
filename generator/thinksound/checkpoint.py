"""Checkpoint loading that fits a 24 GB machine and never unpickles code.

Models are built on the meta device and receive the file's tensors by `assign=True`, so the
only full copy in memory is the one read (mmap'd) from disk. Three layouts are understood
(spec §5): `thinksound_light.ckpt` (bare dict, `model.model.*` + `pretransform.model.*`),
Lightning `vae.ckpt` (`state_dict` → `autoencoder.*`) and safetensors with either key layout.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Union

import torch
import torch.nn as nn

from models.precision import CPUINFO
from models.precision import check as check_precision

from .mmdit import FULL_CONFIG, MMDiT, MMDiTConfig, build_mmdit
from .sequence import SequenceConfig
from .vae import FULL_VAE_CONFIG, OobleckConfig, OobleckVAE, build_vae

log = logging.getLogger(__name__)

MMDIT_PREFIXES = ("model.model.", "diffusion.model.model.", "model.", "")
VAE_PREFIXES = ("pretransform.model.", "autoencoder.", "diffusion.pretransform.model.", "")
KEEP_ON_CONVERT = ("model.model.", "pretransform.model.", "autoencoder.")
_SHOW = 5  # keys listed per category in error messages

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded safely or does not fit the model."""


# ------------------------------------------------------------------------------------------
# device / dtype


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """None/'auto' → cuda, then mps, then cpu."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def resolve_auto_dtype(device: str | torch.device | None = None, *,
                       cpuinfo: str | Path = CPUINFO) -> tuple[torch.dtype, str]:
    """The renderer's `dtype="auto"` (``models.precision.check``) as a torch dtype, with the check's line as why.

    On CPU bf16 halves the MM-DiT forward time where avx512_bf16/AMX exist (bench/generator.py part c) and is many
    times slower where they do not.
    """
    result = check_precision(str(resolve_device(device)), cpuinfo)
    return _DTYPES[result.auto], result.line()


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto' → ``resolve_auto_dtype``; None → the library default: fp32 on CPU (exact), bf16 on capable
    CUDA, else fp16; names fp32/fp16/bf16 (and aliases) as given."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return resolve_auto_dtype(device)[0]
    if dtype is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of auto, fp32, fp16, bf16") from None


# ------------------------------------------------------------------------------------------
# reading files


class TensorFile:
    """Uniform, lazy view of a checkpoint's tensors (torch zip/pickle or safetensors)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"checkpoint not found: {self.path}")
        self._st = None
        self._tensors: dict[str, torch.Tensor] = {}
        if _is_safetensors(self.path):
            from safetensors import safe_open

            try:
                self._st = safe_open(str(self.path), framework="pt", device="cpu")
            except Exception as e:  # noqa: BLE001 - safetensors raises several types
                raise CheckpointError(f"cannot read safetensors file {self.path}: {e}") from e
            self._keys = list(self._st.keys())
        else:
            self._tensors = _tensors_only(_safe_torch_load(self.path))
            self._keys = list(self._tensors)

    def keys(self) -> list[str]:
        return list(self._keys)

    def shape(self, key: str) -> tuple[int, ...]:
        if self._st is not None:
            return tuple(self._st.get_slice(key).get_shape())
        return tuple(self._tensors[key].shape)

    def get(self, key: str) -> torch.Tensor:
        return self._st.get_tensor(key) if self._st is not None else self._tensors[key]


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    # torch files are zip ("PK") or legacy pickles (0x80); safetensors = u64 header size + '{'
    return len(head) == 9 and head[:2] != b"PK" and head[:1] != b"\x80" and head[8:9] == b"{"


def _safe_torch_load(path: Path, trust_pickle: bool = False) -> Any:
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=not trust_pickle, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # legacy (non-zip) format cannot be mmap'd
                raise
            return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        dst = path.with_suffix(".safetensors")
        raise CheckpointError(
            f"{path} holds pickled Python objects besides tensors, and loading them could run code "
            f"from the file, so it was refused (torch weights_only=True: {first}). If you trust the file, "
            f"convert it once with `foleyloop convert --trust-pickle {path} {dst}` and load {dst.name}."
        ) from e
    except (OSError, EOFError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e


def _tensors_only(obj: Any) -> dict[str, torch.Tensor]:
    """Unwrap a Lightning dict (`state_dict`) and keep tensor entries only."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a dict of tensors, found {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


# ------------------------------------------------------------------------------------------
# strict loading into meta-built models


def _pick_prefix(keys: Iterable[str], expected: Iterable[str], prefixes: Iterable[str]) -> str | None:
    keyset, expected = set(keys), list(expected)
    best, best_hits = None, 0
    for p in prefixes:
        hits = sum(p + k in keyset for k in expected)
        if hits > best_hits:
            best, best_hits = p, hits
    return best


def _fmt(items: list[str]) -> str:
    more = f", … (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def check_keys(expected: Mapping[str, tuple[int, ...]], provided: Mapping[str, tuple[int, ...]],
               what: str, source: str) -> None:
    """Strict check with a readable error: missing, unexpected and shape-mismatched keys."""
    missing = [k for k in expected if k not in provided]
    unexpected = [k for k in provided if k not in expected]
    wrong = [f"{k} (file {tuple(provided[k])}, model {tuple(expected[k])})"
             for k in expected if k in provided and tuple(provided[k]) != tuple(expected[k])]
    if missing or unexpected or wrong:
        lines = [f"{source} does not match the {what} ({len(expected)} tensors expected):"]
        if missing:
            lines.append(f"  missing {len(missing)}: {_fmt(missing)}")
        if unexpected:
            lines.append(f"  unexpected {len(unexpected)}: {_fmt(unexpected)}")
        if wrong:
            lines.append(f"  wrong shape {len(wrong)}: {_fmt(wrong)}")
        lines.append("  (is this the right file, and does the model config match it?)")
        raise CheckpointError("\n".join(lines))


def load_module(model: nn.Module, tensors: "TensorFile | _DictFile | Mapping[str, torch.Tensor]",
                prefixes: Iterable[str], what: str, *, dtype: torch.dtype, device: torch.device,
                source: str = "checkpoint") -> nn.Module:
    """Fill a (meta) model from `tensors` under the best-matching prefix, one tensor at a time."""
    tensors = open_source(tensors)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    prefix = _pick_prefix(tensors.keys(), expected, prefixes)
    if prefix is None:
        raise CheckpointError(f"{source} holds no {what} weights (looked for key prefixes "
                              f"{[p for p in prefixes if p]}); first keys: {_fmt(tensors.keys())}")
    provided = {k[len(prefix):]: tensors.shape(k) for k in tensors.keys() if k.startswith(prefix)}
    if prefix == "":  # a bare dict may hold other models' keys too; judge only plausible ones
        roots = {k.split(".")[0] for k in expected}
        provided = {k: s for k, s in provided.items() if k.split(".")[0] in roots}
    check_keys(expected, provided, what, f"{source} (prefix {prefix!r})")
    state = {}
    for k in expected:
        t = tensors.get(prefix + k)
        state[k] = t.to(device=device, dtype=dtype if t.is_floating_point() else None)
    model.load_state_dict(state, strict=True, assign=True)
    model.requires_grad_(False).eval()
    return model


class _DictFile:
    def __init__(self, d: Mapping[str, torch.Tensor]) -> None:
        self._d = d

    def keys(self) -> list[str]:
        return list(self._d)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._d[key].shape)

    def get(self, key: str) -> torch.Tensor:
        return self._d[key]


# ------------------------------------------------------------------------------------------
# public loaders

Source = Union[str, Path, TensorFile, Mapping[str, torch.Tensor]]


def open_source(src: str | Path | TensorFile | Mapping[str, torch.Tensor]) -> TensorFile | _DictFile:
    """A path (read lazily, mmap'd), an opened TensorFile, or an in-memory state dict."""
    if isinstance(src, (TensorFile, _DictFile)):
        return src
    if isinstance(src, Mapping):
        return _DictFile(_tensors_only(src))
    return TensorFile(src)


def _name(src: TensorFile | _DictFile) -> str:
    return str(src.path) if isinstance(src, TensorFile) else "state dict"


def load_mmdit(source: Source, seq: SequenceConfig | None = None, *,
               config: MMDiTConfig | Mapping[str, Any] | None = None, dtype: str | torch.dtype | None = None,
               device: str | torch.device | None = None, gemm_convs: bool = False) -> MMDiT:
    """MM-DiT from a light ckpt, Lightning ckpt or safetensors; default config = thinksound.json.

    gemm_convs=True re-stores the convolution weights for the GEMM path (faster on CPU; one copy of them).
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    cfg = config if isinstance(config, MMDiTConfig) else (
        MMDiTConfig.from_dict(config) if config is not None else FULL_CONFIG)
    if seq is not None:
        cfg = cfg.with_sequence(seq)
    src = open_source(source)
    model = build_mmdit(cfg, device="meta")
    load_module(model, src, MMDIT_PREFIXES, "MM-DiT", dtype=dt, device=dev, source=_name(src))
    model.rebuild_tables()  # non-persistent tables were built on meta
    if gemm_convs:
        model.use_gemm_convs(True)
    return model


def load_vae(source: Source, *, config: OobleckConfig | Mapping[str, Any] | None = None,
             dtype: str | torch.dtype | None = None, device: str | torch.device | None = None) -> OobleckVAE:
    """Oobleck VAE from vae.ckpt (`autoencoder.*`), the light ckpt (`pretransform.model.*`) or safetensors."""
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    src = open_source(source)
    model = build_vae(config if config is not None else FULL_VAE_CONFIG, device="meta")
    return load_module(model, src, VAE_PREFIXES, "Oobleck VAE", dtype=dt, device=dev, source=_name(src))


class ThinkSoundModels(NamedTuple):
    mmdit: MMDiT
    vae: OobleckVAE


def load_thinksound(ckpt: Source, vae_ckpt: Source | None = None, seq: SequenceConfig | None = None, *,
                    dtype: str | torch.dtype | None = None, device: str | torch.device | None = None,
                    vae_dtype: str | torch.dtype | None = None,
                    config: MMDiTConfig | Mapping[str, Any] | None = None,
                    vae_config: OobleckConfig | Mapping[str, Any] | None = None) -> ThinkSoundModels:
    """predict.py's loading: MM-DiT (+VAE) from `ckpt`, VAE overridden by `vae_ckpt` when given.

    The file is opened once; the VAE tensors in `ckpt` are never read when `vae_ckpt` is given.
    """
    main = open_source(ckpt)
    mmdit = load_mmdit(main, seq, config=config, dtype=dtype, device=device)
    vae_src = open_source(vae_ckpt) if vae_ckpt is not None else main
    vae = load_vae(vae_src, config=vae_config, dtype=vae_dtype if vae_dtype is not None else dtype, device=device)
    return ThinkSoundModels(mmdit, vae)


# ------------------------------------------------------------------------------------------
# conversion (`foleyloop convert`)


def convert_to_safetensors(src: str | Path, dst: str | Path, *, trust_pickle: bool = False,
                           dtype: str | torch.dtype | None = None, keep_all: bool = False) -> dict[str, Any]:
    """Rewrite a .ckpt/.pt as safetensors (tensors only, keys unchanged).

    trust_pickle=True fully unpickles `src` (it can run code from the file): a deliberate opt-in
    for Lightning checkpoints such as the published vae.ckpt. By default only model prefixes
    (`model.model.`, `pretransform.model.`, `autoencoder.`) are kept when present, dropping
    optimizer/EMA/discriminator tensors; keep_all=True keeps every tensor.
    """
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError("dst must differ from src")
    if trust_pickle:
        warnings.warn(f"unpickling {src} with weights_only=False (--trust-pickle): only do this for files you trust",
                      stacklevel=2)
    if not src.is_file():
        raise CheckpointError(f"checkpoint not found: {src}")
    tensors = _tensors_only(_safe_torch_load(src, trust_pickle=trust_pickle))
    dropped: list[str] = []
    if not keep_all and any(k.startswith(KEEP_ON_CONVERT) for k in tensors):
        dropped = [k for k in tensors if not k.startswith(KEEP_ON_CONVERT)]
        tensors = {k: v for k, v in tensors.items() if k.startswith(KEEP_ON_CONVERT)}
    if not tensors:
        raise CheckpointError(f"{src} contains no tensors to convert")
    cast = resolve_dtype(dtype, torch.device("cpu")) if dtype is not None else None
    out, seen = {}, set()
    for k, t in tensors.items():
        if cast is not None and t.is_floating_point():
            t = t.to(cast)
        ptr = t.untyped_storage().data_ptr()
        t = t.contiguous().clone() if ptr in seen else t.contiguous()  # safetensors refuses shared storage
        seen.add(ptr)
        out[k] = t
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial")
    save_file(out, str(tmp), metadata={"format": "pt", "source": src.name, "converted_by": "foleyloop"})
    tmp.replace(dst)
    info = {"tensors": len(out), "elements": sum(t.numel() for t in out.values()),
            "dropped": len(dropped), "dropped_examples": dropped[:_SHOW], "dst": str(dst)}
    log.info("converted %s → %s: %s", src, dst, info)
    return info
