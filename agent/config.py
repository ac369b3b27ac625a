"""Run configuration: which backends, how many rounds, what passes. Stored verbatim on every Run."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract.options import DEFAULT_THRESHOLDS
from contract.plan import DIMENSIONS
from models.precision import DTYPES
from reasoning.policy import CRITIC_NOISE_OVERALL


MAX_SEED = 2**31 - 1  # the studio's bound too


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    watcher: str = "offline"
    renderer: str = "offline"
    critic: str | None = None  # None → the default for the chosen path (``_default_critic``)
    refiner: str | None = None  # None → same family as the watcher (offline rules, or the VLM)
    rounds: int = Field(default=3, ge=1, le=20)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)  # numpy refuses < 0; SQLite rows hold ≤ 2**63 - 1
    thresholds: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    # a later round must beat the best by more than the critic's own noise (reasoning.policy.clear_gain)
    min_improvement: float = Field(default=CRITIC_NOISE_OVERALL, ge=0.0)
    patience: int = Field(default=1, ge=1)  # rounds without improvement before stopping
    review: bool = False
    max_duration_s: float = Field(default=600.0, gt=0)
    keep_original: str = "drop"  # drop | mix
    device: str = "cpu"
    dtype: str = "auto"  # resolved (models.precision) before a run is recorded: runs store fp32 | fp16 | bf16
    # Per-backend options, e.g. {"watcher": {"model": PATH}, "renderer": {"weights": DIR, "steps": 24}}.
    options: dict[str, dict] = Field(default_factory=dict)

    @field_validator("thresholds")
    @classmethod
    def _known_dims(cls, v: dict[str, float]) -> dict[str, float]:
        for k in v:
            if k not in DIMENSIONS:
                raise ValueError(f"unknown dimension {k!r} in thresholds")
        return {**DEFAULT_THRESHOLDS, **v}

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in DTYPES:
            raise ValueError(f"dtype must be {', '.join(DTYPES)}, got {v!r}")
        return v

    @field_validator("keep_original")
    @classmethod
    def _keep(cls, v: str) -> str:
        if v not in ("drop", "mix"):
            raise ValueError("keep_original must be 'drop' or 'mix'")
        return v

    @model_validator(mode="after")
    def _default_critic(self) -> "RunConfig":
        """The real-model path (ThinkSound renderer + Qwen watcher) is checked by the verifiers whose weights are
        present (``verified``); everything else by the offline critic. Resolved here, so stored configs say which."""
        if self.critic is None:
            self.critic = "verified" if (self.renderer == "thinksound" and self.watcher == "qwen") else "offline"
        return self

    @property
    def refiner_name(self) -> str:
        return self.refiner or (self.watcher if self.watcher in ("qwen", "openai") else "offline")

    def resolved(self) -> "RunConfig":
        """``device="auto"`` and ``dtype="auto"`` made concrete for this machine (what a run records and hashes)."""
        from agent.devices import resolve_device
        from models.precision import resolve

        device = resolve_device(self.device)
        dtype = resolve(self.dtype, device)
        if (device, dtype) == (self.device, self.dtype):
            return self
        return self.model_copy(update={"device": device, "dtype": dtype})

    def opts(self, role: str) -> dict:
        return dict(self.options.get(role, {}))
