"""ThinkSound-compatible generator: MM-DiT velocity model, Oobleck VAE, rectified-flow sampler.

Layers (``layers``), network (``mmdit``), VAE, sampler and loading live in separate modules (diffusers-style);
``pipeline.ThinkSoundPipeline`` composes them: features → prepare_conditions → RectifiedFlowEuler.sample_from →
vae.decode → to_pcm_int16, with models held by the process's one model cache (contract.memory.SLOTS).
"""

from .checkpoint import (CheckpointError, ThinkSoundModels, TensorFile, convert_to_safetensors, load_mmdit,
                         load_thinksound, load_vae, resolve_auto_dtype, resolve_device, resolve_dtype)
from .mmdit import FULL_CONFIG, Conditions, MMDiT, MMDiTConfig, build_full_mmdit, build_mmdit
from .oracle import OracleReport, check_oracle, register_checker
from .sampler import Inpaint, RectifiedFlowEuler, StartPoint, noise_to
from .sequence import SequenceConfig
from .vae import FULL_VAE_CONFIG, OobleckConfig, OobleckVAE, build_full_vae, build_vae, to_pcm_int16

__all__ = [
    "CheckpointError", "Conditions", "FULL_CONFIG", "FULL_VAE_CONFIG", "Inpaint", "MMDiT", "MMDiTConfig",
    "OobleckConfig", "OobleckVAE", "OracleReport", "RectifiedFlowEuler", "SequenceConfig", "StartPoint",
    "TensorFile", "ThinkSoundModels", "build_full_mmdit", "build_full_vae", "build_mmdit", "build_vae",
    "check_oracle", "convert_to_safetensors", "load_mmdit", "load_thinksound", "load_vae", "noise_to",
    "register_checker", "resolve_auto_dtype", "resolve_device", "resolve_dtype", "to_pcm_int16",
]
