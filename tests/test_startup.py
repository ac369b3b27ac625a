"""A command's start-up and exit (issue 13: the first dub within 5 s): what the CLI process imports on the dub's
path, and how its cycle collector treats the objects the imports build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_the_cli_does_not_collect_during_start_up_and_its_exit_skips_the_collection_walks():
    # Registered before main(), so it runs after every handler main() registers (atexit is LIFO).
    out = _python("import atexit, gc\n"
                  "atexit.register(lambda: print(gc.get_freeze_count(), *gc.get_threshold()))\n"
                  "import sys\n"
                  "from agent.cli import main\n"
                  "sys.argv = ['foleyloop', 'samples']\n"
                  "main()\n")
    frozen, gen0, *_ = map(int, out.split("\n")[-2].split())
    assert gen0 >= 500_000  # CPython's default is 700: ~900 collections while torch & co are imported
    assert frozen > 10_000  # what the imports built is not walked again by the interpreter's teardown


def test_a_dub_collects_again_once_loaded_and_its_rounds_skip_what_start_up_built(tmp_path):
    from tests.helpers import FAKE, tiny_clip

    clip = tiny_clip(tmp_path / "a.mp4")
    args = ["--db", str(tmp_path / "d.db"), "dub", str(clip), "--out", str(tmp_path / "o.mp4"), *FAKE]
    out = _python("import atexit, gc, sys\n"
                  "from tests import fakes\n"
                  "fakes.install()\n"
                  "from agent.cli import main\n"
                  "seen = []\n"
                  "gc.callbacks.append(lambda phase, info: phase == 'start' and seen.append(gc.get_freeze_count()))\n"
                  "atexit.register(lambda: print(gc.get_threshold()[0], min(seen), gc.get_freeze_count()))\n"
                  "atexit.register(gc.collect)\n"
                  f"sys.argv = ['foleyloop', *{args!r}]\n"
                  "main()\n")
    gen0, first_frozen, frozen = map(int, out.split("\n")[-2].split())
    assert gen0 <= 100_000  # young garbage is collected again while the rounds run
    assert first_frozen > 10_000  # no collection walked start-up's objects (the first came after the freeze)
    assert frozen == first_frozen


def test_the_cli_process_ends_without_the_interpreters_teardown_and_keeps_its_exit_code(tmp_path):
    # A module-level object is finalized by the interpreter's teardown; atexit handlers run either way.
    code = ("import atexit, sys\n"
            "class Teardown:\n"
            "    def __del__(self):\n"
            "        print('teardown ran', flush=True)\n"
            "kept = Teardown()\n"
            "atexit.register(lambda: print('atexit ran', flush=True))\n"
            "from agent.cli import main\n"
            "sys.argv = ['foleyloop', '--db', sys.argv[1], 'show', 'nosuchrun']\n"
            "main()\n")
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d.db")], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "no run 'nosuchrun'" in p.stderr  # the command's code and message
    assert "atexit ran" in p.stdout and "teardown ran" not in p.stdout


def test_a_caller_that_passes_argv_keeps_its_own_collector_settings():
    out = _python("import gc\n"
                  "from agent.cli import main\n"
                  "main(['samples'])\n"
                  "print(gc.get_threshold()[0])\n")
    assert out.split("\n")[-2] == "700"  # tests call main(argv) in-process: their collector is not changed


def test_the_critics_mel_filters_are_torchaudios_to_the_bit():
    import torch
    import torchaudio.functional as AF

    from reasoning.offline import aisfx_embed as ae

    for args in [(ae.N_FFT // 2 + 1, ae.F_MIN, ae.F_MAX, ae.N_MELS, ae.SAMPLE_RATE), (201, 0.0, 8000.0, 40, 16000),
                 (513, 30.0, 11025.0, 64, 22050)]:
        assert torch.equal(ae.htk_mel_fbanks(*args), AF.melscale_fbanks(*args, norm=None, mel_scale="htk"))


def test_loading_the_offline_backends_and_critiquing_does_not_import_torchaudio(tmp_path):
    # torchaudio costs ≈ 0.1 s of a first dub for one mel table (now built with torch alone).
    out = _python("import sys\n"
                  "import numpy as np\n"
                  "from agent import backends, runs\n"
                  "from agent.cli.common import build_config\n"
                  "cfg = build_config(rounds=3)\n"
                  "for role in runs.ROLES:\n"
                  "    backends.load(role, cfg)\n"
                  "from reasoning.offline import aisfx_embed as ae\n"
                  "ae.log_mel(np.random.default_rng(0).standard_normal(44100).astype(np.float32))\n"
                  "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchaudio'))\n")
    assert out.strip().split("\n")[-1] == "[]"


def test_a_profiled_cli_process_still_writes_its_profile(tmp_path):
    """`python -m cProfile -o` writes after the program returns: the fast exit must not cut that off."""
    out = tmp_path / "p.prof"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "agent.cli", "--db",
                        str(tmp_path / "d.db"), "show", "nosuchrun"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert "no run 'nosuchrun'" in p.stderr  # (cProfile reports its own exit status)
    assert out.exists() and out.stat().st_size > 0
