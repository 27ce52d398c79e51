"""``vpp validate`` and ``vpp optimize``: check a config, and plan the fleet over a horizon."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from vpp.config import VppConfig, load_config, parse_duration, parse_time
from vpp.cli_output import TOP_ROWS, console, progress
from vpp.errors import InputError
from vpp.schedule import Schedule
from vpp.schedule_export import plot_schedule, schedule_table


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
    out: Path | None = typer.Option(None, help="write the schedule as CSV here: units, site and fleet totals, prices, UTC and local time"),
    plot: Path | None = typer.Option(None, help="write a PNG of prices, power by site, SoC, bids and DR commitments here"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of tables"),
    time_limit_s: float | None = typer.Option(None, "--time-limit", help="solver time limit in seconds"),
    exclusivity: str | None = typer.Option(None, help="lazy | binary | hull | relaxed"),
    decomposition: str | None = typer.Option(None, help="auto (large fleets) | on | off: solve the fleet in independent pieces"),
    workers: int | None = typer.Option(None, min=1, help="solve the pieces on a local Dask cluster of N processes"),
    scheduler: str | None = typer.Option(None, help="or on an existing Dask cluster, e.g. tcp://host:8786"),
    solver_log: Path | None = typer.Option(None, "--solver-log", help="write HiGHS' log to this file (the solver prints nothing otherwise)"),
    backend: str = typer.Option("fast", help="fast (the matrix builder) | pyomo (the named formulation of docs/formulation.md, through Pyomo's HiGHS interface)"),
    export: Path | None = typer.Option(None, help="also write the Pyomo model to this file: .lp, .mps or .nl (by its suffix)"),
) -> None:
    """Co-optimize the fleet over the horizon and print the expected revenue, bids and solver figures."""
    from dataclasses import replace

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
    if backend not in ("fast", "pyomo"):
        raise InputError("--backend", "backend", backend, "fast or pyomo")
    if export is not None and export.suffix.lower() not in EXPORT_FORMATS:
        raise InputError("--export", "export file", str(export), "a name ending in .lp, .mps or .nl")
    problem, schedule = _solve_with_progress(cfg, begin, span, options, backend)
    if export is not None:
        from optimizers.pyomo_model import build_pyomo

        export.parent.mkdir(parents=True, exist_ok=True)
        build_pyomo(problem).write(str(export), format=EXPORT_FORMATS[export.suffix.lower()], io_options={"symbolic_solver_labels": True})
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        schedule_table(schedule, problem, cfg.timezone).to_csv(out, index=False)
    if plot is not None:
        plot_schedule(schedule, problem, cfg.timezone, plot, f"{cfg.name}: {len(schedule.unit_ids)} units", cfg.currency)
    if as_json:
        print(json.dumps(schedule.summary(cfg.currency), default=str))
        return
    _print_tables(schedule, cfg, out, plot)


EXPORT_FORMATS = {".lp": "lp", ".mps": "mps", ".nl": "nl"}


def _solve_with_progress(cfg: VppConfig, begin, span, options, backend: str = "fast"):
    """The solve in a worker thread while the main thread shows its progress against the time limit
    (the one bound on how long it can take). HiGHS releases the GIL, so the bar costs the solve nothing."""
    import threading

    from optimizers.api import optimize_config

    result: list = []
    failure: list[BaseException] = []

    def solve() -> None:
        try:
            result.append(optimize_config(cfg, begin, span, options=options, backend=backend))
        except BaseException as exc:  # re-raised in the main thread, where the CLI reports it
            failure.append(exc)

    worker = threading.Thread(target=solve, name="optimize", daemon=True)  # daemon: Ctrl-C exits at once
    started = time.monotonic()
    worker.start()
    with progress(f"optimizing {len(cfg.units):,} units (time limit {options.time_limit_s:g} s)") as advance:
        while worker.is_alive():
            worker.join(0.25)
            advance(min(time.monotonic() - started, options.time_limit_s), options.time_limit_s)
        advance(options.time_limit_s, options.time_limit_s)
    if failure:
        raise failure[0]
    return result[0]


def _print_tables(s: Schedule, cfg: VppConfig, out: Path | None, plot: Path | None) -> None:
    con = console()
    cur = cfg.currency
    local = s.index.tz_convert(cfg.timezone)
    con.print(f"[bold]{cfg.name}[/bold]: {len(s.unit_ids):,} units, {len(s.index)} intervals from {local[0]} ({cfg.timezone})")
    t = Table(title=f"Expected revenue by stream ({cur})")
    t.add_column("stream")
    t.add_column(cur, justify="right")
    for k, v in s.revenue.items():
        t.add_row(k, f"{v:,.2f}")
    t.add_row("[bold]total[/bold]", f"[bold]{s.total_revenue:,.2f}[/bold]")
    con.print(t)
    totals = sum(s.unit_revenue.values()) if s.unit_revenue else np.zeros(len(s.unit_ids))
    order = np.argsort(-np.abs(totals), kind="stable")
    shown = order[:TOP_ROWS] if len(order) > TOP_ROWS + 5 else order
    more = len(order) - len(shown)
    u = Table(title=f"Per unit ({cur})" + (f": the {len(shown)} with the largest revenue" if more else ""))
    u.add_column("unit")
    for k in s.unit_revenue:
        u.add_column(k, justify="right")
    u.add_column("discharged kWh", justify="right")
    dt_h = (s.index[1] - s.index[0]).total_seconds() / 3600 if len(s.index) > 1 else 0.0
    for i in shown:
        u.add_row(s.unit_ids[i], *(f"{v[i]:,.0f}" for v in s.unit_revenue.values()), f"{s.discharge_kw[i].sum() * dt_h:,.0f}")
    con.print(u)
    if more:
        con.print(f"… and {more:,} more units" + (f" (all of them in {out})" if out is not None else " (--out FILE.csv writes all of them)"))
    for pid, kw in s.bids_kw.items():
        hours = int((kw > 0).sum())
        con.print(f"bids {pid}: {hours}/{len(kw)} intervals, max {kw.max():,.0f} kW, mean when bid {kw[kw > 0].mean() if hours else 0:,.0f} kW")
    for eid, kw in s.dr_commitment_kw.items():
        con.print(f"DR {eid}: committed {kw:,.0f} kW")
    st = s.stats
    if st.status == "idle":
        con.print(f"[red]no plan found within the time limit[/red]: the schedule holds every unit at 0 kW (try a longer --time-limit; bound {st.bound:,.2f})")
    bound = f", bound {st.bound:,.2f}" if np.isfinite(st.bound) else ""
    con.print(
        f"solver: {st.status}, gap {st.mip_gap:.3%}{bound}, build {st.build_time_s:.3f} s, solve {st.solve_time_s:.3f} s, "
        f"{st.n_variables:,} variables, {st.n_constraints:,} constraints, {st.n_integer} integer, exclusivity binaries {st.exclusivity_binaries}"
    )
    for v in s.violations:
        con.print(f"[red]violated[/red] {v}")
    if out is not None:
        con.print(f"schedule written to {out}")
    if plot is not None:
        con.print(f"plot written to {plot}")
