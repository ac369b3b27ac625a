"""MetaCLIP features as ThinkSound extracts them (spec thinksound.md §1.2–1.3): 8 fps frame embeddings + caption states.

Frames are zero-padded to a square before the CLIP processor (so nothing is cropped away), and the image embedding
is the projected pooled output, not L2-normalised. The caption goes through the text tower at exactly 77 tokens;
the MM-DiT reads every token state, padding included, so padding must be ``max_length`` like the reference.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from models.hub import fingerprint_dir, resolve_model
from .stream import Batcher, map_batches

log = logging.getLogger(__name__)

DEFAULT_ID = "facebook/metaclip-h14-fullcc2.5b"
CLIP_FPS = 8
TEXT_TOKENS = 77
PREPROCESS = "square-pad-v1"  # bump when the frame → pixel_values path changes (cache keys include it)


def num_clip_frames(duration_s: float) -> int:
    """int(8·D) frames, like the reference's frames_per_chunk."""
    return int(CLIP_FPS * duration_s)


def pad_to_square(frame: np.ndarray) -> np.ndarray:
    """Zero-pad an H×W×3 frame to a square; bars split evenly, the odd pixel on the right/bottom."""
    h, w = frame.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return np.pad(frame, ((top, side - h - top), (left, side - w - left), (0, 0)))


def fit_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """Keep the first n rows, or repeat the last one up to n (per-frame features of a repeated frame)."""
    if x.shape[0] == 0:
        raise ValueError("no frames to fit")
    if x.shape[0] >= n:
        return x[:n]
    return torch.cat([x, x[-1:].expand(n - x.shape[0], *x.shape[1:])])


def _pooled(out) -> torch.Tensor:
    """transformers 4.x returns a tensor from get_*_features, 5.x a ModelOutput whose pooler_output is projected."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class MetaCLIPFeatures:
    """HF CLIPModel + processor; image and caption features in the shapes the MM-DiT expects."""

    def __init__(self, model_id_or_path: str | Path = DEFAULT_ID, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = torch.float32, *, allow_download: bool = False,
                 image_backend: str = "pil", batch_size: int = 16) -> None:
        from transformers import AutoModel, AutoProcessor

        from generator.thinksound.checkpoint import resolve_device, resolve_dtype

        self.model_id = str(model_id_or_path)
        self.path = resolve_model(model_id_or_path, "metaclip", allow_download=allow_download)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        # The reference (transformers 4.52) ran the slow PIL CLIPImageProcessor; 5.x defaults to torchvision.
        self.processor = AutoProcessor.from_pretrained(self.path, backend=image_backend)
        self.model = AutoModel.from_pretrained(self.path, dtype=self.dtype).to(self.device).eval()
        if not hasattr(self.model, "get_image_features") or not hasattr(self.model, "text_model"):
            raise TypeError(f"{self.model_id}: {type(self.model).__name__} is not a CLIP model")
        self.batch_size = max(1, batch_size)
        self.image_backend = image_backend
        self.fingerprint = f"{self.model_id}@{fingerprint_dir(self.path)}"

    @property
    def image_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def text_width(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    def cache_id(self) -> dict:
        return {"model": self.fingerprint, "dtype": str(self.dtype), "pre": PREPROCESS, "backend": self.image_backend}

    def pixel_values(self, frames: list[np.ndarray]) -> torch.Tensor:
        squares = [pad_to_square(np.asarray(f, dtype=np.uint8)) for f in frames]
        return self.processor(images=squares, return_tensors="pt")["pixel_values"]

    @torch.inference_mode()
    def encode_images(self, frames: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 H×W×3 frames → (T, projection_dim) float32."""
        if not frames:
            raise ValueError("no frames")
        px = self.pixel_values(frames).to(self.device, self.dtype)
        return _pooled(self.model.get_image_features(pixel_values=px)).float().cpu()

    def encode_frames(self, frames: Iterable[np.ndarray], n_frames: int) -> torch.Tensor:
        """Stream frames (already at 8 fps) in batches → (n_frames, D): truncated, or last row repeated."""
        if n_frames <= 0:
            raise ValueError("n_frames must be positive")
        feats, _ = map_batches(frames, n_frames, self.batch_size, self.encode_images, "CLIP")
        return fit_rows(feats, n_frames)

    def batcher(self, n_frames: int) -> Batcher:
        """A push-based ``encode_frames``: push 8 fps frames, then ``finish_frames``."""
        if n_frames <= 0:
            raise ValueError("n_frames must be positive")
        return Batcher(n_frames, self.batch_size, self.encode_images, "CLIP")

    @staticmethod
    def finish_frames(batcher: Batcher) -> torch.Tensor:
        return fit_rows(batcher.finish()[0], batcher.n_frames)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.processor.tokenizer(texts, max_length=TEXT_TOKENS, padding="max_length", truncation=True,
                                        return_tensors="pt")

    @torch.inference_mode()
    def encode_text(self, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption → (token states (77, width) after the final LN, projected pooled embedding (D,))."""
        tok = {k: v.to(self.device) for k, v in self.tokenize([caption]).items()}
        out = self.model.text_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        pooled = self.model.text_projection(out.pooler_output)
        return out.last_hidden_state[0].float().cpu(), pooled[0].float().cpu()
