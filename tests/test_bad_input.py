"""Every bad input exits 2 with one line, records a failed Run, and changes nothing else in the DB."""

import av
import numpy as np
import pytest

from agent.cli import main
from agent import runs
from agent.config import RunConfig
from store.db import Store
from store.media import write_video
from tests.helpers import FAKE, tiny_clip


def _bad_inputs(d):
    (d / "dir").mkdir()
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("this is not a video\n" * 50)
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(d / "still.png")
    # audio-only file
    with av.open(str(d / "audio.m4a"), "w") as c:
        s = c.add_stream("aac", rate=44100, layout="stereo")
        from store.media import _encode_audio

        _encode_audio(c, s, np.zeros((2, 44100), np.float32), 44100)
    good = tiny_clip(d / "good.mp4", seconds=3)
    data = good.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    # moov first, media data cut: must be caught too
    with av.open(str(good)) as src, av.open(str(d / "faststart.mp4"), "w", options={"movflags": "faststart"}) as dst:
        vs = dst.add_stream_from_template(src.streams.video[0])
        for pk in src.demux(src.streams.video[0]):
            if pk.dts is not None:
                pk.stream = vs
                dst.mux(pk)
    fs = (d / "faststart.mp4").read_bytes()
    (d / "cut_faststart.mp4").write_bytes(fs[: len(fs) // 3])
    for ext in ("mp4", "mkv"):  # containers with a declared video stream and zero frames
        with av.open(str(d / f"zero.{ext}"), "w") as c:
            z = c.add_stream("libx264", rate=25)
            z.width, z.height, z.pix_fmt = 32, 32, "yuv420p"
            c.start_encoding()
    corrupt = bytearray(data)
    corrupt[:64] = b"\x00" * 64
    (d / "corrupt.mp4").write_bytes(bytes(corrupt))
    return ["missing.mp4", "dir", "empty.mp4", "notes.mp4", "still.png", "audio.m4a", "truncated.mp4",
            "cut_faststart.mp4", "corrupt.mp4", "zero.mp4", "zero.mkv"]


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    return d, _bad_inputs(d)


@pytest.mark.parametrize("name", ["missing.mp4", "dir", "empty.mp4", "notes.mp4", "still.png", "audio.m4a",
                                  "truncated.mp4", "cut_faststart.mp4", "corrupt.mp4", "zero.mp4", "zero.mkv"])
def test_bad_input_exits_2_with_one_line(bad_dir, name, tmp_path, capsys, fake_backends):
    d, _ = bad_dir
    db = tmp_path / "fl.db"
    store = Store(db)
    # an existing successful run must survive untouched
    ok_id, _ = runs.dub(store, tiny_clip(tmp_path / "ok.mp4"),
                         RunConfig(watcher="fake", renderer="fake", critic="fake", refiner="fake"))
    snapshot = (store.get_run(ok_id).model_dump(), [r.model_dump() for r in store.rounds(ok_id)])
    code = main(["--db", str(db), "dub", str(d / name), "--out", str(tmp_path / "o.mp4"), *FAKE])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    failed = [r for r in store.list_runs() if r.id != ok_id]
    assert len(failed) == 1 and failed[0].status == "failed" and failed[0].error
    assert store.rounds(failed[0].id) == []
    assert (store.get_run(ok_id).model_dump(), [r.model_dump() for r in store.rounds(ok_id)]) == snapshot
    assert not (tmp_path / "o.mp4").exists()


def test_zero_duration_and_too_long(tmp_path, capsys, fake_backends):
    db = tmp_path / "fl.db"
    one = write_video(tmp_path / "one.mp4", np.zeros((1, 32, 32, 3), np.uint8), 25)
    code = main(["--db", str(db), "dub", str(one), "--out", str(tmp_path / "one.out.mp4"), *FAKE])
    assert code in (0, 2)  # a single frame has 40 ms duration: valid but tiny; must not crash
    long_clip = tiny_clip(tmp_path / "long.mp4", seconds=4)
    code = main(["--db", str(db), "dub", str(long_clip), "--max-duration", "2", *FAKE])
    err = capsys.readouterr().err
    assert code == 2 and "longer than --max-duration" in err


def test_absurd_frame_size_is_refused(tmp_path, monkeypatch):
    from store import media

    clip = tiny_clip(tmp_path / "c.mp4")
    with pytest.raises(media.MediaError, match="absurd"):
        media.probe(clip, max_side=32)


def test_unknown_backend_and_bad_options_exit_2(tmp_path, capsys):
    clip = tiny_clip(tmp_path / "c.mp4")
    assert main(["--db", str(tmp_path / "x.db"), "dub", str(clip), "--renderer", "nope"]) == 2
    assert "unknown renderer backend" in capsys.readouterr().err
    assert main(["--db", str(tmp_path / "x.db"), "dub", str(clip), "--keep-original", "maybe"]) == 2


def test_show_unknown_run_and_bad_plan_file(tmp_path, capsys, fake_backends):
    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "show", "doesnotexist"]) == 2
    store = Store(db)
    run_id, _ = runs.dub(store, tiny_clip(tmp_path / "ok.mp4"),
                          RunConfig(watcher="fake", renderer="fake", critic="fake", refiner="fake"))
    bad = tmp_path / "plan.json"
    bad.write_text('{"caption": "x", "duration_s": -1}')
    n_rounds = len(store.rounds(run_id))
    assert main(["--db", str(db), "regenerate", run_id, "--round", "0", "--plan", str(bad)]) == 2
    assert "not a valid plan" in capsys.readouterr().err
    assert len(store.rounds(run_id)) == n_rounds


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["dub"]) == 2
    assert main(["dub", "x.mp4", "--rounds", "abc"]) == 2
    assert main(["batch", str(tmp_path / "nope"), "--out-dir", str(tmp_path)]) == 2
