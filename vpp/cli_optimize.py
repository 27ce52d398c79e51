"""``vpp validate`` and ``vpp optimize``: check a config, and plan the fleet over a horizon."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from vpp.config import VppConfig, load_config, parse_duration, parse_time
from vpp.errors import InputError
from vpp.schedule import Schedule


def validate(
    path: Path = typer.Argument(..., help="a config, sweep, economics case, overrides or contracts YAML"),
    config: Path | None = typer.Option(None, "--config", "-c", help="for an overrides or contracts file: the config whose units it names"),
) -> None:
    """Check a file and every file it references; one line per problem, exit 2 if any. The kind of file is
    recognised by its shape."""
    from vpp.validate import validate_file

    print(validate_file(path, config))


def optimize_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="the config YAML"),
    start: str | None = typer.Option(None, help="first interval start (config timezone unless an offset is given); default: the config's start"),
    horizon: str | None = typer.Option(None, help="e.g. 24h, 2d, 90min; default: the config's horizon_h"),
    out: Path | None = typer.Option(None, help="write the unit × interval schedule as CSV here"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of tables"),
    time_limit_s: float | None = typer.Option(None, "--time-limit", help="solver time limit in seconds"),
    exclusivity: str | None = typer.Option(None, help="lazy | binary | hull | relaxed"),
    decomposition: str | None = typer.Option(None, help="auto (large fleets) | on | off: solve the fleet in independent pieces"),
    workers: int | None = typer.Option(None, min=1, help="solve the pieces on a local Dask cluster of N processes"),
    scheduler: str | None = typer.Option(None, help="or on an existing Dask cluster, e.g. tcp://host:8786"),
    solver_log: Path | None = typer.Option(None, "--solver-log", help="write HiGHS' log to this file (the solver prints nothing otherwise)"),
) -> None:
    """Co-optimize the fleet over the horizon and print the expected revenue, bids and solver figures."""
    from dataclasses import replace

    from optimizers.api import optimize_config
    from optimizers.lp import log_solver_to

    log_solver_to(solver_log)

    cfg = load_config(config)
    begin = parse_time(start, cfg.timezone, "--start") if start else None
    span = parse_duration(horizon, "--horizon", cfg.interval) if horizon else None
    options = cfg.solver
    if time_limit_s is not None:
        if not time_limit_s > 0:
            raise InputError("--time-limit", "time limit", time_limit_s, "a positive number of seconds")
        options = replace(options, time_limit_s=time_limit_s)
    if exclusivity is not None:
        if exclusivity not in ("lazy", "binary", "hull", "relaxed"):
            raise InputError("--exclusivity", "exclusivity", exclusivity, "one of lazy, binary, hull, relaxed")
        options = replace(options, exclusivity=exclusivity)  # type: ignore[arg-type]
    if decomposition is not None:
        if decomposition not in ("auto", "on", "off"):
            raise InputError("--decomposition", "decomposition", decomposition, "one of auto, on, off")
        options = replace(options, decomposition=decomposition)  # type: ignore[arg-type]
    if workers is not None and scheduler is not None:
        raise InputError("--workers/--scheduler", "workers", f"{workers} and {scheduler}", "either a worker count or a scheduler address, not both")
    if workers is not None:
        options = replace(options, workers=workers, scheduler=None)
    if scheduler is not None:
        options = replace(options, scheduler=scheduler, workers=1)
    _, schedule = optimize_config(cfg, begin, span, options=options)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        schedule.to_frame().to_csv(out, index=False)
    if as_json:
        print(json.dumps(schedule.summary(cfg.currency), default=str))
        return
    _print_tables(schedule, cfg, out)


def _print_tables(s: Schedule, cfg: VppConfig, out: Path | None) -> None:
    con = Console()
    cur = cfg.currency
    local = s.index.tz_convert(cfg.timezone)
    con.print(f"[bold]{cfg.name}[/bold]: {len(s.unit_ids)} units, {len(s.index)} intervals from {local[0]} ({cfg.timezone})")
    t = Table(title=f"Expected revenue by stream ({cur})")
    t.add_column("stream")
    t.add_column(cur, justify="right")
    for k, v in s.revenue.items():
        t.add_row(k, f"{v:,.2f}")
    t.add_row("[bold]total[/bold]", f"[bold]{s.total_revenue:,.2f}[/bold]")
    con.print(t)
    u = Table(title=f"Per unit ({cur})")
    u.add_column("unit")
    for k in s.unit_revenue:
        u.add_column(k, justify="right")
    u.add_column("discharged kWh", justify="right")
    for i, uid in enumerate(s.unit_ids):
        u.add_row(uid, *(f"{v[i]:,.0f}" for v in s.unit_revenue.values()), f"{s.discharge_kw[i].sum() * (s.index[1] - s.index[0]).total_seconds() / 3600 if len(s.index) > 1 else 0:,.0f}")
    con.print(u)
    for pid, kw in s.bids_kw.items():
        hours = int((kw > 0).sum())
        con.print(f"bids {pid}: {hours}/{len(kw)} intervals, max {kw.max():,.0f} kW, mean when bid {kw[kw > 0].mean() if hours else 0:,.0f} kW")
    for eid, kw in s.dr_commitment_kw.items():
        con.print(f"DR {eid}: committed {kw:,.0f} kW")
    st = s.stats
    con.print(
        f"solver: {st.status}, gap {st.mip_gap:.3%}, build {st.build_time_s:.3f} s, solve {st.solve_time_s:.3f} s, "
        f"{st.n_variables:,} variables, {st.n_constraints:,} constraints, {st.n_integer} integer, exclusivity binaries {st.exclusivity_binaries}"
    )
    for v in s.violations:
        con.print(f"[red]violated[/red] {v}")
    if out is not None:
        con.print(f"schedule written to {out}")
