"""A metered site's bill per interval, from its grid meter's energy counters. No I/O.

What a C&I customer pays is what the utility's meter counted, so a site with a
grid meter is billed on its import/export counters, not on a model of its load:

- **Interval energy** (``interval_energy``) is the counters' delta between the
  readings that close the bucket before the interval and the interval's last
  bucket (``daemon_meter_readings``: the last plausible reading of each
  telemetry bucket). The delta is not trusted — and the interval falls back to
  the meter's integrated power, flagged — when a boundary or inner bucket is
  missing (a gap: the meter or the daemon was away), a counter is missing, a
  counter went backwards (reset, rollover, a replaced meter) or moved more than
  the connection can carry in the interval (a jump). The fallback integrates
  each bucket's mean power over the time it was read (samples × poll period,
  never more than the bucket), so time nobody read counts 0 kWh: a flagged
  interval may bill low, never high.
- **The bill without the battery** is the same interval with the batteries'
  own metered energy added back: baseline net export = meter export − meter
  import − battery net discharge (netted over the interval, as the plan is).
- **Energy charges** are exact: Wh × the tariff's decimal rate, rounded half to
  even once per interval and bill; the TOU saving is the difference of the two
  integers.
- **The demand charge** is on the month's highest demand-window average import
  (the tariff's window, 15 min by default), computed from the same interval
  energy, with and without the battery. It is booked as it accrues: each
  interval that closes a window books the change of the month's saving
  ``charge × (peak without − peak with)``, so a month's bookings add up to the
  month's saving exactly, whichever interval set the peak.
Sign: + = export / discharge, as everywhere in the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pandas as pd

from vpp.ledger.money import round_minor

COUNTERS, POWER, MODEL = "counters", "power", "model"
JUMP_TOLERANCE = 1.5  # a counter may move this much more than the connection's rating over the interval (short overloads)


@dataclass(frozen=True, slots=True)
class IntervalEnergy:
    import_wh: int
    export_wh: int
    source: str  # COUNTERS, or POWER (the fallback)
    flag: str = ""  # why the counters were not used ("" when they were)


def interval_energy(buckets: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, bucket: pd.Timedelta, sample_s: float, rating_kw: float) -> IntervalEnergy:
    """The site's import/export in [start, end) from ``buckets`` (bucket_start, power_kw_mean, import_kwh,
    export_kwh, samples) covering at least [start − bucket, end); ``sample_s``: the market seconds one reading
    stands for (the meter's poll period × the clock's speed); see the module's rules. A counter the meter
    does not have (never reported in these buckets: SunSpec reads an accumulator that is still 0 as not
    implemented) is not a fault: that direction alone comes from the integrated power."""
    rows = _merged(buckets)
    starts = pd.date_range(start, end, freq=bucket, inclusive="left")
    inside = rows[(rows.index >= start) & (rows.index < end)]
    seconds = np.minimum(inside["samples"].to_numpy(float) * sample_s, bucket.total_seconds())
    kwh = inside["power_kw_mean"].to_numpy(float) * seconds / 3600.0
    integrated = {"import_kwh": _wh(np.maximum(-kwh, 0.0).sum()), "export_kwh": _wh(np.maximum(kwh, 0.0).sum())}
    need = [start - bucket, *starts]
    missing = [t for t in need if t not in rows.index]
    if missing:
        return IntervalEnergy(integrated["import_kwh"], integrated["export_kwh"], POWER, f"meter gap: no reading in the bucket at {missing[0].isoformat()}")
    sub = rows.loc[need]
    most_kwh = rating_kw * JUMP_TOLERANCE * (end - start).total_seconds() / 3600.0
    counted = {}
    for name in ("import_kwh", "export_kwh"):
        values = sub[name].to_numpy(float)
        if np.isnan(values).all() and rows[name].isna().all():
            counted[name] = integrated[name]  # the meter has no such counter
            continue
        flag = _counter_flag(name.removesuffix("_kwh"), values, most_kwh)
        if flag:
            return IntervalEnergy(integrated["import_kwh"], integrated["export_kwh"], POWER, flag)
        counted[name] = _wh(values[-1] - values[0])
    return IntervalEnergy(counted["import_kwh"], counted["export_kwh"], COUNTERS)


def modelled_energy(net_load_kw: float, battery_wh: int, length: pd.Timedelta) -> IntervalEnergy:
    """An unmetered site's import/export in an interval: its configured load − PV (``net_load_kw``, the
    interval's mean) less its batteries' metered net discharge, netted over the interval as its plan was."""
    flow_wh = battery_wh - _wh(net_load_kw * length.total_seconds() / 3600.0)  # + export at the connection
    return IntervalEnergy(max(-flow_wh, 0), max(flow_wh, 0), MODEL)


def _merged(buckets: pd.DataFrame) -> pd.DataFrame:
    """One row per bucket: a restart may store a bucket twice (power weighted by samples, counters the latest)."""
    b = buckets.assign(bucket_start=pd.to_datetime(buckets["bucket_start"], utc=True), weighted=buckets["power_kw_mean"] * buckets["samples"])
    out = b.groupby("bucket_start").agg(weighted=("weighted", "sum"), samples=("samples", "sum"), import_kwh=("import_kwh", "max"), export_kwh=("export_kwh", "max"))
    out["power_kw_mean"] = out["weighted"] / out["samples"].where(out["samples"] > 0, 1)
    return out


def _counter_flag(name: str, values: np.ndarray, most_kwh: float) -> str:
    """Why this counter cannot bill the interval ("" if it can): ``values`` at the buckets that open and close it."""
    if not np.isfinite(values).all():
        return f"no {name} counter in some bucket"
    steps = np.diff(values)
    if (steps < 0).any():
        k = int(np.argmax(steps < 0))
        return f"{name} counter went backwards ({values[k]:.3f} -> {values[k + 1]:.3f} kWh: reset, rollover or a new meter)"
    if values[-1] - values[0] > most_kwh:
        return f"{name} counter jumped {values[-1] - values[0]:.3f} kWh, more than the connection carries in the interval ({most_kwh:.3f} kWh)"
    return ""


def _wh(kwh: float) -> int:
    return int(np.rint(kwh * 1000.0))


@dataclass(frozen=True, slots=True)
class SiteBill:
    """One interval of a metered site, with the battery (what the meter counted) and without it."""

    import_wh: int
    export_wh: int
    battery_wh: int  # the site's batteries' net discharge
    baseline_import_wh: int
    baseline_export_wh: int
    bill_minor: int  # energy charges with the battery
    baseline_bill_minor: int  # and without it

    @property
    def tou_savings_minor(self) -> int:
        return self.baseline_bill_minor - self.bill_minor


def site_bill(energy: IntervalEnergy, battery_wh: int, price_per_kwh: float, feed_in_per_kwh: float, exponent: int) -> SiteBill:
    """The interval's energy charges with and without the battery, in integer minor units."""
    baseline_net = energy.export_wh - energy.import_wh - battery_wh
    base_imp, base_exp = max(-baseline_net, 0), max(baseline_net, 0)
    price, feed_in = _rate(price_per_kwh), _rate(feed_in_per_kwh)
    bill = lambda imp, exp: round_minor((price * imp - feed_in * exp) / 1000 * 10**exponent)  # noqa: E731
    return SiteBill(energy.import_wh, energy.export_wh, battery_wh, base_imp, base_exp, bill(energy.import_wh, energy.export_wh), bill(base_imp, base_exp))


