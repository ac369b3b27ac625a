"""`foleyloop convert` (checkpoint → safetensors) and `foleyloop check-oracle` (replay a numerical oracle).

`check-oracle` exits 1 when an output is outside its tolerance; warnings raised while replaying go to the debug
log, not to the terminal, so its output is the table and one verdict line.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from agent.cli.common import CommandFailed, Db, Debug, as_user_error, out_console
from contract.errors import UserError

app = typer.Typer()
log = logging.getLogger(__name__)


class CheckFailed(CommandFailed):
    """An oracle output outside its tolerance, or a model that cannot be built from the file: exit 1."""


@app.command("convert")
def convert_cmd(src: Annotated[Path, typer.Argument(help=".ckpt / .pt / .pth / .safetensors checkpoint")],
                dst: Annotated[Path, typer.Argument(help="Output .safetensors")],
                trust_pickle: Annotated[bool, typer.Option("--trust-pickle",
                                                           help="Unpickle SRC fully (runs code from the file!)")] = False,
                dtype: Annotated[Optional[str], typer.Option("--dtype", help="Cast floats: fp32 | fp16 | bf16")] = None,
                keep_all: Annotated[bool, typer.Option("--keep-all", help="Keep optimizer/EMA tensors too")] = False,
                db: Db = None, debug: Debug = False):
    """Rewrite a checkpoint as safetensors (tensors only; loads without unpickling afterwards)."""
    from safetensors import SafetensorError

    from generator.thinksound import CheckpointError, convert_to_safetensors

    if dst.suffix != ".safetensors":
        raise UserError(f"DST must end in .safetensors, got {dst.name}")
    try:
        info = convert_to_safetensors(src, dst, trust_pickle=trust_pickle, dtype=dtype, keep_all=keep_all)
    except (CheckpointError, ValueError) as exc:
        raise as_user_error(exc) from None
    except SafetensorError as exc:  # a damaged or foreign .safetensors file is bad input
        raise UserError(f"{src}: not a readable safetensors file ({' '.join(str(exc).split())})") from None
    dropped = f"; dropped {info['dropped']} non-model tensors" if info["dropped"] else ""
    out_console.print(f"wrote {info['dst']}: {info['tensors']} tensors, {info['elements']:,} elements{dropped}")


@app.command("check-oracle")
def check_oracle_cmd(file: Annotated[Path, typer.Argument(help="Oracle .pt (MM-DiT, VAE, Synchformer)")],
                     db: Db = None, debug: Debug = False):
    """Replay a numerical oracle file; exit 0 when every output is within tolerance, 1 otherwise."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _check_oracle(file)
        finally:
            for w in caught:
                log.debug("%s: %s (%s:%s)", w.category.__name__, w.message, w.filename, w.lineno)


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
