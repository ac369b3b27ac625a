"""Parse / repair / re-ask with scripted model replies, prompt versioning, key frames, refine and judge rules."""

from __future__ import annotations

import json

import pytest
from tests.qwen_fixtures import VALID_PLAN_REPLY, ScriptedChat, impact_clip, sample_plan  # noqa: F401

from reasoning.llm_common.frames import sample_keyframes, subsample
from reasoning.llm_common.judge import LLMJudge
from reasoning.llm_common.parse import OutputProblem, ReplyInvalid, extract_json_text, loads_lenient, parse_json_object
from reasoning.llm_common.prompts import PromptError, available, load_prompt
from reasoning.llm_common.refine import LLMRefiner, weakest_sections
from reasoning.llm_common.watch import LLMWatcher
from contract.plan import COT_TOKEN_BUDGET, Critique, Finding, ScorerInfo
from contract.errors import BackendError

THRESHOLDS = {"semantic": 0.45, "temporal": 0.6, "aesthetic": 0.6, "spatial": 0.5}


# ---- extraction and repair --------------------------------------------------------------------------------
def test_extract_from_fence_with_prose_around():
    text = "Sure! Here is the plan:\n```json\n{\"a\": [1, 2], \"b\": \"x}\"}\n```\nHope it helps {not json}."
    assert json.loads(extract_json_text(text)) == {"a": [1, 2], "b": "x}"}


def test_extract_bare_object_after_prose_and_braces_in_strings():
    assert json.loads(extract_json_text('The plan is {"a": "curly } inside", "b": {"c": 1}} as asked.')) == \
        {"a": "curly } inside", "b": {"c": 1}}


def test_stray_braces_in_prose_are_skipped():
    obj, _ = parse_json_object('I considered {several options} first.\n{"caption": "thud"} {"b": 2}')
    assert obj == {"caption": "thud"}


def test_repair_trailing_commas_single_quotes_and_literals():
    obj, repairs = loads_lenient("{'caption': 'thud', 'events': [1, 2,], 'ok': true, 'none': null,}")
    assert obj == {"caption": "thud", "events": [1, 2], "ok": True, "none": None}
    assert repairs  # a repair is recorded, never silent


def test_repair_refuses_non_json_python():
    with pytest.raises(OutputProblem, match="invalid JSON"):
        loads_lenient("{'a': {1, 2}}")  # a set is not JSON data
    with pytest.raises(OutputProblem, match="invalid JSON"):
        loads_lenient('{"a": __import__("os")}')


@pytest.mark.parametrize("text,truncated,needle", [
    ("", False, "empty"),
    ("   \n", False, "empty"),
    ("I cannot see any video.", False, "no JSON object"),
    ('{"caption": "a a a a a a a a', True, "cut off"),
    ("[1, 2, 3]", False, "no JSON object"),
])
def test_parse_failures_are_explained(text, truncated, needle):
    with pytest.raises(OutputProblem, match=needle):
        parse_json_object(text, truncated)


# ---- the re-ask loop through the watcher ---------------------------------------------------------------
def _watch(chat, impact_clip, **kw):
    path, info = impact_clip
    return LLMWatcher(chat, "scripted", fps=2.0, max_frames=8, max_side=96, max_new_tokens=64, **kw).watch(path, info)


def test_valid_reply_first_time(impact_clip):
    chat = ScriptedChat([VALID_PLAN_REPLY])
    res = _watch(chat, impact_clip)
    assert len(chat.calls) == 1
    assert [e.start_s for e in res.plan.events] == [1.0, 2.0]
    assert res.plan.duration_s == pytest.approx(impact_clip[1].duration_s)
    assert res.prompt_version == "watch_v1" and res.plan.provenance.prompt_version == "watch_v1"
    assert res.plan.provenance.author == "watcher" and res.plan.provenance.model_id == "scripted-vlm"
    assert res.raw_output == VALID_PLAN_REPLY
    # the prompt gives the model the frame timestamps it sees
    user = chat.calls[0]["messages"][1]["content"]
    kf = next(p["frames"] for p in user if p["type"] == "video")
    assert kf.times[:3] == [0.0, 0.5, 1.0] and "0.00, 0.50, 1.00" in user[-1]["text"]


