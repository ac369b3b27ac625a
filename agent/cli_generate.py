"""Generator commands on the main CLI: `text`, `edit`, `convert`, `check-oracle` (registered by ``agent.cli``).

Exit codes follow agent.cli: 0 ok, 2 bad input (one line), 1 internal error; `check-oracle` exits 1 when an
output is outside its tolerance.
"""

from __future__ import annotations

import json
import mimetypes
import re
import tempfile
import time
from pathlib import Path
from typing import Optional, Tuple

import click
import typer
from rich.console import Console
from rich.table import Table

from contract.errors import UserError
from contract.plan import Event, EventKind, Plan, Provenance

out_console = Console()
err_console = Console(stderr=True)

FEATURE_FLAGS = ("metaclip", "t5", "synchformer")
DEFAULT_VARIATION_STRENGTH = 0.5


# ---- helpers (importable: the studio and tests build the same plans and options) ---------------------------
def plan_from_prompt(prompt: str, duration_s: float) -> Plan:
    """A human plan for a text prompt: caption = first ≤12 words, semantic = prompt, one bed over the clip."""
    words = prompt.split()
    if not words:
        raise UserError("the prompt is empty")
    if not duration_s > 0:
        raise UserError(f"--duration must be > 0, got {duration_s}")
    caption = " ".join(words[:12])
    return Plan(caption=caption, semantic=" ".join(words), duration_s=float(duration_s),
                events=[Event(id="e0", label=caption[:120], kind=EventKind.ambience, start_s=0.0,
                              end_s=float(duration_s))],
                provenance=Provenance(author="human"))


def renderer_options(weights: Optional[Path] = None, steps: Optional[int] = None, cfg_scale: Optional[float] = None,
                     metaclip: Optional[str] = None, t5: Optional[str] = None,
                     synchformer: Optional[str] = None) -> dict:
    """The `options["renderer"]` entries for the ThinkSound flags (paths made absolute, as `dub` does)."""
    o: dict = {}
    if weights:
        o["weights"] = str(Path(weights).expanduser().resolve())
    if steps:
        o["steps"] = int(steps)
    if cfg_scale is not None:
        o["cfg_scale"] = float(cfg_scale)
    for key, value in zip(FEATURE_FLAGS, (metaclip, t5, synchformer)):
        if value:
            p = Path(value).expanduser()
            o[key] = str(p.resolve()) if p.exists() else value  # a local path, or a hub id
    return o


def _store(ctx: typer.Context):
    from store.db import Store

    db = ctx.find_root().params.get("db")
    return Store(db) if db else Store()


def _slug(text: str, words: int = 4) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower())[:words]) or "audio"


def _wav_out(out: Optional[Path], default: Path) -> Path:
    path = Path(out).expanduser() if out else default
    if path.suffix.lower() != ".wav":
        raise UserError(f"--out must be a .wav file, got {path.name}")
    return path


class CheckFailed(click.ClickException):
    """Exit 1 with a message. A ClickException, not typer.Exit: agent.cli.main runs click with
    standalone_mode=False, where click turns Exit into a return value that main() does not pass on."""

    exit_code = 1


def _as_user_error(exc: Exception) -> UserError:
    return UserError(" ".join(str(exc).split()))


# ---- text ---------------------------------------------------------------------------------------------------
def _text(ctx: typer.Context, prompt: str, duration: float, out: Optional[Path], rounds: int, seed: int,
          renderer: str, weights: Optional[Path], critic: str, refiner: Optional[str], steps: Optional[int],
          cfg_scale: Optional[float], metaclip: Optional[str], t5: Optional[str], synchformer: Optional[str],
          device: str, dtype: str) -> None:
    from agent import backends, graph
    from agent.cli import _build_config
    from contract.errors import BackendError, ModelMissing

    plan = plan_from_prompt(prompt, duration)
    cfg = _build_config(rounds, seed, False, "offline", None, None, renderer, weights, critic, refiner,
                        max(600.0, duration), "drop", device, dtype, steps, cfg_scale)
    extra = renderer_options(metaclip=metaclip, t5=t5, synchformer=synchformer)
    if extra:
        cfg = cfg.model_copy(update={"options": {**cfg.options, "renderer": {**cfg.opts("renderer"), **extra}}})
    out_path = _wav_out(out, Path.cwd() / f"{_slug(prompt)}.wav")
    store = _store(ctx)
    err_console.print(f"text-to-audio: {plan.caption!r}, {duration:g} s, {cfg.rounds} rounds max, "
                      f"renderer {cfg.renderer}")
    try:
        backends.get("renderer", cfg)  # missing weights fail here, before a run is recorded
        run_id, _ = graph.text_to_audio(store, plan, cfg, out_path, show_progress=True)
    except ModelMissing:
        raise
    except BackendError as exc:
        raise _as_user_error(exc) from None
    run = store.get_run(run_id)
    best = "—" if run.best_overall is None else f"{run.best_overall:.3f}"
    out_console.print(f"run {run_id} done ({run.stop_reason}); best overall {best}; output: {run.output_path}")


