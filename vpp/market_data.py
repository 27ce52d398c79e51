"""Market data delivered to a running engine: checked, merged by (series, interval), and the plan's view of it.

A delivery is a table in the layout of one of the config's ``data:`` sources (same time column,
delimiter, decimal mark, column headers and units; any of its columns), parsed by the same reader
as the config's CSV files (``vpp.timeseries.read_csv_series``), so it is checked like them: unique,
strictly increasing, regular timestamps, finite numbers in the declared decimal convention. On top,
a delivery must fit what is already known of each series (``check_delivery``): the series' own
resolution and time grid, a plausible span around now, bounded rows, values inside hard bounds and, for a
day's worth of values or more, a typical magnitude that fits the unit (a per-kWh price sent as per-MWh
is refused, not planned on).

Merging is by (series, interval start), all or nothing per delivery (``merge``):

- a value equal to the one held is no change: delivering the same data twice changes nothing;
- an interval not held yet is added, in any order (yesterday after tomorrow is fine);
- a different value for an interval that has **not started** at arrival replaces the one held
  (a market's correction, or a published price replacing the config file's placeholder): the later
  arrival wins;
- a different value for an interval that **has started** refuses the whole delivery: the plan,
  the commands and settlement have used the value held, so it is history.

The plan sees every series as the config file's values overlaid with what was delivered
(``delivered``), and intervals of the horizon that nothing covers filled by the configured
forecaster from what was observed by the decision time (``planned``). Settlement sees only
delivered and configured values, never a forecast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time

import numpy as np
import pandas as pd

from vpp.errors import InputError
from vpp.fleet import Fleet
from vpp.forecasts import ForecastSpec, forecast_series, map_series
from vpp.markets import Market
from vpp.timeseries import LoadedSeries, magnitude_warnings, price_band

FALLBACKS = ("persistence", "last_week", "rolling_mean")  # forecasters that extend a series past its end
PRICE_LIMIT_FACTOR = 20  # a single price may reach 20 x the top of the typical band (100,000 per MWh in USD)
POWER_LIMIT_KW = 1.0e7  # 10 GW: no site's load or PV


@dataclass(frozen=True, slots=True)
class Limits:
    """What a single delivery may hold (the edges' byte caps come before this)."""

    max_rows: int = 20_000  # a week of 5-minute data for one series is 2,016 rows
    max_age: pd.Timedelta = pd.Timedelta(days=35)  # intervals older than this before now are not plausible news
    max_ahead: pd.Timedelta = pd.Timedelta(days=8)  # nor intervals further ahead than this


@dataclass(frozen=True, slots=True)
class Grid:
    """A series' resolution and alignment, as the config's data file fixes them."""

    quantity: str  # energy_price | capacity_price | power
    unit: str  # the declared unit (for the magnitude check)
    step: pd.Timedelta
    origin: pd.Timestamp


def grid_of(series: LoadedSeries, unit: str) -> Grid:
    index = series.values.index
    return Grid(series.quantity, unit, pd.Timedelta(index.freq) if index.freq is not None else index[1] - index[0], index[0])


def check_delivery(loaded: Mapping[str, LoadedSeries], grids: Mapping[str, Grid], now: pd.Timestamp, currency: str, where: str, limits: Limits = Limits()) -> dict[str, pd.Series]:
    """The delivered series (full name -> values in engine units, UTC), or ``InputError`` for the first misfit."""
    out: dict[str, pd.Series] = {}
    for name, series in loaded.items():
        grid = grids[name]
        values = series.values
        index = values.index
        if len(index) > limits.max_rows:
            raise InputError(where, name, f"{len(index)} rows", f"at most {limits.max_rows} rows per delivery")
        step = pd.Timedelta(index.freq) if index.freq is not None else index[1] - index[0]
        if step != grid.step:
            raise InputError(where, f"{name} time step", f"{step.total_seconds() / 60:g} min", f"the series' {grid.step.total_seconds() / 60:g}-minute step (deliveries are not resampled)")
        if (index[0] - grid.origin) % grid.step != pd.Timedelta(0):
            raise InputError(where, f"{name} at {index[0].isoformat()}", index[0].isoformat(), f"an interval start on the series' grid (every {grid.step.total_seconds() / 60:g} min from {grid.origin.isoformat()})")
        if index[0] < now - limits.max_age or index[-1] >= now + limits.max_ahead:
            raise InputError(where, name, f"{index[0].isoformat()} .. {index[-1].isoformat()}", f"intervals within {limits.max_age.days} days before and {limits.max_ahead.days} days after now ({now.isoformat()})")
        bound = POWER_LIMIT_KW if grid.quantity == "power" else PRICE_LIMIT_FACTOR * price_band(grid.quantity, currency)[1]
        big = np.abs(values.to_numpy(float)) > bound
        if big.any():
            at = int(np.argmax(big))
            raise InputError(where, f"{name} at {index[at].isoformat()}", float(values.iloc[at]), f"a magnitude of at most {bound:,.0f} in engine units")
        # a typical level needs a day of values: a correction of two near-zero solar-noon prices is not a unit error
        for warning in magnitude_warnings(series, grid.unit, currency) if len(index) * step >= pd.Timedelta(days=1) else ():
            raise InputError(where, name, warning, "a typical magnitude that fits the declared unit")
        out[name] = values
    return out


@dataclass(frozen=True, slots=True)
class Merge:
    """What a delivery changes: the points to store (added or replaced) and the span they cover."""

    points: dict[str, pd.Series]
    added: int
    replaced: int
    unchanged: int

    @property
    def changed(self) -> bool:
        return self.added + self.replaced > 0

    @property
    def span(self) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """[first changed interval start, last changed interval start], None when nothing changed."""
        starts = [s.index for s in self.points.values() if len(s)]
        return (min(i[0] for i in starts), max(i[-1] for i in starts)) if starts else None


def same_value(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Equal up to the last digits a text round trip can change (a float written and read back)."""
    return np.abs(a - b) <= 1e-9 * np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))


def merge(held: Mapping[str, pd.Series], delivered: Mapping[str, pd.Series], now: pd.Timestamp, where: str) -> Merge:
    """Merge ``delivered`` into ``held`` by the module's rule; ``InputError`` refuses the whole delivery."""
    points: dict[str, pd.Series] = {}
    added = replaced = unchanged = 0
    for name, new in delivered.items():
        old = held.get(name)
        if old is None or old.empty:
            points[name], added = new, added + len(new)
            continue
        old_at = old.reindex(new.index)
        known = old_at.notna().to_numpy()
        same = np.zeros(len(new), bool)
        same[known] = same_value(new.to_numpy(float)[known], old_at.to_numpy(float)[known])
        differs = known & ~same
        started = differs & np.asarray(new.index <= now)
        if started.any():
            at = int(np.argmax(started))
            raise InputError(
                where,
                f"{name} at {new.index[at].isoformat()}",
                f"{new.iloc[at]:g} (held {old_at.iloc[at]:g})",
                "the value held: the interval has started, so plan, commands and settlement used it; only intervals that have not started can be corrected",
            )
        change = ~same
        points[name] = new[change]
        added += int((~known).sum())
        replaced += int(differs.sum())
        unchanged += int(same.sum())
    return Merge({k: v for k, v in points.items() if len(v)}, added, replaced, unchanged)


@dataclass
class Book:
    """Every series as it stands: the config file's values overlaid with the deliveries (sorted, UTC).

    ``version`` counts the merges that changed something, so a caller can tell whether a view it
    built is still current."""

    series: dict[str, pd.Series]
    grids: dict[str, Grid]
    version: int = 0
    arrivals: dict[str, pd.Timestamp] = field(default_factory=dict)  # series -> when it last changed

    def apply(self, m: Merge, arrived_at: pd.Timestamp) -> None:
        for name, points in m.points.items():
            old = self.series.get(name)
            merged = points if old is None or old.empty else points.combine_first(old)
            self.series[name] = merged.sort_index()
            self.arrivals[name] = arrived_at
        if m.changed:
            self.version += 1

    def on_grid(self, name: str, until: pd.Timestamp | None = None) -> pd.Series:
        """The series on its regular grid from its first interval to ``until`` (or its last), NaN where unknown."""
        s, grid = self.series[name], self.grids[name]
        last = s.index[-1]
        if until is not None:  # the interval holding ``until``'s last instant
            last = max(last, s.index[0] + grid.step * (math.ceil((until - s.index[0]) / grid.step) - 1))
        index = pd.date_range(s.index[0], last, freq=grid.step)
        return s.reindex(index)

    def covered_until(self, name: str, start: pd.Timestamp) -> pd.Timestamp:
        """The end of the unbroken run of known intervals from the one holding ``start`` (``start`` if none)."""
        grid = self.grids[name]
        s = self.on_grid(name)
        first = s.index[0] + grid.step * math.floor((start - s.index[0]) / grid.step)
        run = s[s.index >= first]
        if run.empty or np.isnan(run.iloc[0]):
            return start
        gaps = np.flatnonzero(np.isnan(run.to_numpy(float)))
        end = run.index[gaps[0]] if len(gaps) else run.index[-1] + grid.step
        return max(end, start)


def _base(series: LoadedSeries) -> tuple[str, float]:
    """A referenced series' loaded name and the scale the reference applies ('src.col*0.8')."""
    name, star, factor = series.name.partition("*")
    return name, float(factor) if star else 1.0


def delivered(fleet: Fleet, market: Market, book: Book) -> tuple[Fleet, Market]:
    """Fleet and market on the config's values overlaid with the deliveries (unknown intervals stay
    unknown: a price nobody delivered fails settlement loudly instead of being made up)."""

    def overlay(s: LoadedSeries) -> LoadedSeries:
        name, factor = _base(s)
        if name not in book.series:
            return s
        values = book.on_grid(name)
        return LoadedSeries(s.name, s.quantity, values * factor)

    return map_series(fleet, market, overlay)


@dataclass(frozen=True, slots=True)
class Coverage:
    """How much of a series the horizon has from deliveries (or the config file) rather than the fallback."""

    series: str
    covered_until: pd.Timestamp
    missing_intervals: int  # of the horizon, filled by the fallback forecaster
    late: bool  # past the publication time and the data that should be out by then is not
    last_arrival: pd.Timestamp | None


def planned(fleet: Fleet, market: Market, book: Book, start: pd.Timestamp, end: pd.Timestamp, now: pd.Timestamp, spec: ForecastSpec) -> tuple[Fleet, Market, dict[str, int]]:
    """Fleet and market as the plan over [start, end) decided at ``now`` sees them: delivered values, and
    for intervals nothing covers, the fallback forecast from what was observed by ``now`` (the forecast is
    made at the last observation when data stopped arriving before ``now``). Returns the filled counts."""
    filled: dict[str, int] = {}

    def fill(s: LoadedSeries) -> LoadedSeries:
        name, factor = _base(s)
        if name not in book.series:
            return s
        grid = book.grids[name]
        values = book.on_grid(name, until=end) * factor
        window = (values.index + grid.step > start) & (values.index < end)
        gaps = window & values.isna().to_numpy()
        filled[name] = int(gaps.sum())
        if not gaps.any():
            return LoadedSeries(s.name, s.quantity, values)
        observed = values[values.index + grid.step <= now].ffill().dropna()
        if observed.empty:
            raise InputError(name, "fallback forecast", "no observed interval", f"data observed before {now.isoformat()} to forecast the intervals nobody delivered")
        history = LoadedSeries(s.name, s.quantity, pd.Series(observed.to_numpy(float), index=pd.DatetimeIndex(observed.index, freq=grid.step)))
        decided = min(now, observed.index[-1] + grid.step)
        guess = forecast_series(history, values.index[gaps][0], values.index[gaps][-1] + grid.step, decided, spec).values
        out = values.copy()
        out[gaps] = guess.reindex(values.index[gaps]).to_numpy(float)
        return LoadedSeries(s.name, s.quantity, out)

    fleet, market = map_series(fleet, market, fill)
    return fleet, market, filled


def coverage(book: Book, name: str, start: pd.Timestamp, end: pd.Timestamp, now: pd.Timestamp, filled: int, published_at: time | None, timezone: str) -> Coverage:
    """The series' coverage of the horizon; ``late`` when, past today's publication time (local), the
    horizon's part up to the end of tomorrow is not covered (before it, up to the end of today)."""
    until = book.covered_until(name, start)
    local = now.tz_convert(timezone)
    days = 1
    if published_at is not None and local.time() >= published_at:
        days = 2
    due = min(end, (local.normalize() + pd.Timedelta(days=days)).tz_convert("UTC"))
    late = published_at is not None and until < due
    return Coverage(name, until, filled, late, book.arrivals.get(name))
