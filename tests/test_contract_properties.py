"""Property-based contract suite (hypothesis, derandomized: the same examples every run).

1. Plan JSON of any shape (random JSON values, plan-shaped objects with odd types, NaN/Infinity/1e400 literals,
   deep nesting, a BOM, cut-off text, bytes that are not UTF-8): the plan doors raise only ``PlanInvalid``, and
   whatever they accept round-trips exactly through the store.
2. The CLI (``agent.cli.main(argv) -> int`` only) on ``plan``/``show``/``runs``/``regenerate --plan FILE`` with random
   ids, round references and plan files: exit 0 or 2, on failure exactly one stderr line and no traceback, and the
   runs stored before are unchanged.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from contract.plan import SECTIONS, EventKind, Plan, PlanInvalid
from store.db import Store
from tests.browser.seed import fake_backends_module  # noqa: F401  (module-scoped fake backends)

settings.register_profile("foleyloop-contract", derandomize=True, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = settings.get_profile("foleyloop-contract")

# ---- strategies ------------------------------------------------------------------------------------------------
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
NUMBERS = st.one_of(st.floats(min_value=-5, max_value=40), st.integers(min_value=-3, max_value=40), st.booleans(),
                    st.sampled_from([math.nan, math.inf, -math.inf, 1e300, 10 ** 40]), st.text(max_size=4),
                    st.none())
TEXTS = st.one_of(st.text(max_size=40), st.integers(), st.none(), st.lists(st.text(max_size=5), max_size=2))
EVENTS = st.fixed_dictionaries({}, optional={
    "id": TEXTS, "label": st.one_of(st.text(min_size=1, max_size=20), TEXTS),
    "kind": st.one_of(st.sampled_from([k.value for k in EventKind]), TEXTS), "start_s": NUMBERS, "end_s": NUMBERS,
    "gain_db": NUMBERS, "pan": NUMBERS, "confidence": NUMBERS, "extra": JSON_VALUES})
PROVENANCE = st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={
    "author": st.sampled_from(["watcher", "human", "refiner", "unknown", "robot"]), "backend": TEXTS,
    "round": NUMBERS, "parent_plan_id": TEXTS, "render_options": JSON_VALUES}))
PLANS = st.fixed_dictionaries({"duration_s": NUMBERS}, optional={
    "schema_version": st.one_of(st.sampled_from([1, 0, 2, None, True, "1"]), st.integers()),
    "plan_id": TEXTS, "caption": TEXTS, **{s: TEXTS for s in SECTIONS},
    "events": st.one_of(st.lists(EVENTS, max_size=4), JSON_VALUES), "negatives": st.one_of(st.lists(TEXTS, max_size=3),
                                                                                          JSON_VALUES),
    "provenance": PROVENANCE, "surprise": JSON_VALUES})


GOOD_EVENTS = st.builds(
    lambda ev, start, length, extra: {**ev, "start_s": start, "end_s": start + length, **extra},
    st.fixed_dictionaries({"label": st.text(min_size=1, max_size=30)}),
    st.floats(0, 10), st.floats(0, 3),
    st.fixed_dictionaries({}, optional={"kind": st.sampled_from([k.value for k in EventKind]),
                                        "gain_db": st.floats(-70, 20), "pan": st.floats(-1.2, 1.2),
                                        "confidence": st.floats(0, 1)}))


@st.composite
def near_valid_plans(draw) -> dict:
    """Mostly-valid plans (so that acceptance is exercised too), sometimes with one field swapped for junk."""
    plan = {"caption": draw(st.text(max_size=80)),
            "duration_s": draw(st.one_of(st.floats(0.05, 12), st.floats(2.5, 3.5), st.floats(0.05, 4000))),
            **{s: draw(st.text(max_size=60)) for s in draw(st.sets(st.sampled_from(SECTIONS)))},
            "events": draw(st.lists(GOOD_EVENTS, max_size=5)), "negatives": draw(st.lists(st.text(max_size=20),
                                                                                          max_size=4))}
    if draw(st.booleans()):
        plan[draw(st.sampled_from([*plan, "provenance", "plan_id", "schema_version"]))] = draw(JSON_VALUES)
    return plan


@st.composite
def plan_texts(draw) -> str | bytes:
    """JSON text of a plan-shaped object or any JSON value, sometimes mangled the way files get mangled."""
    value = draw(st.one_of(near_valid_plans(), near_valid_plans(), PLANS, JSON_VALUES))
    text = json.dumps(value, allow_nan=True)  # NaN / Infinity / -Infinity literals included
    how = draw(st.sampled_from(["as is", "as is", "bom", "nest", "cut", "huge number", "bytes", "not utf-8"]))
    if how == "bom":
        return "\ufeff" + text
    if how == "nest":
        depth = draw(st.sampled_from([40, 1000, 100_000]))
        return "[" * depth + text + "]" * depth
    if how == "cut":
        return text[:draw(st.integers(0, len(text)))]
    if how == "huge number":
        return text.replace("1", "1e400", 1) if "1" in text else "1e400"
    if how == "bytes":
        return text.encode()
    if how == "not utf-8":
        return text.encode() + b"\xff\xfe"
    return text


def valid_plan(duration_s: float) -> dict:
    return {"caption": "thuds", "semantic": "wooden thuds", "duration_s": duration_s,
            "events": [{"id": "e1", "label": "thud", "start_s": 0.5, "end_s": 0.6}]}


@pytest.fixture(scope="module")
def round_trip_store(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("props") / "fl.db")
    store.create_run(id="props")
    return store


@settings(PROFILE, max_examples=400)
@given(text=plan_texts())
def test_plan_doors_raise_only_plan_invalid_and_accepted_plans_round_trip(text, round_trip_store):
    doors = {"from_json": Plan.from_json, "from_stored": Plan.from_stored,
             "parse_user": lambda t: Plan.parse_user(t, video_duration_s=3.0)}
    for name, door in doors.items():
        try:
            plan = door(text)
        except PlanInvalid as exc:
            assert isinstance(exc, ValueError) and "\n" not in str(exc) and str(exc)
            event(f"{name}: refused")
            continue
        event(f"{name}: accepted")
        stored = round_trip_store.add_round(run_id="props", plan_json=plan.to_json())
        back = round_trip_store.get_round(stored.id)
        assert back.plan_json == plan.to_json() and Plan.from_stored(back.plan_json) == plan
        if name != "from_stored":  # the stored door skips the size bounds; the others accept only bounded plans
            assert Plan.from_json(back.plan_json) == plan and door(back.plan_json) == plan
        assert all(math.isfinite(v) for e in plan.events for v in (e.start_s, e.end_s, e.gain_db, e.pan))
        assert math.isfinite(plan.duration_s) and not isinstance(plan.duration_s, bool)


@settings(PROFILE, max_examples=60)
@given(obj=PLANS)
def test_plan_shaped_dicts_are_validated_the_same_way(obj):
    try:
        plan = Plan.from_json(obj)
    except PlanInvalid:
        return
    assert Plan.from_json(plan.to_json()) == plan


# ---- the CLI --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_db(tmp_path_factory, fake_backends_module):
    from agent import runs
    from tests.browser import seed

    tmp = tmp_path_factory.mktemp("cli-props")
    store = Store(tmp / "fl.db")
    clip = seed.make_clip(tmp)
    ids = [runs.dub(store, clip, seed.fake_cfg(rounds=2), out=tmp / f"out{i}.mp4")[0] for i in range(2)]
    return store, ids, tmp


def snapshot(db: Path) -> dict:
    con = sqlite3.connect(db)
    try:
        return {"run": {r[0]: r for r in con.execute("SELECT * FROM run")},
                "round": {r[0]: r for r in con.execute("SELECT * FROM round")}}
    finally:
        con.close()


ARG_TEXT = st.text(max_size=30).map(lambda s: s.replace("\x00", "")).filter(  # argv holds no NUL
    lambda s: not s.startswith("-"))  # an option-like word is click's usage error, which prints usage by design
ARGV_BYTES = st.binary(min_size=1, max_size=12).map(lambda b: b.decode("utf-8", "surrogateescape")).filter(
    lambda s: not s.startswith("-") and "\x00" not in s)  # what Python makes of undecodable bytes in argv
ROUND_REFS = st.one_of(st.sampled_from(["0", "1", "0.0", "0.1", "1.0", "8.0", "-0", "0.", ".0", "1e5", "٣",
                                        "9" * 5000, "x.y", ""]), ARG_TEXT)
_COUNTER = itertools.count()


@settings(PROFILE, max_examples=80)
@given(data=st.data())
def test_cli_exits_0_or_2_with_one_line_and_keeps_stored_runs(data, cli_db):
    from agent.cli import main

    store, ids, tmp = cli_db
    run_id = data.draw(st.one_of(
        st.sampled_from(ids), st.sampled_from([i[:4] for i in ids] + ["last", "%", "_", "", "''", "'", "*", "?"]),
        st.just("a" * 100_000), ARG_TEXT, ARGV_BYTES), label="run id")
    command = data.draw(st.sampled_from(["plan", "show", "show --json", "runs", "regenerate", "regenerate"]))
    if command == "plan":
        argv = ["plan", run_id, "--round", data.draw(ROUND_REFS, label="round")]
    elif command.startswith("show"):
        argv = ["show", run_id] + command.split()[1:]
    elif command == "runs":
        argv = ["runs", "--limit", str(data.draw(st.integers(-5, 50))), "--status",
                data.draw(st.one_of(st.sampled_from(["done", "failed", "%"]), ARG_TEXT, ARGV_BYTES))]
    else:
        likely = data.draw(st.integers(0, 2), label="a real run, round and a near-valid plan") == 0
        if likely:
            run_id = data.draw(st.sampled_from(ids))
        content = data.draw(st.builds(lambda d, cap: json.dumps({**valid_plan(d), "caption": cap}),
                                      st.floats(min_value=0.1, max_value=6.0), st.text(max_size=30))
                            if likely else plan_texts(), label="plan file")
        plan_file = tmp / f"plan{next(_COUNTER)}.json"
        plan_file.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        ref = data.draw(st.sampled_from(["0", "0.1", "1"]) if likely else ROUND_REFS, label="round")
        argv = ["regenerate", run_id, "--round", ref, "--plan", str(plan_file),
                "--out", str(tmp / f"regen{next(_COUNTER)}.mp4"), "--rounds", "1"]

    before = snapshot(store.db_path)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--db", str(store.db_path), *argv])
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    event(f"{argv[0]} → exit {code}")
    assert code in (0, 2), (argv[:4], code, err.getvalue()[-2000:])
    assert "Traceback" not in err.getvalue()
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("error:"), (argv[:4], lines[:5])
    elif argv[0] != "regenerate":
        assert lines == [], (argv[:4], lines[:5])  # (a regenerate that runs prints one line per node)
    after = snapshot(store.db_path)
    assert {k: after["round"][k] for k in before["round"]} == before["round"]  # no stored round changed
    changed = [k for k in before["run"] if after["run"][k] != before["run"][k]]
    assert changed == [] or (code == 0 and argv[0] == "regenerate" and len(changed) == 1), changed
