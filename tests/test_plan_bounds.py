"""Plans are bounded at every door (issue #11, item 2): a user's file, the studio editor, a model's reply, a stored
row. Every door raises one error type, ``PlanInvalid`` (a ValueError), with a one-line message."""

from __future__ import annotations

import json
import time

import pytest

from contract.plan import (DURATION_TOLERANCE_S, MAX_EVENTS, MAX_JSON_DEPTH, MAX_PLAN_BYTES, MAX_SECTION_CHARS,
                           MAX_TEXT_DURATION_S, Event, Plan, PlanInvalid, Provenance)
from reasoning.llm_common.parse import MAX_REPLY_CHARS, OutputProblem, ReplyInvalid, loads_lenient, parse_json_object
from reasoning.llm_common.planjson import plan_from_reply
from tests.qwen_fixtures import ScriptedChat, VALID_PLAN_REPLY, impact_clip  # noqa: F401


def good(**kw) -> dict:
    data = {"caption": "thuds", "semantic": "wooden thuds", "duration_s": 5.0,
            "events": [{"id": "e1", "label": "thud", "start_s": 1.0, "end_s": 1.1}]}
    data.update(kw)
    return data


def one_line_invalid(text, door=Plan.from_json) -> str:
    with pytest.raises(PlanInvalid) as err:
        door(text)
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in msg and 0 < len(msg) <= 400
    return msg


@pytest.mark.parametrize("text, needle", [
    ("[]", "JSON object, got an array"),
    ("null", "got null"),
    ("42", "got a number"),
    ('"plan"', "got a string"),
    (json.dumps(good(schema_version=None)), "schema_version"),
    (json.dumps(good(schema_version=True)), "schema_version"),
    ('{"duration_s": Infinity}', "Infinity"),
    ('{"duration_s": NaN}', "NaN"),
    ('{"duration_s": 1e400}', "out of range"),
    ('{"duration_s": ' + "9" * 5000 + "}", "out of range"),
    (json.dumps(good(duration_s=True)), "duration_s"),
    (json.dumps(good(events=[{"id": "e1", "label": "x", "start_s": True, "end_s": 1.0}])), "start_s"),
    (json.dumps(good(duration_s=1e9)), "duration_s"),
    (json.dumps(good(semantic="x" * (MAX_SECTION_CHARS + 1))), "semantic"),
    (json.dumps(good(negatives=["n"] * 100)), "negatives"),
    (json.dumps(good(plan_id="p" * 500)), "plan_id"),
    (json.dumps(good(provenance={"author": "human", "render_options": {"x": "y" * 40_000}})), "provenance"),
    ("{" * 5 + "}" * 5, "invalid JSON"),
    ("not json at all", "invalid JSON"),
    ("", "invalid JSON"),
])
def test_malformed_plans_raise_plan_invalid_in_one_line(text, needle):
    assert needle in one_line_invalid(text)


