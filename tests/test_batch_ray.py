"""Batch dubbing on a real Ray runtime, loopback only: a private single-node instance, and a two-node
``ray.cluster_utils.Cluster`` on 127.0.0.2 (node A: 1 CPU; node B: 1 CPU and one logical GPU). Fake backends keep
the clips fast: what is tested is scheduling, retries and recording. Each test leaves no Ray process behind."""

import os
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import ray

from agent import batch
from agent.cli import main
from tests import fakes
from tests.helpers import FAKE, ROOT, cli_subprocess
from tests.test_batch import FAKE_CFG, by_sha, make_clips, out_name, store_at

SETUP = ["tests.fakes:install"]  # the workers' own backend registry gets the fakes too
EXTS = {".mp4"}


@contextmanager
def ray_env():
    """Ray's files under a short folder (unix socket paths are limited to ~107 characters), no auth token in
    ~/.ray, the workers' scratch space there too; the environment is restored and the folder removed after."""
    short = tempfile.mkdtemp(prefix="r", dir="/tmp")
    os.makedirs(os.path.join(short, "ray"))
    env = {"RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": short, "TMPDIR": short,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "FOLEYLOOP_FAKE_RENDER_DELAY": "0.3"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield short
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(short, ignore_errors=True)


def descendants() -> dict[int, psutil.Process]:
    return {p.pid: p for p in psutil.Process().children(recursive=True)}


def assert_gone(procs, timeout: float = 30.0) -> None:
    _, alive = psutil.wait_procs(list(procs), timeout=timeout)
    left = []
    for p in alive:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {p.name()}")
        except psutil.Error:
            pass
    assert not left, f"Ray processes left over: {left}"


def test_a_private_single_node_instance_dubs_and_leaves_nothing(tmp_path):
    with ray_env() as short:
        fakes.install()
        make_clips(tmp_path / "in", 3)
        st = store_at(tmp_path / "fl.db")
        todo = batch.collect(tmp_path / "in", tmp_path / "out", FAKE_CFG.model_copy(update={"rounds": 1}), out_name,
                             EXTS)
        shared = tmp_path / "shared"
        before, seen = set(descendants()), {}
        engine = batch.RayEngine(workers=2, artifacts_dir=shared, setup=SETUP, init_options={
            "num_cpus": 2, "num_gpus": 0, "object_store_memory": 100 << 20, "_temp_dir": os.path.join(short, "ray")})
        report = batch.run(st, todo, engine, on_outcome=lambda o: seen.update(descendants()))
        assert not ray.is_initialized()  # the engine started it, the engine stopped it
        assert_gone(p for pid, p in seen.items() if pid not in before)
    assert [o.status for o in report.outcomes] == ["done"] * 3
    assert len({o.worker["pid"] for o in report.outcomes}) == 2  # two actors shared the clips
    assert all(c.out.is_file() for c in todo)
    assert list(shared.iterdir()) == []  # results came back as files there and moved into the store
    for run in st.list_runs():
        assert all(st.artifact_path(r.audio_artifact_id).is_file() for r in st.rounds(run.id))
        assert run.backends()["worker"]["node_id"]


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    with ray_env():
        c = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "node_ip_address": "127.0.0.2", "include_dashboard": False,
            "object_store_memory": 100 << 20})
        procs: dict = {}
        try:
            c.add_node(num_cpus=1, num_gpus=1, node_ip_address="127.0.0.2", object_store_memory=100 << 20)
            c.wait_for_nodes()
            yield c, procs
        finally:
            procs.update(descendants())
            if ray.is_initialized():
                ray.shutdown()
            c.shutdown()
            assert_gone(procs.values())


