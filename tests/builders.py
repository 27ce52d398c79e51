"""Small fleets and markets built in code, for tests that need exact control of every parameter."""

from __future__ import annotations

import numpy as np
import pandas as pd

from optimizers.problem import Problem, build_problem
from vpp.fleet import BatteryUnit, Fleet, Site, Tariff, TouPeriod
from vpp.markets import AncillaryProduct, DemandResponseEvent, Market, ProductKind
from vpp.overrides import Override
from vpp.schedule import TerminalPolicy
from vpp.timeseries import LoadedSeries

START = pd.Timestamp("2020-07-01T00:00", tz="UTC")


def hours(n: int, step_min: int = 60) -> pd.DatetimeIndex:
    return pd.date_range(START, periods=n, freq=f"{step_min}min")


def series(values, index: pd.DatetimeIndex, quantity: str, name: str = "s") -> LoadedSeries:
    return LoadedSeries(name, quantity, pd.Series(np.asarray(values, float), index=index))


def unit(uid: str = "u1", site: str = "s1", **kw) -> BatteryUnit:
    base = dict(max_charge_kw=100.0, max_discharge_kw=100.0, energy_kwh=200.0, soc_min=0.1, soc_max=0.9, eta_charge=0.95, eta_discharge=0.95, initial_soc=0.5)
    base.update(kw)
    return BatteryUnit(uid, site, **base)


def wholesale_site(sid: str = "s1", **kw) -> Site:
    return Site(sid, "wholesale", **kw)


def product(pid: str, kind: ProductKind, prices, index, **kw) -> AncillaryProduct:
    return AncillaryProduct(pid, kind, series(prices, index, "capacity_price", pid), **kw)


def market(prices, index, products=(), events=()) -> Market:
    return Market("USD", series(prices, index, "energy_price", "energy"), tuple(products), tuple(events))


def flat_tariff(price_per_kwh: float = 0.5, peak_per_kwh: float | None = None, peak_hours=(17.0, 21.0), demand_charge: float = 0.0) -> Tariff:
    periods = []
    if peak_per_kwh is not None:
        periods.append(TouPeriod("peak", peak_per_kwh, (peak_hours,)))
    periods.append(TouPeriod("flat", price_per_kwh, ((0.0, 24.0),)))
    return Tariff("t", "UTC", tuple(periods), demand_charge_per_kw_month=demand_charge)


def problem(units, sites, mkt, index, overrides: tuple[Override, ...] = (), terminal: TerminalPolicy = TerminalPolicy(), **kw) -> Problem:
    return build_problem(Fleet(tuple(sites), tuple(units)), mkt, index, overrides=overrides, terminal=terminal, **kw)


def dr_event(eid: str, start, end, sites, **kw) -> DemandResponseEvent:
    return DemandResponseEvent(eid, pd.Timestamp(start), pd.Timestamp(end), frozenset(sites), **kw)
