"""Oobleck VAE (Stable Audio Open, 44.1 kHz stereo, 2048× downsampling), spec §3.

Weight-normed convs keep the legacy `weight_g`/`weight_v` parameters so `vae.ckpt` keys load
unchanged (after stripping `autoencoder.`); the effective weight is computed in fp32 per call,
which keeps fp16/bf16 loads from overflowing the norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

SAMPLE_RATE = 44_100


@dataclass(frozen=True)
class OobleckConfig:
    """thinksound.json pretransform (encoder and decoder share channels/c_mults/strides)."""

    channels: int = 128
    c_mults: tuple[int, ...] = (1, 2, 4, 8, 16)
    strides: tuple[int, ...] = (2, 4, 4, 8, 8)
    io_channels: int = 2
    latent_dim: int = 64  # decoder input; the encoder emits 2·latent_dim (mean | scale)

    @property
    def downsampling_ratio(self) -> int:
        return math.prod(self.strides)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "OobleckConfig":
        """Accepts the pretransform dict ({'type': 'autoencoder', 'config': {...}}) or its inner config."""
        inner = cfg.get("config", cfg) if cfg.get("type") == "autoencoder" else cfg
        enc, dec = inner["encoder"]["config"], inner["decoder"]["config"]
        for part in (inner["encoder"], inner["decoder"]):
            if part.get("type", "oobleck") != "oobleck":
                raise ValueError(f"only Oobleck encoders/decoders are supported, got {part.get('type')!r}")
        if inner.get("bottleneck", {"type": "vae"}).get("type") != "vae":
            raise ValueError("only the 'vae' bottleneck is supported")
        if not enc.get("use_snake", False) or not dec.get("use_snake", False) or dec.get("final_tanh", True):
            raise ValueError("expected use_snake=True and final_tanh=False (the ThinkSound VAE)")
        if (enc["channels"], list(enc["c_mults"]), list(enc["strides"])) != (
                dec["channels"], list(dec["c_mults"]), list(dec["strides"])):
            raise ValueError("encoder and decoder channels/c_mults/strides differ; not supported")
        if enc["latent_dim"] != 2 * dec["latent_dim"]:
            raise ValueError("encoder latent_dim must be 2 × decoder latent_dim (mean | scale)")
        if enc["in_channels"] != dec["out_channels"]:
            raise ValueError("encoder in_channels != decoder out_channels")
        return cls(channels=enc["channels"], c_mults=tuple(enc["c_mults"]), strides=tuple(enc["strides"]),
                   io_channels=enc["in_channels"], latent_dim=dec["latent_dim"])


FULL_VAE_CONFIG = OobleckConfig()


class _WeightNorm(nn.Module):
    """Legacy weight_norm(dim=0) parameters: W = g · v / ‖v‖ (norm over all dims but 0)."""

    def _init_wn(self, v_shape: Sequence[int], out_channels: int, bias: bool) -> None:
        # registration order bias, weight_g, weight_v = the checkpoint's key order
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_g = nn.Parameter(torch.ones(v_shape[0], 1, 1))
        self.weight_v = nn.Parameter(torch.empty(*v_shape))
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))

    def weight(self) -> torch.Tensor:
        v = self.weight_v.float()
        w = v * (self.weight_g.float() / v.norm(dim=(1, 2), keepdim=True))
        return w.to(self.weight_v.dtype)


class WNConv1d(_WeightNorm):
    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self._init_wn((cout, cin, kernel_size), cout, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight(), self.bias, self.stride, self.padding, self.dilation)


class WNConvTranspose1d(_WeightNorm):
    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.stride, self.padding = stride, padding
        self._init_wn((cin, cout, kernel_size), cout, True)  # g is (in, 1, 1): dim 0 of a transpose weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.weight(), self.bias, self.stride, self.padding)


class SnakeBeta(nn.Module):
    """y = x + sin²(e^α·x) / (e^β + 1e-9); α, β stored as logs, per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.exp()[None, :, None]
        beta = self.beta.exp()[None, :, None]
        return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha).pow(2)


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            SnakeBeta(channels),
            WNConv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation),
            SnakeBeta(channels),
            WNConv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class EncoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            ResidualUnit(cin, 1), ResidualUnit(cin, 3), ResidualUnit(cin, 9),
            SnakeBeta(cin),
            WNConv1d(cin, cout, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            SnakeBeta(cin),
            WNConvTranspose1d(cin, cout, 2 * stride, stride=stride, padding=math.ceil(stride / 2)),
            ResidualUnit(cout, 1), ResidualUnit(cout, 3), ResidualUnit(cout, 9),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class OobleckEncoder(nn.Module):
    def __init__(self, cfg: OobleckConfig) -> None:
        super().__init__()
        widths = [cfg.channels * m for m in (1, *cfg.c_mults)]
        self.layers = nn.Sequential(
            WNConv1d(cfg.io_channels, widths[0], 7, padding=3),
            *(EncoderBlock(widths[i], widths[i + 1], s) for i, s in enumerate(cfg.strides)),
            SnakeBeta(widths[-1]),
            WNConv1d(widths[-1], 2 * cfg.latent_dim, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class OobleckDecoder(nn.Module):
    def __init__(self, cfg: OobleckConfig) -> None:
        super().__init__()
        widths = [cfg.channels * m for m in (1, *cfg.c_mults)]
        n = len(cfg.strides)
        self.layers = nn.Sequential(
            WNConv1d(cfg.latent_dim, widths[-1], 7, padding=3),
            *(DecoderBlock(widths[i + 1], widths[i], cfg.strides[i]) for i in reversed(range(n))),
            SnakeBeta(widths[0]),
            WNConv1d(widths[0], cfg.io_channels, 7, padding=3, bias=False),  # no bias, no tanh
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class OobleckVAE(nn.Module):
    """`AudioAutoencoder` with the VAE bottleneck; latents are used unscaled (scale 1.0)."""

    def __init__(self, config: OobleckConfig | Mapping[str, Any] = FULL_VAE_CONFIG) -> None:
        super().__init__()
        self.config = config if isinstance(config, OobleckConfig) else OobleckConfig.from_dict(config)
        self.encoder = OobleckEncoder(self.config)
        self.decoder = OobleckDecoder(self.config)

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.layers[0].weight_v.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder.layers[0].weight_v.device

    def encode(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, T) waveform → (mean, scale), each (B, 64, T/2048); scale is pre-softplus."""
        h = self.encoder(audio.to(self.device, self.dtype))
        mean, scale = h.chunk(2, dim=1)
        return mean, scale

    @staticmethod
    def sample(mean: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        std = F.softplus(scale) + 1e-4
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + std * noise

    def decode(self, latents: torch.Tensor, iterate_batch: bool = True, *, batch_size: int | None = None,
               decoder=None) -> torch.Tensor:
        """(B, 64, N) → (B, 2, 2048·N), ``batch_size`` clips per decoder call.

        Default: per sample, like the reference (bounds peak memory; on CPU also the faster choice,
        bench/generator.py part c); iterate_batch=False decodes the whole batch in one call.
        ``decoder`` replaces ``self.decoder`` (e.g. its torch.compile'd version).
        """
        z = latents.to(self.device, self.dtype)
        run = decoder or self.decoder
        step = batch_size if batch_size is not None else (1 if iterate_batch else max(1, z.shape[0]))
        if step < 1:
            raise ValueError(f"batch_size must be >= 1, got {step}")
        if step >= z.shape[0]:
            return run(z)
        return torch.cat([run(z[i : i + step]) for i in range(0, z.shape[0], step)])


def to_pcm_int16(audio: torch.Tensor) -> torch.Tensor:
    """predict.py post-processing: peak-normalise over the whole batch, clamp, ×32767, truncate to int16."""
    x = audio.to(torch.float32)
    peak = x.abs().max()
    if not torch.isfinite(peak):
        raise ValueError("decoded audio contains NaN/inf; refusing to write garbage PCM")
    if peak == 0:  # the reference divides by zero here
        return torch.zeros_like(x, dtype=torch.int16)
    return (x / peak).clamp(-1, 1).mul(32767).to(torch.int16)


def build_vae(config: OobleckConfig | Mapping[str, Any] = FULL_VAE_CONFIG, *,
              device: str | torch.device = "meta") -> OobleckVAE:
    with torch.device(device):
        return OobleckVAE(config)


def build_full_vae(*, device: str | torch.device = "meta") -> OobleckVAE:
    """The ThinkSound VAE at full size (156 M params), by default on the meta device."""
    return build_vae(FULL_VAE_CONFIG, device=device)
