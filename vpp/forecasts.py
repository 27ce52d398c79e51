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
  ``<column name>_forecast`` in the same ``data:`` source (e.g. ``da_lmp`` → ``da_lmp_forecast``);
- ``lear``: a LASSO regression per interval of the day over the series' own days D-1, D-2, D-3,
  D-7, weekday dummies and any exogenous day-ahead forecasts the config names as
  ``<column name>_exog_<anything>`` in the same source (``vpp.day_ahead``), recalibrated on a
  rolling window of observed days. Works for prices, site load and PV alike. An exogenous column
  must itself be a forecast: its value for day D counts as published 12 h before D starts, and a
  day not yet published repeats the last published one.

``margin_per_mwh`` > 0 is a required forecast spread: the plan sees every unit's degradation cost
raised by it, so it cycles only where the forecast spread beats the real cost by the margin
(settlement still charges the real cost).

``shrink`` < 1 pulls a forecast energy price towards its mean over the planning horizon
(p' = mean + shrink x (p - mean)), so a plan only cycles on spreads that survive the forecast's
error: a forecast spread that is noise shrinks below the degradation cost and efficiency losses.

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

from vpp import day_ahead
from vpp.config import ConfigModel, read_yaml
from vpp.errors import InputError
from vpp.fleet import Fleet
from vpp.markets import Market
from vpp.timeseries import Column, LoadedSeries, read_csv_series

METHODS = ("perfect", "persistence", "last_week", "rolling_mean", "file", "lear")
DAY = pd.Timedelta(days=1)
FORECAST_SUFFIX = "_forecast"
EXOG_INFIX = "_exog_"
EXOG_PUBLISHED_BEFORE = pd.Timedelta(hours=12)  # a day-ahead load/wind/solar forecast for day D is out by D-1 noon
MIN_CALIBRATION_DAYS = 28


@dataclasses.dataclass(frozen=True, slots=True)
class ForecastSpec:
    method: str = "perfect"
    rolling_days: int = 7  # rolling_mean: how many past days are averaged
    file_series: dict[str, LoadedSeries] | None = None  # method 'file': actual series name -> its forecast column
    exogenous: dict[str, tuple[LoadedSeries, ...]] | None = None  # method 'lear': series name -> its exogenous forecasts
    timezone: str = "UTC"  # 'lear': where days start (midnight) and which weekday they are
    calibration_days: int | tuple[int, ...] = day_ahead.WINDOWS  # 'lear': rolling calibration window(s); several: their forecasts averaged
    recalibrate_every_days: int = 7  # 'lear': refit every N days (between refits, the newest lags feed the last fit)
    shrink: float = 1.0  # energy price forecasts pulled towards their horizon mean (1: unchanged)
    margin_per_mwh: float = 0.0  # added to every unit's degradation cost in the plan only (settlement keeps the real one)
    models: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)  # 'lear': fitted models, reused

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError("--forecast", "forecast", self.method, f"one of {', '.join(METHODS)}")
        if self.rolling_days < 1:
            raise InputError("--rolling-days", "rolling_days", self.rolling_days, "at least 1 day")
        windows = (self.calibration_days,) if isinstance(self.calibration_days, int) else tuple(self.calibration_days)
        if not windows or min(windows) < MIN_CALIBRATION_DAYS:
            raise InputError("--calibration-days", "calibration_days", self.calibration_days, f"windows of at least {MIN_CALIBRATION_DAYS} days")
        object.__setattr__(self, "calibration_days", windows)
        if self.recalibrate_every_days < 1:
            raise InputError("--recalibrate-every", "recalibrate_every_days", self.recalibrate_every_days, "at least 1 day")
        if not 0.0 <= self.shrink <= 1.0:
            raise InputError("--shrink", "shrink", self.shrink, "a factor between 0 and 1")
        if not 0.0 <= self.margin_per_mwh < 1e4:
            raise InputError("--margin", "margin_per_mwh", self.margin_per_mwh, "a non-negative price per MWh")


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
    if spec.method == "lear":
        return _lear_series(series, start, end, decided_at, spec)
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
    fleet, market = map_series(fleet, market, lambda s: forecast_series(s, start, end, decided_at, spec))
    price = market.energy_price_per_mwh
    if spec.shrink < 1.0 and isinstance(price, LoadedSeries):
        market = dataclasses.replace(market, energy_price_per_mwh=shrunk(price, start, end, spec.shrink))
    if spec.margin_per_mwh > 0:
        units = tuple(dataclasses.replace(u, degradation_cost_per_mwh=u.degradation_cost_per_mwh + spec.margin_per_mwh) for u in fleet.units)
        fleet = dataclasses.replace(fleet, units=units)
    return fleet, market


