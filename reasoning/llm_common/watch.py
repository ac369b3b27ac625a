"""The watcher role for any chat backend: frames with timestamps in, a validated Plan out."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from reasoning.llm_common.chat import ChatModel, text_part
from reasoning.llm_common.frames import sample_keyframes
from reasoning.llm_common.parse import ask_json
from reasoning.llm_common.planjson import plan_from_reply
from reasoning.llm_common.prompts import load_prompt
from contract.plan import COT_TOKEN_BUDGET, Provenance
from contract.protocols import WatchResult
from store.media import VideoInfo

log = logging.getLogger(__name__)


class LLMWatcher:
    """Writes the sound plan from the video; every reply, good or bad, is kept for the Round."""

    def __init__(self, chat: ChatModel, name: str, *, fps: float = 2.0, max_frames: int = 64, max_side: int = 640,
                 max_new_tokens: int = 1024, max_attempts: int = 3, prompt_version: int | str | None = None,
                 prompt_dir: str | None = None):
        self.chat, self.name = chat, name
        self.fps, self.max_frames, self.max_side = fps, max_frames, max_side
        self.max_new_tokens, self.max_attempts = max_new_tokens, max_attempts
        self.prompt = load_prompt("watch", prompt_version, prompt_dir)
        self.reask = load_prompt("reask", None, prompt_dir)

    @property
    def model_id(self) -> str:
        return self.chat.model_id

    def messages(self, video: Path, info: VideoInfo) -> list[dict]:
        kf = sample_keyframes(video, info, self.fps, self.max_frames, self.max_side)
        system, user = self.prompt.render(duration_s=f"{info.duration_s:.2f}", n_frames=len(kf),
                                          fps=f"{kf.fps:.2f}", timestamps=kf.timestamps_text(),
                                          budget=COT_TOKEN_BUDGET, words=int(COT_TOKEN_BUDGET / 1.35))
        return [{"role": "system", "content": system},
                {"role": "user", "content": [{"type": "video", "frames": kf}, text_part(user)]}]

    def watch(self, video: Path, info: VideoInfo) -> WatchResult:
        t0 = time.perf_counter()
        messages = self.messages(video, info)
        prov = Provenance(author="watcher", backend=self.name, model_id=self.model_id,
                          prompt_version=self.prompt.id, round=0)
        parsed = ask_json(self.chat, messages,
                          lambda obj, last: plan_from_reply(obj, info.duration_s, prov, accept_overflow=last),
                          reask=self.reask, max_new_tokens=self.max_new_tokens, max_attempts=self.max_attempts,
                          what="sound plan", prompt_version=self.prompt.id)
        plan, notes = parsed.value
        frames = next(p["frames"] for p in messages[1]["content"] if p["type"] == "video")
        meta = {"attempts": parsed.attempts, "repairs": parsed.repairs + notes, "frames_sent": len(frames),
                "frame_times": frames.times, "wall_s": round(time.perf_counter() - t0, 3)}
        if notes:
            log.info("%s: plan accepted with repairs: %s", self.model_id, "; ".join(notes))
        return WatchResult(plan=plan, model_id=self.model_id, prompt_version=self.prompt.id,
                           raw_output=parsed.raw_output, meta=meta)
