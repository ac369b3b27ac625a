"""`foleyloop models` and `foleyloop samples`: what can run here."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from agent.cli.common import AsJson, Db, Debug, out_console

app = typer.Typer()


@app.command()
def models(as_json: AsJson = False, db: Db = None, debug: Debug = False):
    """Backends available, where their weights are, or why they are missing."""
    from agent.backends import describe_all

    from agent.devices import resolve_device
    from models.precision import check

    rows = describe_all()
    precision = check(resolve_device("auto"))
    if as_json:  # the hardware check behind --dtype auto as one more row (role "device")
        rows.append({"role": "device", "name": precision.device, "available": True, "where": precision.evidence,
                     "why": precision.line(), "bf16_units": precision.bf16_units, "dtype_auto": precision.auto})
        out_console.print_json(json.dumps(rows, default=str))
        return
    out_console.print(precision.line(), markup=False, highlight=False)
    t = Table("role", "backend", "available", "model", "where / why", "licence")
    for r in rows:
        t.add_row(r["role"], r["name"], "yes" if r.get("available") else "no", str(r.get("model_id", "")),
                  str(r.get("where") or r.get("why") or ""), str(r.get("license", "")))
    out_console.print(t)


@app.command()
def samples(db: Db = None, debug: Debug = False):
    """Bundled sample videos (sample:NAME)."""
    from contract.errors import UserError
    from store.media import MediaError
    from store.samples import SAMPLES, sample_path

    for name, meta in SAMPLES.items():
        try:
            where = str(sample_path(name))
        except (UserError, MediaError) as exc:
            where = str(exc)
        out_console.print(f"sample:{name}  {meta['credit']}  {where}")