# ---- edit ---------------------------------------------------------------------------------------------------
def _edit_source(store, source: str):
    """(audio path, source run, source round, video path) for a file or a run id ('last' works too)."""
    p = Path(source).expanduser()
    if p.is_file():
        return p, None, None, None
    run = store.get_run(source)
    if run is None:
        raise UserError(f"{source}: no such audio file, and no run with that id in {store.db_path}")
    rnd = store.get_round(run.best_round_id) if run.best_round_id is not None else None
    if rnd is None:
        rounds = [r for r in store.rounds(run.id) if r.audio_artifact_id is not None]
        rnd = rounds[-1] if rounds else None
    if rnd is None or rnd.audio_artifact_id is None:
        raise UserError(f"run {run.id} has no rendered audio to edit")
    video = Path(run.video_path) if run.video_path and Path(run.video_path).is_file() else None
    return store.artifact_path(rnd.audio_artifact_id), run, rnd, video


def _edit_plan(plan_file: Optional[Path], prompt: Optional[str], src_round, duration_s: float) -> Plan:
    if plan_file is not None and prompt:
        raise UserError("give --plan or --prompt, not both")
    if plan_file is not None:
        from agent.cli import _load_plan

        return _load_plan(plan_file)
    if prompt:
        return plan_from_prompt(prompt, duration_s)
    if src_round is not None:
        return Plan.from_json(src_round.plan_json)
    raise UserError("editing an audio file needs --plan PLAN.json or --prompt TEXT")


def _edit(ctx: typer.Context, source: str, plan_file: Optional[Path], prompt: Optional[str],
          strength: Optional[float], window: Optional[Tuple[float, float]], out: Optional[Path],
          weights: Optional[Path], seed: int, steps: Optional[int], cfg_scale: Optional[float],
          metaclip: Optional[str], t5: Optional[str], synchformer: Optional[str], device: str, dtype: str) -> None:
    from agent import backends
    from agent.config import RunConfig
    from generator.thinksound.pipeline import SAMPLE_RATE, peak_normalise, stereo_44k
    from generator.thinksound.renderer import make
    from contract.errors import BackendError, ModelMissing
    from store import media

    window = tuple(window) if window and None not in window else None
    if strength is None:
        strength = 1.0 if window else DEFAULT_VARIATION_STRENGTH
    if not 0.0 <= strength <= 1.0 or (window and strength == 0.0):
        raise UserError(f"--strength must be in 0..1 (and > 0 with --window), got {strength}")
    store = _store(ctx)
    audio_path, src_run, src_round, video = _edit_source(store, source)
    raw, rate = media.read_audio(audio_path)
    audio = stereo_44k(raw, rate)
    duration = audio.shape[1] / SAMPLE_RATE
    if window and not (0 <= window[0] < window[1] and window[0] < duration):
        raise UserError(f"--window {window[0]:g} {window[1]:g} must satisfy 0 <= START < END, START < {duration:.2f} s")
    plan = _edit_plan(plan_file, prompt, src_round, duration)
    opts = renderer_options(weights, steps, cfg_scale, metaclip, t5, synchformer)
    cfg = RunConfig(renderer="thinksound", seed=seed, rounds=1, device=device, dtype=dtype,
                    options={"renderer": opts})
    try:
        renderer = make(backends.options_for("renderer", cfg))
    except ModelMissing:
        raise
    except (BackendError, ValueError) as exc:
        raise _as_user_error(exc) from None
    stem = audio_path.stem if src_run is None else src_run.id
    out_path = _wav_out(out, Path.cwd() / f"{stem}.edit.wav")

    run = store.create_run(kind="edit", prompt=plan.caption, duration_s=duration,
                           video_path=str(video) if video else "", config_json=cfg.model_dump_json(),
                           status="running", parent_run_id=src_run.id if src_run else None,
                           backends_json={"renderer": "thinksound", "renderer_model_id": renderer.model_id,
                                          "options": cfg.options})
    store.put_file(audio_path, kind="input", run_id=run.id, mime=mimetypes.guess_type(audio_path.name)[0] or "")
    source_note = {"audio": str(audio_path), "run_id": src_run.id if src_run else None,
                   "round_id": src_round.id if src_round else None}
    what = (f"window {window[0]:g}-{window[1]:g} s regenerated" if window else "variation") + \
        f" at strength {strength:g} of " + (f"run {src_run.id}" if src_run else audio_path.name)
    rnd = store.add_round(run_id=run.id, index=0, branch=0, author="human", plan_json=plan.to_json(), seed=seed,
                          model_id=renderer.model_id, changes_json=[what])
    t0 = time.perf_counter()
    err_console.print(f"run [bold]{run.id}[/bold]: {what}")
    try:
        kw = dict(video=video, seed=seed, steps=renderer.steps, cfg_scale=renderer.cfg_scale)
        if window:
            gen = renderer.pipeline.inpaint(audio, window, plan.caption, plan.cot_text(), strength=strength, **kw)
        else:
            gen = renderer.pipeline.variation(audio, plan.caption, plan.cot_text(), strength, **kw)
        tmp_dir = store.home / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
            wav = media.write_audio(Path(tmp) / "audio.wav", peak_normalise(gen.audio), SAMPLE_RATE)
            art = store.put_file(wav, kind="audio", run_id=run.id, mime="audio/wav", move=True)
    except Exception as exc:
        msg = f"{type(exc).__name__}: {exc}"[:2000]
        store.update_round(rnd.id, status="failed", error=msg)
        store.update_run(run.id, status="failed", error=msg)
        if isinstance(exc, (BackendError, ValueError)) and not isinstance(exc, ModelMissing):
            raise _as_user_error(exc) from None
        raise
    seconds = time.perf_counter() - t0
    meta = gen.meta | {"model_id": renderer.model_id, "caption": plan.caption, "source": source_note}
    store.update_round(rnd.id, audio_artifact_id=art.id, status="rendered",
                       timings_json={"render_meta": json.loads(json.dumps(meta, default=str))})
    store.add_timing(run.id, "node:render", seconds)
    media.copy_file(store.artifact_path(art.id), out_path)
    record = {"stop_reason": "edit", "best_round_id": rnd.id, "best_overall": None,
              "output_path": str(out_path.resolve())}
    store.update_run(run.id, status="done", stop_reason="edit", best_round_id=rnd.id, n_rounds=1,
                     output_path=record["output_path"], branches_json={"0": record})
    out_console.print(f"run {run.id} done (edit, {seconds:.1f} s); output: {record['output_path']}")


