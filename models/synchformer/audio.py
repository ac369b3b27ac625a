"""Audio branch: HF-AST on one 0.64 s log-mel window + CLS frequency aggregation -> 6 tokens (spec §6).

Module and parameter names follow HF `ASTModel` so the checkpoint's `afeat_extractor.ast.*` keys load unchanged.
(Named `audio.py`, not `ast.py`, to keep the stdlib `ast` module unshadowed.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AudioConfig
from .layers import CLSAggregator, multi_head_attention


class ASTPatchEmbeddings(nn.Module):
    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(
            1, cfg.dim, cfg.patch_size, stride=(cfg.freq_stride, cfg.time_stride)
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(N, 1, mels, frames) -> (N, F*T, D), frequency-major (index f*T + t)."""
        return self.projection(mel).flatten(2).transpose(1, 2)


class ASTEmbeddings(nn.Module):
    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.position_embeddings = nn.Parameter(torch.zeros(1, cfg.positions, cfg.dim))
        self.patch_embeddings = ASTPatchEmbeddings(cfg)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.patch_embeddings(mel)
        n = x.shape[0]
        x = torch.cat([self.cls_token.expand(n, -1, -1), self.distillation_token.expand(n, -1, -1), x], dim=1)
        return x + self.position_embeddings


class ASTSelfAttention(nn.Module):
    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.query = nn.Linear(cfg.dim, cfg.dim, bias=cfg.qkv_bias)
        self.key = nn.Linear(cfg.dim, cfg.dim, bias=cfg.qkv_bias)
        self.value = nn.Linear(cfg.dim, cfg.dim, bias=cfg.qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return multi_head_attention(self.query(x), self.key(x), self.value(x), self.heads)


class _Dense(nn.Module):
    """Holder giving a Linear the HF name `<...>.dense`."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)


class ASTAttention(nn.Module):
    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.attention = ASTSelfAttention(cfg)
        self.output = _Dense(cfg.dim, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output.dense(self.attention(x))


class ASTLayer(nn.Module):
    """Pre-norm ViT layer, LayerNorm eps 1e-12 (ASTConfig default)."""

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.attention = ASTAttention(cfg)
        self.intermediate = _Dense(cfg.dim, cfg.intermediate)
        self.output = _Dense(cfg.intermediate, cfg.dim)
        self.layernorm_before = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.layernorm_after = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.layernorm_before(x))
        return x + self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x))))


class ASTEncoder(nn.Module):
    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(ASTLayer(cfg) for _ in range(cfg.depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x)
        return x


class ASTModel(nn.Module):
    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.embeddings = ASTEmbeddings(cfg)
        self.encoder = ASTEncoder(cfg)
        self.layernorm = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(N, 1, mels, frames) -> (N, 2 + F*T, D) final-normed hidden states."""
        return self.layernorm(self.encoder(self.embeddings(mel)))


class AudioBranch(nn.Module):
    """`afeat_extractor`: (N, 1, 128, 66) normalised log-mel windows -> (N, 6, D)."""

    def __init__(self, cfg: AudioConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or AudioConfig()
        self.ast = ASTModel(cfg)
        self.freq_attn_agg = CLSAggregator(cfg.dim, cfg.aggregator_heads, cfg.aggregator_ff, cfg.agg_eps)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if mel.ndim == 3:
            mel = mel.unsqueeze(1)
        if tuple(mel.shape[1:]) != (1, cfg.n_mels, cfg.max_frames):
            raise ValueError(f"AST expects (N, 1, {cfg.n_mels}, {cfg.max_frames}) log-mels, got {tuple(mel.shape)}")
        h = self.ast(mel)[:, 2:]  # drop CLS + distillation tokens
        n, ft = cfg.freq_tokens, cfg.time_tokens
        # one sequence per time column: the 12 frequency tokens in ascending f
        cols = h.reshape(-1, n, ft, cfg.dim).transpose(1, 2).reshape(-1, n, cfg.dim)
        return self.freq_attn_agg(cols).reshape(-1, ft, cfg.dim)
