"""Fusion transformer + offset classifier (`compare_v_a`'s transformer, spec §7). Names follow the checkpoint."""

from __future__ import annotations

import torch
from torch import nn

from .config import FusionConfig
from .layers import multi_head_attention


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.key = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(multi_head_attention(self.query(x), self.key(x), self.value(x), self.heads))


class Block(nn.Module):
    """minGPT block, pre-norm, no mask; `mlp.1` is the GELU (no keys) and the reference's `mlp.3` dropout is inert."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.ln2 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.attn = SelfAttention(cfg.dim, cfg.heads)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, 4 * cfg.dim), nn.GELU(), nn.Linear(4 * cfg.dim, cfg.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class PosEmb(nn.Module):
    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.pos_emb = nn.Parameter(torch.zeros(1, length, dim))


class FusionTransformer(nn.Module):
    """[OFF, visual (14*8), MOD, audio (14*6)] + pos -> blocks -> ln_f -> off_head(OFF) -> (B, n_classes) logits."""

    def __init__(self, cfg: FusionConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or FusionConfig()
        self.OFF_tok = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.MOD_tok = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.vis_in_lnorm = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.aud_in_lnorm = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.pos_emb_cfg = PosEmb(cfg.seq_len, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.off_head = nn.Linear(cfg.dim, cfg.n_classes)

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """v (B, 14*8, D), a (B, 14*6, D), already projected by vproj/aproj."""
        b = v.shape[0]
        x = torch.cat(
            [
                self.OFF_tok.expand(b, -1, -1),
                self.vis_in_lnorm(v),
                self.MOD_tok.expand(b, -1, -1),
                self.aud_in_lnorm(a),
            ],
            dim=1,
        )
        if x.shape[1] != self.cfg.seq_len:
            raise ValueError(
                f"fusion needs exactly {self.cfg.n_windows} windows per modality "
                f"(sequence {self.cfg.seq_len}), got sequence {x.shape[1]}"
            )
        x = x + self.pos_emb_cfg.pos_emb
        for block in self.blocks:
            x = block(x)
        return self.off_head(self.ln_f(x)[:, 0])


def offsets_from_logits(logits: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Predicted offset in seconds per row: grid[argmax(logits)]."""
    return grid.to(logits.device)[logits.argmax(dim=-1)]