def test_fenced_reply_with_prose_and_trailing_commas(impact_clip):
    broken = VALID_PLAN_REPLY.replace('"music"]', '"music",]').replace('"caption"', "'caption'")
    res = _watch(ScriptedChat([f"Here you go:\n```json\n{broken}\n```\nLet me know!"]), impact_clip)
    assert res.plan.caption == "a box drops twice on a floor"
    assert any("repaired" in r for r in res.meta["repairs"])


def test_wrong_schema_reasks_with_the_validation_error_then_succeeds(impact_clip):
    wrong = json.dumps({"caption": "thud", "semantic": "box", "temporal": "1 s", "aesthetic": "dry", "spatial": "c",
                        "events": [{"label": "hit", "kind": "bang", "start_s": 1.0, "end_s": 1.1}]})
    chat = ScriptedChat([wrong, VALID_PLAN_REPLY])
    res = _watch(chat, impact_clip)
    assert len(chat.calls) == 2
    reask = chat.calls[1]["messages"]
    assert reask[-2] == {"role": "assistant", "content": wrong}  # the bad reply is echoed back
    assert "events.0.kind" in reask[-1]["content"]  # with the exact validation problem
    assert res.meta["attempts"][0]["error"] and res.meta["attempts"][1]["error"] is None
    assert [e.label for e in res.plan.events] == ["box hit", "box hit"]


def test_missing_fields_reask(impact_clip):
    chat = ScriptedChat(['{"sounds": ["thud"]}', VALID_PLAN_REPLY])
    _watch(chat, impact_clip)
    assert "missing field(s) caption, semantic" in chat.calls[1]["messages"][-1]["content"]


def test_empty_replies_fail_clearly_after_bounded_retries(impact_clip):
    chat = ScriptedChat([""])
    with pytest.raises(ReplyInvalid, match="after 3 attempt") as err:
        _watch(chat, impact_clip)
    assert len(chat.calls) == 3
    assert isinstance(err.value, BackendError) and err.value.prompt_version == "watch_v1"
    assert "empty" in str(err.value)


def test_endless_text_fails_with_raw_text_kept(impact_clip):
    endless = '{"caption": "' + "tap " * 400
    chat = ScriptedChat([(endless, True)])
    with pytest.raises(ReplyInvalid, match="cut off") as err:
        _watch(chat, impact_clip, max_attempts=2)
    assert err.value.raw_output.count(endless) == 2  # every reply kept verbatim
    assert [a["truncated"] for a in err.value.attempts] == [True, True]
    # the echo of a bad reply is bounded, so retries do not grow the prompt without limit
    assert len(chat.calls[1]["messages"][-2]["content"]) < 1600


def test_obvious_faults_repaired_and_recorded(impact_clip):
    obj = json.loads(VALID_PLAN_REPLY)
    obj["events"][0].update(end_s=99.0, pan=-3.0)
    obj["events"][1].pop("id")
    obj["events"][1].pop("end_s")
    obj["plan_id"] = "mine"
    res = _watch(ScriptedChat([json.dumps(obj)]), impact_clip)
    e1, e2 = res.plan.events
    assert e1.end_s == pytest.approx(res.plan.duration_s) and e1.pan == -1.0
    assert e2.id == "e2" and e2.end_s == pytest.approx(2.1)
    assert res.plan.plan_id != "mine"
    assert len(res.meta["repairs"]) >= 4


def test_over_budget_plan_reasked_then_accepted_with_note(impact_clip):
    long = json.loads(VALID_PLAN_REPLY)
    long["semantic"] = " ".join(["cardboard box on hardwood floor"] * 20)
    chat = ScriptedChat([json.dumps(long)])
    res = _watch(chat, impact_clip, max_attempts=2)
    assert "budget" in chat.calls[1]["messages"][-1]["content"]
    assert not res.plan.cot_budget_report()["fits"]
    assert any("over budget" in r for r in res.meta["repairs"])


# ---- prompts and frames --------------------------------------------------------------------------------
def test_prompts_are_versioned_files():
    names = available()
    for n in ("watch", "refine", "judge", "judge_av", "reask"):
        assert names[n] and names[n][0] == 1
    p = load_prompt("watch", "v1")
    assert p.id == "watch_v1" and "<!--" not in p.user
    with pytest.raises(PromptError, match="not found"):
        load_prompt("watch", 99)
    with pytest.raises(PromptError, match="no value"):
        p.render(duration_s="1")


