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
