"""ThinkSound MM-DiT (reference class `MMmodule`), written from spec §2.

Parameter names match `thinksound_light.ckpt` after stripping `model.model.`, so a checkpoint
loads with a strict key check. Sequence-length-dependent tables (RoPE, timestep frequencies) are
non-persistent and always fp32: `set_sequence` switches duration without touching weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .sequence import SequenceConfig

TEXT_TOKENS = 77
METACLIP_TEXT_DIM = 1024  # text_cond_proj input and empty_string_feat width are hard-coded in the reference
T5_DIM = 2048  # empty_t5_feat width is hard-coded in the reference
SYNC_TOKENS_PER_WINDOW = 8
ROPE_THETA = 10_000.0
_UNSUPPORTED_FLAGS = ("use_inpaint", "use_mlp", "cross_attend", "add_video", "triple_fusion", "gated_video")


@dataclass(frozen=True)
class MMDiTConfig:
    """Constructor kwargs of the reference `MMmodule` (thinksound.json / oracle `config`)."""

    latent_dim: int = 64
    clip_dim: int = 1024
    sync_dim: int = 768
    text_dim: int = 2048
    hidden_dim: int = 1024
    depth: int = 21
    fused_depth: int = 14
    num_heads: int = 16
    latent_seq_len: int = 194
    clip_seq_len: int = 72
    sync_seq_len: int = 216
    v2: bool = True
    kernel_size: int = 3
    mlp_ratio: float = 4.0
    text_seq_len: int = TEXT_TOKENS
    sync_kernel: int = 7

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MMDiTConfig":
        known = {f.name for f in fields(cls)}
        bad = [k for k in _UNSUPPORTED_FLAGS if d.get(k)]
        if bad:
            raise ValueError(f"MM-DiT options {bad} are not part of the released ThinkSound model")
        unknown = sorted(set(d) - known - set(_UNSUPPORTED_FLAGS))
        if unknown:
            raise ValueError(f"unknown MM-DiT config keys: {unknown}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def with_sequence(self, seq: SequenceConfig) -> "MMDiTConfig":
        return MMDiTConfig(**{**asdict(self), **seq.lengths()})

    def validate(self) -> None:
        if not self.v2:
            raise ValueError("only v2=True is usable (the reference constructor fails for v2=False)")
        if self.hidden_dim % self.num_heads or (self.hidden_dim // self.num_heads) % 2:
            raise ValueError("hidden_dim / num_heads must be an even integer head size")
        if not 0 <= self.fused_depth < self.depth:
            raise ValueError("need at least one joint block: 0 <= fused_depth < depth")
        if self.sync_seq_len % SYNC_TOKENS_PER_WINDOW:
            raise ValueError(f"sync_seq_len must be a multiple of {SYNC_TOKENS_PER_WINDOW}")
        if self.text_dim < METACLIP_TEXT_DIM:
            raise ValueError("text_dim (T5 width) must be >= 1024 (MetaCLIP tokens are zero-padded to it)")
        if min(self.latent_seq_len, self.clip_seq_len, self.sync_seq_len) <= 0:
            raise ValueError("sequence lengths must be positive")


FULL_CONFIG = MMDiTConfig()


# --------------------------------------------------------------------------------------------
# building blocks


def swiglu_hidden(requested: int, multiple_of: int = 256) -> int:
    hidden = int(2 * requested / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class ChannelLastConv1d(nn.Conv1d):
    """Conv1d on (B, T, C) tensors with 'same' padding."""

    def __init__(self, cin: int, cout: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__(cin, cout, kernel_size, padding=(kernel_size - 1) // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


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
    return x * (1 + scale) + shift


def rope_table(length: int, head_dim: int, freq_scaling: float, device: torch.device | None) -> torch.Tensor:
    """(length, head_dim/2, 2) fp32 [cos, sin] table; positions are integer token indices."""
    pos = torch.arange(length, dtype=torch.float32, device=device)
    freqs = 1.0 / (ROPE_THETA ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(pos, freqs * freq_scaling)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs (x[2i], x[2i+1]) in fp32, as the reference does."""
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf.unbind(-1)
    cos, sin = table.unbind(-1)
    out = torch.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], dim=-1)
    return out.flatten(-2).type_as(x)


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
        x = x + self.linear1(attn_out) * gate_msa
        return x + self.ffn(modulate(layer_norm(x), shift_mlp, scale_mlp)) * gate_mlp

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