def map_series(fleet: Fleet, market: Market, fn: Callable[[LoadedSeries], LoadedSeries]) -> tuple[Fleet, Market]:
    """The fleet and market with every loaded series ``s`` (prices, site load and PV) replaced by ``fn(s)``;
    constants and tariffs stay. The one walk over where series are used (forecasts, delivered market data)."""
    f: Callable[[object], object] = lambda p: fn(p) if isinstance(p, LoadedSeries) else p
    products = tuple(dataclasses.replace(p, capacity_price_per_mw_h=f(p.capacity_price_per_mw_h), mileage_price_per_mw=f(p.mileage_price_per_mw)) for p in market.products)
    market = dataclasses.replace(market, energy_price_per_mwh=f(market.energy_price_per_mwh), products=products)
    sites = tuple(dataclasses.replace(s, load_kw=f(s.load_kw), pv_kw=f(s.pv_kw)) for s in fleet.sites)
    return dataclasses.replace(fleet, sites=sites), market


def shrunk(series: LoadedSeries, start: pd.Timestamp, end: pd.Timestamp, factor: float) -> LoadedSeries:
    """The series pulled towards its mean over [start, end): mean + factor x (value - mean)."""
    v = series.values
    window = v[(v.index >= start) & (v.index < end)]
    mean = float(window.mean()) if len(window) else float(v.mean())
    return LoadedSeries(f"{series.name}[shrink {factor:g}]", series.quantity, mean + factor * (v - mean))


def history_needed(spec: ForecastSpec) -> pd.Timedelta:
    """How far before the first decision the data must reach (at least; gate closures can add a day)."""
    lear = (max(day_ahead.PRICE_LAGS + day_ahead.EXOG_LAGS) + MIN_CALIBRATION_DAYS) * DAY
    return {"persistence": DAY, "last_week": 7 * DAY, "rolling_mean": spec.rolling_days * DAY, "lear": lear}.get(spec.method, pd.Timedelta(0))


