"""What a backtest leaves behind: per-interval tables, ``summary.json`` and plots a person wants to see.

``summary.json`` is a contract: ``vpp economics --from-simulation`` reads
from/to (with UTC offsets), currency, revenue_by_stream, net_revenue (= the sum
of revenue_by_stream) and fleet{power_kw, energy_kwh} (docs/economics.md).
Everything else in it is for people: revenue by unit, site and contract,
cycles, the perfect-foresight bound and the captured share of it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from simulators.backtest import BacktestResult, SimulationSettings
from simulators.cycles import bin_labels, depth_histogram, equivalent_full_cycles
from vpp.config import VppConfig


def interval_frame(r: BacktestResult) -> pd.DataFrame:
    """One row per unit × interval: powers, SoC, setpoints, reserves held, the recorded price and the settled amount."""
    U, T = r.power_kw.shape
    frame = pd.DataFrame(
        {
            "interval_start": np.tile(r.index, U),
            "unit_id": np.repeat(np.asarray(r.unit_ids, dtype=object), T),
            "site_id": np.repeat(np.asarray(r.site_ids, dtype=object)[r.unit_site], T),
            "power_kw": r.power_kw.ravel(),
            "planned_kw": r.planned_kw.ravel(),
            "commanded_kw": r.commanded_kw.ravel(),
            "charge_kw": r.charge_kw.ravel(),
            "discharge_kw": r.discharge_kw.ravel(),
            "soc_start_kwh": r.soc_kwh[:, :-1].ravel(),
            "soc_end_kwh": r.soc_kwh[:, 1:].ravel(),
            "energy_price_per_mwh": np.tile(r.energy_price_per_mwh, U),
        }
    )
    for pid, alloc in r.reserve_kw.items():
        frame[f"{pid}_kw"] = alloc.ravel()
    per = r.settlement.groupby(["unit_id", "interval_start"])["amount"].sum()
    key = pd.MultiIndex.from_arrays([frame["unit_id"], frame["interval_start"]])
    frame["revenue"] = per.reindex(key).fillna(0.0).to_numpy()
    return frame


def _streams(frame: pd.DataFrame) -> dict[str, float]:
    return {k: float(v) for k, v in frame.groupby("stream", sort=True)["amount"].sum().items()}


def cycles_summary(r: BacktestResult) -> dict:
    dt_h = (r.index[1] - r.index[0]).total_seconds() / 3600.0 if len(r.index) > 1 else 1.0
    efc = equivalent_full_cycles(r.discharge_kw.sum(axis=1) * dt_h, r.energy_kwh)
    labels = bin_labels()
    soc = r.soc_kwh / r.energy_kwh[:, None]
    return {
        "equivalent_full_cycles": {uid: float(efc[i]) for i, uid in enumerate(r.unit_ids)},
        "fleet_equivalent_full_cycles": float((r.discharge_kw.sum() * dt_h) / r.energy_kwh.sum()) if r.energy_kwh.sum() else 0.0,
        "rainflow_depth_bins": labels,
        "rainflow": {uid: [float(x) for x in depth_histogram(soc[i])] for i, uid in enumerate(r.unit_ids)},
    }


def capture(net: float, bound: float) -> float | None:
    """The share of the perfect-foresight revenue captured; undefined when the bound is not positive."""
    return net / bound if bound > 0 else None


def monthly(r: BacktestResult, timezone: str) -> pd.DataFrame:
    """Revenue by local month × stream."""
    s = r.settlement
    month = pd.DatetimeIndex(s["interval_start"]).tz_convert(timezone).tz_localize(None).to_period("M").astype(str)
    return s.assign(month=month).pivot_table(index="month", columns="stream", values="amount", aggfunc="sum", fill_value=0.0)


def build_summary(cfg: VppConfig, r: BacktestResult, settings: SimulationSettings, bound: BacktestResult | None, contracts: dict | None = None) -> dict:
    s = r.settlement
    streams = _streams(s)
    end = r.index[-1] + (r.index[1] - r.index[0] if len(r.index) > 1 else cfg.interval)
    bound_net = r.net_revenue if bound is None else bound.net_revenue
    bound_streams = streams if bound is None else _streams(bound.settlement)
    months = monthly(r, cfg.timezone).sum(axis=1)
    bound_months = months if bound is None else monthly(bound, cfg.timezone).sum(axis=1)
    by_month_capture = {m: capture(float(months.get(m, 0.0)), float(v)) for m, v in bound_months.items()}
    tm = r.timing
    return {
        "name": cfg.name,
        "from": r.index[0].tz_convert(cfg.timezone).isoformat(),
        "to": end.tz_convert(cfg.timezone).isoformat(),
        "currency": cfg.currency,
        "forecast": settings.forecast.method,
        "reoptimize_every": str(settings.every),
        "seed": settings.seed,
        "revenue_by_stream": streams,
        "net_revenue": float(sum(streams.values())),
        "fleet": {
            "units": len(r.unit_ids),
            "power_kw": float(sum(u.max_discharge_kw for u in cfg.fleet.units)),
            "energy_kwh": float(r.energy_kwh.sum()),
        },
        "by_unit": {uid: _streams(g) for uid, g in s.groupby("unit_id", sort=True)},
        "by_site": {sid: _streams(g) for sid, g in s.groupby("site_id", sort=True)},
        "by_contract": contracts or {},
        "by_month": {m: float(v) for m, v in months.items()},
        "cycles": cycles_summary(r),
        "perfect_foresight": {"net_revenue": float(bound_net), "revenue_by_stream": bound_streams, "by_month": {m: float(v) for m, v in bound_months.items()}},
        "capture_ratio": capture(float(sum(streams.values())), float(bound_net)),
        "capture_ratio_by_month": by_month_capture,
        "site_limits": {  # energy beyond the connection limits within intervals (--load-variability; sites with a meter: block hold them)
            sid: {"metered": sid in cfg.meters, "export_above_limit_kwh": float(r.export_above_limit_kwh[i]), "import_above_limit_kwh": float(r.import_above_limit_kwh[i])}
            for i, sid in enumerate(r.site_ids)
        }
        if r.export_above_limit_kwh is not None and r.import_above_limit_kwh is not None
        else {},
        "outages": [{"unit_id": o.unit_id, "start": o.start.isoformat(), "end": o.end.isoformat()} for o in r.outages],
        "solver": {
            "options": {"mip_gap": r.solver.mip_gap, "time_limit_s": r.solver.time_limit_s, "decomposition": r.solver.decomposition, "threads": r.solver.threads},
            "solves": tm.n_solves,
            "statuses": tm.statuses,
            "violations": r.violations,
            "forecast_s": tm.forecast_s,
            "build_s": tm.build_s,
            "solve_s": tm.solve_s,
            "simulate_s": tm.simulate_s,
            "settle_s": tm.settle_s,
        },
    }


def write_outputs(out: Path, cfg: VppConfig, r: BacktestResult, summary: dict, bound: BacktestResult | None, week: pd.Timestamp | None = None) -> list[Path]:
    """Write intervals (Parquet + CSV), settlement (Parquet + CSV), summary.json and the plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    frame = interval_frame(r)
    for name, table in (("intervals", frame), ("settlement", r.settlement)):
        table.to_parquet(out / f"{name}.parquet", index=False)
        table.to_csv(out / f"{name}.csv", index=False)
        written += [out / f"{name}.parquet", out / f"{name}.csv"]
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    written.append(out / "summary.json")
    written += plot_all(out, cfg, r, bound, week)
    return written


