"""Forecasts of prices, load and PV, as the optimizer sees them at a decision time.

A backtest is only honest if the plan for an interval uses nothing recorded at
or after the moment the plan was made. Every method here (except ``perfect``
and ``file``) builds its values from observations whose interval *ended* at
or before ``decided_at``:

- ``perfect``: the recorded values themselves (the upper bound);
- ``persistence``: the most recent observation at the same time of day
  (yesterday's, or the day before when yesterday's has not happened yet);
- ``last_week``: the most recent observation at the same time on the same weekday;
- ``rolling_mean``: the mean of the ``rolling_days`` most recent same-time-of-day observations;
- ``file``: a forecast column recorded in the data file next to the actual one, named
  ``<column name>_forecast`` in the same ``data:`` source (e.g. ``da_lmp`` → ``da_lmp_forecast``).

Forecasts are returned as ``LoadedSeries`` on the data's own grid, so
``vpp.timeseries.on_index`` resamples them exactly as it does recorded data.
``forecast_view`` swaps them into the market and the sites (frozen domain
objects, replaced, never mutated). A method that needs history before the data
starts raises ``InputError`` naming the series and the missing span.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from vpp.config import ConfigModel, read_yaml
from vpp.errors import InputError
from vpp.fleet import Fleet
from vpp.markets import Market
from vpp.timeseries import Column, LoadedSeries, read_csv_series

METHODS = ("perfect", "persistence", "last_week", "rolling_mean", "file")
DAY = pd.Timedelta(days=1)
FORECAST_SUFFIX = "_forecast"


@dataclasses.dataclass(frozen=True, slots=True)
class ForecastSpec:
    method: str = "perfect"
    rolling_days: int = 7  # rolling_mean: how many past days are averaged
    file_series: dict[str, LoadedSeries] | None = None  # method 'file': actual series name -> its forecast column

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError("--forecast", "forecast", self.method, f"one of {', '.join(METHODS)}")
        if self.rolling_days < 1:
            raise InputError("--rolling-days", "rolling_days", self.rolling_days, "at least 1 day")


def forecast_series(series: LoadedSeries, start: pd.Timestamp, end: pd.Timestamp, decided_at: pd.Timestamp, spec: ForecastSpec) -> LoadedSeries:
    """The forecast of ``series`` over [start, end) made at ``decided_at``, on the data's own time grid."""
    if spec.method == "perfect":
        return series
    if spec.method == "file":
        base, star, factor = series.name.partition("*")
        found = (spec.file_series or {}).get(base)
        if found is not None:
            return LoadedSeries(f"{found.name}*{factor}", found.quantity, found.values * float(factor)) if star else found
        raise InputError("data", base + FORECAST_SUFFIX, None, f"a column mapped as '{base.split('.', 1)[-1]}{FORECAST_SUFFIX}' in the same data source (forecast method 'file')")
    s = series.values
    step = pd.Timedelta(s.index.freq) if s.index.freq is not None else (s.index[1] - s.index[0])
    origin = s.index[0]
    first = int(np.floor((start - origin) / step))
    last = int(np.ceil((end - origin) / step))
    targets = pd.DatetimeIndex(origin + step * np.arange(first, last)).as_unit("ns")
    period = 7 * DAY if spec.method == "last_week" else DAY
    # the smallest whole number of periods back whose observation has ended by the decision time
    back = np.maximum(1, np.ceil(np.asarray(((targets + step) - decided_at) / period, float)).astype(int))
    depth = spec.rolling_days if spec.method == "rolling_mean" else 1
    lags = back[None, :] + np.arange(depth)[:, None]  # (depth, T)
    source_pos = (targets.asi8[None, :] - lags * period.value - origin.as_unit("ns").value) // step.value
    if source_pos.min() < 0:
        earliest = origin + step * int(source_pos.min())
        raise InputError(
            series.name,
            f"history for forecast '{spec.method}'",
            f"data from {origin.isoformat()}",
            f"data from {earliest.isoformat()} (forecasting {targets[0].isoformat()} decided at {decided_at.isoformat()})",
        )
    if source_pos.max() >= len(s):  # only for a decision after the data ends: never index past it silently
        raise InputError(series.name, "forecast", decided_at.isoformat(), "a decision time inside the data")
    values = s.to_numpy(dtype=float)[source_pos].mean(axis=0)
    index = pd.DatetimeIndex(targets, freq=step)
    return LoadedSeries(f"{series.name}[{spec.method}]", series.quantity, pd.Series(values, index=index))


def forecast_view(fleet: Fleet, market: Market, start: pd.Timestamp, end: pd.Timestamp, decided_at: pd.Timestamp, spec: ForecastSpec) -> tuple[Fleet, Market]:
    """The fleet and market with every recorded series replaced by its forecast (constants and tariffs stay)."""
    if spec.method == "perfect":
        return fleet, market
    fc: Callable[[object], object] = lambda p: forecast_series(p, start, end, decided_at, spec) if isinstance(p, LoadedSeries) else p
    products = tuple(dataclasses.replace(p, capacity_price_per_mw_h=fc(p.capacity_price_per_mw_h), mileage_price_per_mw=fc(p.mileage_price_per_mw)) for p in market.products)
    market = dataclasses.replace(market, energy_price_per_mwh=fc(market.energy_price_per_mwh), products=products)
    sites = tuple(dataclasses.replace(s, load_kw=fc(s.load_kw), pv_kw=fc(s.pv_kw)) for s in fleet.sites)
    return dataclasses.replace(fleet, sites=sites), market


def history_needed(spec: ForecastSpec) -> pd.Timedelta:
    """How far before the first decision the data must reach (at least; gate closures can add a day)."""
    return {"persistence": DAY, "last_week": 7 * DAY, "rolling_mean": spec.rolling_days * DAY}.get(spec.method, pd.Timedelta(0))


def file_forecasts(config_path: Path) -> dict[str, LoadedSeries]:
    """Every ``<column>_forecast`` column of the config's data sources, keyed by the actual series' name.

    The config loader keeps only referenced series, so the forecast columns are read here from the
    same sources (same file, time column, zone and units).
    """
    model = ConfigModel.model_validate(read_yaml(config_path))
    out: dict[str, LoadedSeries] = {}
    for src_name, src in model.data.items():
        wanted = {k: Column(c.column, c.unit, c.scale) for k, c in src.columns.items() if k.endswith(FORECAST_SUFFIX)}
        if not wanted:
            continue
        loaded = read_csv_series(config_path.parent / src.file, src.time_column, src.timezone or model.timezone, wanted, src_name, src.delimiter, src.decimal)
        for key, series in loaded.items():
            out[f"{src_name}.{key.removesuffix(FORECAST_SUFFIX)}"] = series
    return out

