"""ThinkSound's `sync_features` extractor: the Synchformer visual branch alone (spec §1 loading rules, §2, §4)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import VisualConfig
from .loading import build_on_meta, load_assign, read_state_dict
from .motionformer import MotionFormer
from .preprocess import normalize_frames, num_windows

VISUAL_PREFIX = "vfeat_extractor"


def _as_batch(frames: torch.Tensor) -> torch.Tensor:
    if frames.ndim == 4:
        frames = frames.unsqueeze(0)
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"expected frames (T, 3, H, W) or (B, T, 3, H, W), got {tuple(frames.shape)}")
    return frames


def extract_windows(backbone: MotionFormer, frames: torch.Tensor, chunk_windows: int = 8) -> torch.Tensor:
    """Frames (T|B,T, 3, 224, 224) -> per-window tokens (B, S, 8, D).

    Windows of 16 frames with stride 8 are cut and normalised chunk by chunk (`chunk_windows` windows per forward)
    so memory stays bounded for long clips; windows are independent, so chunking does not change the result.
    """
    cfg = backbone.cfg
    frames = _as_batch(frames)
    b, t = frames.shape[:2]
    s = num_windows(t, cfg.frames_per_window, cfg.window_stride)
    if s == 0:
        raise ValueError(f"need at least {cfg.frames_per_window} frames, got {t}")
    param = backbone.cls_token
    starts = [(i, w * cfg.window_stride) for i in range(b) for w in range(s)]  # (clip, first frame), window-major
    chunk_windows = max(1, chunk_windows)
    outs = []
    for c in range(0, len(starts), chunk_windows):
        windows = torch.stack([frames[i, f : f + cfg.frames_per_window] for i, f in starts[c : c + chunk_windows]])
        x = normalize_frames(windows.to(param.device), param.dtype).permute(0, 2, 1, 3, 4)  # (n, 3, 16, H, W)
        outs.append(backbone(x))
    return torch.cat(outs).reshape(b, s, cfg.time_tokens, cfg.dim)


class SynchformerVisual(nn.Module):
    """Holds `vfeat_extractor` only, so its state-dict keys are the checkpoint's `vfeat_extractor.*` keys."""

    def __init__(self, cfg: VisualConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or VisualConfig()
        self.vfeat_extractor = MotionFormer(self.cfg)

    @classmethod
    def from_state_dict(
        cls,
        sd: dict[str, torch.Tensor],
        cfg: VisualConfig | None = None,
        dtype: torch.dtype | None = torch.float32,
        device: torch.device | str = "cpu",
    ) -> SynchformerVisual:
        """Keep only `vfeat_extractor*` keys (ThinkSound drops the other 275 silently) and load them strictly."""
        visual = {k: v for k, v in sd.items() if k.startswith(VISUAL_PREFIX)}
        model = build_on_meta(lambda: cls(cfg))
        return load_assign(model, visual, dtype=dtype, device=device, what="Synchformer visual branch")

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        dtype: torch.dtype | None = torch.float32,
        device: torch.device | str = "cpu",
        cfg: VisualConfig | None = None,
    ) -> SynchformerVisual:
        """Load `synchformer_state_dict.pth` (the full 513-tensor file is fine)."""
        return cls.from_state_dict(read_state_dict(path), cfg, dtype, device)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(N, 3, 16, 224, 224) in [-1, 1] -> (N, 8, D)."""
        return self.vfeat_extractor(windows)

    @torch.inference_mode()
    def extract_per_window(self, frames: torch.Tensor, chunk_windows: int = 8) -> torch.Tensor:
        """uint8 frames (T|B,T, 3, 224, 224) at 25 fps -> (B, S, 8, D) (av-benchmark layout)."""
        return extract_windows(self.vfeat_extractor, frames, chunk_windows)

    @torch.inference_mode()
    def extract(self, frames: torch.Tensor, chunk_windows: int = 8) -> torch.Tensor:
        """uint8 frames (T|B,T, 3, 224, 224) at 25 fps -> `sync_features` (B, 8*S, D), window-major (ThinkSound)."""
        per_window = extract_windows(self.vfeat_extractor, frames, chunk_windows)
        return per_window.flatten(1, 2)


def build_full_visual(cfg: VisualConfig | None = None) -> SynchformerVisual:
    """Real-size visual branch on the meta device (no memory), e.g. to compare against the manifest."""
    return build_on_meta(lambda: SynchformerVisual(cfg))
