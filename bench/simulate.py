"""Backtest benchmark: one year of hourly CAISO 2020 prices, daily re-optimization, energy + reg up/down + spin.

    python bench/simulate.py [--units 10 100] [--forecast perfect] [--substeps 4] [--days 366]

Prints, per fleet size: wall time, peak memory (RSS high-water mark of this
process, measured in a fresh child process per run), solves, and how the time
splits between forecasts, model build, solve, simulation bookkeeping
(dispatcher + physics) and settlement; the settled revenue, and for a forecast
other than perfect, the perfect-foresight bound and the captured share.

The fleets are built from config/examples/caiso_backtest.yaml: 10 units = its
NP15, SP15 and ZP26 sites (3 + 4 + 3 units); 100 units = the same sites with
ten times the units and connection limits.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "config" / "examples" / "caiso_backtest.yaml"


def fleet_config(n_units: int):
    from vpp.config import load_config
    from vpp.fleet import Fleet

    cfg = load_config(CONFIG)
    sites = [s for s in cfg.fleet.sites if s.id != "sdge_storage"]
    base_units = [u for u in cfg.fleet.units if u.site_id != "sdge_storage"]  # 10 units
    k = max(1, n_units // len(base_units))
    units = [dataclasses.replace(u, id=f"{u.id}-x{r + 1}") for u in base_units for r in range(k)]
    sites = [dataclasses.replace(s, import_limit_kw=s.import_limit_kw * k, export_limit_kw=s.export_limit_kw * k) for s in sites]
    return dataclasses.replace(cfg, fleet=Fleet(tuple(sites), tuple(units)))


def run(n_units: int, forecast: str, substeps: int, days: int, queue) -> None:
    import pandas as pd

    from simulators.backtest import SimulationSettings, run_backtest
    from vpp.config import to_utc
    from vpp.forecasts import ForecastSpec

    cfg = fleet_config(n_units)
    start = to_utc("2020-01-01" if forecast == "perfect" else "2020-01-08", cfg.timezone)
    end = min(start + pd.Timedelta(days=days), to_utc("2021-01-01", cfg.timezone))
    settings = SimulationSettings(forecast=ForecastSpec(forecast), substeps=substeps)
    t0 = time.perf_counter()
    r = run_backtest(cfg, start, end, settings)
    wall = time.perf_counter() - t0
    bound = None
    if forecast != "perfect":
        bound = run_backtest(cfg, start, end, dataclasses.replace(settings, forecast=ForecastSpec("perfect"))).net_revenue
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    tm = r.timing
    queue.put(
        dict(
            units=len(cfg.fleet.units), days=(end - start).days, wall_s=wall, peak_mb=peak_mb, solves=tm.n_solves, statuses=tm.statuses,
            forecast_s=tm.forecast_s, build_s=tm.build_s, solve_s=tm.solve_s, simulate_s=tm.simulate_s, settle_s=tm.settle_s,
            net=r.net_revenue, bound=bound, currency=cfg.currency, per_solve=tm.per_solve,
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--forecast", default="perfect")
    ap.add_argument("--substeps", type=int, default=4)
    ap.add_argument("--days", type=int, default=366)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")  # a fresh process per run: peak memory is that run's
    for n in args.units:
        q = ctx.Queue()
        p = ctx.Process(target=run, args=(n, args.forecast, args.substeps, args.days, q))
        p.start()
        res = q.get()
        p.join()
        other = res["wall_s"] - res["forecast_s"] - res["build_s"] - res["solve_s"] - res["simulate_s"] - res["settle_s"]
        print(
            f"{res['units']} units, {res['days']} days, forecast {args.forecast}, {args.substeps} dispatch ticks/interval: "
            f"wall {res['wall_s']:.1f} s, peak memory {res['peak_mb']:.0f} MB, {res['solves']} solves {res['statuses']}"
        )
        print(
            f"  time split: model build {res['build_s']:.1f} s, solve {res['solve_s']:.1f} s, forecasts {res['forecast_s']:.2f} s, "
            f"simulation bookkeeping {res['simulate_s']:.1f} s, settlement {res['settle_s']:.2f} s, other {other:.1f} s"
        )
        took = sorted(res["per_solve"], key=lambda x: -x[1])
        median = sorted(x[1] for x in took)[len(took) // 2]
        print(f"  per solve: median {median:.2f} s; slowest: " + ", ".join(f"{d[:10]} {s:.1f} s ({st})" for d, s, st in took[:4]))
        for d, sec, st in res["per_solve"]:
            if st.startswith("failed"):
                print(f"  {d[:10]}: {st}")
        line = f"  settled net revenue {res['net']:,.0f} {res['currency']}"
        if res["bound"] is not None:
            line += f"; perfect foresight {res['bound']:,.0f}; captured {res['net'] / res['bound']:.1%}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
