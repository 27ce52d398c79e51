"""Optimizer benchmark: heterogeneous fleets × 96 intervals × (energy + reg up + reg down + spin + one DR event).

For each fleet size prints model build time, solve time, total, peak memory
(max RSS of a fresh process per case), the gap to the best bound known and status;
with ``--floor`` also a plain energy-only LP of the same fleet built directly in
highspy (what the solver alone needs for the simplest model of that size).

    python bench/optimizer.py                                  # 1, 2, 5, 10, 20, 40, 100, 1000 units, 5 s limit
    python bench/optimizer.py --sizes 5 20 --time-limit 60     # a subset, a longer limit
    python bench/optimizer.py --json                           # one JSON object per line
    python bench/optimizer.py --sizes 2 --fleet-seed 1         # another random fleet of the same kind
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAY = "2020-08-18"  # CAISO 2020: the year's highest prices, busy reserve markets


def caiso_day() -> pd.DataFrame:
    frame = pd.read_csv(ROOT / "config/data/caiso_2020_hourly_energy_as.csv", parse_dates=["timestamp_start"])
    day = frame[frame.timestamp_start.dt.strftime("%Y-%m-%d") == DAY]
    return day.loc[day.index.repeat(4)].reset_index(drop=True)  # hourly prices held over 15-minute intervals


def fleet_problem(n_units: int, seed: int = 7):
    from optimizers.problem import build_problem
    from vpp.fleet import BatteryUnit, Fleet, Site
    from vpp.markets import AncillaryProduct, DemandResponseEvent, Market, ProductKind
    from vpp.timeseries import LoadedSeries

    prices = caiso_day()
    index = pd.date_range(f"{DAY}T08:00", periods=96, freq="15min", tz="UTC")
    s = lambda col, q: LoadedSeries(col, q, pd.Series(prices[col].to_numpy(float), index=index))  # noqa: E731
    rng = np.random.default_rng(seed)
    n_sites = max(1, n_units // 10)
    sites = tuple(Site(f"s{k}", "wholesale", import_limit_kw=float(rng.uniform(0.6, 1.0) * 10 * 2500), export_limit_kw=float(rng.uniform(0.6, 1.0) * 10 * 2500)) for k in range(n_sites))
    units = []
    for i in range(n_units):
        p = float(rng.choice([100, 250, 500, 1000, 2000]))
        units.append(
            BatteryUnit(
                f"u{i}",
                f"s{i % n_sites}",
                max_charge_kw=p * float(rng.uniform(0.8, 1.0)),
                max_discharge_kw=p,
                energy_kwh=p * float(rng.choice([1.0, 2.0, 4.0])),
                soc_min=float(rng.uniform(0.05, 0.15)),
                soc_max=float(rng.uniform(0.85, 0.95)),
                eta_charge=float(rng.uniform(0.9, 0.97)),
                eta_discharge=float(rng.uniform(0.9, 0.97)),
                self_discharge_per_h=float(rng.uniform(0, 2e-4)),
                degradation_cost_per_mwh=float(rng.uniform(5, 25)),
                max_cycles_per_day=float(rng.choice([1.0, 1.5, 2.0])),
                initial_soc=float(rng.uniform(0.2, 0.8)),
            )
        )
    rule = dict(min_bid_kw=1000.0, increment_kw=100.0)
    products = (
        AncillaryProduct("reg_up", ProductKind.REGULATION_UP, s("regup_usd_per_mw", "capacity_price"), sustain_h=1.0, deployment_fraction=0.3, **rule),
        AncillaryProduct("reg_down", ProductKind.REGULATION_DOWN, s("regdown_usd_per_mw", "capacity_price"), sustain_h=1.0, deployment_fraction=0.15, **rule),
        AncillaryProduct("spin", ProductKind.SPINNING_RESERVE, s("spin_usd_per_mw", "capacity_price"), sustain_h=0.5, deployment_fraction=0.02, **rule),
    )
    event = DemandResponseEvent("dr", index[36], index[44], frozenset(x.id for x in sites), capacity_price_per_kw=5.0, energy_price_per_mwh=200.0, min_kw=500.0, increment_kw=100.0)
    market = Market("USD", s("da_lmp_usd_per_mwh", "energy_price"), products, (event,))
    return build_problem(Fleet(sites, tuple(units)), market, index)


def run_full(n_units: int, time_limit_s: float, mip_gap: float, fleet_seed: int = 7) -> dict:
    from optimizers.model import optimize
    from vpp.schedule import SolverOptions

    t0 = time.perf_counter()
    problem = fleet_problem(n_units, fleet_seed)
    prep = time.perf_counter() - t0
    schedule = optimize(problem, SolverOptions(time_limit_s=time_limit_s, mip_gap=mip_gap))
    st = schedule.stats
    return {
        "case": "co-optimization",
        "units": n_units,
        "fleet_seed": fleet_seed,
        "prepare_s": prep,
        "build_s": st.build_time_s,
        "solve_s": st.solve_time_s,
        "total_s": time.perf_counter() - t0,
        "gap": st.mip_gap,
        "bound": st.bound,
        "pieces": st.pieces,
        "time_limit_s": time_limit_s,
        "status": st.status,
        "vars": st.n_variables,
        "rows": st.n_constraints,
        "integers": st.n_integer,
        "revenue": schedule.total_revenue,
    }


def run_floor(n_units: int, time_limit_s: float, mip_gap: float, fleet_seed: int = 7) -> dict:
    """Energy-only LP (ch, dis, soc; balance rows) assembled by hand and passed straight to highspy."""
    import highspy
    import scipy.sparse as sp

    from optimizers.lp import new_highs

    t0 = time.perf_counter()
    p = fleet_problem(n_units, fleet_seed)
    U, T = p.shape
    dt = p.dt_h
    n = U * T
    ch, dis, soc = (np.arange(k * n, (k + 1) * n).reshape(U, T) for k in range(3))
    keep = (1 - p.sigma_per_h * dt)[:, None]
    rows = np.arange(n).reshape(U, T)
    r = [rows, rows, rows, rows[:, 1:]]
    c = [soc, ch, dis, soc[:, :-1]]
    v = [np.ones((U, T)), -(p.eta_ch * dt)[:, None] * np.ones(T), (dt / p.eta_dis)[:, None] * np.ones(T), -keep * np.ones(T - 1)]
    a = sp.csc_matrix((np.concatenate([x.ravel() for x in v]), (np.concatenate([x.ravel() for x in r]), np.concatenate([x.ravel() for x in c]))), shape=(n, 3 * n))
    rhs = np.zeros((U, T))
    rhs[:, 0] = keep[:, 0] * p.soc0_kwh
    price = p.energy_price_per_mwh * dt / 1000
    cost = np.concatenate([np.tile(-price, U), np.tile(price, U) - np.repeat(p.deg_cost_per_mwh * dt / 1000, T), np.zeros(n)])
    lb = np.concatenate([np.zeros(2 * n), p.soc_min_kwh.ravel()])
    ub = np.concatenate([p.p_ch_max.ravel(), p.p_dis_max.ravel(), p.soc_max_kwh.ravel()])
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = 3 * n, n
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = cost, lb, ub
    lp.row_lower_ = lp.row_upper_ = rhs.ravel()
    lp.sense_ = highspy.ObjSense.kMaximize
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = a.indptr, a.indices, a.data
    h = new_highs()
    h.passModel(lp)
    build = time.perf_counter() - t0
    t1 = time.perf_counter()
    h.run()
    solve = time.perf_counter() - t1
    return {"case": "energy-only LP, raw highspy", "units": n_units, "build_s": build, "solve_s": solve, "total_s": time.perf_counter() - t0, "gap": 0.0, "status": h.modelStatusToString(h.getModelStatus()), "vars": 3 * n, "rows": n, "integers": 0}


def child(kind: str, n_units: int, time_limit_s: float, mip_gap: float, fleet_seed: int) -> None:
    result = (run_full if kind == "full" else run_floor)(n_units, time_limit_s, mip_gap, fleet_seed)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1, 2, 5, 10, 20, 40, 100, 1000])
    ap.add_argument("--time-limit", type=float, default=5.0, help="seconds per solve (default 5)")
    ap.add_argument("--mip-gap", type=float, default=1e-3, help="relative gap that ends a solve early (default 0.1 %%)")
    ap.add_argument("--fleet-seed", type=int, default=7, help="random fleet to draw (default 7, the figures in docs/architecture.md)")
    ap.add_argument("--floor", action="store_true", help="also the energy-only LP in raw highspy")
    ap.add_argument("--json", action="store_true", help="one JSON object per case, nothing else")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "UNITS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.time_limit, args.mip_gap, args.fleet_seed)
        return
    if not args.json:
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; time limit {args.time_limit:g} s, MIP gap {args.mip_gap:g}", flush=True)
        print(f"{'case':<30}{'units':>6}{'build s':>9}{'solve s':>9}{'total s':>9}{'peak MB':>9}{'gap':>9}  {'status':<10}{'vars':>9}{'rows':>9}{'ints':>6}", flush=True)
    for n in args.sizes:
        for kind in ("full", "floor") if args.floor else ("full",):
            out = subprocess.run([sys.executable, __file__, "--child", kind, str(n), "--time-limit", str(args.time_limit), "--mip-gap", str(args.mip_gap), "--fleet-seed", str(args.fleet_seed)], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if args.json:
                print(json.dumps(r), flush=True)
                continue
            print(f"{r['case']:<30}{n:>6}{r['build_s']:>9.3f}{r['solve_s']:>9.3f}{r['total_s']:>9.3f}{r['peak_mb']:>9.0f}{r['gap']:>9.4%}  {r['status']:<10}{r['vars']:>9}{r['rows']:>9}{r['integers']:>6}", flush=True)


if __name__ == "__main__":
    main()
