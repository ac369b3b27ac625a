"""The judge (critic role) for any chat backend.

Qwen2.5-VL cannot hear, so it judges what it can see: does the plan cover the visible sound sources, are
the event times right? It also turns metric scores from another critic into findings a refiner can act on.
``critique`` combines both: scores come from the metric critic only, findings and scorers from both.
An audio-capable chat (``chat.hears``, Qwen2.5-Omni) also gets the rendered audio and an audio-aware prompt.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from reasoning.llm_common.chat import ChatModel, text_part
from reasoning.llm_common.frames import video_content
from reasoning.llm_common.parse import OutputProblem, ask_json
from reasoning.llm_common.planjson import plan_prompt_json
from reasoning.llm_common.prompts import load_prompt
from contract.options import BackendOptions
from contract.plan import DIMENSIONS, SECTIONS, Critique, Finding, Plan, ScorerInfo
from contract.errors import BackendError
from contract.protocols import Critic
from store.media import VideoInfo

log = logging.getLogger(__name__)
GENERAL_TARGETS = (*SECTIONS, "caption", "negatives", "events")
MAX_FINDINGS = 12


def findings_from_reply(obj: dict, plan: Plan) -> tuple[list[Finding], float | None]:
    targets = set(GENERAL_TARGETS) | {e.id for e in plan.events}
    raw = obj.get("findings")
    if not isinstance(raw, list):
        raise OutputProblem("'findings' must be a list (empty if the plan matches the video)")
    out = []
    for n, f in enumerate(raw[:MAX_FINDINGS]):
        if not isinstance(f, dict) or not str(f.get("problem", "")).strip():
            raise OutputProblem(f"findings.{n} must be an object with at least 'target' and 'problem'")
        target = str(f.get("target", "")).strip()
        if target not in targets:
            raise OutputProblem(f"findings.{n}.target {target!r} is not one of {', '.join(sorted(targets))}")
        dim = f.get("dimension")
        dim = dim if dim in DIMENSIONS else (target if target in SECTIONS else None)
        hint = f.get("hint") if isinstance(f.get("hint"), dict) else {}
        out.append(Finding(target=target, dimension=dim, problem=str(f["problem"]).strip()[:400],
                           suggestion=str(f.get("suggestion", "") or "").strip()[:400], hint=hint))
    cons = obj.get("consistency")
    if cons is not None:
        if isinstance(cons, bool) or not isinstance(cons, (int, float)) or not 0.0 <= cons <= 1.0:
            raise OutputProblem(f"'consistency' must be a number from 0 to 1, got {cons!r}")
        cons = float(cons)
    return out, cons


def merge_critiques(metric: Critique | None, findings: list[Finding], judge: ScorerInfo) -> Critique:
    """Scores from the metric critic (never from the judge), findings and scorers from both."""
    base = metric or Critique()
    seen = {(f.target, f.problem) for f in base.findings}
    extra = [f for f in findings if (f.target, f.problem) not in seen]
    return Critique(scores=dict(base.scores), overall=base.overall, findings=list(base.findings) + extra,
                    scorers=list(base.scorers) + [judge])


class LLMJudge:
    def __init__(self, chat: ChatModel, name: str, thresholds: dict[str, float], *, fps: float = 1.0,
                 max_frames: int = 24, max_side: int = 448, max_new_tokens: int = 768, max_attempts: int = 3,
                 prompt_version: int | str | None = None, prompt_dir: str | None = None,
                 metric_critic: Callable[[], Critic] | None = None):
        self.chat, self.name, self.thresholds = chat, name, dict(thresholds)
        self.fps, self.max_frames, self.max_side = fps, max_frames, max_side
        self.max_new_tokens, self.max_attempts = max_new_tokens, max_attempts
        self.prompt = load_prompt("judge_av" if chat.hears else "judge", prompt_version, prompt_dir)
        self.reask = load_prompt("reask", None, prompt_dir)
        self._metric_critic = metric_critic

    @property
    def model_id(self) -> str:
        return self.chat.model_id

    def messages(self, plan: Plan, video: Path | None, info: VideoInfo | None, metric: Critique | None,
                 audio: Path | None = None) -> list[dict]:
        if metric is not None and any(s is not None for s in metric.scores.values()):
            scores = "\n".join(
                f"- {d}: " + ("n/a" if metric.scores.get(d) is None else
                              f"{metric.scores[d]:.2f} (pass ≥ {self.thresholds.get(d, 0.0):.2f}"
                              f"{', FAILING' if metric.scores[d] < self.thresholds.get(d, 0.0) else ''})")
                for d in DIMENSIONS)
        else:
            scores = "(no metric scores this round)"
        metric_findings = "\n".join(f"- [{f.target}] {f.problem}" for f in (metric.findings if metric else [])) \
            or "- (none)"
        content, stamps = video_content(video, info, self.fps, self.max_frames, self.max_side)
        if self.chat.hears and audio is not None:
            content.append({"type": "audio", "path": str(audio)})
        system, user = self.prompt.render(plan_json=plan_prompt_json(plan, indent=1), scores=scores,
                                          metric_findings=metric_findings, timestamps=stamps,
                                          duration_s=f"{plan.duration_s:.2f}",
                                          event_ids=", ".join(e.id for e in plan.events) or "(no events)")
        return [{"role": "system", "content": system}, {"role": "user", "content": content + [text_part(user)]}]

    def judge(self, plan: Plan, video: Path | None, info: VideoInfo | None, metric_critique: Critique | None,
              audio: Path | None = None) -> Critique:
        """Findings about plan ↔ video (and metric scores) merged into ``metric_critique``; raises on failure."""
        messages = self.messages(plan, video, info, metric_critique, audio)
        parsed = ask_json(self.chat, messages, lambda obj, last: findings_from_reply(obj, plan),
                          reask=self.reask, max_new_tokens=self.max_new_tokens, max_attempts=self.max_attempts,
                          what="critique", prompt_version=self.prompt.id)
        findings, consistency = parsed.value
        info_row = ScorerInfo(name=f"{self.name}-judge", version=self.prompt.id, dimension="plan-video",
                              raw=consistency, note=f"{self.model_id}; {len(findings)} finding(s)")
        return merge_critiques(metric_critique, findings, info_row)

    def metric(self, plan: Plan, audio: Path, video: Path | None, info: VideoInfo | None) -> Critique | None:
        if self._metric_critic is None:
            return None
        try:
            critic = self._metric_critic()
        except (ImportError, AttributeError, ValueError) as exc:
            log.warning("metric critic unavailable (%s); the %s judge gives findings without scores", exc, self.name)
            return None
        return critic.critique(plan, audio, video, info)

    def critique(self, plan: Plan, audio: Path, video: Path | None, info: VideoInfo | None) -> Critique:
        """Metric critic first (scores), then this judge (findings). A judge failure keeps the metric scores
        and says so in ``scorers``: a bad VLM reply must not cost the round its measured scores."""
        metric = self.metric(plan, audio, video, info)
        try:
            return self.judge(plan, video, info, metric, audio=audio)
        except BackendError as exc:
            log.warning("%s judge failed, keeping metric scores only: %s", self.name, exc)
            log.debug("%s judge raw output:\n%s", self.name, exc.raw_output)
            failed = ScorerInfo(name=f"{self.name}-judge", version=self.prompt.id, dimension="plan-video",
                                raw=None, note=f"failed: {str(exc)[:300]}")
            base = metric or Critique()
            return base.model_copy(update={"scorers": list(base.scorers) + [failed]})


def offline_metric_critic(cfg: BackendOptions):
    """The metric critic whose scores the judge explains: another backend, so the host injects the lookup
    (``cfg.peer``); it is resolved lazily because it may not exist yet."""
    def get():
        name = dict(cfg.params).get("metric_critic", "offline")
        if name in ("qwen", "qwen-omni", "openai"):
            raise ValueError(f"metric_critic {name!r} is a judge, not a metric critic")
        if cfg.peer is None:
            raise ValueError("no backend lookup was injected: the judge cannot reach its metric critic")
        return cfg.peer("critic", name)
    return get
