"""The central's tables and its idempotent ingest: what arrives twice (a replay) is stored once.

``plant_telemetry`` is keyed by site × unit × sample time, ``plant_intervals`` by site × interval; the
amounts go into the central ledger (``vpp.ledger.store.record_settlements``, keyed by unit × interval ×
stream, the gateway's own key), so the central ledger is the sum of the gateways' records to the minor
unit however often a record is replayed. ``plant_plans`` is the record of every plan offered.
Functions run on the central's database thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from vpp.daemon.store import TS
from vpp.db import METADATA
from vpp.ledger.store import record_settlements
from vpp.plant.messages import IntervalRecord, Telemetry

_ID = sa.String(128)

plant_telemetry = sa.Table(
    "plant_telemetry",
    METADATA,
    sa.Column("site_id", _ID, nullable=False),
    sa.Column("unit_id", _ID, nullable=False),
    sa.Column("sampled_at", TS, nullable=False),  # gateway wall time
    sa.Column("market_at", TS, nullable=False),
    sa.Column("received_at", TS, nullable=False),
    sa.Column("soc", sa.Float),
    sa.Column("power_kw", sa.Float),
    sa.Column("commanded_kw", sa.Float),
    sa.Column("in_dispatch", sa.Boolean, nullable=False),
    sa.Column("mode", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("site_id", "unit_id", "sampled_at", name="plant_telemetry_key"),
)

plant_meter = sa.Table(  # the sites' grid meters as their gateways reported them
    "plant_meter",
    METADATA,
    sa.Column("site_id", _ID, nullable=False),
    sa.Column("sampled_at", TS, nullable=False),  # gateway wall time
    sa.Column("received_at", TS, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("power_kw", sa.Float),
    sa.Column("import_kwh", sa.Float),
    sa.Column("export_kwh", sa.Float),
    sa.PrimaryKeyConstraint("site_id", "sampled_at", name="plant_meter_key"),
)

plant_intervals = sa.Table(
    "plant_intervals",
    METADATA,
    sa.Column("site_id", _ID, nullable=False),
    sa.Column("interval_start", TS, nullable=False),
    sa.Column("received_at", TS, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("site_id", "interval_start", name="plant_intervals_key"),
)

plant_plans = sa.Table(
    "plant_plans",
    METADATA,
    sa.Column("site_id", _ID, nullable=False),
    sa.Column("plan_id", sa.BigInteger, nullable=False),
    sa.Column("issued_at", TS, nullable=False),
    sa.Column("valid_from", TS, nullable=False),
    sa.Column("valid_until", TS, nullable=False),
    sa.Column("trigger", sa.String(128), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.PrimaryKeyConstraint("site_id", "plan_id", name="plant_plans_key"),
)


def _insert_new(conn: Connection, table: sa.Table, keys: Sequence[str], records: list[dict[str, Any]]) -> int:
    """``INSERT ... ON CONFLICT DO NOTHING``; how many rows were new.

    SQLite: the driver's ``executemany`` with the columns' own bind processors (the same stored text as
    SQLAlchemy's), 3 us a row; SQLAlchemy's many-row insert with RETURNING took 26 us a row, which at
    10,000 rows/s was most of the central's CPU. PostgreSQL: RETURNING, since the rowcount of a many-row
    insert is not the total there."""
    if not records:
        return 0
    if conn.dialect.name == "sqlite":
        cols = list(records[0])
        procs = [table.c[c].type.bind_processor(conn.dialect) for c in cols]
        rows = [tuple(p(r[c]) if p is not None else r[c] for c, p in zip(cols, procs)) for r in records]
        sql = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) ON CONFLICT DO NOTHING"
        return int(conn.exec_driver_sql(sql, rows).rowcount)
    stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(keys)).returning(table.c[keys[0]])
    return len(conn.execute(stmt, records).all())


def ingest_telemetry(engine: Engine, messages: Sequence[Telemetry], received_at: pd.Timestamp) -> int:
    """Store a batch of samples in one transaction (the central's ingest rate is transactions, not rows);
    returns the unit rows that were new (a replayed sample adds none)."""
    records = [
        {"site_id": m.site, "unit_id": u.id, "sampled_at": m.sampled_at.astimezone(UTC), "market_at": m.market_at.astimezone(UTC), "received_at": received_at.to_pydatetime(), "soc": u.soc, "power_kw": u.power_kw, "commanded_kw": u.commanded_kw, "in_dispatch": u.in_dispatch, "mode": m.mode}
        for m in messages
        for u in m.units
    ]
    meters = [
        {"site_id": m.site, "sampled_at": m.sampled_at.astimezone(UTC), "received_at": received_at.to_pydatetime(), "ok": m.meter.ok, "power_kw": m.meter.power_kw, "import_kwh": m.meter.import_kwh, "export_kwh": m.meter.export_kwh}
        for m in messages
        if m.meter is not None
    ]
    with engine.begin() as conn:
        if meters:
            _insert_new(conn, plant_meter, ["site_id", "sampled_at"], meters)
        return _insert_new(conn, plant_telemetry, ["site_id", "unit_id", "sampled_at"], records)


def ingest_interval(engine: Engine, record: IntervalRecord, site_units: Sequence[str], received_at: pd.Timestamp) -> bool:
    """Record an interval's amounts and energy in the central ledger, once; False for a replay.
    Rows for units that are not this site's are refused whole (``ValueError``)."""
    foreign = sorted({r.unit_id for r in record.rows} - set(site_units)) + sorted({e.unit_id for e in record.energy} - set(site_units))
    if foreign:
        raise ValueError(f"interval record of site {record.site} names units of no such site: {','.join(foreign[:5])}")
    start = pd.Timestamp(record.interval_start).tz_convert("UTC")
    frame = pd.DataFrame({"interval_start": start, "unit_id": [r.unit_id for r in record.rows], "site_id": record.site, "stream": [r.stream for r in record.rows], "amount_minor": pd.array([r.amount_minor for r in record.rows], dtype="int64")})
    energy = pd.DataFrame({"interval_start": start, "unit_id": [e.unit_id for e in record.energy], "discharged_kwh": [e.discharged_wh / 1000 for e in record.energy], "charged_kwh": [e.charged_wh / 1000 for e in record.energy]})
    record_settlements(engine, frame, energy if len(energy) else None)
    with engine.begin() as conn:
        row = {"site_id": record.site, "interval_start": start.to_pydatetime(), "received_at": received_at.to_pydatetime(), "rows": len(record.rows), "amount_minor": int(sum(r.amount_minor for r in record.rows))}
        return _insert_new(conn, plant_intervals, ["site_id", "interval_start"], [row]) > 0


def save_plans(engine: Engine, plans: Sequence[tuple[str, int, pd.Timestamp, pd.Timestamp, pd.Timestamp, str, bytes]]) -> None:
    """Record one re-plan's plans (site, plan id, issued, valid from, valid until, trigger, payload) at once."""
    with engine.begin() as conn:
        conn.execute(plant_plans.insert(), [{"site_id": site, "plan_id": pid, "issued_at": issued.to_pydatetime(), "valid_from": vf.to_pydatetime(), "valid_until": vu.to_pydatetime(), "trigger": trigger[:128], "payload": payload} for site, pid, issued, vf, vu, trigger, payload in plans])


def last_plan_id(engine: Engine) -> int:
    """Plan ids increase across the plant and across restarts (a gateway refuses one not newer)."""
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.max(plant_plans.c.plan_id))).scalar() or 0)


def counts(engine: Engine) -> dict[str, dict[str, int]]:
    """Per site: telemetry samples and interval records stored."""
    out: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for site, n in conn.execute(sa.select(plant_telemetry.c.site_id, sa.func.count(sa.distinct(plant_telemetry.c.sampled_at))).group_by(plant_telemetry.c.site_id)):
            out.setdefault(site, {})["telemetry"] = int(n)
        for site, n in conn.execute(sa.select(plant_intervals.c.site_id, sa.func.count()).group_by(plant_intervals.c.site_id)):
            out.setdefault(site, {})["intervals"] = int(n)
    return out
