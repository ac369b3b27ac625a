import json

from agent.cli import main


def test_models_lists_every_backend_and_the_offline_default_is_available(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {(r["role"], r["name"]) for r in rows}
    assert {("watcher", "offline"), ("watcher", "qwen"), ("watcher", "openai"), ("renderer", "thinksound"),
            ("critic", "qwen-omni"), ("refiner", "offline")} <= names
    by = {(r["role"], r["name"]): r for r in rows}
    assert by[("watcher", "offline")]["available"] and by[("renderer", "offline")]["available"]
    assert not by[("renderer", "thinksound")]["available"] and by[("renderer", "thinksound")]["why"]


def test_samples_and_runs_on_an_empty_db(tmp_path, capsys):
    assert main(["samples"]) == 0
    out = capsys.readouterr().out
    assert "sample:bigbuckbunny" in out and "CC BY 3.0" in out
    assert main(["--db", str(tmp_path / "e.db"), "runs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["--db", str(tmp_path / "e.db"), "show", "last"]) == 2


def test_batch_dubs_a_folder_and_skips_bad_files(tmp_path, capsys, fake_backends):
    from store.db import Store
    from tests.helpers import FAKE, tiny_clip

    folder = tmp_path / "in"
    folder.mkdir()
    tiny_clip(folder / "a.mp4", seed=1)
    tiny_clip(folder / "b.mp4", seed=2)
    (folder / "broken.mp4").write_text("not a video")
    (folder / "notes.txt").write_text("ignored: not a video extension")
    db = tmp_path / "fl.db"
    code = main(["--db", str(db), "batch", str(folder), "--out-dir", str(tmp_path / "out"), *FAKE])
    out = capsys.readouterr().out
    assert code == 0 and "2 done, 1 failed, 0 skipped" in out and "broken.mp4: failed" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.foley.mp4", "b.foley.mp4"]
    runs = Store(db).list_runs()
    assert sorted(r.status for r in runs) == ["done", "done", "failed"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--db", str(db), "batch", str(empty), "--out-dir", str(tmp_path / "o2"), *FAKE]) == 2


def test_show_prints_each_refined_rounds_changes_and_the_loops_verdict_as_plain_text(tmp_path, capsys):
    from store.db import Store

    store = Store(tmp_path / "f.db")
    run = store.create_run(id="withchanges", video_path=str(tmp_path / "in.mp4"), status="done", duration_s=4.0)
    plan = json.dumps({"duration_s": 4.0, "caption": "a ball", "events": []})
    store.add_round(run_id=run.id, plan_json=plan, status="scored", score_overall=0.70)
    store.add_round(run_id=run.id, index=1, plan_json=plan, status="scored", score_overall=0.71,
                    changes_json=json.dumps(["temporal: gain of 'rustle' (move1) -17.5 -> -23.5 dB [bold]x[/bold]",
                                             "loop: not kept against round 0: gain +0.010 is within the critic's "
                                             "noise 0.020"]))
    store.add_round(run_id=run.id, index=2, plan_json=plan, status="scored", changes_json="not json")
    store.update_run(run.id, best_round_id=store.rounds(run.id)[0].id)
    assert main(["--db", str(store.db_path), "show", run.id]) == 0
    out = capsys.readouterr().out
    assert "round 0.1 changes:" in out and "round 0.0 changes:" not in out and "round 0.2 changes:" not in out
    assert "-17.5 -> -23.5 dB [bold]x[/bold]" in out  # markup in stored text is shown, not interpreted
    assert "within the critic's" in out and "noise 0.020" in out.replace("\n", " ")
