"""Checkpoint reading and strict, memory-friendly loading (build on meta, then `assign=True`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


class CheckpointMismatchError(RuntimeError):
    """The state dict does not fit the model (missing / unexpected / wrong-shape keys)."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a flat {name: tensor} checkpoint safely (weights_only), memory-mapped when the format allows."""
    path = Path(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
        sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointMismatchError(f"{path}: expected a flat {{name: tensor}} dict")
    return dict(sd)


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], what: str = "model") -> None:
    """Raise a readable error listing every missing, unexpected and wrong-shape key."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {expected[k]}"
        for k in set(expected) & set(sd)
        if tuple(sd[k].shape) != expected[k]
    )
    if not (missing or unexpected or wrong):
        return

    def listing(title: str, items: list[str]) -> str:
        more = f" ... (+{len(items) - 10} more)" if len(items) > 10 else ""
        return f"\n  {title} ({len(items)}): " + ", ".join(items[:10]) + more

    msg = f"state dict does not match {what}:"
    for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            msg += listing(title, items)
    raise CheckpointMismatchError(msg)


def build_on_meta(factory: Callable[[], M]) -> M:
    """Construct without allocating weights; they arrive later through `load_assign`."""
    with torch.device("meta"):
        return factory()


def load_assign(
    model: M,
    sd: Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    what: str = "model",
) -> M:
    """Strictly load `sd` into a (meta) model by assignment (no second copy), then cast/move and set eval mode."""
    check_state_dict(model, sd, what)
    model.load_state_dict(sd, strict=True, assign=True)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise CheckpointMismatchError(f"{what}: tensors left unmaterialised: {leftover[:10]}")
    if dtype is not None or device is not None:
        model.to(device=device, dtype=dtype)
    return model.eval().requires_grad_(False)
