"""MotionFormer visual backbone with divided space-time attention + spatial CLS aggregation (spec §3-§4).

One 16-frame window in, 8 tokens (one per 2-frame temporal patch) out. Windows never interact, so any number of
windows can be batched along N.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VisualConfig
from .layers import CLSAggregator, Mlp


class _Proj(nn.Module):
    """Holder giving a conv the checkpoint name `<...>.proj`."""

    def __init__(self, proj: nn.Module) -> None:
        super().__init__()
        self.proj = proj


class PatchEmbed3D(_Proj):
    """Conv3d tubelets (2x16x16) -> (N, T'*H'*W', D) tokens, time-major then row then column."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DividedAttention(nn.Module):
    """Space- or time-factorised attention; the CLS token attends to everything, every group also sees CLS."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool, grid: tuple[int, int], over_time: bool) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.grid = grid  # (time tokens, spatial tokens)
        self.over_time = over_time
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    @staticmethod
    def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T) v with q already scaled; groups folded into the batch so fused SDPA kernels apply."""
        lead = q.shape[:-2]
        q, k, v = (z.reshape(-1, *z.shape[-3:]) if z.ndim > 4 else z for z in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        return out.reshape(*lead, *out.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        h, dh = self.heads, d // self.heads
        t, p = self.grid
        q, k, v = self.qkv(x).reshape(n, length, 3, h, dh).permute(2, 0, 3, 1, 4)  # each (N, H, L, dh)
        q = q * self.scale
        cls_out = self._attend(q[:, :, :1], k, v)

        def groups(z: torch.Tensor) -> torch.Tensor:
            z = z[:, :, 1:].reshape(n, h, t, p, dh)
            return z.transpose(2, 3) if self.over_time else z  # (N, H, groups, group_len, dh)

        qg, kg, vg = groups(q), groups(k), groups(v)
        n_groups = qg.shape[2]
        kg = torch.cat([k[:, :, None, :1].expand(-1, -1, n_groups, -1, -1), kg], dim=3)
        vg = torch.cat([v[:, :, None, :1].expand(-1, -1, n_groups, -1, -1), vg], dim=3)
        out = self._attend(qg, kg, vg)
        if self.over_time:
            out = out.transpose(2, 3)
        out = torch.cat([cls_out, out.reshape(n, h, t * p, dh)], dim=2)
        return self.proj(out.transpose(1, 2).reshape(n, length, d))


class DividedSpaceTimeBlock(nn.Module):
    """Residual order time -> space -> MLP (norm3, norm1, norm2)."""

    def __init__(self, cfg: VisualConfig) -> None:
        super().__init__()
        grid = (cfg.time_tokens, cfg.spatial_tokens)
        d = cfg.dim
        self.norm1 = nn.LayerNorm(d, eps=cfg.ln_eps)
        self.attn = DividedAttention(d, cfg.heads, cfg.qkv_bias, grid, over_time=False)
        self.timeattn = DividedAttention(d, cfg.heads, cfg.qkv_bias, grid, over_time=True)
        self.norm2 = nn.LayerNorm(d, eps=cfg.ln_eps)
        self.mlp = Mlp(d, cfg.mlp_hidden)
        self.norm3 = nn.LayerNorm(d, eps=cfg.ln_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.timeattn(self.norm3(x))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MotionFormer(nn.Module):
    """(N, 3, 16, 224, 224) windows in [-1, 1] -> (N, 8, D) per-window tokens."""

    def __init__(self, cfg: VisualConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, ps = cfg.dim, cfg.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.spatial_tokens + 1, d))
        self.temp_embed = nn.Parameter(torch.zeros(1, cfg.time_tokens, d))
        # 2-D patch conv: in the checkpoint but never used by the forward pass; kept so strict loading works.
        self.patch_embed = _Proj(nn.Conv2d(3, d, ps, ps))
        self.patch_embed_3d = PatchEmbed3D(nn.Conv3d(3, d, (cfg.temporal_patch, ps, ps), (cfg.temporal_patch, ps, ps)))
        self.patch_embed.requires_grad_(False)
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=cfg.ln_eps)
        self.spatial_attn_agg = CLSAggregator(d, cfg.aggregator_heads, cfg.aggregator_ff, cfg.agg_eps)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Tubelet tokens + CLS, with the separate spatial + temporal position tables added once."""
        cfg = self.cfg
        expected = (3, cfg.frames_per_window, cfg.image_size, cfg.image_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"MotionFormer expects (N, {expected}) windows, got {tuple(x.shape)}")
        tokens = self.patch_embed_3d(x)
        pos = self.pos_embed[:, None, 1:] + self.temp_embed[:, :, None]  # (1, T', P, D)
        tokens = tokens + pos.reshape(1, -1, cfg.dim)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x[:, 1:])  # (N, T'*P, D)
        n = x.shape[0]
        per_step = x.reshape(n * cfg.time_tokens, cfg.spatial_tokens, cfg.dim)
        return self.spatial_attn_agg(per_step).reshape(n, cfg.time_tokens, cfg.dim)
