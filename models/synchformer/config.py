"""Shape/numerics settings of the three Synchformer parts (spec synchformer.md §3, §6, §7).

Defaults are the released checkpoint's real sizes, so `VisualConfig()` etc. build the real model. Tiny test models
only change the widths/depths; everything else (224 px, 16x16 patches, 16-frame windows, 128x66 mels) stays fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class VisualConfig:
    """MotionFormer ViT-B/16 'divided_224_16x4' plus the CLS spatial aggregator."""

    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    image_size: int = 224
    patch_size: int = 16
    temporal_patch: int = 2
    frames_per_window: int = 16
    window_stride: int = 8
    qkv_bias: bool = True
    ln_eps: float = 1e-6
    agg_eps: float = 1e-6
    agg_heads: int | None = None  # None: the backbone's head count (what the reference does)
    agg_ff: int | None = None  # None: 4 * dim

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size or self.frames_per_window % self.temporal_patch:
            raise ValueError("image_size / frames_per_window must be multiples of the patch sizes")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def spatial_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def time_tokens(self) -> int:
        """Tokens per window = temporal resolution (8 for 16 frames / 2)."""
        return self.frames_per_window // self.temporal_patch

    @property
    def mlp_hidden(self) -> int:
        return int(self.dim * self.mlp_ratio)

    @property
    def aggregator_heads(self) -> int:
        return self.agg_heads or self.heads

    @property
    def aggregator_ff(self) -> int:
        return self.agg_ff or 4 * self.dim


@dataclass(frozen=True)
class AudioConfig:
    """HF-AST (ASTConfig defaults, max_length 66) plus the CLS frequency aggregator."""

    dim: int = 768
    depth: int = 12
    heads: int = 12
    intermediate: int = 3072
    n_mels: int = 128
    max_frames: int = 66
    patch_size: int = 16
    freq_stride: int = 10
    time_stride: int = 10
    qkv_bias: bool = True
    ln_eps: float = 1e-12
    agg_eps: float = 1e-6
    agg_heads: int | None = None
    agg_ff: int | None = None

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")

    @property
    def freq_tokens(self) -> int:
        return (self.n_mels - self.patch_size) // self.freq_stride + 1

    @property
    def time_tokens(self) -> int:
        """Tokens per 0.64 s window after frequency aggregation (6)."""
        return (self.max_frames - self.patch_size) // self.time_stride + 1

    @property
    def positions(self) -> int:
        """Patch tokens + CLS + distillation token (74)."""
        return self.freq_tokens * self.time_tokens + 2

    @property
    def aggregator_heads(self) -> int:
        return self.agg_heads or self.heads

    @property
    def aggregator_ff(self) -> int:
        return self.agg_ff or 4 * self.dim


@dataclass(frozen=True)
class FusionConfig:
    """minGPT-style fusion transformer over [OFF, 14x8 visual, MOD, 14x6 audio] + offset head."""

    dim: int = 768
    depth: int = 3
    heads: int = 8
    n_classes: int = 21
    max_offset: float = 2.0
    ln_eps: float = 1e-5
    n_windows: int = 14
    visual_tokens: int = 8
    audio_tokens: int = 6

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")

    @property
    def seq_len(self) -> int:
        return 2 + self.n_windows * (self.visual_tokens + self.audio_tokens)

    def class_grid(self) -> torch.Tensor:
        """Offset (seconds) of each class: linspace(-2, 2, 21), class 10 = 0 s."""
        return torch.linspace(-self.max_offset, self.max_offset, self.n_classes)


@dataclass(frozen=True)
class FullConfig:
    visual: VisualConfig = field(default_factory=VisualConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)

    def __post_init__(self) -> None:
        f = self.fusion
        if f.visual_tokens != self.visual.time_tokens or f.audio_tokens != self.audio.time_tokens:
            raise ValueError("fusion token counts must match the visual/audio tokens per window")
