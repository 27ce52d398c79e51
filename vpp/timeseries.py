"""Reading market and site time series from CSV files, with explicit columns and units.

A user points the config at any market's export: which column holds the
timestamp, how to read naive timestamps, which column is which quantity and in
what unit. Everything is checked here (missing file/column, unparsable or
duplicate timestamps, gaps, NaN) and converted once to the engine's units:
energy prices per MWh, capacity prices per MW-h, powers in kW.
"""

from __future__ import annotations

import io
import re
import warnings
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
    path: Path, time_column: str, timezone: str, columns: dict[str, Column], source: str, delimiter: str = ",", decimal: str = ".", text: str | None = None
) -> dict[str, LoadedSeries]:
    """Load and check the named columns of one CSV file. Raises ``InputError`` naming file, column and row.

    Naive timestamps are read in ``timezone``; cells are read with the file's ``delimiter`` and
    ``decimal`` mark, and a cell that looks written for another convention (``12,5`` in a file
    read with a decimal point) is an error, never a silently different number. With ``text``, the
    table is that text (a market-data delivery, ``vpp.market_data``) and ``path`` only names it.
    """
    where = str(path)
    if text is None and not path.is_file():
        raise InputError(where, "file", str(path.resolve()), "an existing CSV file")
    table = (lambda: io.StringIO(text)) if text is not None else (lambda: path)
    wanted = [time_column, *(c.column for c in columns.values())]
    try:
        header = pd.read_csv(table(), nrows=0, sep=delimiter).columns
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(where, "file", str(path), f"a readable CSV file ({exc.__class__.__name__})") from exc
    for col in wanted:
        if col not in header:
            hint = f" (the header reads as one column: is the delimiter {_guess_delimiter(header[0])!r}? set delimiter on the data source)" if len(header) == 1 else ""
            raise InputError(where, "column", col, f"one of the file's columns {list(header)[:12]}{hint}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)  # more fields than the header: data would be lost
        try:
            # index_col=False: a row with an extra field (an unquoted decimal comma) must not shift the columns
            # and every column is read (usecols would skip the field count check)
            frame = pd.read_csv(table(), sep=delimiter, index_col=False, dtype=str, keep_default_na=False)[list(dict.fromkeys(wanted))]
        except (pd.errors.ParserError, pd.errors.ParserWarning) as exc:
            raise InputError(
                where, "rows", str(exc).splitlines()[0][:120], f"as many fields in every row as in the header (a decimal comma such as 12,5 in a {delimiter!r}-delimited file? set delimiter and decimal on the data source)"
            ) from None
    if len(frame) < 2:
        raise InputError(where, "rows", len(frame), "at least 2 data rows (the time step is read from the timestamps)")
    index = _parse_times(frame[time_column], timezone, where, time_column)
    out: dict[str, LoadedSeries] = {}
    for name, spec in columns.items():
        if spec.unit not in UNITS:
            raise InputError(where, f"columns.{name}.unit", spec.unit, f"one of {sorted(UNITS)}")
        quantity, factor = UNITS[spec.unit]
        values = _numbers(frame[spec.column], frame[time_column], decimal, where, spec.column)
        series = pd.Series(values * factor * spec.scale, index=index, name=f"{source}.{name}")
        out[name] = LoadedSeries(f"{source}.{name}", quantity, series)
    return out


_OTHER_DECIMAL = {".": re.compile(r"^[+-]?\d+,\d+$"), ",": re.compile(r"^[+-]?\d+\.\d+$")}


def _numbers(cells: pd.Series, times: pd.Series, decimal: str, where: str, column: str) -> np.ndarray:
    text = cells.str.strip()
    if decimal != ".":
        text = text.str.replace(decimal, ".", regex=False)
    raw = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(raw)
    if bad.any():
        first = int(np.argmax(bad))
        cell = cells.iloc[first]
        if _OTHER_DECIMAL[decimal].match(cell.strip()):
            expected = f"a number written with the file's decimal mark {decimal!r} (set decimal on the data source if the file uses {'.' if decimal == ',' else ','!r})"
        else:
            expected = "a finite number (no NaN, infinity or empty cells)"
        raise InputError(where, f"column {column} at {times.iloc[first]}", cell, expected)
    return raw


def _guess_delimiter(line: str) -> str:
    return max(";\t|", key=line.count)


# Rough value of one unit of each currency in US dollars' order of magnitude, only to scale the price
# sanity band to currencies whose prices are large numbers (JPY 10,000 per MWh is normal); 1 when absent.
_CURRENCY_SCALE = {
    "JPY": 150, "KRW": 1400, "INR": 85, "IDR": 16000, "VND": 25000, "HUF": 370, "CLP": 950, "COP": 4000,
    "PHP": 57, "THB": 35, "TWD": 32, "ZAR": 18, "MXN": 18, "BRL": 5.5, "SEK": 10, "NOK": 10, "DKK": 7,
    "PLN": 4, "CZK": 23, "RUB": 90, "TRY": 35, "CNY": 7, "HKD": 8, "UAH": 40, "ISK": 140, "RON": 4.6,
}  # fmt: skip
_BANDS = {"energy_price": (0.1, 5000.0, "per MWh"), "capacity_price": (0.01, 5000.0, "per MW-h")}


def magnitude_warnings(series: LoadedSeries, unit: str, currency: str) -> list[str]:
    """A named warning when a price series' typical magnitude does not fit its declared unit: a per-kWh
    price labelled ``per_mwh`` reads 1,000 times too small, and the reverse 1,000 times too large.

    The median of the non-zero magnitudes is compared with a band (0.1-5,000 per MWh for energy, in
    dollar-like currencies, scaled for currencies with large nominal values); real markets sit well
    inside it, and a factor of 1,000 lands outside.
    """
    if series.quantity not in _BANDS:
        return []
    low, high, per = price_band(series.quantity, currency)
    magnitude = np.abs(series.values.to_numpy())
    magnitude = magnitude[magnitude > 0]
    if magnitude.size == 0:
        return []
    median = float(np.median(magnitude))
    if low <= median <= high:
        return []
    other = {"per_mwh": "per_kwh", "per_kwh": "per_mwh", "per_mw_h": "per_kw_h", "per_kw_h": "per_mw_h"}.get(unit, "another unit")
    size = "small" if median < low else "large"
    return [f"{series.name}: typical price {median:,.4g} {currency} {per} is implausibly {size} for unit {unit!r}; is the column in {other}?"]


def price_band(quantity: str, currency: str) -> tuple[float, float, str]:
    """The band a typical ``quantity`` (energy_price / capacity_price) sits in, in ``currency``, and its unit."""
    low, high, per = _BANDS[quantity]
    scale = _CURRENCY_SCALE.get(currency.upper(), 1.0)
    return low * scale, high * scale, per


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
