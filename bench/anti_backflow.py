"""What the closed site loop is worth on the customer's bill: the same month with and without grid meters.

Runs the backtest of a retail config twice over the same period and the same
seeded sub-interval load variability (``--load-variability``): once plan-only
(the dispatcher holds the site limits against the interval's configured load),
once with every site metered (the dispatcher holds them against the load of
each tick, as the site control loop does). Each run's connection energy is
what a grid meter's counters would record, tick by tick (gross import and
export, not netted over the interval); both are billed the way
``vpp.site_billing`` bills a metered site: energy charges on import at the TOU
rate, export at the feed-in rate (0 at a no-export site: what flows out is
given away), and the demand charge on the month's highest window-average
import. Prints, per site and in total: energy exported beyond the limit,
import beyond the limit, and each bill's difference (plan-only − metered).

    python bench/anti_backflow.py [--config config/examples/guangdong_ci.yaml] [--from 2017-07-01 --to 2017-08-01] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulators.backtest import SimulationSettings, run_backtest  # noqa: E402
from vpp.config import load_config  # noqa: E402
from vpp.ledger.money import currency_exponent, format_minor, round_minor  # noqa: E402
from vpp.meter_config import MeterModel, MqttMeterDevice  # noqa: E402
from vpp.site_billing import COUNTERS, IntervalEnergy, _rate, site_bill, window_peaks_kw  # noqa: E402


def bills(cfg, r, exponent: int, window: pd.Timedelta) -> dict[str, dict[str, int]]:
    """Per retail site: energy charges and the demand charge (minor units) on the connection's metered energy."""
    out = {}
    for s, site in enumerate(cfg.fleet.sites):
        tariff = site.tariff
        if site.market != "retail" or tariff is None:
            continue
        which = tariff.period_of(r.index)
        imp = np.rint(r.connection_import_kwh[s] * 1000.0).astype(int)
        exp = np.rint(r.connection_export_kwh[s] * 1000.0).astype(int)
        energy = sum(site_bill(IntervalEnergy(int(i), int(e), COUNTERS), 0, tariff.periods[k].price_per_kwh, tariff.feed_in_price_per_kwh, exponent).bill_minor for i, e, k in zip(imp, exp, which))
        peaks = window_peaks_kw(imp.tolist(), cfg.interval, window)
        demand = round_minor(_rate(tariff.demand_charge_per_kw_month) * max(peaks, default=0) * 10**exponent)
        out[site.id] = {"energy_minor": int(energy), "demand_minor": int(demand), "peak_kw": float(max(peaks, default=0))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="config/examples/guangdong_ci.yaml")
    ap.add_argument("--from", dest="start", default="2017-07-01")
    ap.add_argument("--to", dest="end", default="2017-08-01")
    ap.add_argument("--load-variability", type=float, default=0.3)
    ap.add_argument("--substeps", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cfg = load_config(args.config)
    start, end = (pd.Timestamp(v, tz=cfg.timezone) for v in (args.start, args.end))
    metered_cfg = dataclasses.replace(cfg, meters={s.id: MeterModel(device=MqttMeterDevice(protocol="mqtt")) for s in cfg.fleet.sites})
    settings = SimulationSettings(load_variability=args.load_variability, substeps=args.substeps)
    exponent = currency_exponent(cfg.currency)
    window = pd.Timedelta(minutes=MeterModel.model_fields["demand_window_min"].default)
    runs, started = {}, time.perf_counter()
    for name, c in (("plan_only", cfg), ("metered", metered_cfg)):
        r = run_backtest(c, start, end, settings)
        runs[name] = {"bills": bills(c, r, exponent, window), "export_above_limit_kwh": r.export_above_limit_kwh, "import_above_limit_kwh": r.import_above_limit_kwh, "settled_minor": int(r.settlement["amount_minor"].sum())}
    sites = {}
    for s, sid in enumerate(r.site_ids):
        a, b = runs["plan_only"]["bills"].get(sid), runs["metered"]["bills"].get(sid)
        if a is None:
            continue
        sites[sid] = {
            "export_above_limit_kwh": {k: float(runs[k]["export_above_limit_kwh"][s]) for k in runs},
            "import_above_limit_kwh": {k: float(runs[k]["import_above_limit_kwh"][s]) for k in runs},
            "peak_kw": {"plan_only": a["peak_kw"], "metered": b["peak_kw"]},
            "energy_saved_minor": a["energy_minor"] - b["energy_minor"],
            "demand_saved_minor": a["demand_minor"] - b["demand_minor"],
        }
    total = {k: sum(v[k] for v in sites.values()) for k in ("energy_saved_minor", "demand_saved_minor")}
    result = {
        "config": args.config,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "load_variability": args.load_variability,
        "substeps": args.substeps,
        "currency": cfg.currency,
        "sites": sites,
        "export_above_limit_kwh": {k: float(runs[k]["export_above_limit_kwh"].sum()) for k in runs},
        "import_above_limit_kwh": {k: float(runs[k]["import_above_limit_kwh"].sum()) for k in runs},
        "model_settled_minor": {k: runs[k]["settled_minor"] for k in runs},  # what the interval-netted settlement says
        **total,
        "bill_saved_minor": total["energy_saved_minor"] + total["demand_saved_minor"],
        "wall_s": time.perf_counter() - started,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.config} {args.start}..{args.end}, load variability {args.load_variability}, {args.substeps} ticks per interval")
    for sid, v in sites.items():
        print(f"  {sid:24s} export beyond limit {v['export_above_limit_kwh']['plan_only']:9.1f} -> {v['export_above_limit_kwh']['metered']:7.1f} kWh; import beyond {v['import_above_limit_kwh']['plan_only']:9.1f} -> {v['import_above_limit_kwh']['metered']:7.1f} kWh; "
              f"peak {v['peak_kw']['plan_only']:7.1f} -> {v['peak_kw']['metered']:7.1f} kW; bill saved energy {format_minor(v['energy_saved_minor'], cfg.currency)} demand {format_minor(v['demand_saved_minor'], cfg.currency)} {cfg.currency}")
    print(f"  total: energy {format_minor(total['energy_saved_minor'], cfg.currency)} + demand {format_minor(total['demand_saved_minor'], cfg.currency)} = {format_minor(result['bill_saved_minor'], cfg.currency)} {cfg.currency} saved by the meter loop on the metered bill")
    print(f"  the interval-netted settlement (model) says: plan-only {format_minor(result['model_settled_minor']['plan_only'], cfg.currency)}, metered {format_minor(result['model_settled_minor']['metered'], cfg.currency)}; wall {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
