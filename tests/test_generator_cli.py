"""`foleyloop text | edit | convert | check-oracle` in process, on tiny ThinkSound weights and the shipped oracles."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from agent.cli import main
from generator.thinksound import SequenceConfig, TensorFile
from contract.plan import EventKind, Plan
from store.db import Store
from tests.conftest import ORACLE_DIR as ORACLE
from tests.test_thinksound_renderer import _one_thread, tiny  # noqa: F401  (module-scoped fixtures, rebuilt here)

SR = 44_100


@pytest.fixture
def env(tmp_path, monkeypatch, fake_backends):
    monkeypatch.setenv("FOLEYLOOP_HOME", str(tmp_path / "home"))
    return tmp_path


def _flags(tiny) -> list[str]:
    o = tiny["opts"]
    return ["--weights", o["weights"], "--metaclip", o["metaclip"], "--t5", o["t5"]]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


def _oracle(name: str) -> Path:
    path = ORACLE / name
    if not path.exists():
        pytest.skip(f"oracle file {path} not available")
    return path


# ---- text ---------------------------------------------------------------------------------------------------


def test_plan_from_prompt():
    from agent.runs import plan_from_prompt

    prompt = "heavy rain on a tin roof with distant rolling thunder and a dog barking twice far away"
    plan = plan_from_prompt(prompt, 6.0)
    assert plan.caption.split() == prompt.split()[:12] and plan.semantic == prompt
    (event,) = plan.events
    assert (event.kind, event.start_s, event.end_s) == (EventKind.ambience, 0.0, 6.0)
    assert plan.provenance.author == "human" and plan.duration_s == 6.0


def test_text_command_thinksound_run(tiny, env, capsys):
    db, out = env / "fl.db", env / "rain.wav"
    code = main(["--db", str(db), "text", "rain on a tin roof", "--duration", "2", "--renderer", "thinksound",
                 *_flags(tiny), "--critic", "fake", "--refiner", "fake", "--rounds", "2", "--seed", "3",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    store = Store(db)
    (run,) = store.list_runs()
    assert run.kind == "text" and run.status == "done" and run.prompt == "rain on a tin roof"
    rounds = store.rounds(run.id)
    assert len(rounds) == 2 and rounds[0].seed == 3 and rounds[0].author == "human"
    cfg = json.loads(run.config_json)
    assert cfg["options"]["renderer"]["metaclip"] == tiny["opts"]["metaclip"]
    data, sr = sf.read(out, always_2d=True)
    assert sr == SR and data.shape == (SequenceConfig(2.0).num_samples, 2)
    assert f"run {run.id} done" in capsys.readouterr().out


def test_text_command_missing_weights_records_nothing(tiny, env, capsys):
    (env / "empty").mkdir()
    code = main(["--db", str(env / "fl.db"), "text", "wind", "--renderer", "thinksound", "--weights",
                 str(env / "empty"), "--out", str(env / "w.wav")])
    assert code == 2
    assert "hf download liuhuadai/ThinkSound" in _one_error_line(capsys)
    assert Store(env / "fl.db").list_runs() == [] and not (env / "w.wav").exists()


def test_text_command_bad_input(env, capsys):
    assert main(["--db", str(env / "fl.db"), "text", "wind", "--out", str(env / "w.mp3")]) == 2
    assert ".wav" in _one_error_line(capsys)
    assert main(["--db", str(env / "fl.db"), "text", "   ", "--out", str(env / "w.wav")]) == 2
    assert "empty" in _one_error_line(capsys)


# ---- edit ---------------------------------------------------------------------------------------------------


def _tone_file(path: Path, seconds: float, rate: int = 22_050, channels: int = 1) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    data = 0.5 * np.sin(2 * np.pi * 330 * t)
    sf.write(path, np.repeat(data[:, None], channels, axis=1), rate)
    return path


def test_edit_variation_of_a_run(tiny, env, capsys):
    db = env / "fl.db"
    assert main(["--db", str(db), "text", "a door creaking open", "--duration", "1.5", "--renderer", "thinksound",
                 *_flags(tiny), "--critic", "fake", "--refiner", "fake", "--rounds", "1",
                 "--out", str(env / "door.wav")]) == 0
    store = Store(db)
    (src,) = store.list_runs()
    out = env / "door.edit.wav"
    code = main(["--db", str(db), "edit", src.id, "--strength", "0.4", "--seed", "7", *_flags(tiny),
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    edit = next(r for r in store.list_runs() if r.kind == "edit")
    assert edit.status == "done" and edit.parent_run_id == src.id and edit.stop_reason == "edit"
    (rnd,) = store.rounds(edit.id)
    assert rnd.audio_artifact_id is not None and rnd.status == "rendered" and rnd.author == "human"
    src_round = store.rounds(src.id)[0]
    assert Plan.from_json(rnd.plan_json).caption == Plan.from_json(src_round.plan_json).caption  # default plan
    meta = json.loads(rnd.timings_json)["render_meta"]
    assert meta["edit"] == {"mode": "variation", "strength": 0.4} and meta["source"]["run_id"] == src.id
    assert meta["seed"] == 7 and "variation at strength 0.4" in json.loads(rnd.changes_json)[0]
    before, _ = sf.read(store.artifact_path(src_round.audio_artifact_id), always_2d=True)
    after, sr = sf.read(out, always_2d=True)
    assert sr == SR and after.shape == before.shape  # same length as the track it edits
    assert not np.allclose(after, before, atol=1e-3)
    assert json.loads(edit.branches_json)["0"]["best_round_id"] == rnd.id


def test_edit_window_of_a_mono_file(tiny, env, capsys):
    src = _tone_file(env / "tone.wav", 2.5)  # 22.05 kHz mono: resampled and upmixed on the way in
    out = env / "tone.edit.wav"
    code = main(["--db", str(env / "fl.db"), "edit", str(src), "--prompt", "a glass shattering",
                 "--window", "1.0", "1.5", *_flags(tiny), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    data, sr = sf.read(out, always_2d=True)
    assert sr == SR and data.shape == (int(2.5 * SR), 2)
    store = Store(env / "fl.db")
    (run,) = store.list_runs()
    (rnd,) = store.rounds(run.id)
    meta = json.loads(rnd.timings_json)["render_meta"]
    assert meta["edit"]["mode"] == "window" and meta["edit"]["window_s"] == [1.0, 1.5]
    assert meta["edit"]["strength"] == 1.0 and Plan.from_json(rnd.plan_json).caption == "a glass shattering"


def test_edit_with_a_plan_file(tiny, env, capsys):
    plan = Plan(caption="birds chirping", semantic="birds chirping at dawn", duration_s=1.2)
    (env / "plan.json").write_text(plan.to_json())
    src = _tone_file(env / "tone.wav", 1.2, rate=SR, channels=2)
    code = main(["--db", str(env / "fl.db"), "edit", str(src), "--plan", str(env / "plan.json"),
                 "--strength", "0", *_flags(tiny), "--out", str(env / "same.wav")])
    assert code == 0, capsys.readouterr().err
    data, _ = sf.read(env / "same.wav", always_2d=True)
    assert data.shape == (int(1.2 * SR), 2) and np.abs(data).max() > 0.99


@pytest.mark.parametrize("args, message", [
    (["{src}"], "needs --plan PLAN.json or --prompt TEXT"),
    (["{src}", "--prompt", "x", "--strength", "1.5"], "--strength must be in 0..1"),
    (["{src}", "--prompt", "x", "--window", "5", "6"], "--window 5 6 must satisfy"),
    (["{src}", "--prompt", "x", "--plan", "{src}"], "not both"),
    (["nope-not-a-run"], "no such audio file, and no run"),
    (["{src}", "--prompt", "x", "--out", "{dir}/x.flac"], "must be a .wav file"),
])
def test_edit_bad_input_exits_2(tiny, env, capsys, args, message):
    src = _tone_file(env / "tone.wav", 1.5)
    argv = [a.format(src=src, dir=env) for a in args]
    assert main(["--db", str(env / "fl.db"), "edit", *argv, *_flags(tiny)]) == 2
    assert message in _one_error_line(capsys)
    assert [r for r in Store(env / "fl.db").list_runs() if r.kind == "edit"] == []


def test_edit_missing_weights_is_exit_2(env, capsys):
    src = _tone_file(env / "tone.wav", 1.5)
    (env / "empty").mkdir()
    assert main(["--db", str(env / "fl.db"), "edit", str(src), "--prompt", "x", "--weights", str(env / "empty")]) == 2
    assert "thinksound_light.ckpt" in _one_error_line(capsys)


# ---- convert ------------------------------------------------------------------------------------------------


def test_convert_round_trip(tiny, env, capsys):
    src = tiny["weights"].light
    dst = env / "light.safetensors"
    assert main(["convert", str(src), str(dst)]) == 0
    assert "tensors" in capsys.readouterr().out
    a, b = TensorFile(src), TensorFile(dst)
    assert sorted(a.keys()) == sorted(b.keys())
    assert all(torch.equal(a.get(k), b.get(k)) for k in a.keys())
    half = env / "half.safetensors"
    assert main(["convert", str(src), str(half), "--dtype", "fp16"]) == 0
    h = TensorFile(half)
    key = "model.model.final_layer.conv.weight"
    assert h.get(key).dtype == torch.float16 and torch.equal(h.get(key), a.get(key).half())


def test_convert_pickle_needs_trust(tiny, env, capsys):
    sd = {"autoencoder." + k[len("pretransform.model."):]: v for k, v in torch.load(
        tiny["weights"].light, weights_only=True).items() if k.startswith("pretransform.model.")}
    src = env / "vae.ckpt"
    torch.save({"state_dict": sd, "hyper_parameters": argparse.Namespace(lr=1e-4)}, src)
    dst = env / "vae.safetensors"
    assert main(["convert", str(src), str(dst)]) == 2
    assert "--trust-pickle" in _one_error_line(capsys) and not dst.exists()
    with pytest.warns(UserWarning, match="trust-pickle"):
        assert main(["convert", str(src), str(dst), "--trust-pickle"]) == 0
    assert sorted(TensorFile(dst).keys()) == sorted(sd)
    assert main(["convert", str(src), str(env / "x.bin")]) == 2
    assert ".safetensors" in _one_error_line(capsys)


# ---- check-oracle -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mmdit_tiny.pt", "vae_tiny.pt", "synchformer_visual_tiny.pt",
                                  "synchformer_full_tiny.pt"])
def test_check_oracle_passes_on_shipped_oracles(name, capsys):
    assert main(["check-oracle", str(_oracle(name))]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out and "max |err|" in out


def test_check_oracle_fails_on_a_corrupted_copy(env, capsys):
    data = torch.load(_oracle("vae_tiny.pt"), weights_only=True)
    key = next(k for k in data["state_dict"] if k.endswith("decoder.layers.0.weight_g"))
    data["state_dict"][key] = data["state_dict"][key] * 1.01
    bad = env / "vae_corrupted.pt"
    torch.save(data, bad)
    assert main(["check-oracle", str(bad)]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "FAIL: 2/4 outputs within tolerance: decoded, pcm_int16" in captured.err
    assert "Traceback" not in captured.err


def test_check_oracle_fails_when_the_model_cannot_be_built(env, capsys):
    data = torch.load(_oracle("mmdit_tiny.pt"), weights_only=True)
    del data["state_dict"]["model.model.fused_blocks.0.attn.qkv.weight"]
    torch.save(data, env / "mmdit_broken.pt")
    assert main(["check-oracle", str(env / "mmdit_broken.pt")]) == 1
    assert "CheckpointError" in capsys.readouterr().err


def test_check_oracle_bad_path_exits_2(env, capsys):
    assert main(["check-oracle", str(env / "missing.pt")]) == 2
    assert "no such oracle file" in _one_error_line(capsys)
    (env / "notes.pt").write_text("not a tensor file")
    assert main(["check-oracle", str(env / "notes.pt")]) == 2
    assert "not a readable oracle file" in _one_error_line(capsys)
    torch.save({"weights": torch.zeros(3)}, env / "plain.pt")
    assert main(["check-oracle", str(env / "plain.pt")]) == 2
    assert "not a readable oracle file" in _one_error_line(capsys)