# ---- convert / check-oracle ---------------------------------------------------------------------------------
def _convert(src: Path, dst: Path, trust_pickle: bool, dtype: Optional[str], keep_all: bool) -> None:
    from generator.thinksound import CheckpointError, convert_to_safetensors

    if dst.suffix != ".safetensors":
        raise UserError(f"DST must end in .safetensors, got {dst.name}")
    try:
        info = convert_to_safetensors(src, dst, trust_pickle=trust_pickle, dtype=dtype, keep_all=keep_all)
    except (CheckpointError, ValueError) as exc:
        raise _as_user_error(exc) from None
    dropped = f"; dropped {info['dropped']} non-model tensors" if info["dropped"] else ""
    out_console.print(f"wrote {info['dst']}: {info['tensors']} tensors, {info['elements']:,} elements{dropped}")


def _check_oracle(file: Path) -> None:
    import torch

    from generator.thinksound.oracle import check_oracle, detect_kind

    if not file.is_file():
        raise UserError(f"{file}: no such oracle file")
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
        kind = detect_kind(data)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a bad argument, not a failed check
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{file}: not a readable oracle file ({type(exc).__name__}: {first[:200]})") from None
    try:
        report = check_oracle(data, kind=kind)
    except Exception as exc:  # noqa: BLE001 - a model that cannot even be built from the file fails the check
        raise CheckFailed(f"{kind} oracle {file}: FAIL ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:500]})") from None
    table = Table("output", "max |err|", "tolerance", "result", "note", title=f"{kind} oracle {file.name}")
    for c in report.checks:
        table.add_row(c.name, f"{c.max_abs_err:.3g}", f"{c.atol:g}", "ok" if c.passed else "[red]FAIL[/red]", c.note)
    out_console.print(table)
    n_ok = len(report.checks) - len(report.failures())
    summary = f"{n_ok}/{len(report.checks)} outputs within tolerance"
    if not report.passed:
        raise CheckFailed(f"FAIL: {summary}: {', '.join(c.name for c in report.failures())}")
    out_console.print(f"PASS: {summary}")


