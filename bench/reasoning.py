"""VLM reasoning cost per call: frames sent, prompt tokens, new tokens and wall time.

CPU: a tiny random Qwen2.5-VL (built in a temp dir) through the real path (chat template, qwen-vl-utils,
generate), for the watcher at two frame rates and two pixel budgets, then the refiner and the judge.
GPU: the same calls with Qwen2.5-VL-7B-Instruct in bf16 when its weights are on this machine.

    .venv/bin/python bench/reasoning.py [--seconds 10] [--new-tokens 32] [--model PATH_OR_ID] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_PIX = (56 * 56, 112 * 112)
DEFAULT_PIX = (128 * 28 * 28, 360 * 420)


class Recorder:
    """Wraps a ChatModel and keeps every Generation (the roles' own results do not all carry them)."""

    def __init__(self, chat):
        self.inner, self.calls = chat, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def chat(self, messages, max_new_tokens):
        gen = self.inner.chat(messages, max_new_tokens)
        self.calls.append(gen)
        return gen


def run_case(label: str, role, call) -> dict:
    from contract.errors import BackendError

    role.chat = Recorder(role.chat)
    t0 = time.perf_counter()
    try:
        call(role)
        outcome = "parsed"
    except BackendError as exc:
        outcome = f"rejected: {str(exc).split('last problem: ')[-1]}"
    gen = role.chat.calls[-1]
    outcome = outcome if len(outcome) < 48 else outcome[:45] + "..."
    return {"call": label, "frames": gen.frames_sent, "prompt_tokens": gen.prompt_tokens,
            "new_tokens": gen.completion_tokens, "chat_s": round(gen.wall_s, 3),
            "total_s": round(time.perf_counter() - t0, 3), "outcome": outcome}


def bench_model(model: str, clip: Path, device: str, dtype: str, pixel_sets: list[tuple[int, int]],
                new_tokens: int) -> list[dict]:
    from agent.backends import options_for
    from agent.config import RunConfig
    from contract.plan import Critique
    from reasoning.qwen import judge, loader, refiner, watcher
    from store.media import probe

    info = probe(clip)
    rows = []
    for (lo, hi) in pixel_sets:
        for fps in (1.0, 2.0):
            o = {"model": model, "fps": fps, "min_pixels": lo, "max_pixels": hi, "max_new_tokens": new_tokens,
                 "max_attempts": 1}
            cfg = RunConfig(watcher="qwen", device=device, dtype=dtype, options={"watcher": o})
            label = f"watch fps={fps:g} px≤{hi}"
            if not loader.SLOTS.loaded():
                t0 = time.perf_counter()
                loader.acquire(watcher.make(options_for("watcher", cfg)).chat.spec)
                rows.append({"call": "load model", "frames": 0, "prompt_tokens": None, "new_tokens": None,
                             "chat_s": None, "total_s": round(time.perf_counter() - t0, 3), "outcome": "loaded"})
            rows.append(run_case(label, watcher.make(options_for("watcher", cfg)), lambda w: w.watch(clip, info)))
    from tests.qwen_fixtures import sample_plan

    lo, hi = pixel_sets[-1]
    o = {"model": model, "min_pixels": lo, "max_pixels": hi, "max_new_tokens": new_tokens, "max_attempts": 1}
    cfg = RunConfig(watcher="qwen", critic="qwen", device=device, dtype=dtype, options={"refiner": o, "critic": o})
    plan = sample_plan(info.duration_s)
    crit = Critique(scores={"semantic": 0.8, "temporal": 0.3, "aesthetic": 0.7, "spatial": 0.6})
    rows.append(run_case("refine fps=1", refiner.make(options_for("refiner", cfg)), lambda r: r.refine(plan, crit, ["temporal"], 1, 0, clip,
                                                                                 info)))
    rows.append(run_case("judge fps=1", judge.make(options_for("critic", cfg)), lambda j: j.judge(plan, clip, info, crit)))
    loader.release()
    return rows


def print_table(title: str, rows: list[dict]) -> None:
    cols = ["call", "frames", "prompt_tokens", "new_tokens", "chat_s", "total_s", "outcome"]
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print(f"\n{title}")
    print("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(width[c]) for c in cols))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--model", default="Qwen/Qwen2.5-VL-7B-Instruct", help="GPU model: hub id (HF cache) or path")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from reasoning.qwen import loader
    from reasoning.qwen.tiny import build_tiny_qwen
    from store.synthetic import make_impact_clip

    tmp = Path(tempfile.mkdtemp(prefix="foleyloop-bench-reasoning-"))
    clip = make_impact_clip(tmp / "clip.mp4", duration_s=args.seconds,
                            impacts=[args.seconds * f for f in (0.2, 0.45, 0.7)], fps=25.0, size=(640, 360)).path
    print(f"clip: {args.seconds:g} s 640x360 25 fps; torch threads {torch.get_num_threads()}; "
          f"new tokens per call {args.new_tokens} (greedy); load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs (wall times scale with it)")
    results = {}
    tiny = build_tiny_qwen(tmp / "tiny")
    results["cpu_tiny"] = bench_model(str(tiny), clip, "cpu", "fp32", [TINY_PIX, DEFAULT_PIX], args.new_tokens)
    print_table("CPU, tiny random Qwen2.5-VL (fp32): the tiny model writes noise, so replies are rejected",
                results["cpu_tiny"])
    if not torch.cuda.is_available():
        print(f"\nGPU, {args.model}: skipped: no GPU")
    elif loader.find_weights(args.model) is None:
        print(f"\nGPU, {args.model}: skipped: weights not found ({loader.how_to_get(args.model)})")
    else:
        results["gpu"] = bench_model(args.model, clip, "cuda", "bf16", [DEFAULT_PIX], args.new_tokens)
        print_table(f"GPU, {args.model} (bf16)", results["gpu"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
