"""Full Synchformer (visual + audio + fusion) as av-benchmark loads it, and its DeSync score (spec §7-§8)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .audio import AudioBranch
from .audio_frontend import waveform_to_mel_windows
from .config import FullConfig
from .fusion import FusionTransformer, offsets_from_logits
from .loading import build_on_meta, load_assign, read_state_dict
from .motionformer import MotionFormer
from .preprocess import SYNC_FPS, num_windows
from .visual import extract_windows


class Synchformer(nn.Module):
    """All 513 checkpoint tensors: `vfeat_extractor`, `afeat_extractor`, `vproj`, `aproj`, `transformer`."""

    def __init__(self, cfg: FullConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or FullConfig()
        self.vfeat_extractor = MotionFormer(cfg.visual)
        self.afeat_extractor = AudioBranch(cfg.audio)
        self.vproj = nn.Linear(cfg.visual.dim, cfg.fusion.dim)
        self.aproj = nn.Linear(cfg.audio.dim, cfg.fusion.dim)
        self.transformer = FusionTransformer(cfg.fusion)

    @property
    def class_grid(self) -> torch.Tensor:
        """Offset in seconds of each class (fp32, kept out of the state dict like the reference)."""
        return self.cfg.fusion.class_grid()

    @classmethod
    def from_state_dict(
        cls,
        sd: dict[str, torch.Tensor],
        cfg: FullConfig | None = None,
        dtype: torch.dtype | None = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Synchformer:
        """Strict load of every key (as av-benchmark does)."""
        cfg = cfg or FullConfig()
        model = build_on_meta(lambda: cls(cfg))
        return load_assign(model, sd, dtype=dtype, device=device, what="Synchformer")

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        dtype: torch.dtype | None = torch.float32,
        device: torch.device | str = "cpu",
        cfg: FullConfig | None = None,
    ) -> Synchformer:
        return cls.from_state_dict(read_state_dict(path), cfg, dtype, device)

    # --- the three reference entry points -------------------------------------------------------------------------

    def extract_vfeats(self, frames: torch.Tensor, chunk_windows: int = 8) -> torch.Tensor:
        """uint8 frames (T|B,T, 3, 224, 224) at 25 fps -> (B, S, 8, D)."""
        return extract_windows(self.vfeat_extractor, frames, chunk_windows)

    def extract_afeats(self, mel: torch.Tensor, chunk_windows: int = 64) -> torch.Tensor:
        """Normalised log-mel windows (B, S, 1, 128, 66) -> (B, S, 6, D)."""
        b, s = mel.shape[:2]
        p = self.vproj.weight
        flat = mel.reshape(b * s, *mel.shape[2:]).to(p.device, p.dtype)
        out = torch.cat([self.afeat_extractor(part) for part in flat.split(chunk_windows)])
        return out.reshape(b, s, *out.shape[1:])

    def compare_v_a(self, vis: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
        """vis (B, 14, 8, D), aud (B, 14, 6, D) per-window features -> offset logits (B, 21)."""
        v = self.vproj(vis).flatten(1, 2)
        a = self.aproj(aud).flatten(1, 2)
        return self.transformer(v, a)

    # --- av-benchmark evaluation --------------------------------------------------------------------------------

    @torch.inference_mode()
    def features(
        self, frames: torch.Tensor, waveform: torch.Tensor, sample_rate: int, duration_s: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both modalities on the first d seconds (d defaults to the video length T/25)."""
        if frames.ndim == 4:
            frames = frames.unsqueeze(0)
        if duration_s is None:
            duration_s = frames.shape[1] / SYNC_FPS
        n_frames = int(SYNC_FPS * duration_s)
        if frames.shape[1] < n_frames:
            raise ValueError(f"video is shorter than {duration_s} s ({frames.shape[1]} < {n_frames} frames)")
        vis = self.extract_vfeats(frames[:, :n_frames])
        aud = self.extract_afeats(waveform_to_mel_windows(waveform, sample_rate, duration_s))
        if aud.shape[0] != vis.shape[0]:
            raise ValueError(f"batch mismatch: {vis.shape[0]} videos vs {aud.shape[0]} audios")
        return vis, aud

    def _require_windows(self, s: int) -> None:
        n = self.cfg.fusion.n_windows
        if s < n:
            raise ValueError(f"DeSync needs at least {n} windows (>= {0.32 * (n + 1):.2f} s), got {s}")

    @torch.inference_mode()
    def logits_first_last(self, vis: torch.Tensor, aud: torch.Tensor) -> torch.Tensor:
        """Logits for the first and last 14 windows -> (B, 2, 21); needs S >= 14 (d >= 4.8 s)."""
        n = self.cfg.fusion.n_windows
        s = min(vis.shape[1], aud.shape[1])
        self._require_windows(s)
        vis, aud = vis[:, :s], aud[:, :s]
        first = self.compare_v_a(vis[:, :n], aud[:, :n])
        last = self.compare_v_a(vis[:, -n:], aud[:, -n:])
        return torch.stack([first, last], dim=1)

    def offset_logits(
        self, frames: torch.Tensor, waveform: torch.Tensor, sample_rate: int, duration_s: float | None = None
    ) -> torch.Tensor:
        """uint8 frames (T|B,T, 3, 224, 224) at 25 fps + waveform ((N,), (C, N) or (B, C, N)) -> (B, 2, 21)."""
        n_frames = frames.shape[-4] if duration_s is None else int(SYNC_FPS * duration_s)
        self._require_windows(num_windows(n_frames, self.cfg.visual.frames_per_window, self.cfg.visual.window_stride))
        return self.logits_first_last(*self.features(frames, waveform, sample_rate, duration_s))

    def desync_seconds(
        self, frames: torch.Tensor, waveform: torch.Tensor, sample_rate: int, duration_s: float | None = None
    ) -> torch.Tensor:
        """Per-clip DeSync (B,): mean of |offset| of the first and last 14-window evaluations, in seconds."""
        logits = self.offset_logits(frames, waveform, sample_rate, duration_s)
        return offsets_from_logits(logits, self.class_grid).abs().mean(dim=1)


def desync_from_logits(logits_first: torch.Tensor, logits_last: torch.Tensor, grid: torch.Tensor) -> float:
    """Dataset DeSync: the mean of every |grid[argmax]| over clips x {first, last} (av-benchmark `evaluate.py`)."""
    offs = torch.cat([offsets_from_logits(logits_first, grid), offsets_from_logits(logits_last, grid)])
    return float(offs.abs().mean())


def build_full(cfg: FullConfig | None = None) -> Synchformer:
    """Real-size full model on the meta device, e.g. to compare against the manifest."""
    return build_on_meta(lambda: Synchformer(cfg))
