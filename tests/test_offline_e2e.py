"""The whole offline default end to end, through the CLI: a synthetic clip with known impacts is dubbed and the
muxed result has sound on the impacts (issue 2 "Done when")."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent import backends
from agent.cli import main
from reasoning.offline.audio_features import detect_onsets
from store.db import Store
from store.media import probe, read_audio
from store.synthetic import make_impact_clip

IMPACTS = (0.8, 1.7, 2.6, 3.4)


@pytest.fixture(scope="module")
def dubbed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    clip = make_impact_clip(tmp / "clip.mp4", duration_s=4.5, impacts=IMPACTS, fps=25.0, size=(320, 180))
    db = tmp / "fl.db"
    code = main(["--db", str(db), "dub", str(clip.path), "--out", str(tmp / "out.mp4"), "--rounds", "3"])
    yield code, clip, db, tmp / "out.mp4"
    backends.clear_cache()


def test_dub_exits_0_and_muxes_audio_spanning_the_video(dubbed):
    code, clip, _, out = dubbed
    assert code == 0
    info = probe(out)
    assert info.has_audio and info.audio_rate == 44100 and info.audio_channels == 2
    audio, sr = read_audio(out)
    assert audio.shape[1] / sr == pytest.approx(clip.duration_s, abs=0.05)
    assert np.sqrt(np.mean(audio ** 2)) > 1e-3


def test_rendered_impacts_land_within_80ms_of_the_visual_ones(dubbed):
    _, clip, _, out = dubbed
    audio, sr = read_audio(out)
    onsets = detect_onsets(audio, sr)
    times = np.asarray(onsets.onsets)
    for t in IMPACTS:
        assert np.min(np.abs(times - t)) <= 0.08, (t, times)


def test_rounds_are_stored_with_scores_and_provenance(dubbed, capsys):
    _, _, db, _ = dubbed
    store = Store(db)
    run = store.list_runs()[0]
    assert run.status == "done" and (run.stop_reason in ("passed", "round_cap", "no_improvement")
                                     or run.stop_reason.startswith("refiner_stopped: "))  # issue 9: no inaudible rounds
    rounds = store.rounds(run.id)
    assert 1 <= len(rounds) <= 3
    for r in rounds:
        crit = json.loads(r.critique_json)
        assert set(crit["scores"]) == {"semantic", "temporal", "aesthetic", "spatial"}
        assert all(s["name"] and s["version"] for s in crit["scorers"])
    plan = json.loads(rounds[0].plan_json)
    assert plan["provenance"]["backend"] == "offline" and plan["provenance"]["author"] == "watcher"
    impacts = sorted(e["start_s"] for e in plan["events"] if e["kind"] == "impact")
    assert len(impacts) == len(IMPACTS) and np.allclose(impacts, IMPACTS, atol=0.05)
    assert rounds[0].score_temporal >= 0.8
    assert main(["--db", str(db), "show", run.id]) == 0
    shown = capsys.readouterr().out
    assert run.id in shown and "temporal" in shown and f"{rounds[0].score_temporal:.3f}" in shown
