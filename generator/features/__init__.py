"""ThinkSound conditioning features: MetaCLIP (8 fps frames + caption), T5 (CoT), Synchformer (25 fps), cached.

Models resolve from a local folder or the Hugging Face cache only (``hub.resolve_model``); a missing one raises
``contract.protocols.ModelMissing`` with a one-line how-to.
"""

from .cache import FeatureCache, make_key
from .extract import FeatureExtractor
from models.hub import KINDS, describe_model, hf_cache_dir, resolve_model
from .metaclip import MetaCLIPFeatures, num_clip_frames, pad_to_square
from .sync import SyncFeatures, num_sync_frames, num_sync_tokens
from .t5 import T5Features

__all__ = [
    "FeatureCache", "FeatureExtractor", "KINDS", "MetaCLIPFeatures", "SyncFeatures", "T5Features",
    "describe_model", "hf_cache_dir", "make_key", "num_clip_frames", "num_sync_frames", "num_sync_tokens",
    "pad_to_square", "resolve_model",
]
