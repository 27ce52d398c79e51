"""Reading market and site time series from CSV files, with explicit columns and units.

A user points the config at any market's export: which column holds the
timestamp, how to read naive timestamps, which column is which quantity and in
what unit. Everything is checked here (missing file/column, unparsable or
duplicate timestamps, gaps, NaN) and converted once to the engine's units:
energy prices per MWh, capacity prices per MW-h, powers in kW.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vpp.errors import InputError

# unit name -> (quantity, factor to the engine's unit)
UNITS: dict[str, tuple[str, float]] = {
    "per_mwh": ("energy_price", 1.0),
    "per_kwh": ("energy_price", 1000.0),
    "per_mw_h": ("capacity_price", 1.0),
    "per_kw_h": ("capacity_price", 1000.0),
    "kw": ("power", 1.0),
    "mw": ("power", 1000.0),
    "kw_per_kw": ("power", 1.0),  # a normalized profile: the reference scales it by a rating
}


@dataclass(frozen=True, slots=True)
class Column:
    column: str
    unit: str
    scale: float = 1.0


@dataclass(frozen=True, slots=True)
class LoadedSeries:
    """One named series in engine units, with what it measures (for unit checks at the point of use)."""

    name: str  # "source.column_name"
    quantity: str  # energy_price | capacity_price | power
    values: pd.Series  # tz-aware UTC index, interval start labels, fixed frequency


def read_csv_series(
    path: Path, time_column: str, timezone: str, columns: dict[str, Column], source: str
) -> dict[str, LoadedSeries]:
    """Load and check the named columns of one CSV file. Raises ``InputError`` naming file, column and row."""
    where = str(path)
    if not path.is_file():
        raise InputError(where, "file", str(path), "an existing CSV file")
    wanted = [time_column, *(c.column for c in columns.values())]
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(where, "file", str(path), f"a readable CSV file ({exc.__class__.__name__})") from exc
    for col in wanted:
        if col not in header:
            raise InputError(where, "column", col, f"one of the file's columns {list(header)[:12]}")
    frame = pd.read_csv(path, usecols=list(dict.fromkeys(wanted)))
    index = _parse_times(frame[time_column], timezone, where, time_column)
    out: dict[str, LoadedSeries] = {}
    for name, spec in columns.items():
        if spec.unit not in UNITS:
            raise InputError(where, f"columns.{name}.unit", spec.unit, f"one of {sorted(UNITS)}")
        quantity, factor = UNITS[spec.unit]
        raw = pd.to_numeric(frame[spec.column], errors="coerce")
        bad = raw.isna().to_numpy()
        if bad.any():
            first = int(np.argmax(bad))
            raise InputError(
                where, f"column {spec.column} at {frame[time_column].iloc[first]}", frame[spec.column].iloc[first], "a number (no NaN or empty cells)"
            )
        values = pd.Series(raw.to_numpy(dtype=float) * factor * spec.scale, index=index, name=f"{source}.{name}")
        out[name] = LoadedSeries(f"{source}.{name}", quantity, values)
    return out


def _parse_times(raw: pd.Series, timezone: str, where: str, column: str) -> pd.DatetimeIndex:
    parsed = pd.to_datetime(raw, errors="coerce", format="mixed")
    if parsed.isna().any():
        first = int(np.argmax(parsed.isna().to_numpy()))
        raise InputError(where, f"{column} row {first + 2}", raw.iloc[first], "a timestamp")
    index = pd.DatetimeIndex(parsed)
    if index.tz is None:
        try:
            index = index.tz_localize(timezone, ambiguous="raise", nonexistent="raise")
        except Exception as exc:  # pytz/zoneinfo raise different types for DST problems
            raise InputError(where, column, str(exc).split("\n")[0], f"local times that exist exactly once in {timezone} (or a fixed-offset zone such as Etc/GMT+8)") from exc
    index = index.tz_convert("UTC")
    dup = index.duplicated()
    if dup.any():
        raise InputError(where, column, str(raw.iloc[int(np.argmax(dup))]), "unique timestamps (found a duplicate)")
    if len(index) > 1:
        steps = np.diff(index.as_unit("ns").asi8)
        if (steps <= 0).any():
            i = int(np.argmax(steps <= 0))
            raise InputError(where, column, str(raw.iloc[i + 1]), "strictly increasing timestamps")
        step = int(np.median(steps))
        irregular = steps != step
        if irregular.any():
            i = int(np.argmax(irregular))
            raise InputError(
                where, column, f"{raw.iloc[i]} -> {raw.iloc[i + 1]}", f"a regular {pd.Timedelta(step, unit='ns').total_seconds() / 60:g}-minute step (a gap or uneven step was found)"
            )
        index = pd.DatetimeIndex(index.as_unit("ns"), freq=pd.Timedelta(step, unit="ns"))
    return index


def on_index(series: LoadedSeries, index: pd.DatetimeIndex, where: str) -> np.ndarray:
    """The series on the optimizer's intervals: step-hold when the data are coarser, mean when finer.

    Raises when the data do not cover the whole horizon (never extrapolates a price).
    """
    s = series.values
    step = index.freq or (index[1] - index[0] if len(index) > 1 else pd.Timedelta(hours=1))
    data_step = s.index.freq or (s.index[1] - s.index[0] if len(s) > 1 else step)
    need_from, need_to = index[0], index[-1] + step
    have_from, have_to = s.index[0], s.index[-1] + data_step
    if need_from < have_from or need_to > have_to:
        raise InputError(
            where, series.name, f"data {have_from.isoformat()} .. {have_to.isoformat()}", f"coverage of {need_from.isoformat()} .. {need_to.isoformat()}"
        )
    if data_step > step:
        return _no_nan(s.reindex(index, method="ffill").to_numpy(dtype=float), series, where)
    if data_step < step:
        window = s[(s.index >= need_from) & (s.index < need_to)]
        return _no_nan(window.resample(step, origin=need_from).mean().reindex(index).to_numpy(dtype=float), series, where)
    return _no_nan(s.reindex(index).to_numpy(dtype=float), series, where)


Profile = LoadedSeries | float
"""A quantity over time: a loaded series or a constant."""


def profile_on(profile: Profile | None, index: pd.DatetimeIndex, where: str) -> np.ndarray:
    if profile is None:
        return np.zeros(len(index))
    if isinstance(profile, LoadedSeries):
        return on_index(profile, index, where)
    return np.full(len(index), float(profile))


def scaled(series: LoadedSeries, factor: float) -> LoadedSeries:
    if factor == 1.0:
        return series
    return LoadedSeries(f"{series.name}*{factor:g}", series.quantity, series.values * factor)


def _no_nan(values: np.ndarray, series: LoadedSeries, where: str) -> np.ndarray:
    if np.isnan(values).any():
        raise InputError(where, series.name, "intervals off the data's time grid", "data aligned with the optimization intervals")
    return values
