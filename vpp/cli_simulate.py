"""``vpp simulate``: backtest a fleet against recorded prices, or run a sweep of scenarios.

    vpp simulate --config C --from D1 --to D2 [--forecast persistence] [--out DIR] [--json]
    vpp simulate --sweep SWEEP.yaml [--workers N | --scheduler tcp://host:8786] [--out DIR]

A backtest with a forecast other than ``perfect`` also runs the perfect-foresight
backtest of the same period (the upper bound) and reports the captured share.
With ``--workers``/``--scheduler`` the two runs (or the sweep's scenarios) go to Dask.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import typer
from rich.table import Table

from vpp.cli_output import console, progress
from vpp.errors import InputError
from vpp.day_ahead import WINDOWS


def simulate_cmd(
    config: Path | None = typer.Option(None, "--config", "-c", help="the config YAML"),
    start: str | None = typer.Option(None, "--from", help="first day (config timezone unless an offset is given)"),
    end: str | None = typer.Option(None, "--to", help="end of the period, exclusive"),
    forecast: str = typer.Option("persistence", help="perfect | persistence | last_week | rolling_mean | file | lear"),
    rolling_days: int = typer.Option(7, help="days averaged by the rolling_mean forecast"),
    calibration_days: list[int] = typer.Option(list(WINDOWS), help="lear: rolling calibration window, days; repeated: the windows' forecasts averaged"),
    recalibrate_every: int = typer.Option(7, help="lear: refit every N days"),
    shrink: float = typer.Option(1.0, help="pull forecast energy prices towards their horizon mean by this factor (1: off; e.g. 0.8)"),
    margin: float = typer.Option(0.0, help="required forecast spread: added to every unit's degradation cost in the plan only, per MWh"),
    every: str = typer.Option("24h", help="re-optimization period (24h: daily, each plan from data before its bids' gate closure; the interval length: MPC)"),
    horizon: str | None = typer.Option(None, help="planning horizon at least this long (default: the config's horizon_h)"),
    substeps: int = typer.Option(4, min=1, help="dispatcher ticks per interval"),
    load_variability: float = typer.Option(0.0, min=0.0, max=2.0, help="relative std of each site's load within an interval, per tick (seeded); sites with a meter: dispatch against it, the summary reports energy beyond the limits"),
    seed: int = typer.Option(0, help="seed for outages, SoC noise and deployment variation"),
    soc_noise: float = typer.Option(0.0, help="std of the reported SoC (fraction)"),
    deployment_noise: float = typer.Option(0.0, help="relative std of the deployed reserve share per interval"),
    taper_band: float = typer.Option(0.0, help="BMS power taper near full/empty, as a SoC fraction"),
    outage_rate: float = typer.Option(0.0, help="random forced outages per unit per year"),
    outage_hours: float = typer.Option(8.0, help="mean outage duration, hours"),
    mip_gap: float | None = typer.Option(None, help="solver MIP gap (default: the config's)"),
    time_limit_s: float | None = typer.Option(None, "--time-limit", help="solver time limit per solve, seconds"),
    decomposition: str | None = typer.Option(None, help="optimizer decomposition: on (the backtest default) | auto | off"),
    week: str | None = typer.Option(None, help="first day of the week plotted (default: the first week)"),
    no_bound: bool = typer.Option(False, "--no-bound", help="skip the perfect-foresight run"),
    out: Path | None = typer.Option(None, help="output folder (default: sim-<config name>)"),
    as_json: bool = typer.Option(False, "--json", help="print the summary JSON only"),
    sweep: Path | None = typer.Option(None, help="a sweep file: run its scenarios instead of one backtest"),
    workers: int | None = typer.Option(None, min=1, help="run on a local Dask cluster of N worker processes"),
    scheduler: str | None = typer.Option(None, help="run on an existing Dask cluster, e.g. tcp://host:8786"),
    solver_log: Path | None = typer.Option(None, "--solver-log", help="write HiGHS' log to this file (the solver prints nothing otherwise)"),
) -> None:
    """Replay the fleet over [--from, --to) against recorded prices: forecasts → optimizer → dispatcher → simulated batteries → settlement."""
    from optimizers.lp import log_solver_to

    log_solver_to(solver_log)
    if sweep is not None:
        _sweep(sweep, workers, scheduler, out, as_json)
        return
    from simulators.backtest import SimulationSettings, backtest_solver
    from vpp.config import load_config, parse_duration, parse_time
    from vpp.forecasts import ForecastSpec, file_exogenous, file_forecasts

    if config is None or start is None or end is None:
        raise InputError("vpp simulate", "--config/--from/--to", None, "a config and a period (or --sweep FILE)")
    cfg = load_config(config)
    begin, finish = parse_time(start, cfg.timezone, "--from"), parse_time(end, cfg.timezone, "--to")
    spec = ForecastSpec(
        forecast,
        rolling_days,
        file_forecasts(cfg.path) if forecast == "file" else None,
        exogenous=file_exogenous(cfg.path) if forecast == "lear" else None,
        timezone=cfg.timezone,
        calibration_days=tuple(calibration_days),
        recalibrate_every_days=recalibrate_every,
        shrink=shrink,
        margin_per_mwh=margin,
    )
    solver = backtest_solver(cfg)
    if decomposition is not None:
        if decomposition not in ("auto", "on", "off"):
            raise InputError("--decomposition", "decomposition", decomposition, "one of auto, on, off")
        solver = dataclasses.replace(solver, decomposition=decomposition)
    if mip_gap is not None:
        solver = dataclasses.replace(solver, mip_gap=mip_gap)
    if time_limit_s is not None:
        if not time_limit_s > 0:
            raise InputError("--time-limit", "time limit", time_limit_s, "a positive number of seconds")
        solver = dataclasses.replace(solver, time_limit_s=time_limit_s)
    settings = SimulationSettings(
        forecast=spec,
        every=parse_duration(every, "--every", cfg.interval),
        horizon=parse_duration(horizon, "--horizon", cfg.interval) if horizon else None,
        seed=seed,
        soc_noise=soc_noise,
        deployment_noise=deployment_noise,
        taper_band=taper_band,
        outage_rate_per_year=outage_rate,
        outage_mean_h=outage_hours,
        substeps=substeps,
        load_variability=load_variability,
        solver=solver,
    )
    runs = [settings] if (forecast == "perfect" or no_bound) else [settings, dataclasses.replace(settings, forecast=ForecastSpec("perfect"))]
    results = _run(cfg, begin, finish, runs, workers, scheduler, quiet=as_json)
    result, bound = results[0], (results[1] if len(results) > 1 else None)

    from simulators.report import build_summary, write_outputs

    summary = build_summary(cfg, result, settings, bound if not no_bound else None, contracts=_contracts(cfg, result))
    if no_bound:
        summary["perfect_foresight"], summary["capture_ratio"], summary["capture_ratio_by_month"] = None, None, {}
    folder = out or Path(f"sim-{cfg.name}")
    written = write_outputs(folder, cfg, result, summary, bound, parse_time(week, cfg.timezone, "--week") if week else None)
    if as_json:
        print(json.dumps(summary, default=str))
        return
    _print_summary(summary, folder, written)


def _run(cfg, begin, finish, runs, workers, scheduler, quiet: bool):
    from simulators.backtest import run_backtest

    if workers is not None or scheduler is not None:
        from vpp.compute import dask_client

        with dask_client(workers, scheduler) as client:
            futures = [client.submit(run_backtest, cfg, begin, finish, s, pure=False) for s in runs]
            return client.gather(futures)
    out = []
    for s in runs:
        with progress(f"backtest ({s.forecast.method})", quiet=quiet) as advance:
            out.append(run_backtest(cfg, begin, finish, s, progress=advance))
    return out


def _contracts(cfg, result) -> dict:
    """Each contract's split of the settled revenue (vpp.ledger.contracts), {contract: {party: amount}}."""
    if not getattr(cfg, "contracts", ()):
        return {}
    from vpp.ledger.contracts import split_revenue
    from vpp.ledger.money import currency_exponent

    dt_h = cfg.interval.total_seconds() / 3600.0
    dispatched = dict(zip(result.unit_ids, (result.discharge_kw.sum(axis=1) * dt_h).tolist()))
    months = len(result.index) * dt_h / (365.25 * 24 / 12)
    split = split_revenue(result.settlement, cfg.contracts, dispatched_kwh=dispatched, months=months)
    scale = 10.0 ** currency_exponent(cfg.currency)
    out: dict[str, dict[str, float]] = {}
    for (contract, party), minor in split.groupby(["contract_id", "party"])["amount_minor"].sum().items():
        out.setdefault(str(contract), {})[str(party)] = float(minor) / scale
    return out


