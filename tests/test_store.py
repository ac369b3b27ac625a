import sqlite3

import pytest

from store.db import SchemaTooNew, Store
from store.schema import SCHEMA_VERSION


def test_wal_and_schema_version(store):
    mode = sqlite3.connect(store.db_path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert store.schema_version() == SCHEMA_VERSION


def test_newer_schema_is_refused_without_touching_data(tmp_path):
    s = Store(tmp_path / "f.db")
    s.create_run(id="r1", video_path="x.mp4")
    con = sqlite3.connect(tmp_path / "f.db")
    con.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    con.commit()
    with pytest.raises(SchemaTooNew):
        Store(tmp_path / "f.db")
    assert con.execute("SELECT id FROM run").fetchall() == [("r1",)]


def test_artifacts_are_content_addressed(store, tmp_path):
    a = tmp_path / "a.wav"
    a.write_bytes(b"RIFF" + b"x" * 100)
    b = tmp_path / "b.wav"
    b.write_bytes(a.read_bytes())
    art1, art2 = store.put_file(a, "audio"), store.put_file(b, "audio", move=True)
    assert art1.sha256 == art2.sha256 and art1.path == art2.path
    assert store.artifact_path(art1.id).read_bytes() == a.read_bytes()
    assert not b.exists()  # moved into the store
    assert len(list(store.artifact_dir.rglob("*.wav"))) == 1


def test_run_lookup_by_prefix_and_filters(store):
    store.create_run(id="abc123", video_path="/v/dog.mp4", status="done")
    store.create_run(id="abd999", video_path="/v/cat.mp4", status="failed", error="bad")
    assert store.get_run("abc").id == "abc123"
    assert store.get_run("ab") is None  # ambiguous
    assert [r.id for r in store.list_runs(status="failed")] == ["abd999"]
    assert [r.id for r in store.list_runs(text_filter="dog")] == ["abc123"]
    assert store.count_runs() == 2


def test_branch_numbering_and_rounds_order(store):
    store.create_run(id="r")
    for b, i in [(0, 0), (0, 1), (1, 0)]:
        store.add_round(run_id="r", branch=b, index=i)
    assert store.next_branch("r") == 2
    assert [(r.branch, r.index) for r in store.rounds("r")] == [(0, 0), (0, 1), (1, 0)]