def _json_default(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def plot_all(out: Path, cfg: VppConfig, r: BacktestResult, bound: BacktestResult | None, week: pd.Timestamp | None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    tz = cfg.timezone
    # 1. one week: prices, fleet power, fleet SoC
    start = week if week is not None else r.index[0]
    sel = (r.index >= start) & (r.index < start + pd.Timedelta(days=7))
    local = r.index[sel].tz_convert(tz).tz_localize(None)
    fig, ax = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    ax[0].step(local, r.energy_price_per_mwh[sel], where="post", label="energy")
    ax[0].set_ylabel(f"{cfg.currency}/MWh")
    ax[0].set_title(f"{cfg.name}: week from {local[0]:%Y-%m-%d} ({tz})" if len(local) else cfg.name)
    if r.capacity_price_per_mw_h:
        cap = ax[0].twinx()
        for k, (pid, price) in enumerate(r.capacity_price_per_mw_h.items()):
            cap.step(local, price[sel], where="post", lw=0.8, alpha=0.7, color=f"C{k + 1}", label=f"{pid} capacity")
        cap.set_ylabel(f"{cfg.currency}/MW-h")
        cap.legend(loc="upper right", fontsize=8)
    ax[0].legend(loc="upper left")
    ax[1].step(local, r.power_kw[:, sel].sum(axis=0) / 1000.0, where="post", label="base point (settled)")
    for pid, alloc in r.reserve_kw.items():
        ax[1].step(local, alloc[:, sel].sum(axis=0) / 1000.0, where="post", alpha=0.6, label=f"{pid} held")
    ax[1].axhline(0, color="grey", lw=0.5)
    ax[1].set_ylabel("fleet MW (+ discharge)")
    ax[1].legend(loc="upper left", fontsize=8)
    soc_pct = 100.0 * r.soc_kwh[:, :-1][:, sel].sum(axis=0) / r.energy_kwh.sum()
    ax[2].plot(local, soc_pct)
    ax[2].set_ylabel("fleet SoC %")
    ax[2].set_ylim(0, 100)
    fig.tight_layout()
    paths.append(_save(fig, out / "week.png"))
    # 2. monthly revenue by stream
    by = monthly(r, tz)
    fig, axm = plt.subplots(figsize=(10, 5))
    pos = np.arange(len(by.index))
    bottom_pos = np.zeros(len(pos))
    bottom_neg = np.zeros(len(pos))
    for stream in by.columns:
        v = by[stream].to_numpy()
        base = np.where(v >= 0, bottom_pos, bottom_neg)
        axm.bar(pos, v, bottom=base, label=stream)
        bottom_pos += np.maximum(v, 0)
        bottom_neg += np.minimum(v, 0)
    axm.plot(pos, by.sum(axis=1).to_numpy(), "k_", markersize=30, mew=2, label="net")
    axm.set_xticks(pos, by.index, rotation=45)
    axm.set_ylabel(cfg.currency)
    axm.set_title("revenue by stream per month")
    axm.legend(fontsize=8)
    axm.axhline(0, color="black", lw=0.5)
    fig.tight_layout()
    paths.append(_save(fig, out / "monthly_revenue.png"))
    # 3. capture ratio per month
    total = by.sum(axis=1)
    bound_total = total if bound is None else monthly(bound, tz).sum(axis=1)
    ratio = [capture(float(total.get(m, 0.0)), float(bound_total.get(m, 0.0))) for m in bound_total.index]
    fig, axc = plt.subplots(figsize=(10, 4))
    axc.bar(np.arange(len(ratio)), [100.0 * (x if x is not None else np.nan) for x in ratio])
    axc.set_xticks(np.arange(len(ratio)), bound_total.index, rotation=45)
    axc.axhline(100, color="grey", lw=0.5)
    axc.set_ylabel("% of perfect foresight")
    axc.set_title("captured share of the perfect-foresight revenue, per month")
    fig.tight_layout()
    paths.append(_save(fig, out / "capture_by_month.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
