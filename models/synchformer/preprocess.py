"""Sync-frame preparation (spec §2, thinksound.md §1.2): 25 fps RGB -> uint8 (T, 3, 224, 224) -> 16-frame windows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

SYNC_FPS = 25
SYNC_SIZE = 224
WINDOW_FRAMES = 16
WINDOW_STRIDE = 8


def num_sync_frames(duration_s: float) -> int:
    """Frames kept for a clip of `duration_s` seconds: int(25 * d), as both references do."""
    return int(SYNC_FPS * duration_s)


def num_windows(n_frames: int, window: int = WINDOW_FRAMES, stride: int = WINDOW_STRIDE) -> int:
    """S = (T - 16) // 8 + 1 complete windows; frames after the last complete window are ignored."""
    return max(0, (n_frames - window) // stride + 1)


def to_tchw_uint8(frames: torch.Tensor | np.ndarray | Sequence) -> torch.Tensor:
    """Accept a list of HxWx3 frames, a (T, H, W, 3) array or a (T, 3, H, W) tensor; return uint8 (T, 3, H, W)."""
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError("no frames")
        frames = torch.stack([torch.as_tensor(np.asarray(f)) for f in frames])
    x = torch.as_tensor(frames)
    if x.ndim != 4:
        raise ValueError(f"expected 4-D frames, got shape {tuple(x.shape)}")
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != 3:
        raise ValueError(f"expected RGB frames (3 channels), got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 frames, got {x.dtype}")
    return x.contiguous()


def pad_or_trim(frames: torch.Tensor, n_frames: int) -> torch.Tensor:
    """ThinkSound's length fix: keep the first n frames, or repeat the last frame up to n."""
    if n_frames <= 0:
        raise ValueError("n_frames must be positive")
    t = frames.shape[0]
    if t == 0:
        raise ValueError("cannot pad an empty clip")
    if t >= n_frames:
        return frames[:n_frames]
    return torch.cat([frames, frames[-1:].expand(n_frames - t, *frames.shape[1:])], dim=0)


def resize_center_crop(frames: torch.Tensor, size: int = SYNC_SIZE, chunk: int = 32) -> torch.Tensor:
    """torchvision v2 Resize(size, bicubic, antialias) on the shorter side + CenterCrop(size); uint8 in and out.

    Done in chunks of frames so full-HD clips don't need a float copy of the whole clip.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    out = []
    for part in frames.split(chunk):
        part = TF.resize(part, [size], interpolation=InterpolationMode.BICUBIC, antialias=True)
        out.append(TF.center_crop(part, [size, size]))
    return torch.cat(out)


def preprocess_sync_frames(frames, n_frames: int | None = None, size: int = SYNC_SIZE) -> torch.Tensor:
    """RGB frames already sampled at 25 fps (any size) -> uint8 (T, 3, 224, 224); pad/trim to n_frames if given."""
    x = to_tchw_uint8(frames)
    if n_frames is not None:
        x = pad_or_trim(x, n_frames)
    return resize_center_crop(x, size)


def normalize_frames(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 -> [-1, 1] (ToDtype(scale) then Normalize(0.5, 0.5)); float input is taken as already normalised."""
    if frames.dtype == torch.uint8:
        return ((frames.to(torch.float32) / 255.0 - 0.5) / 0.5).to(dtype)
    return frames.to(dtype)


def window_starts(n_frames: int, window: int = WINDOW_FRAMES, stride: int = WINDOW_STRIDE) -> list[int]:
    return [s * stride for s in range(num_windows(n_frames, window, stride))]