def test_deep_nesting_is_refused_before_pydantic_without_recursion_error():
    for text in ("[" * 200_000, '{"a":' * 100_000 + "1" + "}" * 100_000,
                 json.dumps(good(provenance={"author": "human", "x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}))):
        assert "nested" in one_line_invalid(text)
    deep = good(provenance={"x": json.loads("[" * (MAX_JSON_DEPTH + 2) + "]" * (MAX_JSON_DEPTH + 2))})
    assert "nested" in one_line_invalid(deep)  # a dict handed in is checked too


def test_size_caps_refuse_huge_input_quickly():
    t0 = time.perf_counter()
    big = json.dumps(good(semantic="x" * (MAX_PLAN_BYTES + 10)))
    assert "limit" in one_line_invalid(big)
    many = json.dumps(good(events=[{"label": "x", "start_s": 0.1, "end_s": 0.2}] * 100_000))
    assert "limit" in one_line_invalid(many)
    under_cap = json.dumps(good(events=[{}] * 60_000))  # small enough in bytes: counted before item validation
    assert f"over the limit of {MAX_EVENTS}" in one_line_invalid(under_cap)
    assert time.perf_counter() - t0 < 5.0


def test_a_long_video_plan_at_a_busy_density_passes_every_door(tmp_path):
    """A 30-minute clip planned at ~1.3 events/s (what the offline watcher wrote for a bench clip) is a valid plan,
    from JSON text and as an exported file (before: refused at 2000 events, so long dubs failed in the watcher)."""
    n, duration = 2400, 1800.0
    events = [{"id": f"e{i}", "label": "soft contact", "kind": "impact", "start_s": i * 0.75, "end_s": i * 0.75 + 0.1,
               "gain_db": -12.0, "pan": 0.25, "confidence": 0.55} for i in range(n)]
    text = json.dumps(good(duration_s=duration, events=events), indent=2)
    assert len(Plan.from_json(text).events) == n
    (tmp_path / "plan.json").write_text(text)
    assert len(Plan.from_file(tmp_path / "plan.json").events) == n


def test_utf8_bom_is_accepted_as_text_bytes_and_file(tmp_path):
    text = json.dumps(good())
    assert Plan.from_json("\ufeff" + text).caption == "thuds"
    assert Plan.from_json(b"\xef\xbb\xbf" + text.encode()).caption == "thuds"
    path = tmp_path / "plan.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert Plan.from_file(path).caption == "thuds"
    assert Plan.parse_user(path, video_duration_s=5.0).caption == "thuds"


def test_from_file_reads_at_most_the_cap_and_names_the_file(tmp_path):
    path = tmp_path / "huge.json"
    path.write_bytes(b'{"caption": "' + b"x" * (MAX_PLAN_BYTES * 3) + b'"}')
    msg = one_line_invalid(path, Plan.from_file)
    assert str(path) in msg and "limit" in msg
    assert "cannot read" in one_line_invalid(tmp_path / "missing.json", Plan.from_file)
    assert "cannot read" in one_line_invalid(tmp_path, Plan.from_file)  # a folder
    (tmp_path / "latin1.json").write_bytes(b'{"caption": "caf\xe9", "duration_s": 1}')
    assert "UTF-8" in one_line_invalid(tmp_path / "latin1.json", Plan.from_file)


def test_duration_must_fit_the_video_or_the_text_cap():
    plan = Plan.from_json(json.dumps(good(duration_s=9.8)))
    assert plan.check_for_video(10.0) is plan
    assert Plan.parse_user(json.dumps(good(duration_s=9.8)), video_duration_s=10.0 + DURATION_TOLERANCE_S - 0.25)
    with pytest.raises(PlanInvalid, match=r"the plan lasts 9.8 s but the video 12.00 s"):
        plan.check_for_video(12.0)
    with pytest.raises(PlanInvalid, match="not a positive number"):
        plan.check_for_video(float("nan"))
    long = json.dumps(good(duration_s=MAX_TEXT_DURATION_S + 1))
    assert Plan.from_json(long).duration_s == MAX_TEXT_DURATION_S + 1  # a fine plan for a long video...
    with pytest.raises(PlanInvalid, match="text-to-audio"):
        Plan.parse_user(long)  # ...but not for text-to-audio


def test_accepted_plans_round_trip_exactly():
    plan = Plan.parse_user(json.dumps(good(negatives=["music"], provenance={"author": "human", "round": 2,
                                                                            "render_options": {"dc_block": True}})),
                           video_duration_s=5.0)
    assert Plan.from_json(plan.to_json()) == plan == Plan.from_stored(plan.to_json())
    assert json.loads(plan.to_json())["duration_s"] == 5.0


def test_a_stored_row_over_the_new_bounds_is_still_readable_for_display():
    """Rows written before the bounds existed: ``from_stored`` reads them; ``from_json`` (outside input) refuses."""
    old = Plan.model_validate(good(semantic="s" * 50_000, events=[
        {"id": f"e{i}", "label": "tick", "start_s": 0.001 * i, "end_s": 0.001 * i} for i in range(3000)]),
        context={"stored": True}).to_json()
    shown = Plan.from_stored(old)
    assert len(shown.semantic) == 50_000 and len(shown.events) == 3000
    with pytest.raises(PlanInvalid):
        Plan.from_json(old)
    with pytest.raises(PlanInvalid):  # types still hold for stored rows: a null length is not readable
        Plan.from_stored('{"duration_s": null}')


def test_plan_constructed_in_code_is_bounded_too():
    with pytest.raises(ValueError):
        Plan(duration_s=float("inf"))
    with pytest.raises(ValueError):
        Event(label="x", start_s=True, end_s=1.0)
    with pytest.raises(ValueError):
        Plan(duration_s=5.0).derive("refiner", semantic="x" * (MAX_SECTION_CHARS + 1))


# ---- model replies ---------------------------------------------------------------------------------------------
def test_reply_json_refuses_nan_deep_nesting_and_huge_numbers():
    for text, needle in [('{"a": NaN}', "NaN"), ('{"a": ' + "[" * 500 + "]" * 500 + "}", "nested"),
                         ('{"a": 1e999}', "out of range"), ("{'a': 1e999}", "invalid JSON")]:
        with pytest.raises(OutputProblem, match=needle):
            loads_lenient(text)
    with pytest.raises(OutputProblem, match="nested"):  # 200 000 deep and balanced: no RecursionError escapes
        parse_json_object('{"a":' + "[" * 200_000 + "]" * 200_000 + "}")


def test_reply_plan_fields_are_bounded():
    obj = json.loads(VALID_PLAN_REPLY)
    with pytest.raises(ValueError, match="semantic"):
        plan_from_reply({**obj, "semantic": "x" * 3000}, 3.0, Provenance(author="watcher"), True)
    with pytest.raises(OutputProblem, match="events"):
        plan_from_reply({**obj, "events": [{"label": "x", "start_s": 0.1}] * (MAX_EVENTS + 1)}, 3.0,
                        Provenance(author="watcher"), True)
    with pytest.raises(ValueError, match="start_s"):
        plan_from_reply({**obj, "events": [{"label": "x", "start_s": True, "end_s": 0.5}]}, 3.0,
                        Provenance(author="watcher"), True)
    plan, _ = plan_from_reply({**obj, "events": [{"label": "12", "start_s": "0.5", "end_s": 1}]}, 3.0,
                              Provenance(author="watcher"), True)
    assert plan.events[0].start_s == 0.5 and plan.events[0].label == "12"  # numeric strings as models write them


def test_a_huge_reply_is_refused_before_parsing_and_kept_capped(impact_clip):
    from reasoning.llm_common.watch import LLMWatcher

    huge = '{"caption": "' + "x" * (MAX_REPLY_CHARS * 5) + '"}'
    chat = ScriptedChat([huge, huge])
    path, info = impact_clip
    with pytest.raises(ReplyInvalid, match="over the 200000 limit") as err:
        LLMWatcher(chat, "scripted", fps=2.0, max_frames=4, max_side=64, max_new_tokens=64,
                   max_attempts=2).watch(path, info)
    assert "[cut:" in err.value.raw_output and len(err.value.raw_output) < 2 * 70_000
    echoed = chat.calls[1]["messages"][-2]["content"]
    assert len(echoed) < 2000  # the re-ask echoes only the start of the bad reply
