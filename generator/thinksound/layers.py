"""MM-DiT building blocks (the reference's transformer_layers.py / low_level.py / embeddings.py), spec §2.2.

The network assembly lives in ``mmdit.py``. Blocks take the sequence-dependent RoPE tables as arguments, so one
loaded model serves every duration (and several renders at once) without being mutated.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

ROPE_THETA = 10_000.0


def swiglu_hidden(requested: int, multiple_of: int = 256) -> int:
    hidden = int(2 * requested / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def conv1d_as_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """'Same' Conv1d on (B, T, C) as one GEMM over k shifted copies of the input (tap-major, like the weight).

    y[t] = Σ_i W[:, :, i] · x_pad[t + i]; the weight must be stored (out, k, in) in memory so that its
    (out, k·in) view is free (see ``ChannelLastConv1d.use_gemm_layout``).
    """
    k, t = weight.shape[2], x.shape[1]
    xp = F.pad(x, (0, 0, padding, padding))
    taps = torch.cat([xp[:, i : i + t] for i in range(k)], dim=-1)
    return F.linear(taps, weight.permute(0, 2, 1).reshape(weight.shape[0], -1), bias)


class ChannelLastConv1d(nn.Conv1d):
    """Conv1d on (B, T, C) tensors with 'same' padding.

    Two numerically equivalent paths (≈1e-6 relative): oneDNN/cuDNN convolution on the transposed input
    (the reference), or, once ``use_gemm_layout()`` has re-stored the weight as (out, k, in), one GEMM over
    shifted inputs. On CPU the GEMM path is the faster one for these wide 1-D convolutions
    (bench/generator.py, part c); the parameter keeps its (out, in, k) shape and state-dict key.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__(cin, cout, kernel_size, padding=(kernel_size - 1) // 2, bias=bias)

    @property
    def gemm_layout(self) -> bool:
        return self.kernel_size[0] > 1 and self.weight.permute(0, 2, 1).is_contiguous()

    def use_gemm_layout(self, enabled: bool = True) -> None:
        """Re-store the weight (one copy) for the GEMM path, or back to the standard layout."""
        if self.kernel_size[0] == 1 or self.gemm_layout == enabled:
            return
        w = self.weight.detach()
        w = w.permute(0, 2, 1).contiguous().permute(0, 2, 1) if enabled else w.contiguous()
        self.weight = nn.Parameter(w, requires_grad=self.weight.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gemm_layout:
            return conv1d_as_gemm(x, self.weight, self.bias, self.padding[0])
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def use_gemm_convs(module: nn.Module, enabled: bool = True) -> int:
    """Switch every ChannelLastConv1d in ``module`` to (or from) the GEMM layout; returns how many changed."""
    n = 0
    for m in module.modules():
        if isinstance(m, ChannelLastConv1d) and m.kernel_size[0] > 1 and m.gemm_layout != enabled:
            m.use_gemm_layout(enabled)
            n += 1
    return n


class SwiGLU(nn.Module):
    """Bias-free SwiGLU (`MLP` / `ConvMLP` in the reference); kernel 1 means plain Linear."""

    def __init__(self, dim: int, requested_hidden: int, kernel_size: int = 1) -> None:
        super().__init__()
        hidden = swiglu_hidden(requested_hidden)
        if kernel_size == 1:
            make = lambda i, o: nn.Linear(i, o, bias=False)  # noqa: E731
        else:
            make = lambda i, o: ChannelLastConv1d(i, o, kernel_size, bias=False)  # noqa: E731
        self.w1 = make(dim, hidden)
        self.w2 = make(hidden, dim)
        self.w3 = make(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), eps=1e-5)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x·(1 + scale) + shift, as one fused multiply-add."""
    return torch.addcmul(shift, x, 1 + scale)


def rope_table(length: int, head_dim: int, freq_scaling: float, device: torch.device | None) -> torch.Tensor:
    """(length, head_dim/2, 2) fp32 [cos, sin] table; positions are integer token indices."""
    pos = torch.arange(length, dtype=torch.float32, device=device)
    freqs = 1.0 / (ROPE_THETA ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(pos, freqs * freq_scaling)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs (x[2i], x[2i+1]) in fp32, as the reference does.

    (x0 + i·x1)(cos + i·sin) is exactly the reference rotation; one complex multiply instead of six ops.
    """
    xf = x.float()
    if xf.stride(-1) != 1:
        xf = xf.contiguous()
    rotated = torch.view_as_complex(xf.unflatten(-1, (-1, 2))) * torch.view_as_complex(table)
    return torch.view_as_real(rotated).flatten(-2).type_as(x)


class SelfAttention(nn.Module):
    """q/k/v projection; the joint attention itself happens in the caller."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.q_norm = nn.RMSNorm(dim // heads)  # eps=None → dtype epsilon, like the reference
        self.k_norm = nn.RMSNorm(dim // heads)

    def project(self, x: torch.Tensor, rope: torch.Tensor | None):
        # channel layout is (head, head_dim, q/k/v) interleaved — spec pitfall 1
        qkv = self.qkv(x).unflatten(-1, (self.heads, -1, 3)).permute(4, 0, 2, 1, 3)  # 3,B,H,N,Dh
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        return q, k, v


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
    return out.transpose(1, 2).flatten(2)  # B,N,H·Dh


class SingleBlock(nn.Module):
    """adaLN-modulated attention + (conv) SwiGLU block (`MMDitSingleBlock`)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, kernel_size: int, pre_only: bool = False) -> None:
        super().__init__()
        self.pre_only = pre_only
        self.attn = SelfAttention(dim, heads)
        if not pre_only:
            if kernel_size == 1:
                self.linear1 = nn.Linear(dim, dim)
            else:
                self.linear1 = ChannelLastConv1d(dim, dim, kernel_size)
            self.ffn = SwiGLU(dim, int(dim * mlp_ratio), kernel_size)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, (2 if pre_only else 6) * dim))

    def pre_attention(self, x: torch.Tensor, c: torch.Tensor, rope: torch.Tensor | None):
        mods = self.adaLN_modulation(c).chunk(2 if self.pre_only else 6, dim=-1)
        qkv = self.attn.project(modulate(layer_norm(x), mods[0], mods[1]), rope)
        return qkv, mods[2:]

    def post_attention(self, x: torch.Tensor, attn_out: torch.Tensor, mods) -> torch.Tensor:
        if self.pre_only:
            return x
        gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        x = torch.addcmul(x, self.linear1(attn_out), gate_msa)
        return torch.addcmul(x, self.ffn(modulate(layer_norm(x), shift_mlp, scale_mlp)), gate_mlp)

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
        qkv, mods = self.pre_attention(x, c, rope)
        return self.post_attention(x, attention(*qkv), mods)


