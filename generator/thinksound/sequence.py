"""Sequence lengths for one clip duration (spec §1.4, §2.7).

Every length the MM-DiT, the VAE and the batching need is derived here from the duration, so a renderer
that changes duration changes exactly one object and nothing drifts out of sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SAMPLE_RATE = 44_100
VAE_DOWNSAMPLING = 2048  # 2·4·4·8·8 Oobleck strides
LATENT_RATE = SAMPLE_RATE / 64 / 32  # = 21.533203125 latents per second, written as predict.py does
CLIP_TOKENS_PER_S = 8
SYNC_TOKENS_PER_S = 24
TEXT_TOKENS = 77  # MetaCLIP caption tokens = T5 CoT tokens (padding="max_length")
SYNC_TOKENS_PER_WINDOW = 8  # Synchformer tokens per 16-frame window (the sync_pos_emb positions)
MIN_DURATION_S = 1.0  # CLIP/sync token counts use int(d): below 1 s there would be none


@dataclass(frozen=True)
class SequenceConfig:
    """Lengths as predict.py computes them; integer seconds for CLIP/sync, rounded latents.

    A fractional duration (e.g. 9.97 s from app.py) keeps its fractional part only in the latent
    length; CLIP and sync token counts use int(duration), exactly like the reference. ``latent_frames``
    overrides the latent count (edits cover every input sample: ceil(samples / 2048)).
    """

    duration_s: float
    latent_frames: int | None = None

    def __post_init__(self) -> None:
        if not self.duration_s >= MIN_DURATION_S:  # also rejects NaN
            raise ValueError(f"duration_s must be >= 1 s (int(d) CLIP/sync tokens), got {self.duration_s!r}")
        if self.latent_frames is not None and self.latent_frames < 1:
            raise ValueError(f"latent_frames must be >= 1, got {self.latent_frames}")

    @classmethod
    def for_samples(cls, n_samples: int, downsampling: int = VAE_DOWNSAMPLING) -> "SequenceConfig":
        """An edit of n_samples of audio: latents cover every sample; CLIP/sync as for its (≥ 1 s) duration."""
        return cls(max(n_samples / SAMPLE_RATE, MIN_DURATION_S), max(1, math.ceil(n_samples / downsampling)))

    @property
    def latent_seq_len(self) -> int:
        return self.latent_frames if self.latent_frames is not None else round(LATENT_RATE * self.duration_s)

    @property
    def clip_seq_len(self) -> int:
        return CLIP_TOKENS_PER_S * int(self.duration_s)

    @property
    def sync_seq_len(self) -> int:
        return SYNC_TOKENS_PER_S * int(self.duration_s)

    @property
    def text_seq_len(self) -> int:
        return TEXT_TOKENS

    @property
    def joint_text_len(self) -> int:
        """MetaCLIP caption tokens followed by T5 CoT tokens on the sequence axis (spec pitfall 5)."""
        return 2 * TEXT_TOKENS

    @property
    def joint_seq_len(self) -> int:
        """Tokens in one joint attention: latent + CLIP + text (194 + 72 + 154 = 420 at 9 s)."""
        return self.latent_seq_len + self.clip_seq_len + self.joint_text_len

    @property
    def sync_windows(self) -> int:
        return self.sync_seq_len // SYNC_TOKENS_PER_WINDOW

    @property
    def clip_rope_scale(self) -> float:
        """CLIP frames sit on the latent time axis: RoPE positions scaled by N / C (spec pitfall 2)."""
        return self.latent_seq_len / self.clip_seq_len

    @property
    def num_samples(self) -> int:
        """Waveform length the VAE decodes to (slightly longer than duration·44100)."""
        return self.latent_seq_len * VAE_DOWNSAMPLING

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def lengths(self) -> dict[str, int]:
        """The MM-DiT config lengths; also the batching bucket (equal lengths batch into one forward)."""
        return {
            "latent_seq_len": self.latent_seq_len,
            "clip_seq_len": self.clip_seq_len,
            "sync_seq_len": self.sync_seq_len,
        }

    @property
    def bucket(self) -> tuple[int, int, int]:
        return self.latent_seq_len, self.clip_seq_len, self.sync_seq_len
