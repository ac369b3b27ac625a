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


ORACLE_DIR = SHARED / "spec" / "oracle"


def load_oracle(name: str) -> dict:
    """An oracle file from ../shared/spec/oracle, or skip when this checkout has no shared/ beside it."""
    import torch

    path = ORACLE_DIR / name
    if not path.exists():
        pytest.skip(f"oracle file {path} not available")
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: on a shared 2-core box OpenMP barriers make 2 threads ~10x slower than 1."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mo() -> dict:
    """The MM-DiT oracle (tiny config, reference inputs and outputs)."""
    return load_oracle("mmdit_tiny.pt")


@pytest.fixture(scope="module")
def vo() -> dict:
    """The Oobleck VAE oracle."""
    return load_oracle("vae_tiny.pt")
