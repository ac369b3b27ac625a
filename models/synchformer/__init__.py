"""Synchformer: ThinkSound's 25 fps `sync_features` extractor and av-benchmark's DeSync critic (spec synchformer.md)."""

from .config import AudioConfig, FullConfig, FusionConfig, VisualConfig
from .loading import CheckpointMismatchError, read_state_dict
from .model import Synchformer, build_full, desync_from_logits
from .preprocess import num_sync_frames, num_windows, pad_or_trim, preprocess_sync_frames
from .visual import SynchformerVisual, build_full_visual

__all__ = [
    "AudioConfig",
    "CheckpointMismatchError",
    "FullConfig",
    "FusionConfig",
    "Synchformer",
    "SynchformerVisual",
    "VisualConfig",
    "build_full",
    "build_full_visual",
    "desync_from_logits",
    "num_sync_frames",
    "num_windows",
    "pad_or_trim",
    "preprocess_sync_frames",
    "read_state_dict",
]
