"""Public market-data feeds behind one small interface: ``fetch(start, end)`` → a table of the feed's fields.

A feed is a maintained library's client, wrapped so the daemon can poll it and hand what it returns to the
same delivery path as a dropped file (``delivery_csv`` writes it in the layout of the config's data source,
so the CSV reader, the checks and the merge rule are the ones every delivery goes through). Fields are in
the engine's units (energy prices per MWh, capacity prices per MW-h), indexed by interval start, tz-aware.

- ``entsoe``: ENTSO-E Transparency Platform day-ahead prices (``entsoe-py``; API key from the environment);
- ``gridstatus``: a US ISO's LMPs or ancillary-service prices (``gridstatus``; most ISOs need no key).

Both libraries are the optional extra ``feeds`` (``pip install 'vpp-engine[feeds]'``).
"""

from __future__ import annotations

import io
import os
from typing import Any, Protocol

import pandas as pd

from vpp.errors import InputError
from vpp.timeseries import UNITS, Column


class Feed(Protocol):
    def fetch(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """The feed's fields over [start, end), one row per interval start (tz-aware), engine units."""
        ...


class EntsoeFeed:
    """Day-ahead prices of one bidding zone (EUR/MWh), through ``entsoe.EntsoePandasClient``."""

    def __init__(self, area: str, api_key: str, client: Any = None) -> None:
        from entsoe import EntsoePandasClient

        self.area = area
        self.client = client or EntsoePandasClient(api_key=api_key)

    def fetch(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        prices = self.client.query_day_ahead_prices(self.area, start=start, end=end)  # both ends included
        prices = prices[(prices.index >= start) & (prices.index < end)]
        return prices.to_frame("price")


class GridStatusFeed:
    """One location's LMP columns (``get_lmp``) or one region's ancillary-service prices (``get_as_prices``)
    of a US ISO, through ``gridstatus``."""

    def __init__(self, iso: str, query: str, market: str, location: str | None, pause_s: float | None = None) -> None:
        import gridstatus

        cls = getattr(gridstatus, iso, None)
        if cls is None:
            raise InputError("daemon.market_data.feeds", "area", iso, "a gridstatus ISO class such as CAISO, ERCOT, PJM")
        if location is None:
            raise InputError("daemon.market_data.feeds", "location", None, "the node, hub or region the prices are for")
        self.iso, self.query, self.location = cls(), query, location
        self.market = gridstatus.Markets(market) if query == "lmp" else market  # get_lmp takes the library's enum
        self.options = {} if pause_s is None else {"sleep": pause_s}  # the library's own pause after a request (rate limits)

    def fetch(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        if self.query == "lmp":
            table = self.iso.get_lmp(date=start, end=end, market=self.market, locations=[self.location], **self.options)
            table = table[table["Location"] == self.location]
        else:
            table = self.iso.get_as_prices(date=start, end=end, market=self.market, **self.options)
            table = table[table["Region"] == self.location]
        table = table.set_index(pd.DatetimeIndex(table["Interval Start"])).sort_index()
        return table[(table.index >= start) & (table.index < end)]


def make_feed(model: Any) -> Feed:
    """The feed a ``daemon.market_data.feeds[]`` entry describes; the key is read from its environment variable."""
    key = os.environ.get(model.api_key_env, "").strip() if model.api_key_env else ""
    if model.kind == "entsoe":
        if not key:
            raise InputError("daemon.market_data.feeds", "api_key_env", model.api_key_env, "an environment variable holding the ENTSO-E API key")
        return EntsoeFeed(model.area, key)
    return GridStatusFeed(model.area, model.query, model.market, model.location)


def delivery_csv(frame: pd.DataFrame, fields: dict[str, str], source: Any, columns: dict[str, Column]) -> str:
    """``frame``'s fields as a delivery in the data source's layout: its time column, its column headers,
    values back in the column's declared unit, its delimiter and decimal mark."""
    out = pd.DataFrame(index=frame.index)
    out[source.time_column] = [t.isoformat() for t in frame.index]
    for key, field in fields.items():
        column = columns.get(key)
        if column is None:
            raise InputError("daemon.market_data.feeds", "columns", key, f"one of the source's series {sorted(columns)}")
        if field not in frame.columns:
            raise InputError("feed", "field", field, f"one of the feed's fields {list(frame.columns)[:12]}")
        out[column.column] = frame[field].to_numpy(float) / (UNITS[column.unit][1] * column.scale)
    buffer = io.StringIO()
    out.to_csv(buffer, index=False, sep=source.delimiter, decimal=source.decimal, float_format="%.10g")
    return buffer.getvalue()
