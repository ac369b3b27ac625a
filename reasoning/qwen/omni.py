"""Optional ``qwen-omni`` judge: Qwen2.5-Omni watches the frames and hears the rendered audio.

Same interface as the ``qwen`` judge (``judge`` / ``critique``); only the chat differs: audio parts are read
at 16 kHz mono (the Whisper front end) and the audio-aware prompt ``judge_av`` is used. The talker (speech
output) is never loaded. Registry entry to add: ``critic: {"qwen-omni": "reasoning.qwen.omni"}``.
"""

from __future__ import annotations

import logging

from contract.options import BackendOptions
from reasoning.llm_common.judge import LLMJudge, offline_metric_critic
from reasoning.qwen.chat import QwenChat
from reasoning.qwen.loader import LoadedModel
from reasoning.qwen.options import chat_kwargs, describe_spec, role_kwargs, spec_from

log = logging.getLogger(__name__)
DEFAULT_OMNI_MODEL = "Qwen/Qwen2.5-Omni-7B"
AUDIO_RATE = 16000
MAX_AUDIO_S = 30.0  # the Whisper front end pads/cuts to 30 s windows


class OmniChat(QwenChat):
    hears = True

    def to_qwen(self, messages: list[dict]) -> list[dict]:
        out = super().to_qwen(messages)
        for src, dst in zip(messages, out):
            if isinstance(src["content"], list):
                audio = [{"type": "audio", "audio": p["path"]} for p in src["content"] if p["type"] == "audio"]
                dst["content"] = audio + dst["content"]
        return out

    def inputs(self, lm: LoadedModel, messages: list[dict]):
        from qwen_vl_utils import process_vision_info

        from store.media import read_audio

        msgs = self.to_qwen(messages)
        text = lm.processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        audios = []
        for m in msgs:
            for p in m["content"] if isinstance(m["content"], list) else []:
                if p["type"] == "audio":
                    wav, _ = read_audio(p["audio"], sample_rate=AUDIO_RATE, mono=True)
                    if wav.shape[1] > MAX_AUDIO_S * AUDIO_RATE:
                        log.warning("%s: judging only the first %.0f s of the audio", self.model_id, MAX_AUDIO_S)
                    audios.append(wav[0, :int(MAX_AUDIO_S * AUDIO_RATE)])
        images, videos, vkw = process_vision_info(msgs, return_video_kwargs=True)
        kwargs: dict = {"text": [text], "return_tensors": "pt", "padding": True}
        if audios:
            kwargs["audio"] = audios
        if images:
            kwargs["images"] = images
        if videos:
            kwargs.update(videos=videos, fps=float(vkw["fps"][0]), do_resize=False, cap_pixels_per_frame=True)
        return lm.processor(**kwargs)


def make(cfg: BackendOptions) -> LLMJudge:
    spec = spec_from(cfg, "critic", kind="omni", default_model=DEFAULT_OMNI_MODEL)
    return LLMJudge(OmniChat(spec, **chat_kwargs(cfg, "critic")), "qwen-omni", cfg.thresholds,
                    metric_critic=offline_metric_critic(cfg), **role_kwargs(cfg, "critic"))


def describe(cfg: BackendOptions) -> dict:
    return describe_spec(spec_from(cfg, "critic", kind="omni", default_model=DEFAULT_OMNI_MODEL))
