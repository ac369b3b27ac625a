"""Qwen2.5-VL as a ``ChatModel``: neutral messages → chat template + qwen-vl-utils video → ``generate``.

Video parts arrive as PyAV-decoded key frames; qwen-vl-utils resizes them to the pixel budget and reports
metadata whose sample rate gives the model its absolute time positions (``second_per_grid_ts``).
"""

from __future__ import annotations

import logging
import os
import time

from reasoning.llm_common.chat import Generation, frames_sent
from reasoning.qwen.loader import LoadedModel, ModelSpec, acquire

log = logging.getLogger(__name__)

# A path handed to qwen-vl-utils would otherwise pick torchvision, which lost read_video in 0.28.
os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")


class QwenChat:
    hears = False

    def __init__(self, spec: ModelSpec, *, min_pixels: int = 128 * 28 * 28, max_pixels: int = 360 * 420,
                 budget_gb: float | None = None, seed: int = 0):
        if min_pixels > max_pixels:
            raise ValueError(f"min_pixels {min_pixels} > max_pixels {max_pixels}")
        self.spec, self.min_pixels, self.max_pixels = spec, min_pixels, max_pixels
        self.budget_gb, self.seed = budget_gb, seed

    @property
    def model_id(self) -> str:
        return self.spec.ref

    def to_qwen(self, messages: list[dict]) -> list[dict]:
        """Neutral parts → qwen-vl-utils parts; audio parts are dropped (this model cannot hear)."""
        from PIL import Image

        out = []
        for m in messages:
            if isinstance(m["content"], str):
                out.append({"role": m["role"], "content": m["content"]})
                continue
            parts = []
            for p in m["content"]:
                if p["type"] == "video":
                    kf = p["frames"]
                    parts.append({"type": "video", "video": [Image.fromarray(f) for f in kf.frames],
                                  "sample_fps": kf.fps, "min_pixels": self.min_pixels, "max_pixels": self.max_pixels})
                elif p["type"] == "text":
                    parts.append({"type": "text", "text": p["text"]})
                elif p["type"] == "audio" and not self.hears:
                    log.debug("dropping an audio part: %s cannot hear", self.model_id)
            out.append({"role": m["role"], "content": parts})
        return out

    def inputs(self, lm: LoadedModel, messages: list[dict]):
        from qwen_vl_utils import process_vision_info

        msgs = self.to_qwen(messages)
        text = lm.processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        images, videos, vkw = process_vision_info(msgs, return_video_kwargs=True, return_video_metadata=True)
        kwargs: dict = {"text": [text], "return_tensors": "pt", "padding": True}
        if images:
            kwargs["images"] = images
        if videos:
            vids, metas = map(list, zip(*videos))
            # do_resize=False: qwen-vl-utils already resized to the pixel budget; a second resize would undo it.
            kwargs.update(videos=vids, video_metadata=metas, do_resize=False, cap_pixels_per_frame=True, **vkw)
        return lm.processor(**kwargs)

    def chat(self, messages: list[dict], max_new_tokens: int) -> Generation:
        import torch

        t0 = time.perf_counter()
        lm = acquire(self.spec, self.budget_gb)
        inputs = self.inputs(lm, messages).to(lm.model.device)
        n_prompt = int(inputs["input_ids"].shape[1])
        torch.manual_seed(self.seed)
        with torch.inference_mode():
            out = lm.generator.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[0, n_prompt:]
        eos = lm.generator.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        truncated = len(new) >= max_new_tokens and (len(new) == 0 or int(new[-1]) not in eos)
        text = lm.processor.decode(new, skip_special_tokens=True)
        del lm, inputs, out  # the model is owned by SLOTS; holding it here would defeat release()
        return Generation(text=text, truncated=truncated, prompt_tokens=n_prompt, completion_tokens=int(len(new)),
                          frames_sent=frames_sent(messages), wall_s=time.perf_counter() - t0)
