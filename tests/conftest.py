import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def store(tmp_path):
    from store.db import Store

    return Store(tmp_path / "home" / "foleyloop.db")


@pytest.fixture
def fake_backends():
    from agent import backends
    from tests import fakes

    fakes.install()
    yield
    backends.clear_cache()