def _sweep(path: Path, workers: int | None, scheduler: str | None, out: Path | None, as_json: bool) -> None:
    from simulators.sweep import load_sweep, run_sweep

    _, scenarios = load_sweep(path)
    with progress(f"sweep of {len(scenarios)} scenarios") as advance:
        if workers is not None or scheduler is not None:
            from vpp.compute import dask_client

            with dask_client(workers, scheduler) as client:
                table = run_sweep(scenarios, client, progress=advance)
        else:
            table = run_sweep(scenarios, progress=advance)
    folder = out or Path(f"sweep-{path.stem}")
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "comparison.csv", index=False)
    if as_json:
        print(json.dumps({"sweep": str(path), "comparison_csv": str(folder / "comparison.csv"), "scenarios": json.loads(table.to_json(orient="records"))}))
        return
    con = console()
    t = Table(title=f"sweep {path.name}: {len(table)} scenarios ({table['forecast'].iloc[0] if table['forecast'].nunique() == 1 else 'forecasts vary'})")
    params = [c for c in ("forecast", "power_scale", "duration_h", "products", "data_files") if table[c].astype(str).nunique(dropna=False) > 1]
    shown = ["scenario", *params, "net_revenue", "perfect_foresight", "capture_ratio", "fleet_efc"]
    for c in shown:
        t.add_column(c, justify="left" if c in ("forecast", "products", "data_files") else "right")
    for _, row in table.iterrows():
        t.add_row(*(_fmt(row[c], c) for c in shown))
    con.print(t)
    con.print(f"comparison table written to {folder / 'comparison.csv'}")


