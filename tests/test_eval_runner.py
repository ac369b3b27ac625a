"""`foleyloop eval` end to end on tiny synthetic corpora: corpus forms and bad input, the report and the database
records, resume after a failed clip, the comparison of two evaluations, and the model metrics with tiny models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent import backends
from agent.cli import main
from evaluation import manifest as M
from evaluation import content, measures, metrics
from store import evals as E
from store.db import Store
from store.media import probe, read_audio
from store.synthetic import make_impact_clip
from tests.helpers import FAKE, ROOT
from tests.test_eval_models import tiny_aes_dir, tiny_clap_dir  # noqa: F401  (module fixtures)

FAKE_EVAL = ["--rounds", "2", *FAKE, "--no-progress"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No real weights (empty HF cache) and a private default store."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("FOLEYLOOP_HOME", str(tmp_path / "home"))
    yield
    backends.clear_cache()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two bouncing-ball clips with their own soundtrack (knocks at the impacts)."""
    d = tmp_path_factory.mktemp("corpus")
    make_impact_clip(d / "a.mp4", duration_s=3.0, impacts=(0.6, 1.5, 2.4), audio=True, size=(96, 64))
    make_impact_clip(d / "b.mp4", duration_s=3.0, impacts=(0.9, 2.0), audio=True, size=(96, 64), seed=1)
    return d


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    return err


# ---- corpus forms -----------------------------------------------------------------------------------------------

def test_corpus_forms(corpus, tmp_path):
    c = M.load(corpus)
    assert c.kind == "folder" and [x.name for x in c.clips] == ["a", "b"]
    assert all(x.reference == M.OWN and x.group == "ungrouped" for x in c.clips)
    ref = tmp_path / "ref.wav"
    ref.write_bytes(b"RIFF")
    (tmp_path / "m.json").write_text(json.dumps([
        {"path": str(corpus / "a.mp4"), "reference": "ref.wav", "content": "Foley", "notes": "Sound: knocks",
         "labels": "knock; wood"},
        {"video": str(corpus / "b.mp4"), "name": "bee", "reference": None, "group": "music", "labels": ["x"]}]))
    c = M.load(tmp_path / "m.json")
    a, b = c.clips
    assert (a.reference, a.group, a.labels, a.notes) == (ref.resolve(), "foley", ("knock", "wood"), "Sound: knocks")
    assert (b.name, b.reference, b.group) == ("bee", M.NONE, "music")
    (tmp_path / "m.csv").write_text(f"path,reference,group,notes\n{corpus / 'a.mp4'},own,speech,hi\n")
    c = M.load(tmp_path / "m.csv")
    assert c.kind == "csv" and c.clips[0].reference == M.OWN and c.clips[0].group == "speech"
    builder = {"version": 1, "clips": [{"name": "x", "video": str(corpus / "a.mp4"), "reference": "ref.wav",
                                        "video_sha256": "0" * 64, "reference_sha256": "1" * 64, "content": "mixed",
                                        "note": "Screen: a ball. Sound: knocks on wood."}]}
    (tmp_path / "manifest.json").write_text(json.dumps(builder))
    c = M.load(tmp_path)  # a folder with the builder's manifest.json: the manifest wins
    assert c.kind == "corpus-manifest" and c.clips[0].video_sha256 == "0" * 64
    assert M.sound_caption(c.clips[0].notes) == "knocks on wood."
    assert M.load(tmp_path / "manifest.json").digest() == c.digest()


@pytest.mark.parametrize("case", ["missing", "empty", "json", "csv", "no-video", "dup", "no-ref", "shape"])
def test_bad_corpus_exits_2_with_one_line_before_any_work(case, corpus, tmp_path, capsys):
    target = tmp_path / "c"
    target.mkdir()
    if case == "missing":
        target = tmp_path / "nope"
    elif case == "json":
        target = target / "m.json"
        target.write_text('{"clips": [')
    elif case == "csv":
        target = target / "m.csv"
        target.write_text("file,ref\nx.mp4,own\n")
    elif case == "no-video":
        target = target / "m.json"
        target.write_text(json.dumps([{"video": "gone.mp4"}]))
    elif case == "dup":
        target = target / "m.json"
        target.write_text(json.dumps([{"video": str(corpus / "a.mp4")}, {"video": str(corpus / "a.mp4")}]))
    elif case == "no-ref":
        target = target / "m.json"
        target.write_text(json.dumps([{"video": str(corpus / "a.mp4"), "reference": "gone.wav"}]))
    elif case == "shape":
        target = target / "m.json"
        target.write_text(json.dumps({"videos": []}))
    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "eval", str(target), *FAKE_EVAL]) == 2
    err = _one_line_error(capsys)
    want = {"missing": "no such corpus", "empty": "no video files", "json": "malformed JSON manifest",
            "csv": "needs a 'path'", "no-video": "gone.mp4 does not exist", "dup": "two clips are named 'a'",
            "no-ref": "reference", "shape": "a list of clips"}[case]
    assert want in err
    assert not db.exists() or E.list_evals(Store(db)) == []