def _lear_series(series: LoadedSeries, start: pd.Timestamp, end: pd.Timestamp, decided_at: pd.Timestamp, spec: ForecastSpec) -> LoadedSeries:
    """LEAR forecast of ``series`` over [start, end) from the days fully observed by ``decided_at``.

    The data is cut into days of S intervals from its first local midnight; days observed
    before the decision are returned as recorded, later days are forecast (recursively past the
    first). The fitted model is kept in ``spec.models`` and refit every ``recalibrate_every_days``.
    """
    s = series.values
    step = pd.Timedelta(s.index.freq) if s.index.freq is not None else (s.index[1] - s.index[0])
    per_day = DAY / step
    if per_day != int(per_day):
        raise InputError(series.name, "interval for forecast 'lear'", step, "an interval that divides a day")
    per_day = int(per_day)
    local0 = s.index[0].tz_convert(spec.timezone)
    midnight = local0.normalize() + (DAY if local0.normalize() < local0 else pd.Timedelta(0))
    offset = int((midnight - s.index[0]) / step)
    n_days = (len(s) - offset) // per_day
    day0 = midnight.tz_convert("UTC")
    history = s.to_numpy(float)[offset : offset + n_days * per_day].reshape(n_days, per_day)
    exog = []
    for e in (spec.exogenous or {}).get(series.name.partition("*")[0], ()):  # a scaled series ("src.pv*2.5") keeps its inputs
        if not e.values.index.equals(s.index):
            raise InputError(e.name, "time grid", f"{e.values.index[0]} .. {e.values.index[-1]}", f"the grid of {series.name} (exogenous input of forecast 'lear')")
        exog.append(e.values.to_numpy(float)[offset : offset + n_days * per_day].reshape(n_days, per_day))
    weekdays = pd.date_range(midnight, periods=n_days, freq=DAY).day_of_week.to_numpy()

    observed = int(np.clip(np.floor((decided_at - day0) / DAY), 0, n_days))
    exog_days = int(np.clip(np.floor((decided_at + EXOG_PUBLISHED_BEFORE - day0) / DAY) + 1, 1, n_days))
    first_pos = int(np.floor((start - s.index[0]) / step))
    last_pos = int(np.ceil((end - s.index[0]) / step))
    first_day, last_day = (first_pos - offset) // per_day, (last_pos - 1 - offset) // per_day
    need = max(day_ahead.PRICE_LAGS + day_ahead.EXOG_LAGS) + MIN_CALIBRATION_DAYS
    if first_day < 0 or observed < need:
        earliest = day0 + DAY * (observed - need) if observed < need else s.index[0] + step * first_pos
        raise InputError(series.name, "history for forecast 'lear'", f"data from {s.index[0].isoformat()}", f"data from {earliest.isoformat()} (forecasting {start.isoformat()} decided at {decided_at.isoformat()})")
    if last_day >= n_days:
        raise InputError(series.name, "forecast", end.isoformat(), "a forecast period inside the data (whole days)")
    if last_day < observed:
        days = history[: last_day + 1]
    else:
        fit_day = observed - observed % spec.recalibrate_every_days
        fit_day = fit_day if fit_day >= need else observed
        # several calibration windows: their forecasts averaged (epftoolbox's LEAR ensemble)
        ahead = np.mean([day_ahead.forecast_days(history, exog, weekdays, observed, exog_days, last_day, _model(spec, series, history, exog, weekdays, fit_day, w)) for w in spec.calibration_days], axis=0)
        days = np.vstack([history[:observed], ahead])
    flat = days.reshape(-1)[first_pos - offset : last_pos - offset]
    index = pd.DatetimeIndex(s.index[0] + step * np.arange(first_pos, last_pos), freq=step).as_unit("ns")
    return LoadedSeries(f"{series.name}[lear]", series.quantity, pd.Series(flat, index=index))


def _model(spec: ForecastSpec, series: LoadedSeries, history, exog, weekdays, fit_day: int, window: int) -> day_ahead.DayAheadModel:
    """The model fitted at ``fit_day`` on ``window`` days, from ``spec.models`` or fitted now (older fits of the series dropped)."""
    key = (series.name, id(series.values), fit_day, window)
    model = spec.models.get(key)
    if model is None:
        for old in [k for k in spec.models if k[0] == series.name and k[3] == window and k[2] != fit_day]:  # the backtest moves forward
            del spec.models[old]
        model = spec.models[key] = day_ahead.calibrate(history, exog, weekdays, fit_day, window)
    return model


def file_forecasts(config_path: Path) -> dict[str, LoadedSeries]:
    """Every ``<column>_forecast`` column of the config's data sources, keyed by the actual series' name."""
    return {name: found[0] for name, found in _extra_columns(config_path, lambda key: key.removesuffix(FORECAST_SUFFIX) if key.endswith(FORECAST_SUFFIX) else None).items()}


def file_exogenous(config_path: Path) -> dict[str, tuple[LoadedSeries, ...]]:
    """Every ``<column>_exog_<name>`` column of the config's data sources, grouped by the series they explain."""
    return _extra_columns(config_path, lambda key: key.split(EXOG_INFIX, 1)[0] if EXOG_INFIX in key else None)


def _extra_columns(config_path: Path, target: Callable[[str], str | None]) -> dict[str, tuple[LoadedSeries, ...]]:
    """Columns of the config's data sources that belong to another series (``target(key)``), keyed by its name.

    The config loader keeps only referenced series, so these columns are read here from the
    same sources (same file, time column, zone and units).
    """
    model = ConfigModel.model_validate(read_yaml(config_path))
    out: dict[str, tuple[LoadedSeries, ...]] = {}
    for src_name, src in model.data.items():
        wanted = {k: Column(c.column, c.unit, c.scale) for k, c in src.columns.items() if target(k)}
        if not wanted:
            continue
        loaded = read_csv_series(config_path.parent / src.file, src.time_column, src.timezone or model.timezone, wanted, src_name, src.delimiter, src.decimal)
        for key, series in sorted(loaded.items()):
            name = f"{src_name}.{target(key)}"
            out[name] = out.get(name, ()) + (series,)
    return out