class Conditions(NamedTuple):
    """Step-independent conditioning, computed once per render and reused by all sampler steps."""

    clip_f: torch.Tensor  # (B', C, D) projected CLIP tokens
    sync_f: torch.Tensor  # (B', N, D) Synchformer features upsampled to the latent length
    text_f: torch.Tensor  # (B', 154, D) MetaCLIP + T5 tokens
    clip_f_c: torch.Tensor  # (B', D)
    text_f_c: torch.Tensor  # (B', D)
    cfg_batched: bool  # True when rows are [cond; uncond]


def fit_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """The reference `safe_cat`: truncate, or zero-pad at the end, along the token axis."""
    if x.shape[1] >= length:
        return x[:, :length]
    return F.pad(x, (0, 0, 0, length - x.shape[1]))


# --------------------------------------------------------------------------------------------
# the model


class MMDiT(nn.Module):
    """Flow-velocity predictor v(x_t, t | video, caption, CoT) on 64-channel VAE latents."""

    def __init__(self, config: MMDiTConfig | Mapping[str, Any] = FULL_CONFIG) -> None:
        super().__init__()
        cfg = config if isinstance(config, MMDiTConfig) else MMDiTConfig.from_dict(config)
        cfg.validate()
        self.config = cfg
        h, k = cfg.hidden_dim, cfg.kernel_size
        mlp = int(h * cfg.mlp_ratio)

        # own parameters first: keeps state_dict order identical to the checkpoint's
        self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, SYNC_TOKENS_PER_WINDOW, cfg.sync_dim))
        self.empty_string_feat = nn.Parameter(torch.zeros(TEXT_TOKENS, METACLIP_TEXT_DIM), requires_grad=False)
        self.empty_t5_feat = nn.Parameter(torch.zeros(TEXT_TOKENS, T5_DIM), requires_grad=False)
        self.empty_clip_feat = nn.Parameter(torch.zeros(1, cfg.clip_dim))
        self.empty_sync_feat = nn.Parameter(torch.zeros(1, cfg.sync_dim))

        self.audio_input_proj = nn.Sequential(
            ChannelLastConv1d(cfg.latent_dim, h, k), nn.SiLU(), SwiGLU(h, mlp, k))
        self.clip_input_proj = nn.Sequential(nn.Linear(cfg.clip_dim, h), nn.SiLU(), SwiGLU(h, mlp, 3))
        self.sync_input_proj = nn.Sequential(
            ChannelLastConv1d(cfg.sync_dim, h, cfg.sync_kernel), nn.SiLU(), SwiGLU(h, mlp, 3))
        self.text_input_proj = nn.Sequential(nn.Linear(cfg.text_dim, h), nn.SiLU(), SwiGLU(h, mlp))
        self.clip_cond_proj = nn.Linear(h, h)
        self.text_cond_proj = nn.Linear(METACLIP_TEXT_DIM, h)
        self.global_cond_mlp = SwiGLU(h, mlp)
        self.final_layer = FinalBlock(h, cfg.latent_dim)
        self.t_embed = TimestepEmbedder(h)
        n_joint = cfg.depth - cfg.fused_depth
        self.joint_blocks = nn.ModuleList(
            JointBlock(h, cfg.num_heads, cfg.mlp_ratio, pre_only=(i == n_joint - 1)) for i in range(n_joint))
        self.fused_blocks = nn.ModuleList(
            SingleBlock(h, cfg.num_heads, cfg.mlp_ratio, kernel_size=3) for _ in range(cfg.fused_depth))

        self.register_buffer("latent_rope", torch.empty(0), persistent=False)
        self.register_buffer("clip_rope", torch.empty(0), persistent=False)
        self.rebuild_tables()

    # ---- sequence handling ----------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.sync_pos_emb.device

    @property
    def dtype(self) -> torch.dtype:
        return self.sync_pos_emb.dtype

    def rebuild_tables(self) -> None:
        """(Re)compute the fp32 RoPE/timestep tables on the weights' device (after meta loads too)."""
        cfg, dev = self.config, self.device
        head_dim = cfg.hidden_dim // cfg.num_heads
        self.latent_rope = rope_table(cfg.latent_seq_len, head_dim, 1.0, dev)
        # CLIP frames sit on the latent time axis (spec pitfall 2)
        self.clip_rope = rope_table(cfg.clip_seq_len, head_dim, cfg.latent_seq_len / cfg.clip_seq_len, dev)
        self.t_embed.freqs = self.t_embed.make_freqs(dev)

    def set_sequence(self, seq: SequenceConfig | None = None, **lengths: int) -> "MMDiT":
        """Switch duration in place; weights are untouched (they are length-agnostic)."""
        new = dict(seq.lengths()) if seq is not None else {}
        bad = set(lengths) - {"latent_seq_len", "clip_seq_len", "sync_seq_len"}
        if bad:
            raise TypeError(f"unknown sequence lengths {sorted(bad)}")
        new.update(lengths)
        cfg = MMDiTConfig(**{**asdict(self.config), **new})
        cfg.validate()
        self.config = cfg
        self.rebuild_tables()
        return self

    def _apply(self, fn, recurse=True):
        # .to(dtype)/.half() would cast the tables; recompute them so they stay exact fp32
        out = super()._apply(fn, recurse)
        self.rebuild_tables()
        return out

    # ---- conditioning ---------------------------------------------------------------------

    def prepare_conditions(self, clip_f, sync_f, text_f, t5_features, cfg_scale: float = 1.0) -> Conditions:
        """Fit/guard feature lengths, append the null branch when guiding, project once."""
        cfg = self.config
        dt, dev = self.dtype, self.device
        clip_f, sync_f, text_f, t5_features = (x.to(dev, dt) for x in (clip_f, sync_f, text_f, t5_features))
        for name, x, want in (("text_f", text_f, cfg.text_seq_len), ("t5_features", t5_features, cfg.text_seq_len)):
            if x.shape[1] != want:
                raise ValueError(f"{name} must have {want} tokens, got {tuple(x.shape)}")
        guided = cfg_scale != 1.0
        if guided:
            b = clip_f.shape[0]
            clip_f = torch.cat([fit_length(clip_f, cfg.clip_seq_len),
                                self.empty_clip_feat.expand(b, cfg.clip_seq_len, -1)])
            sync_f = torch.cat([fit_length(sync_f, cfg.sync_seq_len),
                                self.empty_sync_feat.expand(b, cfg.sync_seq_len, -1)])
            text_f = torch.cat([text_f, self.empty_string_feat.expand(b, -1, -1)])
            t5_features = torch.cat([t5_features, self.empty_t5_feat.expand(b, -1, -1)])
        elif clip_f.shape[1] != cfg.clip_seq_len or sync_f.shape[1] != cfg.sync_seq_len:
            raise ValueError(
                f"without guidance clip/sync must match the configured lengths exactly: got clip "
                f"{clip_f.shape[1]} (want {cfg.clip_seq_len}), sync {sync_f.shape[1]} (want {cfg.sync_seq_len})")
        return self.preprocess_conditions(clip_f, sync_f, text_f, t5_features, cfg_batched=guided)

    def preprocess_conditions(self, clip_f, sync_f, text_f, t5_features, cfg_batched: bool = False) -> Conditions:
        cfg = self.config
        b = clip_f.shape[0]
        sync = sync_f.view(b, -1, SYNC_TOKENS_PER_WINDOW, cfg.sync_dim) + self.sync_pos_emb
        sync = self.sync_input_proj(sync.flatten(1, 2))
        sync = F.interpolate(sync.transpose(1, 2), size=cfg.latent_seq_len, mode="nearest-exact").transpose(1, 2)
        clip = self.clip_input_proj(clip_f)
        clip_c = self.clip_cond_proj(clip.mean(dim=1))
        # pooled caption = mean of the raw MetaCLIP token states, padding included (pitfall 6)
        text_c = self.text_cond_proj(text_f.mean(dim=1))
        text_wide = F.pad(text_f, (0, t5_features.shape[-1] - text_f.shape[-1]))
        text = self.text_input_proj(torch.cat([text_wide, t5_features], dim=1))
        return Conditions(clip, sync, text, clip_c, text_c, cfg_batched)

    # ---- velocity -------------------------------------------------------------------------

    def predict_flow(self, latent: torch.Tensor, t: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """Channels-last core: latent (B, N, latent_dim) → velocity (B, N, latent_dim)."""
        if latent.shape[1] != self.config.latent_seq_len:
            raise ValueError(f"latent length {latent.shape[1]} != configured {self.config.latent_seq_len}; "
                             "call set_sequence() for this duration")
        x = self.audio_input_proj(latent)
        global_c = (self.t_embed(t) + self.global_cond_mlp(cond.clip_f_c + cond.text_f_c)).unsqueeze(1)
        extended_c = global_c + cond.sync_f  # per-frame adaLN: how Synchformer features enter
        clip, text = cond.clip_f, cond.text_f
        for block in self.joint_blocks:
            x, clip, text = block(x, clip, text, global_c, extended_c, self.latent_rope, self.clip_rope)
        for block in self.fused_blocks:
            x = block(x, extended_c, self.latent_rope)
        return self.final_layer(x, extended_c)

    def predict_velocity(self, latent: torch.Tensor, t: torch.Tensor, cond: Conditions,
                         cfg_scale: float = 1.0) -> torch.Tensor:
        """(B, latent_dim, N) channels-first in and out; output keeps the input's dtype."""
        if (cfg_scale != 1.0) != cond.cfg_batched:
            raise ValueError("conditions were prepared for a different cfg_scale (1 vs ≠1)")
        out_dtype = latent.dtype
        x = latent.to(self.device, self.dtype).transpose(1, 2)
        t = torch.as_tensor(t, device=self.device, dtype=torch.float32).reshape(-1).expand(x.shape[0])
        if cond.cfg_batched:
            x, t = torch.cat([x, x]), torch.cat([t, t])
        flow = self.predict_flow(x, t, cond)
        if cond.cfg_batched:
            c, u = flow.chunk(2)
            flow = u + (c - u) * cfg_scale
        return flow.transpose(1, 2).to(out_dtype)

    def forward(self, latent, t, clip_f, sync_f, text_f, t5_features, cfg_scale: float = 1.0) -> torch.Tensor:
        """Reference call signature (minus unused args): conditions + one velocity evaluation."""
        cond = self.prepare_conditions(clip_f, sync_f, text_f, t5_features, cfg_scale)
        return self.predict_velocity(latent, t, cond, cfg_scale)


def build_mmdit(config: MMDiTConfig | Mapping[str, Any] = FULL_CONFIG, *, device: str | torch.device = "meta",
                dtype: torch.dtype | None = None) -> MMDiT:
    """Construct without allocating (meta) or directly on a device; weights come from a checkpoint."""
    with torch.device(device):
        model = MMDiT(config)
    if dtype is not None:
        model = model.to(dtype)
    return model


def build_full_mmdit(seq: SequenceConfig | None = None, *, device: str | torch.device = "meta") -> MMDiT:
    """thinksound.json at full size (1.277 B params), by default on the meta device."""
    cfg = FULL_CONFIG if seq is None else FULL_CONFIG.with_sequence(seq)
    return build_mmdit(cfg, device=device)


def param_count(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.state_dict().values())