def test_out_dir_that_is_not_this_evals_is_refused(corpus, tmp_path, fake_backends, capsys):
    from agent.evals import MARKER, check_out_dir
    from contract.errors import UserError

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "eval", str(corpus), "--out-dir", str(out), *FAKE_EVAL]) == 2
    assert "is not empty" in _one_line_error(capsys) and E.list_evals(Store(db)) == []
    assert (out / "notes.txt").read_text() == "mine"
    check_out_dir(out, "ev1", force=True)  # --force: allowed
    (out / MARKER).write_text("ev1\n")
    check_out_dir(out, "ev1", force=False)  # its own folder: allowed
    with pytest.raises(UserError, match="evaluation ev1's report"):
        check_out_dir(out, "ev2", force=False)


def test_unavailable_backend_is_refused_before_any_work(corpus, tmp_path, capsys):
    db = tmp_path / "fl.db"
    args = ["--db", str(db), "eval", str(corpus), "--rounds", "1", "--critic", "offline+clap", "--no-progress"]
    assert main(args) == 2
    err = _one_line_error(capsys)
    assert "critic clap: unavailable: CLAP laion/larger_clap_general not found" in err
    assert E.list_evals(Store(db)) == [] and Store(db).list_runs() == []


# ---- end to end ---------------------------------------------------------------------------------------------------