def test_custom_prompt_dir_newest_version(tmp_path):
    (tmp_path / "watch_v1.md").write_text("[user]\nold $x")
    (tmp_path / "watch_v2.md").write_text("<!-- c -->\n[system]\nsys\n[user]\nnew $x")
    p = load_prompt("watch", directory=tmp_path)
    assert p.id == "watch_v2" and p.render(x="1") == ("sys", "new 1")


def test_keyframes_timestamps_and_cap(impact_clip):
    path, info = impact_clip
    kf = sample_keyframes(path, info, fps=4.0, max_frames=6, max_side=64)
    assert len(kf) == 6 and kf.fps == pytest.approx(2.0)  # lowered from 4 fps to respect max_frames
    assert kf.times == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert max(kf.frames[0].shape[:2]) <= 64
    thin = subsample(kf, 3)
    assert len(thin) == 3 and thin.times[0] == 0.0 and thin.times[-1] == 2.5


# ---- refiner rules ---------------------------------------------------------------------------------------
def _critique(**scores):
    return Critique(scores=scores, findings=[Finding(target="temporal", problem="hits are 0.2 s late")],
                    scorers=[ScorerInfo(name="m", version="1", dimension="temporal", raw=0.3)])


def test_weakest_sections_order_and_limit():
    crit = _critique(semantic=0.9, temporal=0.2, aesthetic=0.5, spatial=0.45)
    assert weakest_sections(crit, ["aesthetic", "temporal", "spatial"], THRESHOLDS, 2) == \
        ["temporal", "aesthetic"]
    # nothing failing: the single lowest-margin section
    crit = _critique(semantic=0.9, temporal=0.95, aesthetic=0.7, spatial=0.9)
    assert weakest_sections(crit, [], THRESHOLDS, 2) == ["aesthetic"]


def test_refine_keeps_other_sections_verbatim_whatever_the_model_says(impact_clip):
    plan = sample_plan()
    reply = {"caption": "new caption", "semantic": "CHANGED", "temporal": "hits at 0.8 s and 1.8 s",
             "aesthetic": "CHANGED", "spatial": "CHANGED", "negatives": ["speech", "music", "wind noise"],
             "events": [{"id": "e1", "label": "box hits floor", "kind": "impact", "start_s": 0.8, "end_s": 0.9},
                        {"id": "e3", "label": "box slides", "kind": "continuous", "start_s": 2.2, "end_s": 2.8}],
             "changes": ["moved the hits earlier"]}
    ref = LLMRefiner(ScriptedChat([json.dumps(reply)]), "scripted", THRESHOLDS, max_side=96)
    res = ref.refine(plan, _critique(semantic=0.9, temporal=0.3, aesthetic=0.8, spatial=0.9), ["temporal"],
                     round_index=2, seed=7, video=impact_clip[0], info=impact_clip[1])
    new = res.plan
    assert new.temporal == "hits at 0.8 s and 1.8 s"
    assert (new.semantic, new.aesthetic, new.spatial, new.caption) == \
        (plan.semantic, plan.aesthetic, plan.spatial, plan.caption)
    assert new.negatives == ["speech", "music", "wind noise"]
    assert [e.id for e in new.events] == ["e1", "e3"]
    assert new.provenance.author == "refiner" and new.provenance.parent_plan_id == plan.plan_id
    assert new.provenance.round == 2 and new.provenance.prompt_version == "refine_v1"
    assert res.seed == 7 and res.prompt_version == "refine_v1"
    text = "\n".join(res.changes)
    for needle in ("rewrote temporal", "moved event e1", "added event e3", "dropped event e2",
                   "kept semantic verbatim", "model: moved the hits earlier"):
        assert needle in text
    assert new.cot_budget_report()["fits"]


def test_refine_budget_reask_then_trim_on_last_attempt():
    plan = sample_plan()
    too_long = {"temporal": " ".join(["the box drops at one second then again at two seconds"] * 8)}
    chat = ScriptedChat([json.dumps(too_long)])
    ref = LLMRefiner(chat, "scripted", THRESHOLDS, max_attempts=2)
    res = ref.refine(plan, _critique(temporal=0.2), ["temporal"], round_index=1, seed=0)
    assert "budget" in chat.calls[1]["messages"][-1]["content"]  # asked to shorten first
    assert res.plan.cot_token_estimate() <= COT_TOKEN_BUDGET
    assert res.plan.temporal.startswith("the box drops at one second")
    assert any("trimmed" in c for c in res.changes)


