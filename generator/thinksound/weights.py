"""The ThinkSound weights folder: what the renderer reads, and a tiny random one for tests and benchmarks.

Layout of a weights dir (``--weights DIR``; the published HF repo ``liuhuadai/ThinkSound`` already is one)::

    thinksound_light.ckpt | thinksound_light.safetensors   required: MM-DiT (`model.model.*`) + VAE copy
    vae.ckpt | vae.safetensors                              optional: VAE that overrides the copy (as predict.py)
    synchformer_state_dict.pth                              needed for video renders only (`vfeat_extractor.*`)
    config.json                                             optional: non-published sizes (tests, benchmarks)

``config.json`` holds up to three sections, each overriding the released architecture:
``{"mmdit": {MMDiTConfig kwargs as in thinksound.json}, "vae": {pretransform config as in thinksound.json},
"synchformer": {VisualConfig kwargs}}``. Sequence lengths in "mmdit" are ignored: every render sets its own.
When both a .safetensors and a .ckpt exist the safetensors file wins (no unpickling, mmap'd).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from contract.errors import BackendError, ModelMissing

from .mmdit import MMDiTConfig, build_mmdit
from .sequence import SequenceConfig
from .vae import OobleckConfig, build_vae

REPO_ID = "liuhuadai/ThinkSound"
MODELSCOPE_ID = "iic/ThinkSound"
LIGHT_NAMES = ("thinksound_light.safetensors", "thinksound_light.ckpt")
VAE_NAMES = ("vae.safetensors", "vae.ckpt")
SYNC_NAME = "synchformer_state_dict.pth"
CONFIG_NAME = "config.json"


def how_to_get(root: Path) -> str:
    return (f"get them with `hf download {REPO_ID} --local-dir {root}` (ModelScope mirror: `modelscope download "
            f"--model {MODELSCOPE_ID} --local_dir {root}`) and pass --weights {root}")


def default_weights_dir() -> Path:
    """The HF-cache snapshot of liuhuadai/ThinkSound if present, else $FOLEYLOOP_HOME/models/thinksound."""
    try:
        from huggingface_hub import snapshot_download

        from models.hub import hf_cache_dir

        return Path(snapshot_download(REPO_ID, cache_dir=hf_cache_dir(), local_files_only=True))
    except (OSError, ValueError, ImportError):
        from store.db import default_home

        return default_home() / "models" / "thinksound"


@dataclass(frozen=True)
class WeightsDir:
    """A checked weights folder; configs are None where the released architecture applies."""

    root: Path
    light: Path
    vae: Path | None
    synchformer: Path | None
    mmdit_config: MMDiTConfig | None = None
    vae_config: OobleckConfig | None = None
    sync_config: Any = None  # models.synchformer.VisualConfig | None

    @classmethod
    def open(cls, root: str | Path) -> "WeightsDir":
        """Find the files; raises ModelMissing (one line) when the MM-DiT checkpoint is not there."""
        root = Path(root).expanduser()
        if not root.is_dir():
            raise ModelMissing(f"ThinkSound weights folder {root} does not exist; {how_to_get(root)}")
        light = _first(root, LIGHT_NAMES)
        if light is None:
            raise ModelMissing(f"ThinkSound weights: {root} has no {' or '.join(reversed(LIGHT_NAMES))}; "
                               f"{how_to_get(root)}")
        sync = root / SYNC_NAME
        mmdit_cfg, vae_cfg, sync_cfg = _read_config(root / CONFIG_NAME)
        return cls(root, light, _first(root, VAE_NAMES), sync if sync.is_file() else None, mmdit_cfg, vae_cfg,
                   sync_cfg)

    def files(self) -> list[Path]:
        return [p for p in (self.light, self.vae, self.synchformer) if p is not None]


def _first(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_file()), None)


def _read_config(path: Path):
    if not path.is_file():
        return None, None, None
    try:
        data = json.loads(path.read_text())
        mmdit = data.get("mmdit")
        vae = data.get("vae")
        sync = data.get("synchformer")
        mmdit_cfg = MMDiTConfig.from_dict(mmdit) if mmdit else None
        vae_cfg = OobleckConfig.from_dict(vae) if vae else None
        sync_cfg = _visual_config(sync) if sync else None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BackendError(f"{path}: not a usable ThinkSound config: {type(exc).__name__}: {exc}") from None
    if mmdit_cfg is not None:
        mmdit_cfg.validate()
    return mmdit_cfg, vae_cfg, sync_cfg


def _visual_config(d: dict):
    from models.synchformer import VisualConfig

    known = {f.name for f in fields(VisualConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown synchformer config keys {unknown}")
    return VisualConfig(**d)


# ---- tiny random weights (tests, benchmarks) ---------------------------------------------------------------

TINY_MMDIT = MMDiTConfig(hidden_dim=64, depth=2, fused_depth=1, num_heads=4)  # clip/text/t5/sync widths as released
TINY_VAE = OobleckConfig(channels=4)


def vae_config_dict(cfg: OobleckConfig) -> dict:
    """The pretransform section of thinksound.json for `cfg` (what OobleckConfig.from_dict reads)."""
    enc = {"in_channels": cfg.io_channels, "channels": cfg.channels, "c_mults": list(cfg.c_mults),
           "strides": list(cfg.strides), "latent_dim": 2 * cfg.latent_dim, "use_snake": True}
    dec = {"out_channels": cfg.io_channels, "channels": cfg.channels, "c_mults": list(cfg.c_mults),
           "strides": list(cfg.strides), "latent_dim": cfg.latent_dim, "use_snake": True, "final_tanh": False}
    return {"type": "autoencoder", "config": {"encoder": {"type": "oobleck", "config": enc},
                                              "decoder": {"type": "oobleck", "config": dec},
                                              "bottleneck": {"type": "vae"}, "latent_dim": cfg.latent_dim,
                                              "downsampling_ratio": cfg.downsampling_ratio,
                                              "io_channels": cfg.io_channels}}


def tiny_sync_full_config(dim: int = 768):
    """Synchformer with every branch (the published file's layout); only the visual width matters here."""
    from models.synchformer import AudioConfig, FullConfig, FusionConfig, VisualConfig

    visual = VisualConfig(dim=dim, depth=1, heads=2, mlp_ratio=0.25, agg_heads=2, agg_ff=64)
    return FullConfig(visual=visual, audio=AudioConfig(dim=32, depth=1, heads=2, intermediate=64),
                      fusion=FusionConfig(dim=32, depth=1, heads=2))


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    else:
        torch.save(tensors, path)


def write_tiny_weights(root: str | Path, *, mmdit: MMDiTConfig = TINY_MMDIT, vae: OobleckConfig = TINY_VAE,
                       sync_dim: int | None = 768, fmt: str = "ckpt", separate_vae: bool = False,
                       seed: int = 0) -> WeightsDir:
    """A random, non-full-size weights dir in the published layouts (+ config.json saying the sizes).

    The null ("empty_*") features get non-zero values so that guidance and text-only renders have
    something to work with, like trained weights would. ``sync_dim=None`` writes no Synchformer.
    """
    if fmt not in ("ckpt", "safetensors"):
        raise ValueError("fmt must be 'ckpt' or 'safetensors'")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    mmdit = mmdit.with_sequence(SequenceConfig(9))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        dit = build_mmdit(mmdit, device="cpu")
        with torch.no_grad():
            for name in ("empty_string_feat", "empty_t5_feat", "empty_clip_feat", "empty_sync_feat"):
                getattr(dit, name).normal_(0.0, 0.5)
            dit.sync_pos_emb.normal_(0.0, 0.1)
        auto = build_vae(vae, device="cpu")
        sync = None
        if sync_dim is not None:
            from models.synchformer import Synchformer

            sync = Synchformer(tiny_sync_full_config(sync_dim))
    light = {"model.model." + k: v for k, v in dit.state_dict().items()}
    vae_sd = auto.state_dict()
    if separate_vae:  # the light file keeps its own (different) VAE copy, as the published files may
        light.update({"pretransform.model." + k: v * 0.5 for k, v in vae_sd.items()})
        vae_file = {"autoencoder." + k: v for k, v in vae_sd.items()}
        if fmt == "ckpt":
            torch.save({"state_dict": vae_file, "epoch": 0}, root / "vae.ckpt")
        else:
            _save(vae_file, root / "vae.safetensors")
    else:
        light.update({"pretransform.model." + k: v for k, v in vae_sd.items()})
    _save(light, root / f"thinksound_light.{fmt}")
    config: dict[str, Any] = {"mmdit": {k: v for k, v in asdict(mmdit).items()
                                        if k not in SequenceConfig(9).lengths()},
                              "vae": vae_config_dict(vae)}
    if sync is not None:
        torch.save(sync.state_dict(), root / SYNC_NAME)
        config["synchformer"] = asdict(tiny_sync_full_config(sync_dim).visual)
    (root / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return WeightsDir.open(root)
