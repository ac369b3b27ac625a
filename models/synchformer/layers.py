"""Small building blocks shared by the visual, audio and fusion parts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Plain softmax attention on already-projected (B, L, D) tensors; heads merged back head-major (h*dh + d)."""
    b, lq, d = q.shape
    lk = k.shape[1]
    dh = d // heads
    q = q.reshape(b, lq, heads, dh).transpose(1, 2)
    k = k.reshape(b, lk, heads, dh).transpose(1, 2)
    v = v.reshape(b, lk, heads, dh).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, lq, d)


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2 (timm naming, as in the MotionFormer blocks)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class CLSAggregator(nn.Module):
    """A pre-norm GELU `nn.TransformerEncoderLayer` with a learned CLS token prepended; returns only the CLS row.

    Parameter names match `nn.TransformerEncoderLayer` (+ `cls_token`) so the checkpoint loads unchanged. Only the CLS
    output is used downstream, so only the CLS query is computed: identical maths, ~197x less attention/MLP work.
    """

    def __init__(self, dim: int, heads: int, ff: int, eps: float) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=0.0, bias=True, batch_first=True)
        self.linear1 = nn.Linear(dim, ff)
        self.linear2 = nn.Linear(ff, dim)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(M, L, D) sequences -> (M, D) CLS outputs."""
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        h = self.norm1(x)
        cls = x[:, :1] + self.self_attn(h[:, :1], h, h, need_weights=False)[0]
        cls = cls + self.linear2(F.gelu(self.linear1(self.norm2(cls))))
        return cls[:, 0]
