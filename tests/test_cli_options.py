"""The CLI package: bad --out/--db paths are exit 2 before any work, the input is never overwritten, options work
in any position, exit codes, `show` prints the kept plan, and the command modules write no rows themselves."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from agent.cli import main
from store.db import Store
from tests.helpers import FAKE, ROOT, tiny_clip


@pytest.fixture
def clip(tmp_path):
    return tiny_clip(tmp_path / "in.mp4", seconds=3)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def _no_runs(db: Path) -> bool:
    return not db.exists() or Store(db).list_runs() == []


# ---- --out -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["same", "hardlink", "symlink"])
def test_out_equal_to_the_input_is_refused(how, clip, tmp_path, capsys, fake_backends):
    before = _sha(clip)
    out = {"same": clip, "hardlink": tmp_path / "hard.mp4", "symlink": tmp_path / "sym.mp4"}[how]
    if how == "hardlink":
        os.link(clip, out)
    elif how == "symlink":
        out.symlink_to(clip)
    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "dub", str(clip), "--out", str(out), "--force", *FAKE]) == 2
    assert "refusing to overwrite the input" in _one_error_line(capsys)
    assert _sha(clip) == before and _no_runs(db)


def test_an_existing_out_is_kept_unless_forced(clip, tmp_path, capsys, fake_backends):
    out = tmp_path / "mine.mp4"
    out.write_bytes(b"the user's own file")
    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "dub", str(clip), "--out", str(out), *FAKE]) == 2
    line = _one_error_line(capsys)
    assert str(out) in line and "--force" in line
    assert out.read_bytes() == b"the user's own file" and _no_runs(db)
    assert main(["--db", str(db), "dub", str(clip), "--out", str(out), "--force", "--rounds", "1", *FAKE]) == 0
    assert out.stat().st_size > 1000 and not list(tmp_path.glob(".mine.*"))


def test_default_outputs_never_replace_a_file(clip, tmp_path, monkeypatch, fake_backends):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.foley.mp4").write_bytes(b"an earlier result")
    assert main(["--db", str(tmp_path / "fl.db"), "dub", str(clip), "--rounds", "1", *FAKE]) == 0
    assert (tmp_path / "in.foley.mp4").read_bytes() == b"an earlier result"
    assert Store(tmp_path / "fl.db").list_runs()[0].output_path == str(tmp_path / "in.foley-2.mp4")


@pytest.mark.parametrize("case, message", [
    ("dir", "is a directory"),
    ("file_as_dir", "is a file, not a directory"),
    ("extension", "unknown container extension '.txt'"),
    ("webm", "cannot hold this input's h264 video"),
])
def test_bad_out_is_exit_2_before_any_work(case, message, clip, tmp_path, capsys, fake_backends):
    (tmp_path / "somefile.txt").write_text("x")
    (tmp_path / "adir").mkdir()
    out = {"dir": tmp_path / "adir", "file_as_dir": tmp_path / "somefile.txt" / "x.mp4",
           "extension": tmp_path / "out.txt", "webm": tmp_path / "out.webm"}[case]
    db = tmp_path / "fl.db"
    t0 = time.perf_counter()
    code = main(["--db", str(db), "dub", str(clip), "--out", str(out), *FAKE])
    line = _one_error_line(capsys)
    assert code == 2 and message in line and str(out) in line
    assert time.perf_counter() - t0 < 15 and _no_runs(db) and not out.with_suffix(".part").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_out_folder_is_exit_2(clip, tmp_path, capsys, fake_backends):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["--db", str(tmp_path / "fl.db"), "dub", str(clip), "--out", str(locked / "sub" / "o.mp4"),
                     *FAKE]) == 2
        assert "not writable" in _one_error_line(capsys)
    finally:
        locked.chmod(0o700)


def test_text_and_regenerate_check_their_outputs_too(clip, tmp_path, capsys, fake_backends):
    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "dub", str(clip), "--out", str(tmp_path / "o.mp4"), "--rounds", "1", *FAKE]) == 0
    run = Store(db).list_runs()[0]
    capsys.readouterr()
    plan = tmp_path / "plan.json"
    plan.write_text(Store(db).rounds(run.id)[0].plan_json)
    assert main(["--db", str(db), "regenerate", run.id, "--round", "0", "--plan", str(plan), "--out",
                 str(clip)]) == 2
    assert "refusing to overwrite the input" in _one_error_line(capsys)
    assert main(["--db", str(db), "regenerate", run.id, "--round", "0", "--plan", str(plan), "--out",
                 str(tmp_path / "o.mp4")]) == 2
    assert "already exists" in _one_error_line(capsys)
    assert Store(db).rounds(run.id, branch=1) == []  # refused before the fork was recorded
    (tmp_path / "somefile.txt").write_text("x")
    assert main(["--db", str(db), "text", "rain", "--renderer", "fake", "--critic", "fake", "--refiner", "fake",
                 "--out", str(tmp_path / "somefile.txt" / "r.wav")]) == 2
    assert "is a file, not a directory" in _one_error_line(capsys)


# ---- --db and options in any position ----------------------------------------------------------------------------
@pytest.mark.parametrize("case, message", [("dir", "is a directory"), ("file_as_dir", "is a file, not a directory")])
def test_bad_db_is_exit_2(case, message, tmp_path, capsys):
    (tmp_path / "f.txt").write_text("x")
    db = {"dir": tmp_path, "file_as_dir": tmp_path / "f.txt" / "fl.db"}[case]
    for argv in (["--db", str(db), "runs"], ["runs", "--db", str(db)]):
        assert main(argv) == 2
        line = _one_error_line(capsys)
        assert message in line and str(db) in line


def test_store_errors_are_exit_2(tmp_path, capsys, monkeypatch):
    import store.db
    from store.db import StoreError

    def refuse(self, *a, **k):
        raise StoreError("the database is read-only")

    monkeypatch.setattr(store.db.Store, "__init__", refuse)
    assert main(["--db", str(tmp_path / "x.db"), "runs"]) == 2
    assert "read-only" in _one_error_line(capsys)


def test_db_and_debug_after_the_command(clip, tmp_path, capsys, fake_backends):
    db = tmp_path / "late.db"
    assert main(["dub", str(clip), "--out", str(tmp_path / "o.mp4"), "--rounds", "1", *FAKE, "--db", str(db)]) == 0
    (run,) = Store(db).list_runs()
    assert json.loads(run.config_json)["device"] == "cpu"  # --device auto, resolved before the run was recorded
    capsys.readouterr()
    assert main(["runs", "--json", "--db", str(db)]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [run.id]
    assert main(["show", "nope", "--db", str(db), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == f"error: no run 'nope' in {db}"


def test_python_m_agent_cli(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "--db", str(tmp_path), "runs"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: --db {tmp_path} is a directory, not a database file"


# ---- show, regenerate, resume --------------------------------------------------------------------------------
def test_show_prints_the_kept_plan_and_a_failed_fork(clip, tmp_path, capsys, fake_backends, monkeypatch):
    from contract.plan import Plan
    from tests import fakes

    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "dub", str(clip), "--out", str(tmp_path / "o.mp4"), *FAKE]) == 0
    store = Store(db)
    run = store.list_runs()[0]
    best = store.get_round(run.best_round_id)
    plan = Plan.from_json(store.rounds(run.id)[0].plan_json).model_copy(update={"caption": "too heavy"})
    (tmp_path / "huge.json").write_text(plan.to_json())
    real = fakes.FakeRenderer.render
    monkeypatch.setattr(fakes.FakeRenderer, "render", lambda self, p, *a, **k: (_ for _ in ()).throw(
        MemoryError("out of memory")) if p.caption == "too heavy" else real(self, p, *a, **k))
    capsys.readouterr()
    assert main(["--db", str(db), "regenerate", run.id, "--round", "0", "--plan", str(tmp_path / "huge.json"),
                 "--out", str(tmp_path / "fork.mp4")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("internal error: MemoryError: out of memory") and "Traceback" not in "\n".join(err)
    after = store.get_run(run.id)
    assert (after.status, after.error, after.best_round_id, after.output_path) == \
        ("done", None, run.best_round_id, run.output_path)

    assert main(["--db", str(db), "resume", run.id]) == 0
    assert "nothing to resume; failed forks 1 (retry them with --retry-failed)" in capsys.readouterr().out
    assert main(["--db", str(db), "show", run.id]) == 0
    shown = capsys.readouterr().out
    kept = Plan.from_json(best.plan_json)
    assert f"best: round {best.branch}.{best.index} (id {best.id})" in shown
    assert f"kept plan (round {best.branch}.{best.index}): {kept.caption}" in shown
    assert f"temporal: {kept.temporal}" in shown and "thud" in shown and "impact" in shown  # the events table
    assert "branch 1: failed (MemoryError: out of memory)" in shown


# ---- exit codes of the tool commands -----------------------------------------------------------------------------
def test_convert_a_damaged_safetensors_is_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(os.urandom(64))
    assert main(["convert", str(bad), str(tmp_path / "out.safetensors")]) == 2
    assert "not a readable safetensors file" in _one_error_line(capsys)
    assert not (tmp_path / "out.safetensors").exists()


def test_check_oracle_prints_no_warnings(tmp_path, capsys, monkeypatch):
    import torch

    from generator.thinksound import oracle

    def noisy(data, kind=None):
        warnings.warn("weight_norm is deprecated", FutureWarning)
        return oracle.OracleReport(kind=kind, source="x", checks=[oracle.OutputCheck("decoded", 0.0, 1e-5, True)])

    monkeypatch.setattr(oracle, "detect_kind", lambda data: "vae")
    monkeypatch.setattr(oracle, "check_oracle", noisy)
    torch.save({"state_dict": {}}, tmp_path / "o.pt")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["check-oracle", str(tmp_path / "o.pt")]) == 0
    captured = capsys.readouterr()
    assert not seen and captured.err == "" and "PASS: 1/1" in captured.out


# ---- the package's shape ------------------------------------------------------------------------------------------
def test_cli_modules_write_no_rows():
    """Runs, rounds and artifacts are the runs service's to write (edits included), never a command module's."""
    paths = sorted((ROOT / "agent" / "cli").glob("*.py"))
    assert len(paths) >= 8  # __init__, __main__, app, common and the command modules
    for path in paths:
        text = path.read_text()
        for call in ("create_run(", "add_round(", "update_run(", "update_round(", "put_file("):
            assert call not in text, f"{path.name} calls {call}"


def test_backend_help_is_generated_from_the_registry():
    from agent.backends import REGISTRY
    from agent.cli import common

    for role, option in (("watcher", common.Watcher), ("renderer", common.Renderer), ("critic", common.Critic),
                         ("refiner", common.Refiner)):
        help_text = option.__metadata__[0].help
        assert all(name in help_text for name in REGISTRY[role] if name not in ("fake", "broken")), (role, help_text)


def test_every_command_takes_db_and_debug_after_its_name():
    import typer

    from agent.cli.app import app

    group = typer.main.get_command(app)
    assert {"dub", "batch", "runs", "show", "plan", "resume", "regenerate", "models", "samples", "text", "edit",
            "convert", "check-oracle", "ui", "worker"} <= set(group.commands)
    for name, cmd in group.commands.items():
        flags = {o for p in cmd.params for o in p.opts}
        assert {"--db", "--debug"} <= flags, name


# ---- --pass-at ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, message", [
    ("1.5", "must be from 0 to 1, got 1.5"),
    ("nan", "must be from 0 to 1"),
    ("loud", "the score must be a number from 0 to 1, got 'loud'"),
    ("loudness=0.5", "'loudness=0.5' is not DIM=SCORE"),
    ("temporal=-0.1", "temporal must be from 0 to 1"),
])
def test_bad_pass_at_is_exit_2_before_any_work(value, message, clip, tmp_path, capsys, fake_backends):
    db = tmp_path / "fl.db"
    code = main(["--db", str(db), "dub", str(clip), "--out", str(tmp_path / "o.mp4"), "--pass-at", value, *FAKE])
    line = _one_error_line(capsys)
    assert code == 2 and message in line and "--pass-at" in line
    assert _no_runs(db) and not (tmp_path / "o.mp4").exists()


def test_pass_at_sets_what_a_round_must_reach(clip, tmp_path, capsys, fake_backends):
    """One number sets every dimension; DIM=SCORE sets that one and keeps the others' defaults; the run records it
    (what the loop stops on), and a bar no round reaches makes the loop use its rounds."""
    from contract.options import DEFAULT_THRESHOLDS

    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "dub", str(clip), "--out", str(tmp_path / "a.mp4"), "--rounds", "2",
                 "--pass-at", "temporal=0.9", *FAKE]) == 0
    assert main(["--db", str(db), "dub", str(clip), "--out", str(tmp_path / "b.mp4"), "--rounds", "2",
                 "--pass-at", "1", *FAKE]) == 0
    st = Store(db)
    runs = sorted(st.list_runs(), key=lambda r: r.created_at)
    assert runs[0].config()["thresholds"] == {**DEFAULT_THRESHOLDS, "temporal": 0.9}
    assert runs[1].config()["thresholds"] == {d: 1.0 for d in DEFAULT_THRESHOLDS}
    assert len(st.rounds(runs[1].id)) == 2  # nothing passes at 1.0: the loop goes on to its cap
