"""DeSync: the audio–visual offset the full Synchformer predicts, scored as av-benchmark does (spec synchformer.md §8).

Both modalities are taken on the first d seconds (d = the shorter of video and audio); the fusion transformer rates
the first 14 windows ([0, 4.8) s) and the last 14 windows; each rating is |grid[argmax(logits)]| seconds and the
clip's DeSync is the mean of the two. The model code is exactly the oracle-checked ``models.synchformer`` path
(``extract_vfeats`` / ``extract_afeats`` / ``compare_v_a``), so the number means what the papers' DeSync means.

Weights: ``synchformer_state_dict.pth`` — a file, a folder holding it (ThinkSound's weights folder), or a hub id in
the HF cache (default ``liuhuadai/ThinkSound``); never downloaded. A checkpoint that is not the released size needs a
``synchformer_config.json`` beside it (either the oracle's ``config`` format or ``{"visual", "audio", "fusion"}``
dataclass fields): head counts cannot be read off tensor shapes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from models.weights import ModelUnavailable, describe_file, resolve_file

NAME = "Synchformer"
DEFAULT_REF = "liuhuadai/ThinkSound"  # = models.hub.KINDS["synchformer"].default_id
FILENAME = "synchformer_state_dict.pth"
CONFIG_NAME = "synchformer_config.json"
SIZE_GB = 1.0  # 237 M fp32 parameters (~0.95 GB)


def config_from_dict(data: Mapping[str, Any]):
    """A ``FullConfig`` from the sidecar: our dataclass fields, or the oracle files' ``config`` format."""
    from models.synchformer import AudioConfig, FullConfig, FusionConfig, VisualConfig
    from models.synchformer.oracle import full_config

    if set(data) <= {"visual", "audio", "fusion"}:
        return FullConfig(visual=VisualConfig(**data.get("visual", {})), audio=AudioConfig(**data.get("audio", {})),
                          fusion=FusionConfig(**data.get("fusion", {})))
    return full_config(data)


def config_to_dict(cfg) -> dict:
    return {"visual": asdict(cfg.visual), "audio": asdict(cfg.audio), "fusion": asdict(cfg.fusion)}


