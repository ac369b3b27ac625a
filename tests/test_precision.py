"""`--dtype auto`: each branch of the hardware check (CPU flags, CUDA capability), explicit dtypes winning, the
resolved name recorded on runs, `foleyloop models` showing the check, and `batch --resume` keys staying stable."""

import json

import pytest

from agent.cli import main
from agent.config import RunConfig
from models import precision
from tests.helpers import FAKE, tiny_clip


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    return path


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda path=precision.CPUINFO: {"avx2", "avx512f", "avx512_bf16"})


@pytest.fixture
def plain_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda path=precision.CPUINFO: {"avx2", "fma"})


@pytest.mark.parametrize("flags, units, auto", [
    ("fpu sse avx2 avx512f avx512_bf16", True, "bf16"),
    ("fpu sse avx2 amx_bf16 amx_tile", True, "bf16"),
    ("fpu sse avx2 avx512f", False, "fp32"),
])
def test_cpu_branch_reads_the_flags(tmp_path, flags, units, auto):
    c = precision.check("cpu", cpuinfo=_cpuinfo(tmp_path, flags))
    assert (c.bf16_units, c.auto) == (units, auto)
    assert c.line().startswith(f"device cpu: bf16 units {'yes' if units else 'no'} (")
    assert c.line().endswith(f"--dtype auto → {auto}")


def test_cpu_without_cpuinfo_is_fp32(tmp_path):
    c = precision.check("cpu", cpuinfo=tmp_path / "missing")
    assert (c.bf16_units, c.auto) == (False, "fp32")


@pytest.mark.parametrize("cap, units, auto", [((9, 0), True, "bf16"), ((8, 0), True, "bf16"),
                                              ((7, 5), False, "fp16"), ((6, 1), False, "fp16")])
def test_cuda_branch_follows_the_compute_capability(monkeypatch, cap, units, auto):
    seen = []
    monkeypatch.setattr(precision, "cuda_capability", lambda device: seen.append(device) or ("Test GPU", cap))
    c = precision.check("cuda:1")
    assert (c.bf16_units, c.auto) == (units, auto) and seen == ["cuda:1"]
    assert f"compute capability {cap[0]}.{cap[1]}" in c.line()


def test_cuda_without_a_device_does_not_crash_the_check(monkeypatch):
    def none(device):
        raise RuntimeError("no CUDA GPUs are available")

    monkeypatch.setattr(precision, "cuda_capability", none)
    c = precision.check("cuda")
    assert c.auto == "fp32" and "no CUDA device visible" in c.evidence


def test_explicit_dtypes_win_over_the_check(tmp_path):
    with_units, without = _cpuinfo(tmp_path, "avx512_bf16"), tmp_path / "missing"
    assert precision.resolve("auto", "cpu", with_units) == "bf16"
    assert precision.resolve("auto", "cpu", without) == "fp32"
    assert precision.resolve("fp32", "cpu", with_units) == "fp32"
    assert precision.resolve("bf16", "cpu", without) == "bf16"
    with pytest.raises(ValueError, match="--dtype must be auto, fp32, fp16, bf16"):
        precision.resolve("int8", "cpu")


def test_the_default_config_resolves_per_machine(bf16_cpu, monkeypatch):
    assert RunConfig().dtype == "auto"
    assert RunConfig().resolved().dtype == "bf16" and RunConfig(dtype="fp32").resolved().dtype == "fp32"
    monkeypatch.setattr(precision, "cpu_flags", lambda path=precision.CPUINFO: set())
    assert RunConfig().resolved().dtype == "fp32" and RunConfig(dtype="bf16").resolved().dtype == "bf16"
    with pytest.raises(ValueError, match="dtype must be"):
        RunConfig(dtype="float8")


@pytest.mark.parametrize("argv, want", [([], "bf16"), (["--dtype", "fp32"], "fp32"), (["--dtype", "auto"], "bf16")])
def test_a_dub_records_the_resolved_dtype(tmp_path, capsys, fake_backends, bf16_cpu, argv, want):
    from store.db import Store

    clip = tiny_clip(tmp_path / "c.mp4", seconds=1.0, size=32)
    db = tmp_path / "fl.db"
    assert main(["--db", str(db), "dub", str(clip), "--rounds", "1", "--device", "cpu", *FAKE,
                 "--out", str(tmp_path / "o.mp4"), *argv]) == 0
    run = Store(db).list_runs()[0]
    assert json.loads(run.config_json)["dtype"] == want


def test_the_service_resolves_auto_before_recording(tmp_path, fake_backends, plain_cpu):
    from agent import runs
    from store.db import Store

    st = Store(tmp_path / "fl.db")
    cfg = RunConfig(watcher="fake", renderer="fake", critic="fake", refiner="fake", rounds=1)
    run_id = runs.create_dub_run(st, tiny_clip(tmp_path / "c.mp4", seconds=1.0, size=32), cfg)
    stored = json.loads(st.get_run(run_id).config_json)
    assert (stored["dtype"], stored["device"]) == ("fp32", "cpu")


def test_models_shows_the_check(capsys, bf16_cpu, monkeypatch):
    import agent.devices

    monkeypatch.setattr(agent.devices, "resolve_device", lambda name: "cpu" if name == "auto" else name)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "device cpu: bf16 units yes (avx512_bf16); --dtype auto → bf16" in out
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    device = [r for r in rows if r["role"] == "device"]
    assert device and (device[0]["bf16_units"], device[0]["dtype_auto"]) == (True, "bf16")


def test_batch_resume_keys_are_stable_with_dtype_auto(tmp_path, capsys, fake_backends, bf16_cpu):
    """The config is hashed after resolution on both passes: a rerun with --resume skips every clip, and an explicit
    --dtype equal to what auto resolved to is the same config."""
    from agent import batch
    from store.db import Store

    (tmp_path / "in").mkdir()
    for i in range(2):
        tiny_clip(tmp_path / "in" / f"c{i}.mp4", seconds=1.0, size=32, seed=i)
    db, out = tmp_path / "fl.db", tmp_path / "out"
    args = ["--db", str(db), "batch", str(tmp_path / "in"), "--out-dir", str(out), "--rounds", "1",
            "--device", "cpu", *FAKE]
    assert main(args) == 0
    runs = Store(db).list_runs()
    assert {json.loads(r.config_json)["dtype"] for r in runs} == {"bf16"}
    capsys.readouterr()
    assert main(args + ["--resume"]) == 0
    assert "0 done, 0 failed, 2 skipped" in capsys.readouterr().out
    assert main(args + ["--dtype", "bf16", "--resume"]) == 0
    assert "0 done, 0 failed, 2 skipped" in capsys.readouterr().out
    keys = {batch._key_of(r.config_json) for r in runs}
    cfg = RunConfig(watcher="fake", renderer="fake", critic="fake", refiner="fake", rounds=1)
    assert keys == {batch.config_key(cfg.resolved())}
    assert batch.config_key(cfg) not in keys  # an unresolved "auto" would never match a stored run