@pytest.fixture
def connected(cluster):
    """The test process joined to the cluster (the engine then uses this connection and leaves it open)."""
    c, procs = cluster
    ray.init(address=c.address, log_to_driver=False)
    yield {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
    procs.update(descendants())
    ray.shutdown()


def test_two_nodes_share_the_clips_and_a_killed_workers_clip_is_retried_once(cluster, connected, tmp_path):
    fakes.install()
    make_clips(tmp_path / "in", 8)
    st = store_at(tmp_path / "fl.db")
    todo = batch.collect(tmp_path / "in", tmp_path / "out", FAKE_CFG.model_copy(update={"rounds": 1}), out_name,
                         EXTS)
    engine = batch.RayEngine(address=cluster[0].address, workers=2, setup=SETUP)
    killed: dict = {}

    def kill_a_busy_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                busy = [(engine.info[a]["pid"], key) for a, key in list(engine.running.values()) if a in engine.info]
            except RuntimeError:  # the dict changed while being read
                busy = []
            if busy:
                time.sleep(0.15)  # mid-clip
                os.kill(busy[0][0], signal.SIGKILL)
                killed.update(pid=busy[0][0], key=busy[0][1])
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    report = batch.run(st, todo, engine)
    killer.join()
    assert killed, "no worker was busy to be killed"
    assert not batch._pid_alive(killed["pid"])
    assert [o.status for o in report.outcomes] == ["done"] * 8
    assert {o.worker["node_id"] for o in report.outcomes} == set(connected)  # both nodes worked
    retried = next(o for o in report.outcomes if o.clip == todo[killed["key"]])
    assert retried.worker["pid"] != killed["pid"]  # a restarted actor did it again
    groups = by_sha(st)
    assert len(groups) == 8 and all(len(v) == 1 and v[0].status == "done" for v in groups.values())
    assert sum(len(st.rounds(v[0].id)) for v in groups.values()) == 8  # one round each: nothing stored twice
    assert all(c.out.is_file() for c in todo)
    assert not (Path(os.environ["TMPDIR"]) / "foleyloop-batch").exists()  # scratch, the dead actor's included


def test_a_killed_driver_then_resume_on_the_cluster_stores_every_clip_once(cluster, tmp_path, capsys):
    make_clips(tmp_path / "in", 8)
    db, out = tmp_path / "fl.db", tmp_path / "out"
    args = ["--db", str(db), "batch", str(tmp_path / "in"), "--out-dir", str(out), "--rounds", "2", *FAKE,
            "--engine", "ray", "--address", cluster[0].address, "--workers", "2", "--worker-setup", SETUP[0]]
    proc = cli_subprocess(args)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists() and sum(r.status == "done" for r in store_at(db).list_runs()) >= 3:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    st = store_at(db)
    done_before = {r.id for r in st.list_runs() if r.status == "done"}
    assert 3 <= len(done_before) < 8

    fakes.install()
    assert main(args + ["--resume"]) == 0
    assert not ray.is_initialized()
    text = capsys.readouterr().out
    assert f"{len(done_before)} skipped" in text and "0 failed" in text
    groups = by_sha(st)
    assert len(groups) == 8 and all(len(v) == 1 and v[0].status == "done" for v in groups.values())
    assert done_before <= {v[0].id for v in groups.values()}
    assert all(v[0].backends()["worker"]["node_id"] for v in groups.values())  # each dubbed by a Ray worker
    assert sorted(p.name for p in out.iterdir()) == [f"c{i}.foley.mp4" for i in range(8)]


def test_gpu_clips_go_to_the_gpu_node_and_a_second_gpu_worker_waits(cluster, connected, tmp_path):
    fakes.install()
    make_clips(tmp_path / "in", 3)
    st = store_at(tmp_path / "fl.db")
    todo = batch.collect(tmp_path / "in", tmp_path / "out", FAKE_CFG.model_copy(update={"rounds": 1}), out_name,
                         EXTS)
    notes: list[str] = []
    engine = batch.RayEngine(address=cluster[0].address, workers=2, setup=SETUP, on_note=notes.append)
    # --device auto on a cluster: its GPU decides (the driver has none), so the clips run on CUDA
    report = batch.run(st, todo, engine, auto_device=True, on_note=notes.append)
    gpu_nodes = {nid for nid, n in connected.items() if n["Resources"].get("GPU")}
    assert len(gpu_nodes) == 1 and len(connected) == 2
    assert [o.status for o in report.outcomes] == ["done"] * 3
    assert {o.worker["node_id"] for o in report.outcomes} == gpu_nodes
    assert len({o.worker["pid"] for o in report.outcomes}) == 1  # the second GPU worker never started
    assert any("room for 1 GPU workers" in n for n in notes)
    assert {run.config()["device"] for run in st.list_runs()} == {"cuda"}
