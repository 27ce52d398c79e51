"""The daemon's tables: schedules, commands, downsampled telemetry, override audit, settled intervals.

Declared on ``vpp.db.METADATA`` so ``open_database`` creates them with the
ledger's. Times are stored in UTC (SQLite keeps them naive; ``utc`` restores the
zone on the way out). Every write is one short transaction, run on the
daemon's single database thread (``Store.submit``) so the control tick never
waits for the disk and rows land in the order they were produced.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from vpp.daemon.clock import Clock, utc
from vpp.db import METADATA
from vpp.schedule import Schedule

log = logging.getLogger(__name__)

TS = sa.DateTime(timezone=True)

schedules = sa.Table(
    "daemon_schedules",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", TS, nullable=False),  # wall time the solve finished
    sa.Column("market_at", TS, nullable=False),  # market time the solve started from
    sa.Column("start", TS, nullable=False),
    sa.Column("end", TS, nullable=False),
    sa.Column("trigger", sa.String(64), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("objective", sa.Float, nullable=False),
    sa.Column("solve_time_s", sa.Float, nullable=False),
    sa.Column("payload", sa.LargeBinary),  # the Schedule, pickled (restart, settlement); NULL once superseded and settled
)

schedule_points = sa.Table(
    "daemon_schedule_points",
    METADATA,
    sa.Column("schedule_id", sa.Integer, sa.ForeignKey("daemon_schedules.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("interval_start", TS, nullable=False),
    sa.Column("unit_id", sa.String(128), nullable=False),
    sa.Column("power_kw", sa.Float, nullable=False),
    sa.Column("soc_end_kwh", sa.Float, nullable=False),
)

commands = sa.Table(
    "daemon_commands",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("market_at", TS, nullable=False, index=True),
    sa.Column("wall_at", TS, nullable=False),
    sa.Column("unit_id", sa.String(128), nullable=False),
    sa.Column("power_kw", sa.Float),  # NULL: out of dispatch, no command sent
    sa.Column("scheduled_kw", sa.Float, nullable=False),
    sa.Column("interval_start", TS),  # NULL: no schedule covered the time
    sa.Column("schedule_id", sa.Integer),
    sa.Column("reason", sa.String(256), nullable=False),
    sa.Column("error", sa.String(256)),  # the write failed
)

telemetry = sa.Table(
    "daemon_telemetry",
    METADATA,
    sa.Column("bucket_start", TS, nullable=False, index=True),  # market time; buckets tile the market intervals
    sa.Column("unit_id", sa.String(128), nullable=False),
    sa.Column("power_kw_mean", sa.Float, nullable=False),
    sa.Column("soc_first", sa.Float, nullable=False),
    sa.Column("soc_last", sa.Float, nullable=False),
    sa.Column("samples", sa.Integer, nullable=False),  # a restart may store a bucket twice; weights merge them
)

energy = sa.Table(
    "daemon_energy",
    METADATA,
    sa.Column("bucket_start", TS, nullable=False, index=True),  # market time, the telemetry buckets' grid
    sa.Column("unit_id", sa.String(128), nullable=False),
    sa.Column("energy_kwh", sa.Float, nullable=False),  # + discharged, integrated over market time (vpp.daemon.energy)
    sa.Column("covered_s", sa.Float, nullable=False),  # market seconds of the bucket the daemon saw
    sa.Column("dispatch_s", sa.Float, nullable=False),  # of which the unit was in dispatch
)

override_audit = sa.Table(
    "daemon_override_audit",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("wall_at", TS, nullable=False),
    sa.Column("market_at", TS, nullable=False),
    sa.Column("event", sa.String(16), nullable=False),  # applied | expired | withdrawn | rejected
    sa.Column("source", sa.String(16), nullable=False),  # file | api
    sa.Column("kind", sa.String(32)),
    sa.Column("unit_id", sa.String(128)),
    sa.Column("site_id", sa.String(128)),
    sa.Column("product_id", sa.String(128)),
    sa.Column("value", sa.Float),
    sa.Column("start", TS),
    sa.Column("end", TS),
    sa.Column("author", sa.String(128)),
    sa.Column("reason", sa.String(512)),
    sa.Column("detail", sa.Text),  # the rejection message
)

settled_intervals = sa.Table(
    "daemon_settled_intervals",
    METADATA,
    sa.Column("interval_start", TS, primary_key=True),
    sa.Column("settled_at", TS, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("coverage", sa.Float),  # share of the interval the daemon saw; < 1: settled on what is known (partial)
)


clock_anchor = sa.Table(
    "daemon_clock",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),  # one row
    sa.Column("speed", sa.Float, nullable=False),
    sa.Column("sim_start", TS, nullable=False),
    sa.Column("wall_start", TS, nullable=False),
    sa.Column("origin", sa.String(128), nullable=False),  # the configured speed and sim_start it was made from
)


@dataclass(frozen=True)
class StoredSchedule:
    id: int
    created_at: pd.Timestamp
    trigger: str
    schedule: Schedule


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        _add_new_columns(engine)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="vpp-db")

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` on the database thread; failures are logged, never raised into the tick."""
        future = self._thread.submit(fn, *args)
        future.add_done_callback(_log_failure)
        return future

    def close(self) -> None:
        """Wait for every queued write, then release the connections."""
        self._thread.shutdown(wait=True)
        self.engine.dispose()

    # ------------------------------------------------------------ writes (database thread)

    def save_schedule(self, schedule: Schedule, *, created_at: pd.Timestamp, market_at: pd.Timestamp, trigger: str, points_until: pd.Timestamp | None = None) -> int:
        """Store the whole schedule (``payload``) and, as queryable rows, its intervals before ``points_until``:
        the part expected to be in force before the next re-optimization (all of it every time would be
        units × horizon rows per solve)."""
        frame = schedule.to_frame()
        if points_until is not None:
            frame = frame[frame.interval_start < points_until]
        with self.engine.begin() as conn:
            step = schedule.index[1] - schedule.index[0] if len(schedule.index) > 1 else pd.Timedelta(0)
            schedule_id = conn.execute(
                schedules.insert().values(
                    created_at=created_at,
                    market_at=market_at,
                    start=schedule.index[0],
                    end=schedule.index[-1] + step,
                    trigger=trigger,
                    status=schedule.stats.status,
                    objective=float(schedule.stats.objective),
                    solve_time_s=float(schedule.stats.solve_time_s),
                    payload=pickle.dumps(schedule, protocol=pickle.HIGHEST_PROTOCOL),
                )
            ).inserted_primary_key[0]
            conn.execute(
                schedule_points.insert(),
                [
                    {"schedule_id": schedule_id, "interval_start": t.to_pydatetime(), "unit_id": u, "power_kw": float(p), "soc_end_kwh": float(e)}
                    for t, u, p, e in zip(frame.interval_start, frame.unit_id, frame.power_kw, frame.soc_end_kwh)
                ],
            )
        return int(schedule_id)

    def insert(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as conn:
                conn.execute(table.insert(), list(rows))

    # ------------------------------------------------------------ reads

    def latest_schedule(self) -> StoredSchedule | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(schedules.c.id, schedules.c.created_at, schedules.c.trigger, schedules.c.payload).order_by(schedules.c.id.desc()).limit(1)).first()
        if row is None or row.payload is None:
            return None
        try:
            schedule = pickle.loads(row.payload)
        except Exception as err:  # noqa: BLE001 - a schedule pickled by another version of the engine
            log.warning("stored schedule id=%d unreadable, starting without: %s", row.id, err)
            return None
        return StoredSchedule(row.id, utc(row.created_at), row.trigger, schedule)

    def metered(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Telemetry buckets in [start, end): bucket_start, unit_id, power_kw_mean, soc_first, soc_last, samples."""
        query = sa.select(telemetry).where(telemetry.c.bucket_start >= start.to_pydatetime(), telemetry.c.bucket_start < end.to_pydatetime())
        with self.engine.connect() as conn:
            frame = pd.DataFrame(conn.execute(query).mappings().all(), columns=[c.name for c in telemetry.columns])
        frame["bucket_start"] = pd.to_datetime(frame["bucket_start"], utc=True)
        return frame

    def energy(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Energy rows in [start, end): bucket_start, unit_id, energy_kwh, covered_s, dispatch_s."""
        query = sa.select(energy).where(energy.c.bucket_start >= start.to_pydatetime(), energy.c.bucket_start < end.to_pydatetime())
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(query).mappings().all(), columns=[c.name for c in energy.columns])

    def first_telemetry(self) -> pd.Timestamp | None:
        """The first bucket anything was recorded in (telemetry or energy)."""
        with self.engine.connect() as conn:
            values = [conn.execute(sa.select(sa.func.min(t.c.bucket_start))).scalar() for t in (telemetry, energy)]
        values = [utc(v) for v in values if v is not None]
        return min(values) if values else None

    def clock_anchor(self) -> tuple[Clock, str] | None:
        """The market clock's stored anchor and what it was made from (``vpp.daemon.clock.market_clock``)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(clock_anchor).where(clock_anchor.c.id == 1)).first()
        return None if row is None else (Clock(float(row.speed), utc(row.sim_start), utc(row.wall_start)), row.origin)

    def save_clock_anchor(self, clock: Clock, origin: str) -> None:
        values = {"speed": clock.speed, "sim_start": clock.sim_start.to_pydatetime(), "wall_start": clock.wall_start.to_pydatetime(), "origin": origin}
        with self.engine.begin() as conn:
            if conn.execute(clock_anchor.update().where(clock_anchor.c.id == 1).values(**values)).rowcount == 0:
                conn.execute(clock_anchor.insert().values(id=1, **values))

    def market_high_water(self) -> pd.Timestamp | None:
        """The latest market time this database holds a record for (a command, or a settled interval's start)."""
        with self.engine.connect() as conn:
            values = [conn.execute(sa.select(sa.func.max(col))).scalar() for col in (commands.c.market_at, settled_intervals.c.interval_start, telemetry.c.bucket_start, energy.c.bucket_start)]
        values = [utc(v) for v in values if v is not None]
        return max(values) if values else None

    def settled(self, start: pd.Timestamp) -> set[pd.Timestamp]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(settled_intervals.c.interval_start).where(settled_intervals.c.interval_start >= start.to_pydatetime())).scalars()
            return {utc(v) for v in rows}

    def drop_payloads_before(self, schedule_id: int) -> None:
        """Forget the full plans older than ``schedule_id``: once an interval settled on that schedule, no
        later interval (and no restart) can be in force under an older one. Their rows stay."""
        with self.engine.begin() as conn:
            conn.execute(schedules.update().where(schedules.c.id < schedule_id, schedules.c.payload.is_not(None)).values(payload=None))

    def mark_settled(self, interval_start: pd.Timestamp, settled_at: pd.Timestamp, rows: int, coverage: float | None = None) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(settled_intervals.c.interval_start).where(settled_intervals.c.interval_start == interval_start.to_pydatetime())).first()
            if exists is None:
                conn.execute(settled_intervals.insert().values(interval_start=interval_start.to_pydatetime(), settled_at=settled_at.to_pydatetime(), rows=rows, coverage=coverage))


def _add_new_columns(engine: Engine) -> None:
    """A database made by an earlier version: add the nullable columns it lacks (``create_all`` adds tables only)."""
    inspector = sa.inspect(engine)
    for table in (settled_intervals,):
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have and column.nullable:
                with engine.begin() as conn:
                    conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {column.type.compile(engine.dialect)}'))
                log.info("database upgraded: %s.%s added", table.name, column.name)


def _log_failure(future: Future) -> None:
    err = future.exception()
    if err is not None:
        log.error("database write failed: %s", err, exc_info=err)


def bucket_rows(bucket_start: pd.Timestamp, unit_ids: Iterable[str], power_sum: np.ndarray, soc_first: np.ndarray, soc_last: np.ndarray, samples: np.ndarray) -> list[dict[str, Any]]:
    """One telemetry row per unit that had at least one good sample in the bucket."""
    start = bucket_start.to_pydatetime()
    return [
        {"bucket_start": start, "unit_id": uid, "power_kw_mean": float(p / n), "soc_first": float(f), "soc_last": float(last), "samples": int(n)}
        for uid, p, f, last, n in zip(unit_ids, power_sum, soc_first, soc_last, samples)
        if n > 0
    ]
