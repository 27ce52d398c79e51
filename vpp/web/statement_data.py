"""Gathering a statement's inputs from the ledger and the config (I/O), then ``build_statement`` (pure).

The month's totals and dispatched energy are read with the functions `vpp ledger report` uses
(``settled_totals``, ``dispatched_kwh``), so the split is the report's. The no-battery bill of a metered
retail site is the ledger's own (``site_energy``: its grid meter plus its batteries' energy, decision 23);
that of an unmetered one is priced on its load − PV over the intervals its units have settled rows for; where that series
does not cover the month (or the site has no tariff), the statement says the bill is not available
rather than guessing.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from vpp.config import VppConfig
from vpp.errors import InputError
from vpp.ledger.contracts import Contract
from vpp.ledger.money import currency_exponent
from vpp.ledger.report import month_bounds
from vpp.ledger.statement import Statement, build_statement
from vpp.ledger.store import dispatched_kwh, metered_rows, settled_intervals, settled_starts, settled_totals, site_energy_rows
from vpp.site_billing import month_bill_minor
from vpp.timeseries import profile_on

log = logging.getLogger(__name__)


def load_statement(cfg: VppConfig, engine: Engine, contract: Contract, month: str) -> Statement:
    start, end = month_bounds(month, cfg.timezone)
    totals = settled_totals(engine, start, end)
    metered = metered_rows(engine, start, end, contract.units)
    units = {u.id: u for u in cfg.fleet.units}
    sites = {s.id: s for s in cfg.fleet.sites}
    mine = [units[u] for u in contract.units if u in units]
    counted = settled_intervals(engine, start, end).reindex(list(contract.units)).dropna()
    return build_statement(
        contract,
        month,
        cfg.currency,
        totals,
        dispatched_kwh=dispatched_kwh(engine, start, end),
        intervals=int(counted.max()) if len(counted) else 0,
        energy=_by_period(metered, units, sites, cfg.interval),
        capacity_kwh=float(sum(u.energy_kwh for u in mine)),
        bill_without_battery_minor=_bill_without_battery(engine, start, end, settled_starts(engine, start, end, contract.units), {u.site_id for u in mine}, sites, cfg),
    )


def _by_period(metered: pd.DataFrame, units: dict, sites: dict, interval: pd.Timedelta) -> pd.DataFrame:
    """(period, charged_kwh, discharged_kwh) per metered row, the period from its site's tariff."""
    if metered.empty:
        return pd.DataFrame(columns=["period", "charged_kwh", "discharged_kwh"])
    period = pd.Series("all", index=metered.index, dtype=object)
    site_of = metered["unit_id"].map(lambda u: units[u].site_id if u in units else None)
    for site_id, rows in metered.groupby(site_of):
        tariff = sites[site_id].tariff if site_id in sites else None
        if tariff is not None:
            which = tariff.period_of(pd.DatetimeIndex(rows["interval_start"]))
            period[rows.index] = [tariff.periods[k].name if k >= 0 else "all" for k in which]
    return pd.DataFrame({"period": period, "charged_kwh": metered["charged_kwh"], "discharged_kwh": metered["discharged_kwh"]})


def _bill_without_battery(engine: Engine, start: pd.Timestamp, end: pd.Timestamp, times: pd.DatetimeIndex, site_ids: set[str], sites: dict, cfg: VppConfig) -> int | None:
    """The retail sites' bill without the battery over the settled intervals (energy at the TOU price, less
    feed-in, plus the demand charge on the peak import): a metered site's from its ``site_energy`` rows,
    exact; the others' on load − PV alone, rounded once to minor units."""
    retail = [sites[s] for s in sorted(site_ids) if s in sites and sites[s].market == "retail" and sites[s].tariff is not None]
    if not retail or times.empty:
        return None
    metered_minor = 0
    billed = site_energy_rows(engine, start, end, [s.id for s in retail if s.id in cfg.meters]) if any(s.id in cfg.meters for s in retail) else None
    for site in [s for s in retail if billed is not None and (billed["site_id"] == s.id).any()]:
        rows = billed[billed["site_id"] == site.id].set_index("interval_start")
        month = pd.date_range(start, rows.index.max(), freq=cfg.interval)
        imports = rows["baseline_import_wh"].reindex(month, fill_value=0).astype(int).tolist()
        window = pd.Timedelta(minutes=cfg.meters[site.id].demand_window_min)
        metered_minor += month_bill_minor(rows["baseline_bill_minor"].tolist(), imports, cfg.interval, window, site.tariff.demand_charge_per_kw_month, site.demand_peak_so_far_kw, currency_exponent(cfg.currency))
        retail.remove(site)
    if not retail:
        return metered_minor
    grid = pd.date_range(times[0], times[-1], freq=cfg.interval)
    take = grid.isin(times)
    dt_h = cfg.interval.total_seconds() / 3600.0
    total = 0.0
    try:
        for site in retail:
            net = (profile_on(site.load_kw, grid, site.id) - profile_on(site.pv_kw, grid, site.id))[take]
            price = site.tariff.energy_price_per_mwh(grid)[take]
            imp, exp = np.maximum(net, 0.0), np.maximum(-net, 0.0)
            total += float(((price * imp - site.tariff.feed_in_price_per_kwh * 1000.0 * exp) * dt_h / 1000.0).sum())
            total += site.tariff.demand_charge_per_kw_month * float(imp.max(initial=0.0))
    except (InputError, ValueError) as err:
        log.warning("no-battery bill not available for sites %s: %s", ",".join(s.id for s in retail), err)
        return None
    return metered_minor + int(np.rint(total * 10 ** currency_exponent(cfg.currency)))


def statement_profile(cfg: VppConfig, engine: Engine, contract: Contract, month: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The contract's net battery power per settled interval (kW, + discharge, from metered energy) and
    its energy-weighted SoC per telemetry bucket (where this database holds the daemon's telemetry)."""
    import sqlalchemy as sa

    from vpp.daemon.store import telemetry

    start, end = month_bounds(month, cfg.timezone)
    metered = metered_rows(engine, start, end, contract.units)
    dt_h = cfg.interval.total_seconds() / 3600.0
    power = (metered.assign(kw=(metered["discharged_kwh"] - metered["charged_kwh"]) / dt_h).groupby("interval_start", as_index=False)["kw"].sum()) if len(metered) else pd.DataFrame(columns=["interval_start", "kw"])
    energy = {u.id: u.energy_kwh for u in cfg.fleet.units if u.id in contract.units}
    c = telemetry.c
    query = sa.select(c.bucket_start, c.unit_id, c.soc_last).where(c.bucket_start >= start.to_pydatetime(), c.bucket_start < end.to_pydatetime(), c.unit_id.in_(list(energy))).order_by(c.bucket_start)
    try:
        with engine.connect() as conn:
            rows = pd.DataFrame(conn.execute(query).all(), columns=["t", "unit_id", "soc"])
    except sa.exc.DBAPIError:  # a ledger without the daemon's tables (a central database)
        rows = pd.DataFrame(columns=["t", "unit_id", "soc"])
    if len(rows):
        rows["t"] = pd.to_datetime(rows["t"], utc=True)
        rows["kwh"] = rows["unit_id"].map(energy) * rows["soc"]
        rows["cap"] = rows["unit_id"].map(energy)
        grouped = rows.groupby("t", as_index=False)[["kwh", "cap"]].sum()
        soc = pd.DataFrame({"t": grouped["t"], "soc": grouped["kwh"] / grouped["cap"]})
    else:
        soc = pd.DataFrame(columns=["t", "soc"])
    return power, soc
