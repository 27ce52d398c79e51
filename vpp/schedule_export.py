"""A schedule as people use it: one CSV table with units, site and fleet totals and the prices, and one
picture (`vpp optimize --out FILE.csv --plot FILE.png`).

The CSV is for spreadsheets and other tools: powers are rounded to 1 W and SoC to 1e-6 (a solver's
``-3999.999999999998`` and ``1.8e-12`` are noise, and ``-0.0`` confuses sums), every row carries its
interval start in UTC and in the config's local time, and each interval has the prices the plan was made
on. Rows are units, then their sites, then the fleet (``level``), so a filter on ``level`` gives either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from optimizers.problem import Problem
from vpp.schedule import Schedule

KW_DECIMALS = 3  # 1 W
SOC_DECIMALS = 6


def schedule_table(schedule: Schedule, problem: Problem, timezone: str) -> pd.DataFrame:
    """Rows: every unit × interval, then every site × interval, then the fleet × interval."""
    p, s = problem, schedule
    n_units, n_t = s.charge_kw.shape
    e_max = np.where(p.e_max > 0, p.e_max, 1.0)[:, None]
    site_of_unit = np.asarray(p.site_ids, dtype=object)[p.unit_site] if n_units else np.zeros(0, dtype=object)
    incidence = p.units_of_site()

    def block(level: str, site_ids: np.ndarray, unit_ids: np.ndarray, values: dict[str, np.ndarray]) -> pd.DataFrame:
        rows = len(site_ids)
        frame = pd.DataFrame({"interval_start_utc": np.tile(s.index, rows), "interval_start_local": np.tile(s.index.tz_convert(timezone), rows)})
        frame["level"] = level
        frame["site_id"] = np.repeat(site_ids, n_t)
        frame["unit_id"] = np.repeat(unit_ids, n_t)
        for name, v in values.items():
            frame[name] = np.asarray(v, float).ravel()
        return frame

    units = {
        "power_kw": s.power_kw,
        "charge_kw": s.charge_kw,
        "discharge_kw": s.discharge_kw,
        "soc_start": s.soc_kwh[:, :-1] / e_max,
        "soc_end": s.soc_kwh[:, 1:] / e_max,
        "soc_end_kwh": s.soc_kwh[:, 1:],
        **{f"{pid}_kw": alloc for pid, alloc in s.reserve_kw.items()},
    }
    sites = {
        "power_kw": incidence @ s.power_kw,
        "charge_kw": incidence @ s.charge_kw,
        "discharge_kw": incidence @ s.discharge_kw,
        "soc_end_kwh": incidence @ s.soc_kwh[:, 1:],
        "site_net_export_kw": s.site_net_kw,  # batteries and the site's own load and PV, at its connection
        **{f"{pid}_kw": incidence @ alloc for pid, alloc in s.reserve_kw.items()},
    }
    fleet = {
        "power_kw": s.power_kw.sum(axis=0),
        "charge_kw": s.charge_kw.sum(axis=0),
        "discharge_kw": s.discharge_kw.sum(axis=0),
        "soc_end_kwh": s.soc_kwh[:, 1:].sum(axis=0),
        "site_net_export_kw": s.site_net_kw.sum(axis=0),
        **{f"{pid}_kw": bid for pid, bid in s.bids_kw.items()},  # the fleet row carries the bid itself
    }
    n_sites = len(p.site_ids)
    table = pd.concat(
        [
            block("unit", site_of_unit, np.asarray(s.unit_ids, dtype=object), units),
            block("site", np.asarray(p.site_ids, dtype=object), np.full(n_sites, "", dtype=object), sites),
            block("fleet", np.array([""], dtype=object), np.array([""], dtype=object), fleet),
        ],
        ignore_index=True,
    )
    # the prices the plan was made on, per interval (and the site's retail price where it has a tariff)
    table["energy_price_per_mwh"] = np.tile(p.energy_price_per_mwh, n_units + n_sites + 1)
    site_row = {sid: i for i, sid in enumerate(p.site_ids)}
    tou = np.vstack([p.tou_price_per_mwh, np.full((1, n_t), np.nan)])
    which = table["site_id"].map(site_row).fillna(n_sites).astype(int).to_numpy()
    table["tariff_price_per_kwh"] = tou[which, np.tile(np.arange(n_t), n_units + n_sites + 1)] / 1000.0
    for prod in p.products:
        table[f"{prod.id}_price_per_mw_h"] = np.tile(prod.value_per_mw_h, n_units + n_sites + 1)
    return _rounded(table)


def _rounded(table: pd.DataFrame) -> pd.DataFrame:
    for name in table.columns:
        if table[name].dtype.kind != "f":
            continue
        decimals = SOC_DECIMALS if name in ("soc_start", "soc_end") else KW_DECIMALS if name.endswith(("_kw", "_kwh")) else 6
        table[name] = table[name].round(decimals) + 0.0  # + 0.0 turns -0.0 into 0.0
    return table


def plot_schedule(schedule: Schedule, problem: Problem, timezone: str, path: Path, title: str, currency: str) -> None:
    """Prices; fleet power stacked by site; SoC per site; bids and DR commitments — one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, p = schedule, problem
    t = s.index.tz_convert(timezone)
    step = (t[1] - t[0]) if len(t) > 1 else pd.Timedelta(hours=1)
    edges = t.append(pd.DatetimeIndex([t[-1] + step]))
    incidence = p.units_of_site()
    site_power = incidence @ s.power_kw
    site_soc = (incidence @ s.soc_kwh) / np.maximum(incidence @ p.e_max, 1e-9)[:, None]
    fig, axes = plt.subplots(4, 1, figsize=(12, 11), sharex=True, gridspec_kw={"height_ratios": [1, 1.6, 1, 1]})
    ax = axes[0]
    if p.wholesale_unit.any():
        ax.step(edges, np.append(p.energy_price_per_mwh, p.energy_price_per_mwh[-1]), where="post", label="energy price per MWh")
    for i, sid in enumerate(p.site_ids):
        if p.retail_site[i]:
            ax.step(edges, np.append(p.tou_price_per_mwh[i], p.tou_price_per_mwh[i][-1]), where="post", label=f"{sid} tariff per MWh", alpha=0.7)
    for prod in p.products:
        ax.step(edges, np.append(prod.value_per_mw_h, prod.value_per_mw_h[-1]), where="post", label=f"{prod.id} per MW-h", alpha=0.7)
    ax.set_ylabel(f"{currency}")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    ax = axes[1]
    positive, negative = np.zeros(len(t)), np.zeros(len(t))
    for i, sid in enumerate(p.site_ids):
        kw = site_power[i]
        up, down = np.clip(kw, 0, None), np.clip(kw, None, 0)
        ax.bar(t, up / 1000, width=step, bottom=positive / 1000, align="edge", label=sid)
        ax.bar(t, down / 1000, width=step, bottom=negative / 1000, align="edge", color=ax.patches[-1].get_facecolor())
        positive, negative = positive + up, negative + down
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("MW (+ discharge)")
    ax.legend(fontsize=7, ncol=4, loc="upper left")
    ax = axes[2]
    for i, sid in enumerate(p.site_ids):
        ax.plot(edges, site_soc[i] * 100, label=sid)
    ax.set_ylabel("SoC %")
    ax.set_ylim(0, 100)
    ax = axes[3]
    for pid, bid in s.bids_kw.items():
        ax.step(edges, np.append(bid, bid[-1]) / 1000, where="post", label=f"bid {pid}")
    for ev in p.events:
        committed = s.dr_commitment_kw.get(ev.id, 0.0)
        ax.fill_between(t, 0, np.where(ev.active, committed, 0) / 1000, step="post", alpha=0.3, label=f"DR {ev.id} {committed:,.0f} kW")
    ax.set_ylabel("MW offered")
    if s.bids_kw or p.events:
        ax.legend(fontsize=7, ncol=4, loc="upper left")
    ax.set_xlabel(f"interval start ({timezone})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
