"""The refiner role for any chat backend: rewrite only the weakest sections, keep the rest verbatim.

The "verbatim" rule is enforced here, not trusted to the model: whatever it writes for a section that is
not being rewritten is replaced by the old text. Events may be added, moved or dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path

from reasoning.llm_common.chat import ChatModel, text_part
from reasoning.llm_common.frames import video_content
from reasoning.llm_common.parse import OutputProblem, ask_json
from reasoning.llm_common.planjson import normalise_reply, plan_prompt_json
from reasoning.llm_common.prompts import load_prompt
from contract.plan import COT_TOKEN_BUDGET, SECTIONS, Critique, Plan, estimate_t5_tokens
from contract.errors import BackendError
from contract.protocols import RefineResult
from store.media import VideoInfo

log = logging.getLogger(__name__)
WORDS_PER_TOKEN = 1 / 1.35


def weakest_sections(critique: Critique, failing: list[str], thresholds: dict[str, float],
                     limit: int = 2) -> list[str]:
    """Failing sections, worst first; with none failing, the lowest-scored one (a refine was asked for)."""
    scores = critique.scores
    cand = [d for d in failing if d in SECTIONS]
    if not cand:
        limit = 1
        scored = [d for d in SECTIONS if scores.get(d) is not None]
        cand = scored[:] or sorted({f.dimension or f.target for f in critique.findings} & set(SECTIONS))
    if not cand:
        raise BackendError("nothing to refine: no failing dimension, no scores and no section findings")
    gap = {d: (scores.get(d) if scores.get(d) is not None else 1.0) - thresholds.get(d, 0.0) for d in cand}
    return sorted(cand, key=lambda d: (gap[d], SECTIONS.index(d)))[:max(1, limit)]


def _without(plan: Plan, sections: list[str]) -> Plan:
    return plan.model_copy(update={s: "" for s in sections})


def _trim_to_fit(plan: Plan, sections: list[str], limit_tokens: int) -> tuple[Plan, list[str]]:
    """Drop trailing words from the longest rewritten section until the CoT fits ``limit_tokens``."""
    notes, cur = [], plan
    while cur.cot_token_estimate() > limit_tokens:
        longest = max(sections, key=lambda s: len(getattr(cur, s).split()))
        words = getattr(cur, longest).split()
        if len(words) <= 1:
            break
        cur = cur.model_copy(update={longest: " ".join(words[:-1])})
    for s in sections:
        cut = len(getattr(plan, s).split()) - len(getattr(cur, s).split())
        if cut:
            notes.append(f"trimmed {cut} trailing word(s) from {s} to fit the {COT_TOKEN_BUDGET}-token CoT budget")
    return cur, notes


def describe_event_changes(old: Plan, new: Plan) -> list[str]:
    out = []
    before = {e.id: e for e in old.events}
    after = {e.id: e for e in new.events}
    for eid, e in after.items():
        if eid not in before:
            out.append(f"added event {eid} '{e.label}' at {e.start_s:.2f}-{e.end_s:.2f} s")
        elif (before[eid].start_s, before[eid].end_s) != (e.start_s, e.end_s):
            b = before[eid]
            out.append(f"moved event {eid} '{e.label}' {b.start_s:.2f}-{b.end_s:.2f} → {e.start_s:.2f}-{e.end_s:.2f} s")
        elif before[eid] != e:
            out.append(f"changed event {eid} '{e.label}'")
    out += [f"dropped event {eid} '{e.label}'" for eid, e in before.items() if eid not in after]
    return out


class LLMRefiner:
    def __init__(self, chat: ChatModel, name: str, thresholds: dict[str, float], *, fps: float = 1.0,
                 max_frames: int = 16, max_side: int = 448, max_new_tokens: int = 1024, max_attempts: int = 3,
                 max_sections: int = 2, prompt_version: int | str | None = None, prompt_dir: str | None = None):
        self.chat, self.name, self.thresholds = chat, name, dict(thresholds)
        self.fps, self.max_frames, self.max_side = fps, max_frames, max_side
        self.max_new_tokens, self.max_attempts, self.max_sections = max_new_tokens, max_attempts, max_sections
        self.prompt = load_prompt("refine", prompt_version, prompt_dir)
        self.reask = load_prompt("reask", None, prompt_dir)

    @property
    def model_id(self) -> str:
        return self.chat.model_id

    def messages(self, plan: Plan, critique: Critique, sections: list[str], video: Path | None,
                 info: VideoInfo | None) -> list[dict]:
        avail = COT_TOKEN_BUDGET - _without(plan, sections).cot_token_estimate()
        scores = "\n".join(f"- {d}: {'n/a' if critique.scores.get(d) is None else f'{critique.scores[d]:.2f}'}"
                           f" (pass ≥ {self.thresholds.get(d, 0.0):.2f})" for d in SECTIONS)
        findings = "\n".join(f"- [{f.target}] {f.problem}" + (f" → {f.suggestion}" if f.suggestion else "")
                             for f in critique.findings) or "- (none)"
        content, stamps = video_content(video, info, self.fps, self.max_frames, self.max_side)
        system, user = self.prompt.render(
            plan_json=plan_prompt_json(plan, indent=1), scores=scores, findings=findings,
            sections=", ".join(sections), kept=", ".join(s for s in SECTIONS if s not in sections) or "(none)",
            budget_tokens=max(avail, 0), budget_words=max(int(avail * WORDS_PER_TOKEN), 0),
            duration_s=f"{plan.duration_s:.2f}", timestamps=stamps)
        return [{"role": "system", "content": system}, {"role": "user", "content": content + [text_part(user)]}]

    def merge(self, old: Plan, obj: dict, sections: list[str], round_index: int,
              last: bool) -> tuple[Plan, list[str], list[str]]:
        """(new plan, repair notes, the model's own change list); non-rewritten sections come from ``old``."""
        data, notes = normalise_reply(obj, old.duration_s, required=tuple(sections))
        changes: dict = {}
        for s in SECTIONS:
            if s in sections:
                if not data[s].strip():
                    raise OutputProblem(f"'{s}' is empty; it is the section to rewrite")
                changes[s] = data[s].strip()
            elif s in data and data[s].strip() != getattr(old, s).strip():
                notes.append(f"kept {s} verbatim (the model's change was ignored: {s} is not being rewritten)")
        if "semantic" in sections and data.get("caption", "").strip():
            changes["caption"] = data["caption"].strip()
        added = [n for n in data.get("negatives", []) if n.strip() and n not in old.negatives]
        if added:
            changes["negatives"] = old.negatives + added
        if "events" in data:
            changes["events"] = data["events"]
        changes["provenance"] = {"author": "refiner", "backend": self.name, "model_id": self.model_id,
                                 "prompt_version": self.prompt.id, "round": round_index}
        new = old.derive("refiner", **changes)
        limit = max(COT_TOKEN_BUDGET, old.cot_token_estimate())  # never make an overflowing plan worse
        if new.cot_token_estimate() > limit:
            if not last:
                avail = COT_TOKEN_BUDGET - _without(old, sections).cot_token_estimate()
                used = sum(estimate_t5_tokens(getattr(new, s)) - 1 for s in sections)
                raise OutputProblem(f"the rewritten {', '.join(sections)} come to about {used} tokens but only "
                                    f"{max(avail, 0)} fit the {COT_TOKEN_BUDGET}-token budget "
                                    f"(about {max(int(avail * WORDS_PER_TOKEN), 0)} words); shorten them")
            new, trims = _trim_to_fit(new, sections, limit)
            notes += trims
        said = obj.get("changes", [])
        said = [str(c)[:200] for c in said[:8]] if isinstance(said, list) else []
        return new, notes, said

    def refine(self, plan: Plan, critique: Critique, failing: list[str], round_index: int, seed: int,
               video: Path | None = None, info: VideoInfo | None = None) -> RefineResult:
        sections = weakest_sections(critique, failing, self.thresholds, self.max_sections)
        messages = self.messages(plan, critique, sections, video, info)
        parsed = ask_json(self.chat, messages, lambda obj, last: self.merge(plan, obj, sections, round_index, last),
                          reask=self.reask, max_new_tokens=self.max_new_tokens, max_attempts=self.max_attempts,
                          what="plan rewrite", prompt_version=self.prompt.id)
        new, notes, said = parsed.value
        changes = []
        for s in sections:
            score = critique.scores.get(s)
            why = f"score {score:.2f}, pass ≥ {self.thresholds.get(s, 0.0):.2f}" if score is not None else "weakest"
            changes.append(f"rewrote {s} ({why})" if getattr(new, s) != getattr(plan, s) else f"kept {s}: the model "
                           "returned it unchanged")
        if new.caption != plan.caption:
            changes.append(f"caption: '{plan.caption}' → '{new.caption}'")
        changes += describe_event_changes(plan, new)
        if new.negatives != plan.negatives:
            changes.append(f"added negatives: {', '.join(new.negatives[len(plan.negatives):])}")
        changes += [f"model: {c}" for c in said] + notes + parsed.repairs
        return RefineResult(plan=new, seed=seed, changes=changes, raw_output=parsed.raw_output,
                            prompt_version=self.prompt.id)