def _rate(value: float) -> Fraction:
    """A config rate (a decimal in major units, read as a float) as the exact decimal it was written as."""
    return Fraction(Decimal(str(value)))


def window_peaks_kw(import_wh: Sequence[int], interval: pd.Timedelta, window: pd.Timedelta) -> list[Fraction]:
    """Average import (kW, exact) of each demand window closed by the given intervals' energy, in order.
    A window of n whole intervals averages n of them; an interval as long as the window or longer is its
    own window (its average is the most that can be said, and never more than the window's peak)."""
    n = max(int(window / interval), 1) if window % interval == pd.Timedelta(0) else 1
    length_h = Fraction(int((interval * n).total_seconds()), 3600)
    return [Fraction(sum(import_wh[k : k + n])) / 1000 / length_h for k in range(0, len(import_wh) - n + 1, n)]


def demand_saving_minor(charge_per_kw_month: float, peak_so_far_kw: float, peaks_kw: Sequence[Fraction], baseline_peaks_kw: Sequence[Fraction], exponent: int) -> int:
    """The month's demand-charge saving so far: charge × (peak without the battery − peak with it), each
    peak at least the month's peak before metering began, rounded once."""
    floor = _rate(peak_so_far_kw)
    peak = max([floor, *peaks_kw])
    base = max([floor, *baseline_peaks_kw])
    return round_minor(_rate(charge_per_kw_month) * (base - peak) * 10**exponent)


def month_bill_minor(bills_minor: Sequence[int], import_wh: Sequence[int], interval: pd.Timedelta, window: pd.Timedelta, charge_per_kw_month: float, peak_so_far_kw: float, exponent: int) -> int:
    """A month's bill on metered values: its intervals' energy charges plus the demand charge on the month's
    highest window average (``import_wh``: every interval of the month so far, from its start, 0 where none
    was settled), the peak at least the month's peak before metering began. With the baseline's columns it
    is the bill without the battery, and less the settled savings the bill with it, to the minor unit."""
    peak = max([_rate(peak_so_far_kw), *window_peaks_kw(import_wh, interval, window)])
    return int(sum(bills_minor)) + round_minor(_rate(charge_per_kw_month) * peak * 10**exponent)