class JointBlock(nn.Module):
    """One attention over latent + clip + text tokens; each stream keeps its own weights."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, pre_only: bool) -> None:
        super().__init__()
        self.pre_only = pre_only
        self.latent_block = SingleBlock(dim, heads, mlp_ratio, kernel_size=3)
        self.clip_block = SingleBlock(dim, heads, mlp_ratio, kernel_size=3, pre_only=pre_only)
        self.text_block = SingleBlock(dim, heads, mlp_ratio, kernel_size=1, pre_only=pre_only)

    def forward(self, latent, clip, text, global_c, extended_c, latent_rope, clip_rope):
        x_qkv, x_mods = self.latent_block.pre_attention(latent, extended_c, latent_rope)
        c_qkv, c_mods = self.clip_block.pre_attention(clip, global_c, clip_rope)
        t_qkv, t_mods = self.text_block.pre_attention(text, global_c, None)
        joint = [torch.cat(parts, dim=2) for parts in zip(x_qkv, c_qkv, t_qkv)]
        out = attention(*joint)
        n, c = latent.shape[1], clip.shape[1]
        latent = self.latent_block.post_attention(latent, out[:, :n], x_mods)
        if not self.pre_only:
            clip = self.clip_block.post_attention(clip, out[:, n : n + c], c_mods)
            text = self.text_block.post_attention(text, out[:, n + c :], t_mods)
        return latent, clip, text


class FinalBlock(nn.Module):
    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.conv = ChannelLastConv1d(dim, out_dim, kernel_size=7)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.conv(modulate(layer_norm(x), shift, scale))


class TimestepEmbedder(nn.Module):
    """v2 embedder: hidden-size frequencies, max_period 1, [cos, sin] order (spec pitfall 4)."""

    def __init__(self, dim: int, max_period: float = 1.0) -> None:
        super().__init__()
        self.dim, self.max_period = dim, max_period
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.register_buffer("freqs", self.make_freqs(None), persistent=False)

    def make_freqs(self, device: torch.device | None) -> torch.Tensor:
        base = 1.0 / (10_000 ** (torch.arange(0, self.dim, 2, dtype=torch.float32, device=device) / self.dim))
        return base * (10_000 / self.max_period)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.float()[:, None] * self.freqs[None]
        emb = torch.cat([args.cos(), args.sin()], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))
