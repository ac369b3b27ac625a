"""Sequence lengths for one clip duration (spec §1.4, §2.7).

Every length the MM-DiT and VAE need is derived here from the duration, so a renderer that
changes duration changes exactly one object and nothing drifts out of sync.
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATE = 44_100
VAE_DOWNSAMPLING = 2048  # 2·4·4·8·8 Oobleck strides
LATENT_RATE = SAMPLE_RATE / 64 / 32  # = 21.533203125 latents per second, written as predict.py does
CLIP_TOKENS_PER_S = 8
SYNC_TOKENS_PER_S = 24


@dataclass(frozen=True)
class SequenceConfig:
    """Lengths as predict.py computes them; integer seconds for CLIP/sync, rounded latents.

    A fractional duration (e.g. 9.97 s from app.py) keeps its fractional part only in the latent
    length; CLIP and sync token counts use int(duration), exactly like the reference.
    """

    duration_s: float

    def __post_init__(self) -> None:
        if not self.duration_s >= 1.0:  # also rejects NaN
            raise ValueError(f"duration_s must be >= 1 s (int(d) CLIP/sync tokens), got {self.duration_s!r}")

    @property
    def latent_seq_len(self) -> int:
        return round(LATENT_RATE * self.duration_s)

    @property
    def clip_seq_len(self) -> int:
        return CLIP_TOKENS_PER_S * int(self.duration_s)

    @property
    def sync_seq_len(self) -> int:
        return SYNC_TOKENS_PER_S * int(self.duration_s)

    @property
    def num_samples(self) -> int:
        """Waveform length the VAE decodes to (slightly longer than duration·44100)."""
        return self.latent_seq_len * VAE_DOWNSAMPLING

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def lengths(self) -> dict[str, int]:
        return {
            "latent_seq_len": self.latent_seq_len,
            "clip_seq_len": self.clip_seq_len,
            "sync_seq_len": self.sync_seq_len,
        }
