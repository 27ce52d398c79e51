"""The ledger's tables and their idempotent writers: settled amounts, metered energy, monthly statements.

A settled amount is final. Each table is keyed by what it settles (unit × interval × stream; unit ×
interval; month × contract × party × item) and written with ``INSERT ... ON CONFLICT DO NOTHING`` in one
transaction per batch. So recording a batch again after a crash or a restart, or recording batches that
overlap, neither duplicates a row nor changes one. A re-recorded row whose amount *differs* from the
stored one is an error (``SettlementConflict``) and the whole batch is rolled back: a correction must
be an explicit adjustment, never a silent overwrite, and a daemon that re-settles differently after a
restart has a bug worth stopping for. ``kill -9`` in the middle of a batch loses the uncommitted
transaction, i.e. the whole batch and nothing else; recording it again completes it.

Times are stored in UTC (timestamptz on PostgreSQL; SQLite keeps the UTC wall time).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from vpp.db import METADATA
from vpp.errors import VppError

_ID = sa.String(128)

settlements = sa.Table(
    "settlements",
    METADATA,
    sa.Column("unit_id", _ID, nullable=False),
    sa.Column("interval_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("stream", _ID, nullable=False),
    sa.Column("site_id", _ID, nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("unit_id", "interval_start", "stream", name="settlements_unit_interval_stream"),
    sa.Index("settlements_by_interval", "interval_start"),
)

metered_energy = sa.Table(
    "metered_energy",
    METADATA,
    sa.Column("unit_id", _ID, nullable=False),
    sa.Column("interval_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("discharged_wh", sa.BigInteger, nullable=False),
    sa.Column("charged_wh", sa.BigInteger, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("unit_id", "interval_start", name="metered_energy_unit_interval"),
    sa.Index("metered_energy_by_interval", "interval_start"),
)

site_energy = sa.Table(
    "site_energy",  # a metered site's grid-meter energy and bills per interval (vpp.site_billing)
    METADATA,
    sa.Column("site_id", _ID, nullable=False),
    sa.Column("interval_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("import_wh", sa.BigInteger, nullable=False),
    sa.Column("export_wh", sa.BigInteger, nullable=False),
    sa.Column("battery_wh", sa.BigInteger, nullable=False),  # the site's batteries' net discharge
    sa.Column("baseline_import_wh", sa.BigInteger, nullable=False),  # without the battery
    sa.Column("baseline_export_wh", sa.BigInteger, nullable=False),
    sa.Column("bill_minor", sa.BigInteger, nullable=False),  # energy charges with the battery
    sa.Column("baseline_bill_minor", sa.BigInteger, nullable=False),  # and without it
    sa.Column("source", sa.String(16), nullable=False),  # counters | power (the flagged fallback) | model (unmetered: load − PV)
    sa.Column("flag", sa.String(256), nullable=False),  # why the counters were not used ("" when they were)
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("site_id", "interval_start", name="site_energy_site_interval"),
    sa.Index("site_energy_by_interval", "interval_start"),
)
SITE_ENERGY_VALUES = ["import_wh", "export_wh", "battery_wh", "baseline_import_wh", "baseline_export_wh", "bill_minor", "baseline_bill_minor", "source", "flag"]

statements = sa.Table(
    "statements",
    METADATA,
    sa.Column("month", sa.String(7), nullable=False),  # YYYY-MM, the local billing month
    sa.Column("contract_id", _ID, nullable=False),
    sa.Column("party", _ID, nullable=False),
    sa.Column("item", _ID, nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("month", "contract_id", "party", "item", name="statements_month_contract_party_item"),
)

SETTLEMENT_COLUMNS = ["interval_start", "unit_id", "site_id", "stream", "amount_minor"]
_CHUNK = 2000
_PG_CHUNK = 50_000


class SettlementConflict(VppError):
    """A row was recorded again with a different amount; nothing of the batch was written."""


def record_settlements(engine: Engine, frame: pd.DataFrame, energy: pd.DataFrame | None = None, sites: pd.DataFrame | None = None) -> int:
    """Record a batch of settled amounts (and optionally the units' metered energy) in ONE transaction.

    ``frame``: the settlement frame (``interval_start`` tz-aware, ``unit_id``, ``site_id``, ``stream``,
    integer ``amount_minor``; other columns such as the float ``amount`` are ignored).
    ``energy``: ``interval_start``, ``unit_id``, ``discharged_kwh``, ``charged_kwh`` (≥ 0), stored as
    whole Wh; contracts with an operating fee per kWh dispatched bill on it.
    ``sites``: metered sites' rows (``site_id``, ``interval_start`` and ``SITE_ENERGY_VALUES``), same rules.
    Returns the number of settlement rows that were new. Raises ``SettlementConflict`` (and writes
    nothing) if any row is already stored with another amount.
    """
    rows = _settlement_rows(frame)
    meter = _energy_rows(energy) if energy is not None else None
    with engine.begin() as conn:
        inserted = _insert_once(conn, settlements, ["unit_id", "interval_start", "stream"], ["amount_minor", "site_id"], rows, "settlement")
        if meter is not None:
            _insert_once(conn, metered_energy, ["unit_id", "interval_start"], ["discharged_wh", "charged_wh"], meter, "metered energy")
        if sites is not None and len(sites):
            rows_s = sites[["site_id", "interval_start", *SITE_ENERGY_VALUES]].copy()
            rows_s["interval_start"] = _utc(rows_s["interval_start"])
            for col in SITE_ENERGY_VALUES[:-2]:
                rows_s[col] = _integers(rows_s[col], col)
            _insert_once(conn, site_energy, ["site_id", "interval_start"], SITE_ENERGY_VALUES, rows_s, "site energy")
    return inserted


def record_statement(engine: Engine, month: str, split: pd.DataFrame) -> int:
    """Record a month's statement (``contracts.split_revenue`` output) once; same rules as settlements."""
    rows = split[["contract_id", "party", "item", "amount_minor"]].copy()
    if rows.isna().any().any():
        raise ValueError(f"statement has missing values in {rows.columns[rows.isna().any()].tolist()}")
    rows.insert(0, "month", month)
    rows["amount_minor"] = _integers(rows["amount_minor"], "amount_minor")
    with engine.begin() as conn:
        return _insert_once(conn, statements, ["month", "contract_id", "party", "item"], ["amount_minor"], rows, "statement")


def settled_totals(engine: Engine, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Σ amount_minor per unit × stream over intervals starting in [start, end), summed by the database.
    Columns: unit_id, site_id, stream, amount_minor (int64), intervals (rows summed)."""
    c = settlements.c
    query = (
        sa.select(c.unit_id, c.site_id, c.stream, sa.cast(sa.func.sum(c.amount_minor), sa.BigInteger).label("amount_minor"), sa.func.count().label("intervals"))
        .where(c.interval_start >= _db_time(start), c.interval_start < _db_time(end))
        .group_by(c.unit_id, c.site_id, c.stream)
        .order_by(c.unit_id, c.stream)
    )
    with engine.connect() as conn:
        out = pd.DataFrame(conn.execute(query).all(), columns=["unit_id", "site_id", "stream", "amount_minor", "intervals"])
    return out.astype({"amount_minor": "int64", "intervals": "int64"})


def settled_intervals(engine: Engine, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    """Number of distinct intervals settled per unit in [start, end) (a stream that was zero has no row,
    so this is not the row count of any one stream)."""
    c = settlements.c
    query = (
        sa.select(c.unit_id, sa.func.count(sa.distinct(c.interval_start)))
        .where(c.interval_start >= _db_time(start), c.interval_start < _db_time(end))
        .group_by(c.unit_id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return pd.Series(dict(rows), dtype="int64")


def dispatched_kwh(engine: Engine, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    """Discharged energy per unit (kWh) over intervals starting in [start, end)."""
    c = metered_energy.c
    query = sa.select(c.unit_id, sa.cast(sa.func.sum(c.discharged_wh), sa.BigInteger)).where(c.interval_start >= _db_time(start), c.interval_start < _db_time(end)).group_by(c.unit_id)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return pd.Series({uid: wh / 1000.0 for uid, wh in rows}, dtype="float64")


def metered_rows(engine: Engine, start: pd.Timestamp, end: pd.Timestamp, unit_ids: Sequence[str]) -> pd.DataFrame:
    """Metered energy per unit × interval in [start, end) of the given units: interval_start (UTC),
    unit_id, charged_kwh, discharged_kwh (statements price it per TOU period)."""
    c = metered_energy.c
    query = (
        sa.select(c.interval_start, c.unit_id, c.charged_wh, c.discharged_wh)
        .where(c.interval_start >= _db_time(start), c.interval_start < _db_time(end), c.unit_id.in_(list(unit_ids)))
        .order_by(c.interval_start, c.unit_id)
    )
    with engine.connect() as conn:
        out = pd.DataFrame(conn.execute(query).all(), columns=["interval_start", "unit_id", "charged_wh", "discharged_wh"])
    return pd.DataFrame({"interval_start": _from_db(out["interval_start"]), "unit_id": out["unit_id"], "charged_kwh": out["charged_wh"].astype("float64") / 1000.0, "discharged_kwh": out["discharged_wh"].astype("float64") / 1000.0})


def settled_starts(engine: Engine, start: pd.Timestamp, end: pd.Timestamp, unit_ids: Sequence[str]) -> pd.DatetimeIndex:
    """The distinct interval starts in [start, end) with a settled row for any of the given units."""
    c = settlements.c
    query = sa.select(c.interval_start).distinct().where(c.interval_start >= _db_time(start), c.interval_start < _db_time(end), c.unit_id.in_(list(unit_ids))).order_by(c.interval_start)
    with engine.connect() as conn:
        values = pd.Series([r[0] for r in conn.execute(query).all()])
    return pd.DatetimeIndex(_from_db(values))


def read_settlements(engine: Engine, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None, unit_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Stored settlement rows (``SETTLEMENT_COLUMNS``, UTC times), optionally only intervals in [start, end)
    and only some units."""
    c = settlements.c
    query = sa.select(c.interval_start, c.unit_id, c.site_id, c.stream, c.amount_minor).order_by(c.interval_start, c.unit_id, c.stream)
    if unit_ids is not None:
        query = query.where(c.unit_id.in_(list(unit_ids)))
    if start is not None:
        query = query.where(c.interval_start >= _db_time(start))
    if end is not None:
        query = query.where(c.interval_start < _db_time(end))
    with engine.connect() as conn:
        out = pd.DataFrame(conn.execute(query).all(), columns=SETTLEMENT_COLUMNS)
    out["interval_start"] = _from_db(out["interval_start"])
    return out.astype({"amount_minor": "int64"})


def site_energy_rows(engine: Engine, start: pd.Timestamp, end: pd.Timestamp, site_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Stored metered-site rows (``site_id``, ``interval_start`` UTC, ``SITE_ENERGY_VALUES``) of intervals in [start, end)."""
    c = site_energy.c
    query = sa.select(c.site_id, c.interval_start, *(c[v] for v in SITE_ENERGY_VALUES)).where(c.interval_start >= _db_time(start), c.interval_start < _db_time(end)).order_by(c.site_id, c.interval_start)
    if site_ids is not None:
        query = query.where(c.site_id.in_(list(site_ids)))
    with engine.connect() as conn:
        out = pd.DataFrame(conn.execute(query).all(), columns=["site_id", "interval_start", *SITE_ENERGY_VALUES])
    out["interval_start"] = _from_db(out["interval_start"])
    return out.astype({v: "int64" for v in SITE_ENERGY_VALUES[:-2]})


def read_statement(engine: Engine, month: str) -> pd.DataFrame:
    """A recorded month's statement rows (empty if the month was not closed)."""
    c = statements.c
    query = sa.select(c.contract_id, c.party, c.item, c.amount_minor).where(c.month == month).order_by(c.contract_id, c.party, c.item)
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=["contract_id", "party", "item", "amount_minor"]).astype({"amount_minor": "int64"})


# ---------------------------------------------------------------- internals


def _settlement_rows(frame: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in SETTLEMENT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"settlement frame lacks columns {missing}")
    rows = frame[SETTLEMENT_COLUMNS].copy()
    if rows.isna().any().any():
        raise ValueError(f"settlement frame has missing values in {rows.columns[rows.isna().any()].tolist()}")
    rows["interval_start"] = _utc(rows["interval_start"])
    rows["amount_minor"] = _integers(rows["amount_minor"], "amount_minor")
    return rows


def _energy_rows(energy: pd.DataFrame) -> pd.DataFrame:
    rows = pd.DataFrame({"unit_id": energy["unit_id"], "interval_start": _utc(energy["interval_start"])})
    for kwh, wh in (("discharged_kwh", "discharged_wh"), ("charged_kwh", "charged_wh")):
        values = energy[kwh].to_numpy(dtype="float64")
        if not np.isfinite(values).all() or (values < 0).any():
            raise ValueError(f"metered energy {kwh} must be finite and >= 0")
        rows[wh] = np.rint(values * 1000.0).astype("int64")
    return rows


def _utc(times: pd.Series) -> pd.Series:
    if times.empty:  # an interval where every stream was zero: nothing to check
        return pd.Series(pd.DatetimeIndex([], tz="UTC"), index=times.index)
    times = pd.Series(pd.to_datetime(times), index=times.index)
    if times.dt.tz is None:
        raise ValueError("interval_start must be timezone-aware (UTC inside)")
    return times.dt.tz_convert("UTC")


def _integers(values: pd.Series, name: str) -> pd.Series:
    if not pd.api.types.is_integer_dtype(values) and not values.empty:
        raise ValueError(f"{name} must be integers (minor units), got dtype {values.dtype}")
    return values.astype("int64")


def _db_time(ts: pd.Timestamp) -> object:
    return pd.Timestamp(ts).tz_convert("UTC").to_pydatetime()


def _from_db(values: pd.Series) -> pd.Series:
    """SQLite hands back naive UTC wall times, PostgreSQL aware ones: both become tz-aware UTC."""
    return pd.to_datetime(values, utc=True) if len(values) else pd.Series(pd.DatetimeIndex([], tz="UTC"), index=values.index)


def _insert_once(conn: Connection, table: sa.Table, keys: list[str], values: list[str], rows: pd.DataFrame, what: str) -> int:
    """Insert rows whose key is new, leave existing ones alone, and fail if any existing one differs."""
    dup = rows.duplicated(keys, keep=False)
    if dup.any():
        clash = rows[dup].groupby(keys)[values].nunique().gt(1).any(axis=1)
        if clash.any():
            raise SettlementConflict(f"{what} batch holds {_key_text(keys, clash[clash].index[0])} twice with different values")
        rows = rows.drop_duplicates(keys)
    if rows.empty:
        return 0
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()
    columns = _columns(rows)
    new = _insert_pg(conn, table, keys, columns, now) if conn.dialect.name == "postgresql" else _insert_sqlite(conn, table, keys, columns, now)
    if len(new) < len(rows):  # only rows that were there already can differ
        inserted = pd.DataFrame(new, columns=keys)
        for k in keys:
            if isinstance(rows[k].dtype, pd.DatetimeTZDtype):
                inserted[k] = _from_db(inserted[k])
        old = rows.merge(inserted, on=keys, how="left", indicator=True)
        _check_stored(conn, table, keys, values, rows[(old["_merge"] == "left_only").to_numpy()], what)
    return len(new)


def _columns(rows: pd.DataFrame) -> dict[str, list[object]]:
    """Plain Python values for the driver: datetimes, ints and strs, not numpy scalars."""
    columns: dict[str, list[object]] = {}
    for col in rows.columns:
        if isinstance(rows[col].dtype, pd.DatetimeTZDtype):
            columns[col] = list(rows[col].dt.to_pydatetime())
        elif pd.api.types.is_integer_dtype(rows[col]):
            columns[col] = rows[col].astype("int64").tolist()
        else:
            columns[col] = [str(v) for v in rows[col]]
    return columns


def _insert_sqlite(conn: Connection, table: sa.Table, keys: list[str], columns: dict[str, list[object]], now: object) -> list[tuple[object, ...]]:
    """Multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` (SQLAlchemy batches the VALUES); the keys inserted."""
    names = list(columns)
    records = [dict(zip(names, values), recorded_at=now) for values in zip(*columns.values())]
    stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=keys).returning(*(table.c[k] for k in keys))
    return [tuple(r) for i in range(0, len(records), _CHUNK) for r in conn.execute(stmt, records[i : i + _CHUNK]).all()]


def _insert_pg(conn: Connection, table: sa.Table, keys: list[str], columns: dict[str, list[object]], now: object) -> list[tuple[object, ...]]:
    """The same on PostgreSQL, with one array parameter per column (``SELECT unnest(...)``) instead of
    one parameter per value: psycopg spent most of a large batch parsing the multi-row VALUES."""
    n = len(next(iter(columns.values())))
    arrays = {**columns, "recorded_at": [now] * n}
    new: list[tuple[object, ...]] = []
    for i in range(0, n, _PG_CHUNK):
        source = sa.select(*(sa.func.unnest(sa.bindparam(c, values[i : i + _PG_CHUNK], type_=postgresql.ARRAY(table.c[c].type))).label(c) for c, values in arrays.items()))
        stmt = postgresql.insert(table).from_select(list(arrays), source).on_conflict_do_nothing(index_elements=keys).returning(*(table.c[k] for k in keys))
        new += [tuple(r) for r in conn.execute(stmt).all()]
    return new


def _check_stored(conn: Connection, table: sa.Table, keys: list[str], values: list[str], rows: pd.DataFrame, what: str) -> None:
    """Read the batch's keys back (inside the transaction) and compare: a different stored value is a conflict."""
    query = sa.select(*(table.c[k] for k in keys + values))
    for k in keys:
        col = rows[k]
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            query = query.where(table.c[k] >= _db_time(col.min()), table.c[k] <= _db_time(col.max()))
        elif col.nunique() <= 500:
            query = query.where(table.c[k].in_(sorted(col.unique().tolist())))
    stored = pd.DataFrame(conn.execute(query).all(), columns=keys + values)
    for k in keys:
        if isinstance(rows[k].dtype, pd.DatetimeTZDtype):
            stored[k] = _from_db(stored[k])
    merged = rows.merge(stored, on=keys, how="left", suffixes=("", "_stored"), validate="one_to_one")
    differs = np.zeros(len(merged), dtype=bool)
    for v in values:
        differs |= (merged[v].astype(object) != merged[f"{v}_stored"].astype(object)).to_numpy()
    if differs.any():
        row = merged[differs].iloc[0]
        shown = ", ".join(f"{v} stored {_plain(row[f'{v}_stored'])!r} new {_plain(row[v])!r}" for v in values if row[v] != row[f"{v}_stored"])
        raise SettlementConflict(
            f"{what} {_key_text(keys, tuple(row[k] for k in keys))} is already recorded with other values ({shown}); "
            f"{int(differs.sum())} row(s) differ, nothing of this batch was written"
        )


def _key_text(keys: Sequence[str], values: tuple[object, ...] | object) -> str:
    vals = values if isinstance(values, tuple) else (values,)
    return " ".join(f"{k}={v}" for k, v in zip(keys, vals))


def _plain(value: object) -> object:
    """numpy scalars print as np.int64(3); users should read 3."""
    return value.item() if isinstance(value, np.generic) else value
