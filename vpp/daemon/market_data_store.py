"""The market-data tables: every delivery with its provenance and outcome, and the delivered points.

``daemon_market_points`` holds one row per (series, interval start), the value in engine units as it
stands after the last delivery that changed it, and which delivery that was; so a restart plans on
what had arrived. ``daemon_market_deliveries`` is the audit: when and how each delivery arrived, where
from, and what it changed or why it was refused.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from vpp.daemon.clock import utc
from vpp.db import METADATA

TS = sa.DateTime(timezone=True)
CHUNK = 500  # rows per IN list (SQLite's bound on parameters)

market_deliveries = sa.Table(
    "daemon_market_deliveries",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("arrived_at", TS, nullable=False),  # wall time
    sa.Column("market_at", TS, nullable=False),  # market time the merge rule was applied at
    sa.Column("via", sa.String(16), nullable=False),  # drop | api | mqtt | feed
    sa.Column("origin", sa.String(256), nullable=False),  # file name, client address, topic, feed
    sa.Column("data_source", sa.String(128)),  # the config's data: source the delivery is laid out as
    sa.Column("outcome", sa.String(16), nullable=False),  # accepted | duplicate | rejected
    sa.Column("added", sa.Integer, nullable=False),
    sa.Column("replaced", sa.Integer, nullable=False),
    sa.Column("unchanged", sa.Integer, nullable=False),
    sa.Column("detail", sa.Text),  # the rejection, or the span changed
)

market_points = sa.Table(
    "daemon_market_points",
    METADATA,
    sa.Column("series", sa.String(256), primary_key=True),
    sa.Column("interval_start", TS, primary_key=True),
    sa.Column("value", sa.Float, nullable=False),  # engine units (per MWh, per MW-h, kW), before any reference's scale
    sa.Column("delivery_id", sa.Integer, sa.ForeignKey("daemon_market_deliveries.id"), nullable=False),
)


def save_delivery(engine: Engine, row: dict[str, Any], points: dict[str, pd.Series]) -> int:
    """One transaction: the delivery's audit row, then its points replacing any held for the same keys."""
    with engine.begin() as conn:
        delivery_id = int(conn.execute(market_deliveries.insert().values(**row)).inserted_primary_key[0])
        for name, values in points.items():
            starts = [t.to_pydatetime() for t in values.index]
            for i in range(0, len(starts), CHUNK):
                conn.execute(market_points.delete().where(market_points.c.series == name, market_points.c.interval_start.in_(starts[i : i + CHUNK])))
            conn.execute(market_points.insert(), [{"series": name, "interval_start": t, "value": float(v), "delivery_id": delivery_id} for t, v in zip(starts, values.to_numpy(float))])
    return delivery_id


def load_points(engine: Engine) -> dict[str, pd.Series]:
    """Every delivered series, sorted by interval start, UTC."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(market_points.c.series, market_points.c.interval_start, market_points.c.value).order_by(market_points.c.series, market_points.c.interval_start)).all()
    out: dict[str, pd.Series] = {}
    frame = pd.DataFrame(rows, columns=["series", "start", "value"])
    for name, group in frame.groupby("series", sort=False):
        out[str(name)] = pd.Series(group["value"].to_numpy(float), index=pd.DatetimeIndex([utc(t) for t in group["start"]]).as_unit("ns"))
    return out


def last_arrivals(engine: Engine) -> dict[str, pd.Timestamp]:
    """When each series' held points last changed (the latest delivery that set one of them)."""
    query = (
        sa.select(market_points.c.series, sa.func.max(market_deliveries.c.arrived_at))
        .join(market_deliveries, market_deliveries.c.id == market_points.c.delivery_id)
        .group_by(market_points.c.series)
    )
    with engine.connect() as conn:
        return {str(name): utc(at) for name, at in conn.execute(query)}