def test_refine_missing_section_fails_after_retries():
    chat = ScriptedChat(['{"semantic": "only this"}'])
    with pytest.raises(ReplyInvalid, match="missing field"):
        LLMRefiner(chat, "scripted", THRESHOLDS, max_attempts=2).refine(
            sample_plan(), _critique(temporal=0.1), ["temporal"], round_index=1, seed=0)


# ---- judge rules -----------------------------------------------------------------------------------------
JUDGE_REPLY = json.dumps({"consistency": 0.6, "findings": [
    {"target": "e2", "dimension": "temporal", "problem": "the second hit is at 2.0 s on screen, planned late",
     "suggestion": "move it 0.1 s earlier", "hint": {"action": "shift", "event": "e2", "by_s": -0.1}},
    {"target": "events", "problem": "the box scrapes the floor at 2.5 s; no event for it",
     "hint": {"action": "add", "label": "scrape", "kind": "continuous", "start_s": 2.5, "end_s": 2.9}}]})


def test_judge_merges_metric_scores_and_findings(impact_clip):
    metric = _critique(semantic=0.7, temporal=0.3, aesthetic=0.8, spatial=None)
    chat = ScriptedChat([JUDGE_REPLY])
    judge = LLMJudge(chat, "scripted", THRESHOLDS, max_side=96)
    out = judge.judge(sample_plan(), impact_clip[0], impact_clip[1], metric)
    assert out.scores == metric.scores and out.overall == pytest.approx(metric.overall)
    assert [f.target for f in out.findings] == ["temporal", "e2", "events"]
    assert out.findings[1].hint["by_s"] == -0.1 and out.findings[2].dimension is None
    assert [s.name for s in out.scorers] == ["m", "scripted-judge"] and out.scorers[1].raw == 0.6
    prompt = chat.calls[0]["messages"][1]["content"][-1]["text"]
    assert "temporal: 0.30 (pass ≥ 0.60, FAILING)" in prompt and "hits are 0.2 s late" in prompt


def test_judge_without_metric_has_no_scores(impact_clip):
    out = LLMJudge(ScriptedChat([JUDGE_REPLY]), "scripted", THRESHOLDS, max_side=96).judge(
        sample_plan(), impact_clip[0], impact_clip[1], None)
    assert all(v is None for v in out.scores.values()) and out.overall is None and len(out.findings) == 2


def test_judge_rejects_unknown_targets_then_accepts():
    bad = json.dumps({"findings": [{"target": "e9", "problem": "x"}]})
    chat = ScriptedChat([bad, '{"findings": []}'])
    out = LLMJudge(chat, "scripted", THRESHOLDS).judge(sample_plan(), None, None, None)
    assert "'e9' is not one of" in chat.calls[1]["messages"][-1]["content"]
    assert out.findings == []


def test_critique_runs_metric_critic_then_judge_and_survives_judge_failure():
    metric = _critique(semantic=0.7, temporal=0.3, aesthetic=0.8, spatial=0.6)

    class FixedCritic:
        name = "fixed"

        def critique(self, plan, audio, video, info):
            return metric

    ok = LLMJudge(ScriptedChat([JUDGE_REPLY]), "scripted", THRESHOLDS, metric_critic=lambda: FixedCritic())
    out = ok.critique(sample_plan(), "a.wav", None, None)
    assert out.scores == metric.scores and len(out.findings) == 3
    bad = LLMJudge(ScriptedChat(["no idea"]), "scripted", THRESHOLDS, max_attempts=1,
                   metric_critic=lambda: FixedCritic())
    out = bad.critique(sample_plan(), "a.wav", None, None)
    assert out.scores == metric.scores and len(out.findings) == 1
    assert out.scorers[-1].raw is None and out.scorers[-1].note.startswith("failed:")


def test_critique_without_metric_critic_module_degrades(caplog):
    def missing():
        raise ImportError("No module named 'reasoning.offline.critic'")

    judge = LLMJudge(ScriptedChat(['{"findings": []}']), "scripted", THRESHOLDS, metric_critic=missing)
    out = judge.critique(sample_plan(), "a.wav", None, None)
    assert out.overall is None and "metric critic unavailable" in caplog.text