def write_checkpoint(folder: str | Path, state_dict: Mapping, cfg=None, oracle_config: Mapping | None = None) -> Path:
    """Save a (tiny) Synchformer the way the real one ships, plus the sidecar config when it is not real-size."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state_dict), folder / FILENAME)
    if oracle_config is not None or cfg is not None:
        data = dict(oracle_config) if oracle_config is not None else config_to_dict(cfg)
        (folder / CONFIG_NAME).write_text(json.dumps(data, indent=2))
    return folder / FILENAME


class DesyncScorer:
    """Load once, then ``score(video, audio, sr)``; ``release()`` drops the model (one scorer at a time)."""

    def __init__(self, ref: str | Path | None = None, device: str = "cpu", config=None):
        self.ref = str(ref or DEFAULT_REF)
        self.device = device
        self.config = config
        self.model = None
        # One video's frames and visual features: the eval scores a clip's rounds, which share the video, together.
        self._frames: dict[tuple, Any] = {}
        self._vis: dict[tuple, Any] = {}

    # ---- weights ---------------------------------------------------------------------------------------------
    def path(self) -> Path:
        return resolve_file(self.ref, name=NAME, default_repo=DEFAULT_REF, filename=FILENAME)

    def describe(self) -> dict:
        return describe_file(self.ref, name=NAME, default_repo=DEFAULT_REF, filename=FILENAME)

    def _config(self, ckpt: Path):
        if self.config is not None:
            return self.config
        side = ckpt.with_name(CONFIG_NAME)
        if side.is_file():
            try:
                return config_from_dict(json.loads(side.read_text()))
            except (ValueError, TypeError, KeyError) as exc:
                raise ModelUnavailable(f"{NAME} {self.ref}", f"{side} is not a valid Synchformer config ({exc})") \
                    from None
        return None  # the released sizes

    def load(self) -> "DesyncScorer":
        if self.model is None:
            from models.synchformer import CheckpointMismatchError, Synchformer

            ckpt = self.path()
            try:
                self.model = Synchformer.from_checkpoint(ckpt, cfg=self._config(ckpt), device=self.device)
            except (CheckpointMismatchError, RuntimeError, OSError) as exc:
                first = str(exc).splitlines()[0][:300]
                raise ModelUnavailable(f"{NAME} {self.ref}", f"{ckpt} does not load as the full Synchformer "
                                       f"({first}); pass the released {FILENAME}") from None
        return self

    def release(self) -> None:
        self.model = None
        self._frames.clear()
        self._vis.clear()
        import gc

        gc.collect()

    # ---- protocol ------------------------------------------------------------------------------------------
    @property
    def n_windows(self) -> int:
        return self.load().model.cfg.fusion.n_windows

    @property
    def min_duration_s(self) -> float:
        """14 windows of 0.64 s at a 0.32 s stride: 4.8 s."""
        v = self.load().model.cfg.visual
        return ((self.n_windows - 1) * v.window_stride + v.frames_per_window) / 25.0

    def frames(self, video: str | Path, duration_s: float):
        """uint8 (T, 3, 224, 224) at 25 fps for the first ``duration_s`` s: bicubic resize of the short side + centre
        crop (spec §2); a decoder that delivers a frame or two short repeats the last one (ThinkSound)."""
        import torch

        from models.synchformer.preprocess import SYNC_FPS, pad_or_trim, preprocess_sync_frames
        from store.media import iter_frames

        key = (str(video), round(duration_s, 6))
        if key not in self._frames:
            n = int(SYNC_FPS * duration_s)
            chunks, buf = [], []
            for _, img in iter_frames(video, SYNC_FPS, end_s=duration_s):
                buf.append(img)
                if len(buf) == 32:
                    chunks.append(preprocess_sync_frames(buf))
                    buf = []
            if buf:
                chunks.append(preprocess_sync_frames(buf))
            if not chunks:
                raise ValueError(f"{video}: no frames decoded")
            x = torch.cat(chunks)
            if x.shape[0] < n - 2:
                raise ValueError(f"{video}: only {x.shape[0]} frames at 25 fps in {duration_s:.2f} s (need {n})")
            self._frames = {key: pad_or_trim(x, n)}  # keep one video: the eval scores a clip's rounds together
        return self._frames[key]

    def logits(self, frames, audio: np.ndarray, sr: int, duration_s: float, video_key: tuple | None = None):
        """(2, n_classes) offset logits: row 0 the first 14 windows, row 1 the last 14 (spec §8)."""
        import torch

        from models.synchformer.audio_frontend import waveform_to_mel_windows

        m = self.load().model
        vcfg, n = m.cfg.visual, self.n_windows
        wave = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        with torch.inference_mode():
            mel = waveform_to_mel_windows(wave, int(sr), duration_s)  # (1, S_a, 1, 128, 66)
            s_v = (frames.shape[0] - vcfg.frames_per_window) // vcfg.window_stride + 1
            s = min(s_v, mel.shape[1])
            if s < n:
                raise ValueError(f"DeSync needs {n} windows (≥ {self.min_duration_s:.1f} s), got {s}")
            # Only the rated windows are computed: the first 14 and the last 14 (all of them when they overlap).
            spans = [(0, s)] if s <= 2 * n else [(0, n), (s - n, s)]
            vkey = (video_key, tuple(spans)) if video_key is not None else None
            if vkey is None or vkey not in self._vis:
                parts = []
                for a, b in spans:
                    f0, f1 = a * vcfg.window_stride, (b - 1) * vcfg.window_stride + vcfg.frames_per_window
                    parts.append(m.extract_vfeats(frames[f0:f1].unsqueeze(0)))
                vis = torch.cat(parts, dim=1)
                if vkey is not None:
                    self._vis = {vkey: vis}
            else:
                vis = self._vis[vkey]
            aud = torch.cat([m.extract_afeats(mel[:, a:b]) for a, b in spans], dim=1)
            return self.rate(vis, aud)[0]

    def rate(self, vis, aud):
        """Per-window features (B, S, 8, D) / (B, S, 6, D) → logits (B, 2, n_classes) for the first and the last
        14 windows: av-benchmark's ``compare_v_a`` calls in ``evaluate.py``."""
        return self.load().model.logits_first_last(vis, aud).float()

    def desync(self, logits):
        """(B, 2, n_classes) → per-clip DeSync (B,): the mean of |grid[argmax]| over the two ratings."""
        from models.synchformer.fusion import offsets_from_logits

        return offsets_from_logits(logits, self.load().model.cfg.fusion.class_grid()).abs().mean(dim=-1)

    def score(self, video: str | Path, audio: np.ndarray, sr: int, duration_s: float | None = None) -> dict:
        """{"desync_s", "offset_first_s", "offset_last_s", "seconds"} for (C, n) or (n,) audio at ``sr`` Hz."""
        from models.synchformer.fusion import offsets_from_logits
        from store.media import probe

        a = np.asarray(audio, dtype=np.float32)
        a = a.mean(axis=0) if a.ndim == 2 else a
        if duration_s is None:  # whole hundredths, so that rounding in the resampler never leaves it short
            duration_s = math.floor(min(probe(video).duration_s, a.size / sr) * 100) / 100
        d = float(duration_s)
        if d < self.min_duration_s - 1e-6:
            raise ValueError(f"DeSync needs ≥ {self.min_duration_s:.1f} s of video and audio, got {d:.2f} s")
        frames = self.frames(video, d)
        logits = self.logits(frames, a, sr, d, video_key=(str(video), round(d, 6)))
        offs = offsets_from_logits(logits, self.model.cfg.fusion.class_grid())
        first, last = float(offs[0]), float(offs[1])
        return {"desync_s": (abs(first) + abs(last)) / 2, "offset_first_s": first, "offset_last_s": last,
                "seconds": d}