# ---- registration -------------------------------------------------------------------------------------------
def register(app: typer.Typer) -> None:
    if getattr(app, "_generator_commands", False):  # main() may run several times in one process (tests)
        return
    app._generator_commands = True

    o_weights = typer.Option(None, "--weights", help="ThinkSound weights folder (see generator/thinksound/weights.py)")
    o_steps = typer.Option(None, "--steps", min=1, help="Sampler steps (thinksound; default 24)")
    o_cfg = typer.Option(None, "--cfg-scale", help="Guidance scale (thinksound; default 5)")
    o_clip = typer.Option(None, "--metaclip", help="MetaCLIP hub id or folder (thinksound)")
    o_t5 = typer.Option(None, "--t5", help="T5 hub id or folder (thinksound)")
    o_sync = typer.Option(None, "--synchformer", help="synchformer_state_dict.pth (default: in --weights)")
    o_device = typer.Option("cpu", "--device", help="cpu | cuda | mps")
    o_dtype = typer.Option("fp32", "--dtype", help="fp32 | fp16 | bf16")

    @app.command("text")
    def text_cmd(ctx: typer.Context, prompt: str = typer.Argument(..., help="What to hear"),
                 duration: float = typer.Option(8.0, "--duration", help="Seconds"),
                 out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output .wav (default ./PROMPT.wav)"),
                 rounds: int = typer.Option(3, "--rounds", min=1, max=20, help="Round cap"),
                 seed: int = typer.Option(0, "--seed"),
                 renderer: str = typer.Option("offline", "--renderer", help="offline | thinksound"),
                 weights: Optional[Path] = o_weights,
                 critic: str = typer.Option("offline", "--critic", help="offline | qwen | openai"),
                 refiner: Optional[str] = typer.Option(None, "--refiner", help="default: offline"),
                 steps: Optional[int] = o_steps, cfg_scale: Optional[float] = o_cfg,
                 metaclip: Optional[str] = o_clip, t5: Optional[str] = o_t5, synchformer: Optional[str] = o_sync,
                 device: str = o_device, dtype: str = o_dtype):
        """Text to audio: render a prompt (no video) through the render → critique → refine loop."""
        _text(ctx, prompt, duration, out, rounds, seed, renderer, weights, critic, refiner, steps, cfg_scale,
              metaclip, t5, synchformer, device, dtype)

    @app.command("edit")
    def edit_cmd(ctx: typer.Context,
                 source: str = typer.Argument(..., metavar="AUDIO_OR_RUN", help="Audio file, run id, or 'last'"),
                 plan: Optional[Path] = typer.Option(None, "--plan", help="Plan JSON for the new audio"),
                 prompt: Optional[str] = typer.Option(None, "--prompt", help="Text for the new audio"),
                 strength: Optional[float] = typer.Option(None, "--strength",
                                                          help="0 keeps the input, 1 ignores it (default 0.5; 1 "
                                                               "with --window)"),
                 window: Optional[Tuple[float, float]] = typer.Option(None, "--window", metavar="START END",
                                                                      help="Regenerate only this span (s)"),
                 out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output .wav"),
                 weights: Optional[Path] = o_weights, seed: int = typer.Option(0, "--seed"),
                 steps: Optional[int] = o_steps, cfg_scale: Optional[float] = o_cfg,
                 metaclip: Optional[str] = o_clip, t5: Optional[str] = o_t5, synchformer: Optional[str] = o_sync,
                 device: str = o_device, dtype: str = o_dtype):
        """Audio to audio with ThinkSound: a variation of a track, or a regenerated time window."""
        _edit(ctx, source, plan, prompt, strength, window, out, weights, seed, steps, cfg_scale, metaclip, t5,
              synchformer, device, dtype)

    @app.command("convert")
    def convert_cmd(src: Path = typer.Argument(..., help=".ckpt / .pt / .pth checkpoint"),
                    dst: Path = typer.Argument(..., help="Output .safetensors"),
                    trust_pickle: bool = typer.Option(False, "--trust-pickle",
                                                      help="Unpickle SRC fully (runs code from the file!)"),
                    dtype: Optional[str] = typer.Option(None, "--dtype", help="Cast floats: fp32 | fp16 | bf16"),
                    keep_all: bool = typer.Option(False, "--keep-all", help="Keep optimizer/EMA tensors too")):
        """Rewrite a checkpoint as safetensors (tensors only; loads without unpickling afterwards)."""
        _convert(src, dst, trust_pickle, dtype, keep_all)

    @app.command("check-oracle")
    def check_oracle_cmd(file: Path = typer.Argument(..., help="Oracle .pt (MM-DiT, VAE, Synchformer)")):
        """Replay a numerical oracle file; exit 0 when every output is within tolerance, 1 otherwise."""
        _check_oracle(file)
