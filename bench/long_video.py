"""Long videos: wall time per minute of video and peak RSS of whole offline dubs of 1-, 5- and 30-minute clips.

    .venv/bin/python bench/long_video.py [--minutes 1 5 30] [--size 16x16] [--rounds 3] [--cache DIR]

The clips are synthesised once (cached under --cache): low-resolution moving shapes, H.264 ultrafast, streamed to
the encoder frame by frame. A grey square glides left and right on a slow sine (movement, no contact) while a small
bright square drops and bounces on the floor every few seconds (impacts, alternating sides). Each dub runs in its
own process (``python -m agent.cli dub ... --max-duration 3600``); its peak RSS comes from ``os.wait4``.
Target (issue 11 item 11, issue 13): a 30-minute 16x16 clip dubs with peak RSS <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FPS = 25
SUPER = 4  # supersampling per side: sub-pixel motion stays smooth at 16x16
BOUNCE_S = 6.0  # one drop-and-bounce of the small square every this many seconds


def _frame(i: int, w: int, h: int):
    """Frame ``i`` (RGB uint8 HxWx3): a gliding grey square and a bouncing bright one, drawn at SUPER x."""
    import numpy as np

    t = i / FPS
    W, H = w * SUPER, h * SUPER
    img = np.full((H, W, 3), 40.0, np.float32)
    # glide: a grey square on a 40 s sine, top third
    s = max(SUPER, W // 4)
    x = (W - s) * (0.5 + 0.5 * np.sin(2 * np.pi * t / 40.0))
    img[H // 8:H // 8 + s, int(x):int(x) + s] = 150.0
    # bounce: falls with gravity, hits the floor at the middle of each period, rebounds, then rests off-screen
    k, u = divmod(t, BOUNCE_S)
    side = 0.25 if int(k) % 2 == 0 else 0.75  # alternate left / right
    b = max(SUPER, W // 6)
    floor = H - b
    hit = BOUNCE_S / 2
    y = floor * min(1.0, (u / hit) ** 2) if u < hit else floor - floor * 0.6 * np.sin(np.pi * min(1.0, (u - hit) / 1.2))
    if u < hit + 1.2:
        x0 = int(side * W - b / 2)
        img[int(y):int(y) + b, x0:x0 + b] = (250.0, 230.0, 90.0)
    return img.reshape(h, SUPER, w, SUPER, 3).mean(axis=(1, 3)).round().astype(np.uint8)


def make_clip(path: Path, minutes: float, size: tuple[int, int]) -> Path:
    """Write the clip frame by frame (bounded memory), once; a finished file is reused."""
    import av

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part" + path.suffix)
    w, h = size
    with av.open(str(tmp), "w") as dst:
        vs = dst.add_stream("libx264", rate=Fraction(FPS))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(int(round(minutes * 60 * FPS))):
            for packet in vs.encode(av.VideoFrame.from_ndarray(_frame(i, w, h), format="rgb24")):
                dst.mux(packet)
        for packet in vs.encode(None):
            dst.mux(packet)
    tmp.replace(path)
    return path


def dub(clip: Path, rounds: int, work: Path) -> dict:
    """One CLI dub in a child process: wall time, peak RSS (wait4) and the run's per-node timings."""
    db, out = work / f"{clip.stem}.db", work / f"{clip.stem}.out.mp4"
    for p in (db, out):
        p.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "agent.cli", "--db", str(db), "dub", str(clip), "--rounds", str(rounds),
           "--max-duration", "3600", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    result = {"code": code, "wall_s": wall, "peak_rss_gb": usage.ru_maxrss / 1024 ** 2, "tail": output[-1500:]}
    if code == 0:
        from store.db import Store

        store = Store(db)
        run = store.list_runs()[0]
        result["timings"] = run.timings()
        result["rounds"] = len(store.rounds(run.id))
        result["stop"] = run.stop_reason
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 5.0, 30.0])
    ap.add_argument("--size", default="16x16", help="WxH of the synthetic clips")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "foleyloop-long-video")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    work = Path(tempfile.mkdtemp(prefix="foleyloop-long-"))
    print(f"clips {w}x{h} @{FPS} fps (cached in {args.cache}); rounds <= {args.rounds}; work dir {work}")
    print(f"{'minutes':>7} {'wall s':>8} {'s/min video':>11} {'peak RSS GB':>11} {'rounds':>6}  per-node s")
    for minutes in args.minutes:
        t0 = time.perf_counter()
        clip = make_clip(args.cache / f"shapes_{w}x{h}_{minutes:g}min.mp4", minutes, (w, h))
        built = time.perf_counter() - t0
        r = dub(clip, args.rounds, work)
        if r["code"] != 0:
            print(f"{minutes:7g} FAILED (exit {r['code']}) after {r['wall_s']:.1f} s, peak RSS {r['peak_rss_gb']:.2f} GB")
            print(r["tail"])
            continue
        nodes = ", ".join(f"{k[5:]} {v:.1f}" for k, v in sorted(r["timings"].items()) if k.startswith("node:"))
        extra = f" (clip built in {built:.0f} s)" if built > 1 else ""
        print(f"{minutes:7g} {r['wall_s']:8.1f} {r['wall_s'] / minutes:11.2f} {r['peak_rss_gb']:11.2f} "
              f"{r['rounds']:6d}  {nodes}; load {r['timings'].get('load', 0):.1f}, stop {r['stop']}{extra}",
              flush=True)


if __name__ == "__main__":
    main()
