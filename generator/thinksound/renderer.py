"""The `thinksound` Renderer: a plan (+ video) → 44.1 kHz stereo WAV through ThinkSoundPipeline.

Options (``dict(cfg.params)``): weights (dir, see ``weights.py``), metaclip, t5, synchformer, steps (24),
cfg_scale (5.0), cache_dir (feature cache, default $FOLEYLOOP_HOME/cache/features), dtype (overrides the run's;
"auto" = ``checkpoint.resolve_auto_dtype``), vae_dtype (fp32), compile (false: torch.compile the MM-DiT forward
and VAE decoder), max_batch (8 clips per forward in ``render_batch``). Models load on the first render into the
process's model cache (role "renderer") and are shared by every renderer with the same weights.
"""

from __future__ import annotations

import time
from pathlib import Path

from contract.errors import BackendError
from contract.options import BackendOptions
from contract.protocols import RenderResult
from contract.plan import Plan
from store.media import VideoInfo, write_audio

from .pipeline import (DEFAULT_CFG_SCALE, DEFAULT_STEPS, GenerationRequest, PipelineSpec, ThinkSoundPipeline,
                       check_inputs, peak_normalise)
from .sequence import SAMPLE_RATE
from .weights import REPO_ID, SYNC_NAME, WeightsDir

NAME = "thinksound"
LICENSE = ("ThinkSound weights: research/education only, no commercial use; VAE: Stability AI Community License; "
           "MetaCLIP CC-BY-NC-4.0; T5 Apache-2.0")


def model_id_for(weights: WeightsDir) -> str:
    from models.hub import fingerprint_dir

    return f"thinksound:{weights.light.name}@{fingerprint_dir(weights.root)}"


class ThinkSoundRenderer:
    name = NAME
    # ThinkSound is trained on ~9 s clips: a longer video is rendered in segments of at most this (agent.segments).
    max_window_s = 9.0

    def __init__(self, spec: PipelineSpec, steps: int = DEFAULT_STEPS, cfg_scale: float = DEFAULT_CFG_SCALE) -> None:
        check_inputs(1.0, steps, cfg_scale)  # ValueError before anything else happens
        self.spec, self.steps, self.cfg_scale = spec, int(steps), float(cfg_scale)
        self.pipeline = ThinkSoundPipeline.get(spec)  # checks the weights dir; loads nothing yet
        self.model_id = model_id_for(self.pipeline.weights)

    @property
    def loaded(self) -> bool:
        """Whether the models a render needs are in the model cache (false again once the device manager released
        them), so the run service knows to call ``load`` before round 0."""
        return self.pipeline.loaded

    def load(self) -> None:
        """Load MM-DiT, VAE, MetaCLIP, T5 and (where its file exists) Synchformer into the model cache now."""
        sync = Path(self.spec.synchformer) if self.spec.synchformer else self.pipeline.weights.synchformer
        self.pipeline.load(video=sync is not None and Path(sync).exists())

    def _request(self, plan: Plan, video: Path | None, info: VideoInfo | None, seed: int) -> GenerationRequest:
        duration = plan.duration_s or (info.duration_s if info is not None else None)
        try:
            check_inputs(duration, self.steps, self.cfg_scale, seed=seed)
        except ValueError as exc:
            raise BackendError(f"ThinkSound cannot render this plan: {exc}") from None
        return GenerationRequest(plan.caption, plan.cot_text(), float(duration), video, seed, self.steps,
                                 self.cfg_scale)

    def _result(self, plan: Plan, gen, out_path: Path, seconds: float) -> RenderResult:
        write_audio(out_path, peak_normalise(gen.audio), SAMPLE_RATE)
        meta = gen.meta | {"model_id": self.model_id, "caption": plan.caption, "render_s": seconds}
        return RenderResult(Path(out_path), SAMPLE_RATE, gen.audio.shape[1] / SAMPLE_RATE, meta)

    def render(self, plan: Plan, video: Path | None, info: VideoInfo | None, seed: int, out_path: Path) -> RenderResult:
        req = self._request(plan, video, info, seed)
        t0 = time.perf_counter()
        gen = self.pipeline.generate_batch([req])[0]
        return self._result(plan, gen, out_path, time.perf_counter() - t0)

    def render_batch(self, jobs: list[tuple[Plan, Path | None, VideoInfo | None, int, Path]]) -> list[RenderResult]:
        """Several (plan, video, info, seed, out_path) at once: clips of one duration share each MM-DiT forward.

        render_s in each result is the batch's wall time divided by its size.
        """
        reqs = [self._request(plan, video, info, seed) for plan, video, info, seed, _ in jobs]
        t0 = time.perf_counter()
        gens = self.pipeline.generate_batch(reqs)
        share = (time.perf_counter() - t0) / max(1, len(jobs))
        return [self._result(job[0], gen, job[4], share) for job, gen in zip(jobs, gens)]


def make(cfg: BackendOptions) -> ThinkSoundRenderer:
    """Cheap: checks that the weights and feature models exist (ModelMissing otherwise), loads nothing."""
    from generator.features import resolve_model

    o = dict(cfg.params)
    spec = PipelineSpec.from_config(cfg)
    renderer = ThinkSoundRenderer(spec, int(o.get("steps") or DEFAULT_STEPS),
                                  float(o["cfg_scale"]) if o.get("cfg_scale") is not None else DEFAULT_CFG_SCALE)
    resolve_model(spec.metaclip, "metaclip")
    resolve_model(spec.t5, "t5")
    return renderer


def describe(cfg: BackendOptions) -> dict:
    """Where the weights are or why they are missing, without loading anything."""
    from generator.features import describe_model
    from contract.errors import ModelMissing

    spec = PipelineSpec.from_config(cfg)
    try:
        weights = WeightsDir.open(spec.weights)
    except (ModelMissing, BackendError) as exc:
        return {"available": False, "where": "", "why": str(exc), "model_id": REPO_ID, "license": LICENSE}
    parts = [describe_model(spec.metaclip, "metaclip"), describe_model(spec.t5, "t5")]
    why = [p["why"] for p in parts if not p["available"]]
    sync = Path(spec.synchformer) if spec.synchformer else weights.synchformer
    note = "" if sync is not None and Path(sync).exists() else f"no {SYNC_NAME}: text-to-audio only"
    dtype, dtype_why = describe_dtype(spec)
    return {"available": not why, "where": str(weights.root), "why": "; ".join(why) or note,
            "model_id": model_id_for(weights), "license": LICENSE, "dtype": dtype, "dtype_why": dtype_why}


def describe_dtype(spec: PipelineSpec) -> tuple[str, str]:
    """The dtype a render would use and why (the `auto` hardware check), without loading anything."""
    from .checkpoint import resolve_auto_dtype, resolve_device, resolve_dtype

    device = resolve_device(spec.device)
    if spec.dtype == "auto":
        dt, why = resolve_auto_dtype(device)
    else:
        dt, why = resolve_dtype(spec.dtype, device), "as configured"
    return str(dt).removeprefix("torch."), why
