"""Batteries, sites, tariffs and the fleet: the physical and contractual things a VPP runs.

Plain frozen dataclasses with the units in their names. Time series (load, PV)
are ``Profile``s (a loaded series on a tz-aware UTC index, or a constant), powers in kW; prices in
currency per MWh (energy) so every module converts once, at the edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd

from vpp.device_config import DeviceConfig
from vpp.timeseries import Profile


@dataclass(frozen=True, slots=True)
class Derate:
    """The unit can deliver only ``factor`` × its power limits in [start, end) (0 = outage)."""

    start: datetime
    end: datetime
    factor: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BatteryUnit:
    id: str
    site_id: str
    max_charge_kw: float  # AC side, positive number
    max_discharge_kw: float
    energy_kwh: float  # nameplate usable-at-100 % energy
    soc_min: float = 0.0  # fraction of energy_kwh
    soc_max: float = 1.0
    eta_charge: float = 0.95  # one-way: stored = eta_charge * drawn
    eta_discharge: float = 0.95  # one-way: delivered = eta_discharge * released
    self_discharge_per_h: float = 0.0  # fraction of stored energy lost per hour
    degradation_cost_per_mwh: float = 0.0  # per MWh discharged (AC)
    max_cycles_per_day: float | None = None  # equivalent full cycles (discharged energy / energy_kwh)
    initial_soc: float = 0.5  # used when no telemetry is given
    derates: tuple[Derate, ...] = ()
    device: DeviceConfig | None = None

    def availability(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Per-interval power factor in [0, 1]: the tightest derate overlapping each interval."""
        factor = np.ones(len(index))
        if not self.derates or len(index) == 0:
            return factor
        starts = index
        ends = index + interval_length(index)
        for d in self.derates:
            overlap = (starts < pd.Timestamp(d.end)) & (ends > pd.Timestamp(d.start))
            factor[overlap] = np.minimum(factor[overlap], d.factor)
        return factor


@dataclass(frozen=True, slots=True)
class TouPeriod:
    """One priced period of a time-of-use tariff: local clock-time ranges, optionally only some months."""

    name: str
    price_per_kwh: float
    hours: tuple[tuple[float, float], ...]  # [(start_h, end_h)], local time, end exclusive, 0..24
    months: frozenset[int] = frozenset(range(1, 13))


@dataclass(frozen=True, slots=True)
class Tariff:
    """A retail tariff. Periods are matched in order, first match wins (so critical peak goes first)."""

    id: str
    timezone: str
    periods: tuple[TouPeriod, ...]
    demand_charge_per_kw_month: float = 0.0
    feed_in_price_per_kwh: float = 0.0

    def uncovered_hours(self) -> list[tuple[int, float]]:
        """(month, hour) pairs no period prices, on a 15-minute grid — a config error."""
        missing = []
        for month in range(1, 13):
            for q in range(96):
                h = q / 4
                if not any(month in p.months and any(a <= h < b for a, b in p.hours) for p in self.periods):
                    missing.append((month, h))
        return missing

    def period_of(self, index: pd.DatetimeIndex) -> np.ndarray:
        """Position in ``periods`` of the period pricing each interval (first match wins), -1 where none does."""
        local = index.tz_convert(self.timezone)
        hour = local.hour.to_numpy() + local.minute.to_numpy() / 60.0
        month = local.month.to_numpy()
        which = np.full(len(index), -1)
        for k, p in enumerate(self.periods):
            in_month = np.isin(month, list(p.months))
            in_hours = np.zeros(len(index), dtype=bool)
            for a, b in p.hours:
                in_hours |= (hour >= a) & (hour < b)
            which[(which < 0) & in_month & in_hours] = k
        return which

    def energy_price_per_mwh(self, index: pd.DatetimeIndex) -> np.ndarray:
        which = self.period_of(index)
        if (which < 0).any():
            raise ValueError(f"tariff {self.id} does not price {index[which < 0][0]}")
        return np.array([p.price_per_kwh * 1000.0 for p in self.periods])[which] if len(index) else np.zeros(0)


@dataclass(frozen=True, slots=True)
class Site:
    """A point of connection. ``market='wholesale'`` settles battery energy at the market price;
    ``'retail'`` pays its tariff on net import (behind-the-meter C&I)."""

    id: str
    market: Literal["wholesale", "retail"]
    import_limit_kw: float = math.inf
    export_limit_kw: float = math.inf  # 0 when export is not allowed
    tariff: Tariff | None = None
    load_kw: Profile | None = None
    pv_kw: Profile | None = None
    demand_peak_so_far_kw: float = 0.0  # this billing month's peak import before the horizon


@dataclass(frozen=True, slots=True)
class Fleet:
    sites: tuple[Site, ...]
    units: tuple[BatteryUnit, ...]


def interval_length(index: pd.DatetimeIndex) -> pd.Timedelta:
    if index.freq is not None:
        return pd.Timedelta(index.freq)
    if len(index) > 1:
        return index[1] - index[0]
    return pd.Timedelta(hours=1)