def test_eval_end_to_end_on_two_clips(corpus, tmp_path, fake_backends, capsys):
    """The CI check: two clips, fake backends, 2 rounds, report + plots + DB rows, in well under 60 s."""
    db, out = tmp_path / "fl.db", tmp_path / "report"
    t = time.perf_counter()
    assert main(["--db", str(db), "eval", str(corpus), "--out-dir", str(out), *FAKE_EVAL]) == 0
    assert time.perf_counter() - t < 60
    out_text = capsys.readouterr().out
    assert "2/2 clips scored" in out_text
    for name in ("report.json", "report.md", "metrics_single_vs_loop.png", "critic_rounds.png"):
        assert (out / name).is_file(), name
    assert (out / "metrics_single_vs_loop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    store = Store(db)
    (ev,) = E.list_evals(store)
    assert ev.status == "done" and ev.corpus_hash == M.load(corpus).digest() and ev.code_version
    assert ev.config()["run"]["critic"] == "fake" and ev.config()["run"]["rounds"] == 2
    rows = E.clips(store, ev.id)
    assert [r.status for r in rows] == ["scored", "scored"] and all(r.error is None for r in rows)
    for row, src in zip(rows, ("a.mp4", "b.mp4")):
        run = store.get_run(row.run_id)
        assert run.status == "done" and not probe(run.video_path).has_audio  # a silent copy was dubbed
        assert run.video_path != str(corpus / src)
        m = row.metrics()
        # The recorded round-0 numbers are the metrics of that round's audio against the clip's own soundtrack.
        r0 = store.get_round(row.round0_id)
        want = metrics.compare(metrics.ClipAudio.from_file(store.artifact_path(r0.audio_artifact_id)),
                               metrics.ClipAudio.from_file(corpus / src))
        for key in ("onset_f1", "onset_f1_chance", "xcorr_max", "rms_r_1000ms", "logmel_profile_r"):
            assert m["round0"][key] == want[key], key
        assert row.kept_index == 1 and row.kept_later is True  # the fake critic rises with each refinement
        assert m["round0"]["round_index"] == 0 and m["kept"]["round_index"] == 1
        assert [c["index"] for c in row.critic()] == [0, 1]
        assert m["reference_content"] == content.periodic_share(metrics.ClipAudio.from_file(corpus / src))
        counts = m["comparison"]
        assert row.no_worse is (counts["worse"] == 0) and counts["better"] + counts["worse"] + counts["tied"] >= 8
        # beside it, the verdict within the measures' seed noise: never stricter than the strict one
        noise = m["comparison_noise"]
        assert noise["no_worse"] is (noise["worse"] == 0) and set(noise["worse_on"]) <= set(counts["worse_on"])
        assert noise["tolerance"] == measures.NOISE_TOLERANCE and E.clip_record(row)["no_worse_noise"] is \
            noise["no_worse"]
        for cond in ("round0", "kept"):
            assert m[cond]["clap"] is None and m[cond]["desync_s"] is None and m[cond]["aes_PQ"] is None
            assert m[cond]["clap_why"].startswith("unavailable: CLAP laion/larger_clap_general not found — ")
    md = (out / "report.md").read_text()
    assert "runs that kept a later round than round 0: 2 of 2 (100 %)" in md
    n_noise = sum(bool(r.metrics()["comparison_noise"]["no_worse"]) for r in rows)
    assert (f"kept round no worse than round 0 within the measures' seed noise (no measure falls by more than two "
            f"renders of one plan differ): {n_noise} of 2 ") in md and "; tolerances: onset F1 0.083, " in md
    assert f"of them no worse than round 0, {n_noise}/2 within the measures' seed noise" in out_text
    assert "- DeSync (Synchformer): unavailable: Synchformer liuhuadai/ThinkSound not found — " in md
    assert "- CLAP: unavailable: CLAP laion/larger_clap_general not found — " in md
    assert "- Audiobox Aesthetics: unavailable: Audiobox Aesthetics facebook/audiobox-aesthetics not found" in md
    header = next(line for line in md.splitlines() if line.startswith("| clip | run | cond"))
    assert "F1 chance" in header and "ctl rank" in header and "CLAP" not in header and "DeSync" not in header
    assert "## ungrouped (2 clips)" in md and "| **mean** |  | loop |" in md
    assert "| a | ungrouped | 2 | round_cap | 1 | 0.300 → 0.500 |" in md  # rounds, stop reason, critic curve
    data = json.loads((out / "report.json").read_text())
    assert data["summary"]["kept_later"] == {"n": 2, "of": 2, "share": 1.0}
    assert [c["name"] for c in data["clips"]] == ["a", "b"]


def test_failed_clip_is_recorded_and_resume_finishes_only_what_is_missing(corpus, tmp_path, fake_backends,
                                                                          monkeypatch, capsys):
    from agent import runs

    create, execute = runs.create_dub_run, runs.execute_dub
    calls = {"create": 0, "execute": 0}

    def create_counted(*a, **k):
        calls["create"] += 1
        return create(*a, **k)

    def execute_second_fails(store, run_id, out, *a, **k):
        calls["execute"] += 1
        if calls["execute"] == 2:
            store.update_run(run_id, status="failed", error="RuntimeError: renderer exploded")
            raise RuntimeError("renderer exploded")
        return execute(store, run_id, out, *a, **k)

    monkeypatch.setattr(runs, "create_dub_run", create_counted)
    monkeypatch.setattr(runs, "execute_dub", execute_second_fails)
    db, out = tmp_path / "fl.db", tmp_path / "report"
    assert main(["--db", str(db), "eval", str(corpus), "--out-dir", str(out), *FAKE_EVAL]) == 0
    store = Store(db)
    (ev,) = E.list_evals(store)
    a, b = E.clips(store, ev.id)
    assert (a.status, b.status) == ("scored", "failed") and b.error == "RuntimeError: renderer exploded"
    assert "failed: b (RuntimeError: renderer exploded)" in (out / "report.md").read_text()
    first_a_run = a.run_id
    calls.update(create=0, execute=10)
    capsys.readouterr()
    assert main(["--db", str(db), "eval", "--resume", ev.id[:6], "--no-progress"]) == 0
    a2, b2 = E.clips(store, ev.id)
    assert (a2.status, b2.status) == ("scored", "scored") and a2.run_id == first_a_run
    assert calls["create"] == 1 and b2.run_id != b.run_id  # only the failed clip was dubbed again
    assert "2/2 clips scored" in capsys.readouterr().out
    assert "failed: none" in (out / "report.md").read_text()
    # Resuming a finished evaluation dubs nothing and rewrites the same report.
    calls["create"] = 0
    assert main(["--db", str(db), "eval", "--resume", ev.id, "--no-progress"]) == 0
    assert calls["create"] == 0
    # A changed corpus is refused.
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.mp4").write_bytes((corpus / "b.mp4").read_bytes())
    capsys.readouterr()
    assert main(["--db", str(db), "eval", str(other), "--resume", ev.id, "--no-progress"]) == 2
    assert "not the one evaluation" in _one_line_error(capsys)


# ---- comparing two evaluations ----------------------------------------------------------------------------------

def _seed_eval(store: Store, values: dict[str, tuple[float, float]], **fields) -> str:
    """An Eval whose clips have onset_f1 / desync_s values (round 0 and kept the same)."""
    ev = E.create_eval(store, [{"name": n, "content_group": "foley"} for n in values], corpus_hash="h",
                       config_json={"run": {"critic": "offline"}}, **fields)
    for row in E.clips(store, ev.id):
        f1, ds = values[row.name]
        m = {"onset_f1": f1, "desync_s": ds}
        E.update_clip(store, row.id, status="scored", metrics_json={"round0": m, "kept": m}, run_id=None)
    return ev.id


def test_compare_two_evaluations(tmp_path, capsys):
    from evaluation.compare import compare_evals

    db = tmp_path / "fl.db"
    store = Store(db)
    a = _seed_eval(store, {"x": (0.2, 1.0), "y": (0.5, 0.4), "z": (0.3, 0.2)}, code_version="v1")
    b = _seed_eval(store, {"x": (0.4, 0.6), "y": (0.5, 0.8), "z": (0.1, 0.2), "w": (0.9, 0.0)}, code_version="v2")
    ca = [E.clip_record(r) for r in E.clips(store, a)]
    cb = [E.clip_record(r) for r in E.clips(store, b)]
    rows = {r["key"]: r for r in compare_evals(ca, cb)["kept"]}
    f1 = rows["onset_f1"]
    assert f1["n"] == 3 and (f1["n_better"], f1["n_worse"], f1["n_tied"]) == (1, 1, 1)
    assert f1["mean_delta"] == pytest.approx(0.0) and f1["mean_a"] == pytest.approx(1 / 3)
    ds = rows["desync_s"]  # lower is better: x improved, y got worse, z tied
    assert (ds["n_better"], ds["n_worse"], ds["n_tied"]) == (1, 1, 1)
    assert ds["mean_delta"] == pytest.approx((-0.4 + 0.4 + 0.0) / 3)
    assert (f1["n_better_noise"], f1["n_worse_noise"]) == (1, 1)  # ±0.2 is beyond onset F1's seed noise
    assert ds["n_better_noise"] is None  # a model measure has no measured seed noise
    # a change within the seed noise is counted strictly but not beyond the noise
    clip = lambda name, f1: {"name": name, "status": "scored",  # noqa: E731
                             "metrics": {"kept": {"onset_f1": f1}, "round0": {"onset_f1": f1}}}
    small = {r["key"]: r for r in compare_evals([clip("x", 0.50), clip("y", 0.5)],
                                                [clip("x", 0.55), clip("y", 0.2)])["kept"]}["onset_f1"]
    assert (small["n_better"], small["n_worse"]) == (1, 1)
    assert (small["n_better_noise"], small["n_worse_noise"]) == (0, 1)
    # both sides means of 4 renders: the noise halves, and +0.05 is beyond it
    four = lambda name, f1: {"name": name, "status": "scored",  # noqa: E731
                             "metrics": {"kept": {"onset_f1": f1, "seed_renders": 4}}}
    means = {r["key"]: r for r in compare_evals([four("x", 0.50)], [four("x", 0.55)])["kept"]}["onset_f1"]
    assert (means["n_better_noise"], means["n_worse_noise"]) == (1, 0)
    assert main(["--db", str(db), "eval", "--compare", a, b]) == 0
    out = capsys.readouterr().out
    assert "beyond noise" in out and "1 / 1" in next(ln for ln in out.splitlines() if "onset F1" in ln)
    assert a in out and b in out and "w" in out  # w is left out, and said so
    line = next(ln for ln in out.splitlines() if "onset F1" in ln)
    assert [c for c in line.replace("│", " ").split() if c.isdigit()][-3:] == ["1", "1", "1"]
    assert main(["--db", str(db), "eval", "--compare", a, "nope"]) == 2
    assert "no evaluation 'nope'" in _one_line_error(capsys)


def test_python_dash_m_cli_uses_the_global_db(tmp_path):
    """`python -m agent.cli --db DB eval ...` runs the CLI as __main__: the command must still see --db."""
    db = tmp_path / "fl.db"
    store = Store(db)
    a = _seed_eval(store, {"x": (0.2, 1.0)})
    b = _seed_eval(store, {"x": (0.4, 0.6)})
    env = os.environ | {"PYTHONPATH": str(ROOT), "FOLEYLOOP_HOME": str(tmp_path / "default-home")}
    res = subprocess.run([sys.executable, "-m", "agent.cli", "--db", str(db), "eval", "--compare", a, b], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "onset F1" in res.stdout and not (tmp_path / "default-home" / "foleyloop.db").exists()


# ---- model metrics with tiny models -------------------------------------------------------------------------

def test_model_metrics_and_verifier_critic_with_tiny_models(tmp_path, fake_backends, tiny_clap_dir,  # noqa: F811
                                                            tiny_aes_dir, one_torch_thread):  # noqa: F811
    from models.aesthetics import AestheticsScorer
    from models.clap import ClapScorer
    from reasoning.verifiers.base import linear01
    from tests.eval_fixtures import write_tiny_synchformer

    sync = write_tiny_synchformer(tmp_path / "sync")
    clip = make_impact_clip(tmp_path / "c" / "long.mp4", duration_s=5.2, impacts=(1.0, 2.5, 4.0), audio=True,
                            size=(64, 48))
    (tmp_path / "m.json").write_text(json.dumps([
        {"video": str(clip.path), "name": "long", "content": "foley", "notes": "Screen: a ball. Sound: knocks"}]))
    db, out = tmp_path / "fl.db", tmp_path / "report"
    args = ["--db", str(db), "eval", str(tmp_path / "m.json"), "--out-dir", str(out), "--rounds", "2",
            "--watcher", "fake", "--renderer", "fake", "--refiner", "fake", "--critic", "fake+desync+clap+aesthetics",
            "--clap", str(tiny_clap_dir), "--aesthetics", str(tiny_aes_dir), "--synchformer", str(sync),
            "--no-progress"]
    assert main(args) == 0
    store = Store(db)
    (ev,) = E.list_evals(store)
    (row,) = E.clips(store, ev.id)
    assert row.status == "scored", row.error
    m = row.metrics()
    for cond, rid in (("round0", row.round0_id), ("kept", row.kept_id)):
        audio, sr = read_audio(store.artifact_path(store.get_round(rid).audio_artifact_id))
        assert m[cond]["clap_caption"] == "knocks" and m[cond]["clap_caption_source"] == "clip notes"
        assert m[cond]["clap"] == pytest.approx(ClapScorer(tiny_clap_dir).score(audio, sr, "knocks"), abs=1e-5)
        assert m[cond]["aes_PQ"] == pytest.approx(AestheticsScorer(tiny_aes_dir).score(audio, sr)["PQ"], abs=1e-4)
        assert min(abs(m[cond]["desync_s"] - 0.2 * k) for k in range(11)) < 1e-5  # on the 0.2 s offset grid
        assert m[cond]["desync_why"] is None
    md = (out / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| clip | run | cond"))
    assert "DeSync s" in header and "CLAP" in header and "PQ" in header and "unavailable" not in md
    # The verifiers ran inside the loop as the critic: each round's critique carries their raw values.
    for rnd in store.rounds(row.run_id):
        crit = json.loads(rnd.critique_json)
        raw = {s["name"]: s["raw"] for s in crit["scorers"]}
        assert {"desync", "clap", "aesthetics"} <= set(raw) and all(raw[k] is not None for k in raw)
        # Each verifier replaced the fake critic's value of its dimension with its mapped score; spatial stays.
        assert crit["scores"]["semantic"] == pytest.approx(linear01(raw["clap"], 0.05, 0.45))
        assert crit["scores"]["temporal"] == pytest.approx(linear01(raw["desync"], 1.0, 0.0))
        assert crit["scores"]["aesthetic"] == pytest.approx(linear01(raw["aesthetics"], 4.0, 8.0))
        assert crit["scores"]["spatial"] == pytest.approx(0.3 + 0.2 * rnd.index)
    assert np.isfinite(m["kept"]["clap"])


def test_report_counts_no_worse_over_the_runs_that_kept_a_later_round():
    """Issue 9's test of the loop: a run that keeps round 0 is no worse by construction, so the share that says
    whether later rounds help is over the runs that kept one (here 1 of 2, while 3 of 4 clips are no worse)."""
    from evaluation import report

    def clip(name, later, no_worse):
        m = {"onset_f1": 0.5}
        return {"name": name, "group": "g", "status": "scored", "kept_index": 1 if later else 0,
                "kept_later": later, "no_worse": no_worse, "metrics": {"round0": m, "kept": m}, "critic": []}

    clips = [clip("a", False, True), clip("b", False, True), clip("c", True, True), clip("d", True, False)]
    summary = report.summarise(clips)
    assert summary["no_worse"]["n"] == 3 and summary["kept_later"]["n"] == 2
    assert summary["later_no_worse"] == {"n": 1, "of": 2, "share": 0.5, "clips": ["c", "d"]}
    header = {"eval_id": "e", "corpus_path": "c", "corpus_kind": "k", "corpus_hash": "0" * 64, "backends": "b",
              "code_version": "v", "created_at": "t"}
    md = report.markdown(header, clips, summary)
    assert ("- of the runs that kept a later round, kept round no worse than round 0 on every independent measure: "
            "1 of 2 (50 %)") in md
    # what the loop turned down is measured too: was it right to?
    clips[0]["not_kept"] = {"round_index": 1, "no_worse": False, "better": 5, "worse": 3,
                            "worse_on": ["xcorr_max", "logmel_profile_r", "control_margin"]}
    clips[1]["not_kept"] = {"round_index": 2, "no_worse": True, "better": 2, "worse": 0, "worse_on": []}
    nk = report.summarise(clips)["not_kept_no_worse"]
    assert (nk["n"], nk["of"], nk["share"]) == (1, 2, 0.5) and nk["clips"]["a"]["worse_on"][0] == "xcorr_max"
    md = report.markdown(header, clips, report.summarise(clips))
    assert ("- runs with a later round the loop did not keep: the best of those no worse than round 0 on every "
            "reference measure in 1 of 2 (50 %); a r1: worse on xcorr_max, logmel_profile_r, control_margin, "
            "b r2: worse on nothing") in md
    none_later = report.summarise(clips[:2])
    assert none_later["later_no_worse"]["of"] == 0 and none_later["later_no_worse"]["share"] is None
    assert ("a later round, kept round no worse than round 0 on every independent measure: 0 of 0 (—)"
            in report.markdown(header, clips[:2], none_later))


def test_report_counts_no_worse_within_noise_and_renders_evaluations_without_it():
    """The noise-aware verdict is counted beside the strict one over the runs that kept a later round; an
    evaluation recorded before the tolerances (no such field on its clips, none in its summary) still renders."""
    from evaluation import report

    tol = {"xcorr_max": 0.028, "control_rank": 2.0}

    def clip(name, later, strict, noisy):
        m = {"onset_f1": 0.5}
        c = {"name": name, "group": "g", "status": "scored", "kept_index": 1 if later else 0, "kept_later": later,
             "no_worse": strict, "no_worse_counts": {"worse_on": [] if strict else ["xcorr_max"]},
             "metrics": {"round0": m, "kept": m}, "critic": []}
        if noisy is not None:
            c |= {"no_worse_noise": noisy, "no_worse_noise_counts": {"worse_on": [] if noisy else ["xcorr_max"],
                                                                     "tolerance": tol}}
        return c

    clips = [clip("a", False, True, True), clip("b", True, False, True), clip("c", True, False, False),
             clip("d", True, True, True)]
    summary = report.summarise(clips)
    assert summary["later_no_worse"]["n"] == 1 and summary["later_no_worse"]["of"] == 3
    assert summary["later_no_worse_noise"] == {"n": 2, "of": 3, "share": 2 / 3, "clips": ["b", "c", "d"],
                                               "missing": 0, "tolerance": tol}
    header = {"eval_id": "e", "corpus_path": "c", "corpus_kind": "k", "corpus_hash": "0" * 64, "backends": "b",
              "code_version": "v", "created_at": "t"}
    md = report.markdown(header, clips, summary)
    assert ("- of the runs that kept a later round, kept round no worse than round 0 within the measures' seed noise "
            "(no measure falls by more than two renders of one plan differ): 2 of 3 (67 %); tolerances: env xcorr "
            "0.028, ctl rank 2") in md
    assert "| worse on | no worse within noise | worse beyond noise on |" in md
    # b: worse strictly (on xcorr_max), no worse within the noise
    assert "| b | g | — | — | 1 | — → — | — | — | — | no | xcorr_max | yes | — |" in md

    # the best later round the loop turned down, judged the same two ways
    clips[0]["not_kept"] = {"round_index": 1, "no_worse": False, "worse_on": ["xcorr_max", "control_margin"],
                            "no_worse_noise": False, "worse_on_noise": ["xcorr_max"]}
    clips[3]["not_kept"] = {"round_index": 2, "no_worse": False, "worse_on": ["logmel_profile_r"],
                            "no_worse_noise": True, "worse_on_noise": []}
    summary = report.summarise(clips)
    assert summary["not_kept_no_worse"]["within_noise"] == {"n": 1, "of": 2, "share": 0.5}
    assert ("did not keep: the best of those no worse than round 0 on every reference measure in 0 of 2 (0 %), "
            "within the seed noise in 1 of 2 (50 %); a r1: worse on xcorr_max, control_margin (beyond noise: "
            "xcorr_max), d r2: worse on logmel_profile_r (beyond noise: nothing)") in report.markdown(header, clips,
                                                                                                  summary)

    old = [clip("a", False, True, None), clip("b", True, False, None)]
    summary = report.summarise(old)
    assert summary["later_no_worse_noise"]["of"] == 0 and summary["later_no_worse_noise"]["missing"] == 1
    for s in (summary, {k: v for k, v in summary.items() if k != "later_no_worse_noise"}):  # an old summary
        md = report.markdown(header, old, s)
        assert ("kept round no worse than round 0 within the measures' seed noise (no measure falls by more than two "
                "renders of one plan differ): not recorded (an evaluation made before the noise tolerances)") in md
        assert "| b | g | — | — | 1 | — → — | — | — | — | no | xcorr_max | — | — |" in md


def test_a_clip_is_judged_strictly_and_within_the_seed_noise(store):
    """What ``_finish_clip`` stores: both verdicts on the kept round and on the best round the loop turned down."""
    from agent import evals

    tol = measures.NOISE_TOLERANCE
    r0 = {"xcorr_max": 0.19, "logmel_profile_r": 0.92, "round_index": 0}
    kept = {"xcorr_max": 0.19 - tol["xcorr_max"] / 2, "logmel_profile_r": 0.92, "round_index": 1}
    unkept = {"xcorr_max": 0.19 - 2 * tol["xcorr_max"], "logmel_profile_r": 0.92 - tol["logmel_profile_r"] / 2,
              "round_index": 2, "critic_overall": 0.5}
    ev = E.create_eval(store, [{"name": "c"}], corpus_path="/c", corpus_hash="h", code_version="v")
    (row,) = E.clips(store, ev.id)
    E.update_clip(store, row.id, status="dubbed", kept_later=True, kept_index=1,
                  metrics_json={"round0": r0, "kept": kept, "not_kept": unkept})
    evals._finish_clip(store, E.clips(store, ev.id)[0])
    (row,) = E.clips(store, ev.id)
    m, rec = row.metrics(), E.clip_record(row)
    assert row.status == "scored" and row.no_worse is False and m["comparison"]["worse_on"] == ["xcorr_max"]
    assert rec["no_worse_noise"] is True and rec["no_worse_noise_counts"]["worse_on"] == []
    assert rec["no_worse_noise_counts"]["tolerance"] == tol
    nk = rec["not_kept"]
    assert nk["worse_on"] == ["xcorr_max", "logmel_profile_r"] and nk["no_worse"] is False
    assert nk["worse_on_noise"] == ["xcorr_max"] and nk["no_worse_noise"] is False


def test_the_best_round_the_loop_did_not_keep_is_found(store, fake_backends, tmp_path, monkeypatch):
    from agent import evals, runs
    from agent.config import RunConfig
    from tests import fakes
    from tests.helpers import tiny_clip

    def critique(self, plan, audio, video, info):  # refines raise only a dimension the refiner did not aim at
        k = plan.caption.count("+")
        return fakes.Critique(scores={"semantic": 0.3, "temporal": 0.3, "aesthetic": min(1.0, 0.3 + 0.1 * k),
                                      "spatial": 0.3})

    def refine(self, plan, critique, failing, round_index, seed, video=None, info=None):
        return fakes.RefineResult(plan=plan.derive("refiner", caption=plan.caption + " +" * round_index),
                                  seed=seed + 1, changes=["+"], aimed_at=["temporal"])

    monkeypatch.setattr(fakes.FakeCritic, "critique", critique)
    monkeypatch.setattr(fakes.FakeRefiner, "refine", refine)
    cfg = RunConfig(watcher="fake", renderer="fake", critic="fake", refiner="fake", rounds=3, patience=2)
    run_id, _ = runs.dub(store, tiny_clip(tmp_path / "clip.mp4"), cfg)
    rounds = store.rounds(run_id)
    kept = store.get_round(store.get_run(run_id).best_round_id)
    assert kept.index == 0 and [r.index for r in rounds] == [0, 1, 2]
    assert evals._best_not_kept(store, run_id, kept).index == 2  # the higher critic score of the two
    assert evals._best_not_kept(store, run_id, rounds[2]).index == 1


def test_foley_targets_are_judged_on_clips_measured_mostly_foley():
    """Issue 9's foley bars apply where the reference is mostly effects by measure, whatever the corpus label
    says: a label the measure contradicts is named, and no qualifying clip is "not judged", never a pass."""
    from evaluation import report

    def clip(name, label, share, f1=0.2, rms=0.4, f1_loop=0.2, rms_loop=0.1):
        return {"name": name, "group": label, "status": "scored", "kept_index": 1, "kept_later": True,
                "no_worse": False, "critic": [],
                "metrics": {"round0": {"onset_f1_above_chance": f1, "rms_r_1000ms": rms},
                            "kept": {"onset_f1_above_chance": f1_loop, "rms_r_1000ms": rms_loop},
                            "reference_content": {"periodic_energy_share": share}}}

    header = {"eval_id": "e", "corpus_path": "c", "corpus_kind": "k", "corpus_hash": "0" * 64, "backends": "b",
              "code_version": "v", "created_at": "t"}
    clips = [clip("steps", "foley", 0.05), clip("launch", "foley", 0.74), clip("knocks", "mixed", 0.1, f1=0.1),
             clip("talk", "speech", 0.93)]
    ft = report.summarise(clips)["foley_targets"]
    assert ft["foley"] == ["steps", "knocks"] and ft["mislabelled"] == ["launch", "knocks"]
    assert ft["clips"]["steps"]["round0"]["met"] is True and ft["clips"]["steps"]["kept"]["met"] is False
    assert ft["clips"]["knocks"]["round0"]["met"] is False  # F1 − chance 0.1 < 0.15
    assert ft["met"] == {"round0": False, "kept": False} and "round0" not in ft["clips"]["talk"]
    md = report.markdown(header, clips, report.summarise(clips))
    assert "| steps | foley | 5 % | yes | 0.200 / 0.200 | 0.400 / 0.100 | yes / no |" in md
    assert "| launch | foley | 74 % | no | — | — | — |" in md
    assert "The measure contradicts the corpus label of: launch, knocks." in md

    none = report.summarise([clip("launch", "foley", 0.74), clip("talk", "speech", 0.93)])["foley_targets"]
    assert none["foley"] == [] and none["met"] == {"round0": None, "kept": None}
    md = report.markdown(header, clips[1:2], report.summarise(clips[1:2]))
    assert "No clip of this corpus is mostly foley by measure: the foley targets are not judged here." in md
    old = [dict(clips[0], metrics={k: v for k, v in clips[0]["metrics"].items() if k != "reference_content"})]
    assert "## foley targets" not in report.markdown(header, old, report.summarise(old))  # before the measure


def test_seeds_measure_each_round_as_the_mean_of_several_renders(corpus, tmp_path, fake_backends, capsys):
    """`--seeds 3`: a compared round's reference measures are the mean over its stored render and its plan rendered
    again with the next two seeds, and the verdict within noise uses the tolerance of such means (÷ √3)."""
    from contract.plan import Plan
    from tests.fakes import FakeRenderer

    db, out = tmp_path / "fl.db", tmp_path / "report"
    assert main(["--db", str(db), "eval", str(corpus), "--out-dir", str(out), "--seeds", "3", *FAKE_EVAL]) == 0
    store = Store(db)
    (ev,) = E.list_evals(store)
    assert ev.config()["eval"]["seeds"] == 3
    refs = [metrics.ClipAudio.from_file(corpus / n) for n in ("a.mp4", "b.mp4")]
    for own, row in enumerate(E.clips(store, ev.id)):
        m = row.metrics()
        run = store.get_run(row.run_id)
        for cond, rid in (("round0", row.round0_id), ("kept", row.kept_id)):
            rnd = store.get_round(rid)
            renders = [metrics.ClipAudio.from_file(store.artifact_path(rnd.audio_artifact_id))]
            for k in (1, 2):
                wav = FakeRenderer().render(Plan.from_stored(rnd.plan_json), Path(run.video_path), None, rnd.seed + k,
                                            tmp_path / f"{own}-{cond}-{k}.wav").audio_path
                renders.append(metrics.ClipAudio.from_file(wav))
            each = [measures.reference_metrics(g, refs[own], refs, own) for g in renders]
            assert m[cond]["seed_renders"] == 3
            for key in ("onset_f1", "xcorr_max", "rms_r_1000ms", "logmel_profile_r"):
                assert m[cond][key] == pytest.approx(np.mean([e[key] for e in each])), (cond, key)
                assert m[cond]["seed_values"][key] == pytest.approx([e[key] for e in each], abs=1e-6)
        tol = m["comparison_noise"]["tolerance"]
        assert tol["onset_f1"] == pytest.approx(measures.NOISE_TOLERANCE["onset_f1"] / np.sqrt(3), abs=1e-6)
        assert m["comparison_noise"]["seeds"] == 3
    assert "the mean of 3 renders of each compared round's plan" in (out / "report.md").read_text()


def test_tolerance_of_seed_means():
    """Means over n renders: a fall inside one render's noise can be beyond the noise of 4-render means."""
    r0, kept = {"onset_f1": 0.50}, {"onset_f1": 0.45}
    assert measures.noise_tolerance(4)["onset_f1"] == pytest.approx(measures.NOISE_TOLERANCE["onset_f1"] / 2)
    assert measures.no_worse_within_noise(r0, kept)[0] is True
    assert measures.no_worse_within_noise(r0, kept, seeds=4)[0] is False
    mean = measures.seed_mean([{"onset_f1": 0.2, "gen_dropout_s": 0.0, "onset_f1_why": None},
                               {"onset_f1": 0.4, "gen_dropout_s": 0.6}, {"onset_f1": None, "gen_dropout_s": 0.0}])
    assert mean["onset_f1"] == pytest.approx(0.3) and mean["gen_dropout_s"] == 0.6  # the worst dropout counts
    assert mean["seed_renders"] == 3 and mean["seed_values"]["onset_f1"] == [0.2, 0.4]
