"""Rectified-flow Euler sampler (spec §2.8) with the two hooks `foleyloop edit` needs.

Time runs from 1 (noise) to 0 (data) along x_t = (1−t)·x0 + t·ε. Starting below t=1 gives
audio-to-audio variation; re-imposing known latents outside a window gives inpainting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B,C,N), t (B,)) -> v
StepCallback = Callable[[int, float, float, torch.Tensor], Optional[torch.Tensor]]


def noise_to(x0: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
    """The rectified-flow path point at time t (t=1: pure noise, t=0: x0)."""
    return (1.0 - t) * x0 + t * noise


@dataclass
class Inpaint:
    """Keep `known` where mask == 0; generate where mask == 1 (the edit window).

    mask broadcasts against the latent (e.g. (1, 1, N)). After every step the known region is
    reset to the path point at the new time, using the sampler's own starting noise, so it ends
    exactly at `known` when t reaches 0.
    """

    known: torch.Tensor
    mask: torch.Tensor

    def apply(self, x: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        m = self.mask.to(x.dtype)
        return m * x + (1 - m) * noise_to(self.known.to(x.dtype), noise, t)


class RectifiedFlowEuler:
    """x ← x + (t_next − t)·v(x, t) on a uniform grid; 24 steps reproduces predict.py."""

    def __init__(self, steps: int = 24) -> None:
        if steps < 1:
            raise ValueError("steps must be >= 1")
        self.steps = steps

    def timesteps(self, t_start: float = 1.0) -> torch.Tensor:
        """linspace(1, 0, steps+1) at t_start=1; otherwise ceil(steps·t_start) uniform steps from t_start.

        Keeping the step size of the full schedule is what makes strength s cost ≈ s of a render.
        """
        if not 0.0 < t_start <= 1.0:
            raise ValueError(f"t_start must be in (0, 1], got {t_start}")
        n = max(1, math.ceil(self.steps * t_start - 1e-9))
        return torch.linspace(t_start, 0.0, n + 1)  # fp32, as the reference

    @torch.no_grad()
    def sample(self, velocity: VelocityFn, noise: torch.Tensor, *, x0: torch.Tensor | None = None,
               t_start: float = 1.0, inpaint: Inpaint | None = None,
               callback: StepCallback | None = None) -> torch.Tensor:
        """Integrate from t_start to 0 and return the final latent (fp32, like noise).

        x0 is required when t_start < 1 (variation strength) or for inpainting outside the window
        (it may then simply be `inpaint.known`). `callback(i, t, t_next, x)` may return a replacement x.
        """
        if t_start < 1.0 and x0 is None and inpaint is None:
            raise ValueError("starting below t=1 needs x0 (the latent to vary)")
        if x0 is None and inpaint is not None:
            x0 = inpaint.known
        ts = self.timesteps(t_start)
        x = noise if t_start >= 1.0 else noise_to(x0.to(noise.dtype), noise, t_start)
        if inpaint is not None:
            x = inpaint.apply(x, noise, float(ts[0]))
        for i in range(len(ts) - 1):
            t, t_next = float(ts[i]), float(ts[i + 1])
            dt = float(ts[i + 1] - ts[i])  # fp32 difference, bit-identical to the reference
            t_vec = torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)
            x = x + dt * velocity(x, t_vec).to(x.dtype)
            if inpaint is not None:
                x = inpaint.apply(x, noise, t_next)
            if callback is not None:
                replaced = callback(i, t, t_next, x)
                if replaced is not None:
                    x = replaced
        return x
