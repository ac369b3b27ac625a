"""Rectified-flow Euler sampler (spec §2.8) with the two hooks `foleyloop edit` needs.

Time runs from 1 (noise) to 0 (data) along x_t = (1−t)·x0 + t·ε. Starting below t=1 gives
audio-to-audio variation; re-imposing known latents outside a window gives inpainting. Both are
described by one ``StartPoint``. Sampling runs under ``torch.inference_mode()`` (no autograd records,
no version counters).
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


@dataclass(frozen=True)
class StartPoint:
    """Where sampling starts: fresh noise (the default), a variation of x0, or an inpainting of x0.

    x0: (B, C, N) latents of the audio being edited (None: fresh generation).
    t_start: 1 → pure noise; s < 1 → the path point at t = s (variation strength s); 0 → x0 unchanged.
    mask: broadcastable to x0 (e.g. (1, 1, N)); 1 = regenerate, 0 = keep x0 (re-imposed at every step).
    """

    x0: torch.Tensor | None = None
    t_start: float = 1.0
    mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.t_start) and 0.0 <= self.t_start <= 1.0):
            raise ValueError(f"t_start must be in [0, 1], got {self.t_start!r}")
        if (self.t_start < 1.0 or self.mask is not None) and self.x0 is None:
            raise ValueError("a variation (t_start < 1) or an inpainting mask needs x0 (the latents to edit)")

    @property
    def skip_sampling(self) -> bool:
        """t_start 0 is x0 itself: nothing to integrate."""
        return self.t_start <= 0.0

    @property
    def inpaint(self) -> Inpaint | None:
        return Inpaint(self.x0, self.mask) if self.mask is not None else None

    def to(self, device: torch.device | str) -> "StartPoint":
        move = lambda x: x.to(device) if x is not None else None  # noqa: E731
        return StartPoint(move(self.x0), self.t_start, move(self.mask))


FRESH = StartPoint()


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

    def sample_from(self, velocity: VelocityFn, noise: torch.Tensor, start: StartPoint = FRESH,
                    callback: StepCallback | None = None) -> torch.Tensor:
        """``sample`` for a StartPoint; t_start 0 returns x0 without calling the model."""
        if start.skip_sampling:
            return start.x0.to(noise.device, noise.dtype)
        return self.sample(velocity, noise, x0=start.x0, t_start=start.t_start, inpaint=start.inpaint,
                           callback=callback)

    @torch.inference_mode()
    def sample(self, velocity: VelocityFn, noise: torch.Tensor, *, x0: torch.Tensor | None = None,
               t_start: float = 1.0, inpaint: Inpaint | None = None,
               callback: StepCallback | None = None) -> torch.Tensor:
        """Integrate from t_start to 0 and return the final latent (fp32, like noise).

        x0 is required when t_start < 1 (variation strength) or for inpainting outside the window
        (it may then simply be `inpaint.known`). `callback(i, t, t_next, x)` may return a replacement x.
        The batch axis of noise (and x0) may hold several clips: one velocity call per step for all.
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
