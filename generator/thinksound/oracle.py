"""Replay numerical-oracle files (spec/oracle/README.md) against our implementation.

`check_oracle(path)` detects the oracle kind, rebuilds the model from the file's own `config`,
loads its `state_dict` through the same strict loader the app uses, replays the recorded calls
and compares every recorded output. Other model families plug in through `register_checker`;
the Synchformer kinds are registered lazily from `models.synchformer.oracle`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .checkpoint import MMDIT_PREFIXES, VAE_PREFIXES, load_module
from .mmdit import MMDiT, build_mmdit
from .sampler import RectifiedFlowEuler
from .vae import build_vae, to_pcm_int16

MMDIT_ATOL = 1e-4
VAE_ATOL = 1e-6
SYNCHFORMER_ATOL = 1e-5


class OracleError(RuntimeError):
    """An oracle file cannot be checked here (unknown kind, checker missing)."""


@dataclass
class OutputCheck:
    name: str
    max_abs_err: float
    atol: float
    passed: bool
    note: str = ""


@dataclass
class OracleReport:
    kind: str
    source: str
    checks: list[OutputCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def failures(self) -> list[OutputCheck]:
        return [c for c in self.checks if not c.passed]

    def __str__(self) -> str:
        lines = [f"{self.kind} oracle {self.source}: {'PASS' if self.passed else 'FAIL'}"]
        for c in self.checks:
            lines.append(f"  {'ok  ' if c.passed else 'FAIL'} {c.name:<34} max|err| {c.max_abs_err:.3g}"
                         f" (tol {c.atol:g}){' ' + c.note if c.note else ''}")
        return "\n".join(lines)


def compare(name: str, actual: torch.Tensor, expected: torch.Tensor, atol: float, note: str = "") -> OutputCheck:
    """Max-abs comparison; integer outputs are compared in LSBs (atol 0 = exact)."""
    if tuple(actual.shape) != tuple(expected.shape):
        return OutputCheck(name, float("inf"), atol, False, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    if expected.is_floating_point():
        err = (actual.double() - expected.double()).abs().max().item() if expected.numel() else 0.0
    else:
        err = (actual.long() - expected.long()).abs().max().item() if expected.numel() else 0
    ok = err == err and err <= atol  # NaN fails
    return OutputCheck(name, float(err), atol, ok, note)


# ------------------------------------------------------------------------------------------
# registry

@dataclass
class Produced:
    """A recomputed output with its own tolerance/note, or a diagnostic with its own expected value."""

    actual: torch.Tensor
    atol: float | None = None  # None: the kind's tolerance
    note: str = ""
    expected: torch.Tensor | None = None  # None: data["outputs"][name]


Detector = Callable[[Mapping[str, Any]], bool]
# a checker returns {name: tensor | Produced | float}: tensors are compared here against
# data["outputs"][name] at the kind's tolerance, a float is an already computed max |err|;
# or it returns a ready OracleReport
Checker = Callable[[Mapping[str, Any]], "Mapping[str, torch.Tensor | Produced | float] | OracleReport"]


@dataclass
class _Entry:
    detect: Detector
    check: Checker | None
    atol: float
    lazy: tuple[str, str] | None = None  # (module, function) resolved on first use


CHECKERS: dict[str, _Entry] = {}


def register_checker(kind: str, detect: Detector, check: Checker | None = None, *, atol: float,
                     lazy: tuple[str, str] | None = None) -> None:
    """Registration point for other model families (e.g. Synchformer)."""
    CHECKERS[kind] = _Entry(detect, check, atol, lazy)


def detect_kind(data: Mapping[str, Any]) -> str:
    for kind, entry in CHECKERS.items():
        try:
            if entry.detect(data):
                return kind
        except (KeyError, TypeError, AttributeError):
            continue
    raise ValueError(f"unrecognised oracle file (top-level keys {sorted(data)}); known kinds: {sorted(CHECKERS)}")


def check_oracle(path: str | Path | Mapping[str, Any], *, kind: str | None = None) -> OracleReport:
    """Replay an oracle file; the report has max |err| and pass/fail for every recorded output."""
    source = str(path) if not isinstance(path, Mapping) else "<dict>"
    data = torch.load(path, map_location="cpu", weights_only=True) if not isinstance(path, Mapping) else path
    kind = kind or detect_kind(data)
    entry = CHECKERS[kind]
    check = entry.check
    if check is None and entry.lazy is not None:
        module, fn = entry.lazy
        try:
            check = getattr(importlib.import_module(module), fn)
        except (ImportError, AttributeError) as e:
            raise OracleError(f"oracle kind {kind!r} needs {module}.{fn}, which is not available: {e}") from e
    with torch.no_grad():
        result = check(data)
    if isinstance(result, OracleReport):
        return result
    report = OracleReport(kind, source)
    expected = data["outputs"]
    for name in expected:  # every recorded output must be reproduced
        if name not in result:
            report.checks.append(OutputCheck(name, float("inf"), entry.atol, False, "not produced by the checker"))
    for name, got in result.items():
        if isinstance(got, (int, float)):
            err = float(got)
            report.checks.append(OutputCheck(name, err, entry.atol, err == err and err <= entry.atol))
            continue
        p = got if isinstance(got, Produced) else Produced(got)
        want = p.expected if p.expected is not None else expected.get(name)
        if want is None:
            continue
        report.checks.append(compare(name, p.actual, want, entry.atol if p.atol is None else p.atol, p.note))
    return report


# ------------------------------------------------------------------------------------------
# ThinkSound kinds


def _is_mmdit(data: Mapping[str, Any]) -> bool:
    cfg = data["config"]
    return "hidden_dim" in cfg and "fused_depth" in cfg


def _is_vae(data: Mapping[str, Any]) -> bool:
    cfg = data["config"]
    return cfg.get("type") == "autoencoder" or ("encoder" in cfg.get("config", {}) and "decoder" in cfg["config"])


def check_mmdit(data: Mapping[str, Any]) -> dict[str, Any]:
    model = build_mmdit(data["config"], device="meta")
    load_module(model, data["state_dict"], MMDIT_PREFIXES, "MM-DiT", dtype=torch.float32,
                device=torch.device("cpu"), source="oracle state_dict")
    model.rebuild_tables()
    i = data["inputs"]
    out: dict[str, Any] = {}
    out["forward_cfg1"] = model(i["x"], i["t"], i["clip_f"], i["sync_f"], i["text_f"], i["t5_features"], 1.0)
    cfg = float(i.get("cfg_scale", 5.0))
    out["forward_cfg5"] = model(i["x"], i["t"], i["clip_f"], i["sync_f"], i["text_f"], i["t5_features"], cfg)
    if "clip_f_long" in i:
        out["forward_cfg5_long"] = model(i["x"], i["t"], i["clip_f_long"], i["sync_f_long"], i["text_f"],
                                         i["t5_features"], cfg)
    if "noise" in i:
        steps = int(i.get("sample_steps", 4))
        b = i["noise"].shape[0]
        cond = model.prepare_conditions(i["clip_f"][:b], i["sync_f"][:b], i["text_f"][:b], i["t5_features"][:b], cfg)
        velocity = lambda x, t: model.predict_velocity(x, t, cond, cfg)  # noqa: E731
        out[f"sample_euler{steps}_cfg5"] = RectifiedFlowEuler(steps).sample(velocity, i["noise"])
    out.update(_mmdit_intermediates(model, data))
    return out


def _mmdit_intermediates(model: MMDiT, data: Mapping[str, Any]) -> dict[str, Produced]:
    """Per-stage diagnostics of the no-CFG forward when the file records them."""
    want = data.get("intermediates_cfg1")
    if not want:
        return {}
    i = data["inputs"]
    got: dict[str, torch.Tensor] = {}
    cond = model.prepare_conditions(i["clip_f"], i["sync_f"], i["text_f"], i["t5_features"], 1.0)
    for n in ("clip_f", "sync_f", "text_f", "clip_f_c", "text_f_c"):
        got[f"cond.{n}"] = getattr(cond, n)
    hooks = [model.audio_input_proj.register_forward_hook(lambda m, a, o: got.__setitem__("audio_input_proj_out", o)),
             model.t_embed.register_forward_hook(lambda m, a, o: got.__setitem__("t_embed_out", o))]
    for j, blk in enumerate(model.joint_blocks):
        hooks.append(blk.register_forward_hook(
            lambda m, a, o, j=j: got.__setitem__(f"joint_blocks.{j}.latent_out", o[0])))
    for j, blk in enumerate(model.fused_blocks):
        hooks.append(blk.register_forward_hook(lambda m, a, o, j=j: got.__setitem__(f"fused_blocks.{j}.out", o)))
    try:
        model.predict_velocity(i["x"], i["t"], cond, 1.0)
    finally:
        for h in hooks:
            h.remove()
    return {f"intermediate {k}": Produced(got[k], MMDIT_ATOL, "diagnostic", v) for k, v in want.items() if k in got}


def check_vae(data: Mapping[str, Any]) -> dict[str, Any]:
    model = build_vae(data["config"], device="meta")
    load_module(model, data["state_dict"], VAE_PREFIXES, "Oobleck VAE", dtype=torch.float32,
                device=torch.device("cpu"), source="oracle state_dict")
    i, o = data["inputs"], data["outputs"]
    out: dict[str, Any] = {}
    decoded = model.decode(i["latents"])
    out["decoded"] = decoded
    mean, scale = model.encode(i["audio"])
    out["encoder_pre_bottleneck"] = torch.cat([mean, scale], dim=1)
    out["pcm_int16"] = Produced(to_pcm_int16(decoded), 1, "LSB, from our decode (int16 truncation may flip 1)")
    if "pcm_int16" in o and "decoded" in o:
        out["pcm_int16 from oracle decoded"] = Produced(to_pcm_int16(o["decoded"]), 0, "LSB, exact",
                                                        o["pcm_int16"])
    return out


register_checker("thinksound_mmdit", _is_mmdit, check_mmdit, atol=MMDIT_ATOL)
register_checker("thinksound_vae", _is_vae, check_vae, atol=VAE_ATOL)

# ---- Synchformer registration point ------------------------------------------------------
# models.synchformer.oracle exposes `check_visual(data)` / `check_full(data)`, each returning
# {name: max |err|} (or tensors / an OracleReport, see Checker); judged here at SYNCHFORMER_ATOL.
# It may instead call register_checker() itself to override these entries.
register_checker("synchformer_visual", lambda d: "motionformer_kwargs" in d["config"] and "sync_features" in d["outputs"],
                 atol=SYNCHFORMER_ATOL, lazy=("models.synchformer.oracle", "check_visual"))
register_checker("synchformer_full", lambda d: "ast_config_overrides" in d["config"],
                 atol=SYNCHFORMER_ATOL, lazy=("models.synchformer.oracle", "check_full"))
