"""A billing month's ledger: totals by contract × party × item, by unit, or by stream.

The billing month is the calendar month in the config's time zone (a Chinese customer's November
starts at 00:00 Asia/Shanghai, 16:00 UTC the day before); an interval belongs to the month its start
falls in. Totals are summed by the database over the settled rows, so they equal the sum of the settled
intervals by construction, and contract splits are computed from those totals.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

import pandas as pd
from sqlalchemy.engine import Engine

from vpp.errors import InputError
from vpp.ledger.contracts import UNCONTRACTED, Contract, split_revenue
from vpp.ledger.store import dispatched_kwh, settled_intervals, settled_totals

log = logging.getLogger(__name__)
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


ReportBy = Literal["contract", "unit", "stream"]


def month_bounds(month: str, timezone: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of a local calendar month ``YYYY-MM``, in UTC."""
    m = _MONTH.match(month)
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise InputError("--month", "month", month, "a month like 2026-11")
    start = pd.Timestamp(year=int(m.group(1)), month=int(m.group(2)), day=1).tz_localize(timezone)
    return start.tz_convert("UTC"), (start + pd.DateOffset(months=1)).tz_convert("UTC")


def month_split(engine: Engine, contracts: tuple[Contract, ...], month: str, timezone: str) -> pd.DataFrame:
    """The month's (contract_id, party, item, amount_minor) split of everything settled in it."""
    start, end = month_bounds(month, timezone)
    totals, dispatched = settled_totals(engine, start, end), dispatched_kwh(engine, start, end)
    unmetered = sorted({u for c in contracts if c.needs_dispatched_energy for u in c.units} & set(totals["unit_id"]) - set(dispatched.index))
    if unmetered:
        log.warning("month=%s units=%s have settlements but no metered energy: their operating fee per kWh is 0", month, ",".join(unmetered))
    return split_revenue(totals, contracts, dispatched_kwh=dispatched, months=1)


def ledger_report(engine: Engine, contracts: tuple[Contract, ...], month: str, timezone: str, by: ReportBy) -> pd.DataFrame:
    """One row per contract × party × item, per unit, or per stream, with integer ``amount_minor``."""
    if by == "contract":
        return month_split(engine, contracts, month, timezone)
    start, end = month_bounds(month, timezone)
    totals = settled_totals(engine, start, end)
    if by == "stream":
        return totals.groupby("stream", as_index=False, sort=True)["amount_minor"].sum()
    owner = {u: c.id for c in contracts for u in c.units}
    per_unit = totals.groupby(["unit_id", "site_id"], as_index=False, sort=True)["amount_minor"].sum()
    per_unit.insert(2, "contract_id", per_unit["unit_id"].map(owner).fillna(UNCONTRACTED))
    per_unit.insert(3, "intervals", per_unit["unit_id"].map(settled_intervals(engine, start, end)).astype("int64"))
    return per_unit
