"""ThinkSound MM-DiT network assembly (reference class `MMmodule`, MMAudio's networks.py), spec §2.

The blocks live in ``layers.py``. Parameter names match `thinksound_light.ckpt` after stripping
`model.model.`, so a checkpoint loads with a strict key check. Sequence-length-dependent tables (RoPE,
timestep frequencies) are non-persistent and always fp32. The lengths of one render come from a
``SequenceConfig`` and travel inside its ``Conditions`` (with their RoPE tables), so a loaded model is
never mutated per render; ``set_sequence`` only changes the default used when no sequence is given.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import (ChannelLastConv1d, FinalBlock, JointBlock, SingleBlock, SwiGLU, TimestepEmbedder, rope_table,
                     use_gemm_convs)
from .sequence import SYNC_TOKENS_PER_WINDOW, TEXT_TOKENS, SequenceConfig

METACLIP_TEXT_DIM = 1024  # text_cond_proj input and empty_string_feat width are hard-coded in the reference
T5_DIM = 2048  # empty_t5_feat width is hard-coded in the reference
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


class Conditions(NamedTuple):
    """Step-independent conditioning, computed once per render (or batch) and reused by every sampler step."""

    clip_f: torch.Tensor  # (B', C, D) projected CLIP tokens
    sync_f: torch.Tensor  # (B', N, D) Synchformer features upsampled to the latent length
    text_f: torch.Tensor  # (B', 154, D) MetaCLIP + T5 tokens
    clip_f_c: torch.Tensor  # (B', D)
    text_f_c: torch.Tensor  # (B', D)
    cfg_batched: bool  # True when rows are [cond; uncond]
    latent_rope: torch.Tensor | None = None  # (N, Dh/2, 2) fp32 for this sequence
    clip_rope: torch.Tensor | None = None  # (C, Dh/2, 2) fp32, positions scaled by N / C

    @property
    def latent_seq_len(self) -> int:
        return self.sync_f.shape[1]


FlowFn = Callable[[torch.Tensor, torch.Tensor, Conditions], torch.Tensor]


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
        """(Re)compute the default fp32 RoPE/timestep tables on the weights' device (after meta loads too)."""
        cfg, dev = self.config, self.device
        self.latent_rope, self.clip_rope = self.rope_tables(cfg.latent_seq_len, cfg.clip_seq_len, dev)
        self.t_embed.freqs = self.t_embed.make_freqs(dev)

    def rope_tables(self, latent_len: int, clip_len: int, device: torch.device | None = None):
        """Latent and CLIP RoPE tables; CLIP frames sit on the latent time axis (spec pitfall 2)."""
        head_dim = self.config.hidden_dim // self.config.num_heads
        return (rope_table(latent_len, head_dim, 1.0, device),
                rope_table(clip_len, head_dim, latent_len / clip_len, device))

    def set_sequence(self, seq: SequenceConfig | None = None, **lengths: int) -> "MMDiT":
        """Change the default lengths (used when no sequence is passed); weights are untouched."""
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

    def use_gemm_convs(self, enabled: bool = True) -> int:
        """Kernel-3/7 convolutions as GEMMs (one weight copy now; faster on CPU, see layers.ChannelLastConv1d)."""
        return use_gemm_convs(self, enabled)

    # ---- conditioning ---------------------------------------------------------------------

    def _lengths(self, seq: SequenceConfig | None) -> tuple[int, int, int]:
        if seq is None:
            return self.config.latent_seq_len, self.config.clip_seq_len, self.config.sync_seq_len
        if seq.sync_seq_len % SYNC_TOKENS_PER_WINDOW:
            raise ValueError(f"sync_seq_len must be a multiple of {SYNC_TOKENS_PER_WINDOW}")
        return seq.latent_seq_len, seq.clip_seq_len, seq.sync_seq_len

    def prepare_conditions(self, clip_f, sync_f, text_f, t5_features, cfg_scale: float = 1.0,
                           seq: SequenceConfig | None = None) -> Conditions:
        """Fit/guard feature lengths, append the null branch when guiding, project once.

        Rows may hold several clips of one duration (batched rendering): with guidance the result is
        [cond_1..cond_B; uncond_1..uncond_B]. ``seq`` None → the model's default lengths.
        """
        n, c_len, s_len = self._lengths(seq)
        dt, dev = self.dtype, self.device
        clip_f, sync_f, text_f, t5_features = (x.to(dev, dt) for x in (clip_f, sync_f, text_f, t5_features))
        for name, x, want in (("text_f", text_f, self.config.text_seq_len),
                              ("t5_features", t5_features, self.config.text_seq_len)):
            if x.shape[1] != want:
                raise ValueError(f"{name} must have {want} tokens, got {tuple(x.shape)}")
        guided = cfg_scale != 1.0
        if guided:
            b = clip_f.shape[0]
            clip_f = torch.cat([fit_length(clip_f, c_len), self.empty_clip_feat.expand(b, c_len, -1)])
            sync_f = torch.cat([fit_length(sync_f, s_len), self.empty_sync_feat.expand(b, s_len, -1)])
            text_f = torch.cat([text_f, self.empty_string_feat.expand(b, -1, -1)])
            t5_features = torch.cat([t5_features, self.empty_t5_feat.expand(b, -1, -1)])
        elif clip_f.shape[1] != c_len or sync_f.shape[1] != s_len:
            raise ValueError(
                f"without guidance clip/sync must match the configured lengths exactly: got clip "
                f"{clip_f.shape[1]} (want {c_len}), sync {sync_f.shape[1]} (want {s_len})")
        return self.preprocess_conditions(clip_f, sync_f, text_f, t5_features, cfg_batched=guided, latent_len=n)

    def preprocess_conditions(self, clip_f, sync_f, text_f, t5_features, cfg_batched: bool = False,
                              latent_len: int | None = None) -> Conditions:
        cfg = self.config
        n = latent_len if latent_len is not None else cfg.latent_seq_len
        b = clip_f.shape[0]
        sync = sync_f.view(b, -1, SYNC_TOKENS_PER_WINDOW, cfg.sync_dim) + self.sync_pos_emb
        sync = self.sync_input_proj(sync.flatten(1, 2))
        sync = F.interpolate(sync.transpose(1, 2), size=n, mode="nearest-exact").transpose(1, 2)
        clip = self.clip_input_proj(clip_f)
        clip_c = self.clip_cond_proj(clip.mean(dim=1))
        # pooled caption = mean of the raw MetaCLIP token states, padding included (pitfall 6)
        text_c = self.text_cond_proj(text_f.mean(dim=1))
        text_wide = F.pad(text_f, (0, t5_features.shape[-1] - text_f.shape[-1]))
        text = self.text_input_proj(torch.cat([text_wide, t5_features], dim=1))
        latent_rope, clip_rope = self.rope_tables(n, clip_f.shape[1], self.device)
        return Conditions(clip, sync, text, clip_c, text_c, cfg_batched, latent_rope, clip_rope)

    # ---- velocity -------------------------------------------------------------------------

    def predict_flow(self, latent: torch.Tensor, t: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """Channels-last core: latent (B, N, latent_dim) → velocity (B, N, latent_dim)."""
        want = cond.latent_seq_len
        if latent.shape[1] != want:
            raise ValueError(f"latent length {latent.shape[1]} != the conditions' {want}; prepare the conditions "
                             "for this duration (or call set_sequence() for the default)")
        latent_rope = cond.latent_rope if cond.latent_rope is not None else self.latent_rope
        clip_rope = cond.clip_rope if cond.clip_rope is not None else self.clip_rope
        x = self.audio_input_proj(latent)
        global_c = (self.t_embed(t) + self.global_cond_mlp(cond.clip_f_c + cond.text_f_c)).unsqueeze(1)
        extended_c = global_c + cond.sync_f  # per-frame adaLN: how Synchformer features enter
        clip, text = cond.clip_f, cond.text_f
        for block in self.joint_blocks:
            x, clip, text = block(x, clip, text, global_c, extended_c, latent_rope, clip_rope)
        for block in self.fused_blocks:
            x = block(x, extended_c, latent_rope)
        return self.final_layer(x, extended_c)

    def predict_velocity(self, latent: torch.Tensor, t: torch.Tensor, cond: Conditions,
                         cfg_scale: float = 1.0, flow: FlowFn | None = None) -> torch.Tensor:
        """(B, latent_dim, N) channels-first in and out; output keeps the input's dtype.

        One call = one network evaluation of all 2·B rows under guidance. ``flow`` replaces
        ``predict_flow`` (e.g. its torch.compile'd version).
        """
        if (cfg_scale != 1.0) != cond.cfg_batched:
            raise ValueError("conditions were prepared for a different cfg_scale (1 vs ≠1)")
        rows = cond.clip_f.shape[0] // (2 if cond.cfg_batched else 1)
        if latent.shape[0] != rows:
            raise ValueError(f"{latent.shape[0]} latents for conditions of {rows} clips")
        out_dtype = latent.dtype
        x = latent.to(self.device, self.dtype).transpose(1, 2)
        t = torch.as_tensor(t, device=self.device, dtype=torch.float32).reshape(-1).expand(x.shape[0])
        if cond.cfg_batched:
            x, t = torch.cat([x, x]), torch.cat([t, t])
        flow_out = (flow or self.predict_flow)(x, t, cond)
        if cond.cfg_batched:
            c, u = flow_out.chunk(2)
            flow_out = u + (c - u) * cfg_scale
        return flow_out.transpose(1, 2).to(out_dtype)

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
