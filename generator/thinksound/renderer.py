"""The `thinksound` Renderer: a plan (+ video) → 44.1 kHz stereo WAV through ThinkSoundPipeline.

Options (``dict(cfg.params)``): weights (dir, see ``weights.py``), metaclip, t5, synchformer, steps (24),
cfg_scale (5.0), cache_dir (feature cache, default $FOLEYLOOP_HOME/cache/features). Models load on the first
render and are shared by every renderer with the same weights in this process.
"""

from __future__ import annotations

import time
from pathlib import Path

from contract.options import BackendOptions
from contract.protocols import RenderResult
from contract.plan import Plan
from store.media import VideoInfo, write_audio

from .pipeline import DEFAULT_CFG_SCALE, DEFAULT_STEPS, PipelineSpec, ThinkSoundPipeline, peak_normalise
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

    def __init__(self, spec: PipelineSpec, steps: int = DEFAULT_STEPS, cfg_scale: float = DEFAULT_CFG_SCALE) -> None:
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.spec, self.steps, self.cfg_scale = spec, int(steps), float(cfg_scale)
        self.pipeline = ThinkSoundPipeline.get(spec)  # checks the weights dir; loads nothing yet
        self.model_id = model_id_for(self.pipeline.weights)

    def render(self, plan: Plan, video: Path | None, info: VideoInfo | None, seed: int, out_path: Path) -> RenderResult:
        duration = plan.duration_s or (info.duration_s if info is not None else None)
        t0 = time.perf_counter()
        gen = self.pipeline.generate(plan.caption, plan.cot_text(), duration, video=video, seed=seed,
                                     steps=self.steps, cfg_scale=self.cfg_scale)
        write_audio(out_path, peak_normalise(gen.audio), SAMPLE_RATE)
        meta = gen.meta | {"model_id": self.model_id, "caption": plan.caption, "render_s": time.perf_counter() - t0}
        return RenderResult(Path(out_path), SAMPLE_RATE, gen.audio.shape[1] / SAMPLE_RATE, meta)


def make(cfg: BackendOptions) -> ThinkSoundRenderer:
    """Cheap: checks that the weights and feature models exist (ModelMissing otherwise), loads nothing."""
    from generator.features import resolve_model

    o = dict(cfg.params)
    spec = PipelineSpec.from_config(cfg)
    renderer = ThinkSoundRenderer(spec, o.get("steps") or DEFAULT_STEPS,
                                  o.get("cfg_scale") if o.get("cfg_scale") is not None else DEFAULT_CFG_SCALE)
    resolve_model(spec.metaclip, "metaclip")
    resolve_model(spec.t5, "t5")
    return renderer


def describe(cfg: BackendOptions) -> dict:
    """Where the weights are or why they are missing, without loading anything."""
    from generator.features import describe_model
    from contract.errors import BackendError, ModelMissing

    spec = PipelineSpec.from_config(cfg)
    try:
        weights = WeightsDir.open(spec.weights)
    except (ModelMissing, BackendError) as exc:
        return {"available": False, "where": "", "why": str(exc), "model_id": REPO_ID, "license": LICENSE}
    parts = [describe_model(spec.metaclip, "metaclip"), describe_model(spec.t5, "t5")]
    why = [p["why"] for p in parts if not p["available"]]
    sync = Path(spec.synchformer) if spec.synchformer else weights.synchformer
    note = "" if sync is not None and Path(sync).exists() else f"no {SYNC_NAME}: text-to-audio only"
    return {"available": not why, "where": str(weights.root), "why": "; ".join(why) or note,
            "model_id": model_id_for(weights), "license": LICENSE}
