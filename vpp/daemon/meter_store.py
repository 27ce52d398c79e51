"""The meters' tables: metered power and energy counters per telemetry bucket, and closed demand windows.

The counters are what a C&I customer is billed on, so they are stored as the
meter reported them (after CT/PT ratio), the last reading of each bucket. The
demand windows carry the month-to-date peak across a restart: the month's peak
is the largest ``average_kw`` of the month's windows.
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from vpp.db import METADATA

TS = sa.DateTime(timezone=True)

meter_readings = sa.Table(
    "daemon_meter_readings",
    METADATA,
    sa.Column("bucket_start", TS, nullable=False, index=True),  # market time, the telemetry buckets' grid
    sa.Column("site_id", sa.String(128), nullable=False),
    sa.Column("power_kw_mean", sa.Float, nullable=False),  # + export, of the plausible readings in the bucket
    sa.Column("import_kwh", sa.Float),  # the counters at the bucket's last plausible reading
    sa.Column("export_kwh", sa.Float),
    sa.Column("samples", sa.Integer, nullable=False),
)

demand_windows = sa.Table(
    "daemon_demand_windows",
    METADATA,
    sa.Column("window_start", TS, nullable=False, index=True),  # market time
    sa.Column("site_id", sa.String(128), nullable=False),
    sa.Column("average_kw", sa.Float, nullable=False),  # average import over the window
    sa.Column("target_kw", sa.Float),  # the cap the loop held it to (NULL: none)
    sa.Column("breach", sa.Boolean, nullable=False),
)


def month_peaks(engine: Engine, month_start: pd.Timestamp) -> dict[str, float]:
    """Each site's highest demand-window average since ``month_start`` (market time, UTC)."""
    since = month_start.tz_convert("UTC")
    bound = since.tz_localize(None) if engine.dialect.name == "sqlite" else since  # SQLite keeps UTC naive
    query = sa.select(demand_windows.c.site_id, sa.func.max(demand_windows.c.average_kw)).where(demand_windows.c.window_start >= bound.to_pydatetime()).group_by(demand_windows.c.site_id)
    with engine.connect() as conn:
        return {site: float(peak) for site, peak in conn.execute(query)}


def readings(engine: Engine, start: pd.Timestamp, end: pd.Timestamp, site_ids: list[str]) -> pd.DataFrame:
    """Meter buckets of the given sites in [start, end) (market time): bucket_start (UTC), site_id,
    power_kw_mean, import_kwh, export_kwh, samples."""
    c = meter_readings.c
    query = sa.select(meter_readings).where(c.bucket_start >= _db(engine, start), c.bucket_start < _db(engine, end), c.site_id.in_(site_ids))
    with engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all(), columns=[col.name for col in meter_readings.columns])
    frame["bucket_start"] = pd.to_datetime(frame["bucket_start"], utc=True)
    return frame.astype({"import_kwh": float, "export_kwh": float})


def _db(engine: Engine, ts: pd.Timestamp) -> object:
    utc = ts.tz_convert("UTC")
    return (utc.tz_localize(None) if engine.dialect.name == "sqlite" else utc).to_pydatetime()