def _fmt(v, column: str) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "-"
    if column == "capture_ratio":
        return f"{v:.1%}"
    if column in ("net_revenue", "perfect_foresight"):
        return f"{v:,.0f}"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return str(v) or "-"


def _print_summary(s: dict, folder: Path, written: list[Path]) -> None:
    con = console()
    cur = s["currency"]
    con.print(f"[bold]{s['name']}[/bold]: {s['from']} .. {s['to']}, forecast {s['forecast']}, re-optimized every {s['reoptimize_every']}")
    t = Table(title=f"Settled revenue by stream ({cur})")
    t.add_column("stream")
    t.add_column("settled", justify="right")
    t.add_column("perfect foresight", justify="right")
    bound = (s.get("perfect_foresight") or {}).get("revenue_by_stream", {})
    for k, v in s["revenue_by_stream"].items():
        t.add_row(k, f"{v:,.2f}", f"{bound.get(k, 0.0):,.2f}" if bound else "-")
    pf = s.get("perfect_foresight")
    t.add_row("[bold]net[/bold]", f"[bold]{s['net_revenue']:,.2f}[/bold]", f"{pf['net_revenue']:,.2f}" if pf else "-")
    con.print(t)
    if s.get("capture_ratio") is not None:
        con.print(f"captured share of perfect foresight: [bold]{s['capture_ratio']:.1%}[/bold]")
    u = Table(title=f"By site ({cur})")
    u.add_column("site")
    u.add_column("net", justify="right")
    for site, streams in s["by_site"].items():
        u.add_row(site, f"{sum(streams.values()):,.2f}")
    con.print(u)
    c = s["cycles"]
    sv = s["solver"]
    con.print(f"fleet equivalent full cycles: {c['fleet_equivalent_full_cycles']:.2f}")
    con.print(
        f"solves: {sv['solves']} {sv['statuses']}; time: forecast {sv['forecast_s']:.2f} s, build {sv['build_s']:.2f} s, "
        f"solve {sv['solve_s']:.2f} s, simulate {sv['simulate_s']:.2f} s, settle {sv['settle_s']:.2f} s"
    )
    if not s["by_contract"]:
        con.print("by contract: no contracts configured")
    con.print(f"written to {folder}/: " + ", ".join(p.name for p in written))
