"""Shared helpers for the VLM backend tests: a tiny Qwen2.5-VL on disk, a real mp4, scripted chats.

Imported by the test modules (``from tests.qwen_fixtures import ...``); the lead owns conftest.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reasoning.llm_common.chat import Generation, frames_sent
from contract.plan import Event, EventKind, Plan
from store.media import probe

CLIP_S, CLIP_FPS = 3.0, 10.0
IMPACT_TIMES = (1.0, 2.0)  # the ball hits the floor at these times


def write_impact_clip(path: Path) -> Path:
    """A ball bouncing on a floor with impacts at IMPACT_TIMES (96x64, 10 fps, 3 s, silent)."""
    from store.synthetic import make_impact_clip

    return make_impact_clip(path, duration_s=CLIP_S, impacts=IMPACT_TIMES, fps=CLIP_FPS, size=(96, 64)).path


@pytest.fixture(scope="session")
def impact_clip(tmp_path_factory):
    path = write_impact_clip(tmp_path_factory.mktemp("clip") / "impact.mp4")
    return path, probe(path)


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory):
    from reasoning.qwen.tiny import build_tiny_qwen

    return build_tiny_qwen(tmp_path_factory.mktemp("tiny_qwen"))


@pytest.fixture(scope="session")
def tiny_omni_dir(tmp_path_factory):
    from reasoning.qwen.tiny import build_tiny_omni

    return build_tiny_omni(tmp_path_factory.mktemp("tiny_omni"))


@pytest.fixture(scope="session")
def impact_wav(tmp_path_factory):
    """The knocks a perfect render would have (stereo 44.1 kHz wav)."""
    from store.media import write_audio
    from store.synthetic import impact_clicks

    return write_audio(tmp_path_factory.mktemp("wav") / "render.wav",
                       impact_clicks(IMPACT_TIMES, [-0.5, 0.5], CLIP_S), 44100)


@dataclass
class ScriptedChat:
    """A ChatModel that replies from a script; a reply is text or (text, truncated)."""

    replies: list
    model_id: str = "scripted-vlm"
    hears: bool = False
    calls: list = field(default_factory=list)

    def chat(self, messages: list[dict], max_new_tokens: int) -> Generation:
        self.calls.append({"messages": messages, "max_new_tokens": max_new_tokens})
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        text, truncated = reply if isinstance(reply, tuple) else (reply, False)
        return Generation(text=text, truncated=truncated, prompt_tokens=100, frames_sent=frames_sent(messages))


def sample_plan(duration_s: float = CLIP_S) -> Plan:
    return Plan(caption="a box drops twice on a wooden floor", semantic="small cardboard box hitting wood",
                temporal="drops at 1 s and again at 2 s", aesthetic="dry, close, clean",
                spatial="moves from left to right", negatives=["speech", "music"], duration_s=duration_s,
                events=[Event(id="e1", label="box hits floor", kind=EventKind.impact, start_s=1.0, end_s=1.1),
                        Event(id="e2", label="box hits floor", kind=EventKind.impact, start_s=2.0, end_s=2.1)])


VALID_PLAN_REPLY = ('{"caption": "a box drops twice on a floor", "semantic": "cardboard box on wood", '
                    '"temporal": "hits at 1.0 s and 2.0 s", "aesthetic": "dry and close", "spatial": "left to right", '
                    '"events": [{"id": "e1", "label": "box hit", "kind": "impact", "start_s": 1.0, "end_s": 1.1, '
                    '"gain_db": -3, "pan": -0.3, "confidence": 0.9}, {"id": "e2", "label": "box hit", "kind": "impact",'
                    ' "start_s": 2.0, "end_s": 2.1, "pan": 0.3}], "negatives": ["speech", "music"]}')
