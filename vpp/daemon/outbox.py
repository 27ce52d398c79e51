"""Store-and-forward: what the gateway sends its central waits in its own database until the broker acks it.

Every message up (telemetry samples, interval settlement records) is first a row of ``plant_outbox``
in the gateway's database (the SQLite file beside the config by default, so it survives a restart and
a `kill -9`). The uplink publishes rows oldest first at QoS 1 and deletes a row only after the broker's
PUBACK; a crash between the two sends it again, which the central ignores (its keys). Interval records
are enqueued from the ledger: ``plant_state['intervals_sent']`` is the last settled interval enqueued,
moved in the same transaction as the rows it enqueued. Functions here run on the database thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd
import sqlalchemy as sa

from vpp.daemon.clock import utc
from vpp.daemon.store import TS, Store, settled_intervals
from vpp.db import METADATA
from vpp.ledger.store import metered_rows, read_settlements
from vpp.plant.messages import IntervalRecord, MeteredRow, SettledRow, encode, site_topic

log = logging.getLogger(__name__)

outbox = sa.Table(
    "plant_outbox",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # the replay order
    sa.Column("kind", sa.String(16), nullable=False),  # telemetry | interval
    sa.Column("topic", sa.String(256), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

plant_state = sa.Table(
    "plant_state",
    METADATA,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)
plant_plan = sa.Table(  # the last central plan this gateway accepted, as it arrived (followed again after a restart)
    "plant_plan",
    METADATA,
    sa.Column("site_id", sa.String(128), primary_key=True),
    sa.Column("payload", sa.LargeBinary, nullable=False),
)


def enqueue(store: Store, kind: str, topic: str, payload: bytes, at: pd.Timestamp) -> None:
    with store.engine.begin() as conn:
        conn.execute(outbox.insert().values(kind=kind, topic=topic, payload=payload, created_at=at.to_pydatetime()))


def oldest(store: Store, limit: int) -> list[tuple[int, str, bytes]]:
    with store.engine.connect() as conn:
        return [(r.id, r.topic, bytes(r.payload)) for r in conn.execute(sa.select(outbox.c.id, outbox.c.topic, outbox.c.payload).order_by(outbox.c.id).limit(limit))]


def delete(store: Store, ids: Sequence[int]) -> None:
    if ids:
        with store.engine.begin() as conn:
            conn.execute(outbox.delete().where(outbox.c.id.in_(list(ids))))


def pending(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one())


def trim(store: Store, max_rows: int) -> int:
    """Past ``max_rows``, drop the oldest telemetry (a gap in a chart); interval records are money: kept."""
    excess = pending(store) - max_rows
    if excess <= 0:
        return 0
    with store.engine.begin() as conn:
        ids = conn.execute(sa.select(outbox.c.id).where(outbox.c.kind == "telemetry").order_by(outbox.c.id).limit(excess)).scalars().all()
        conn.execute(outbox.delete().where(outbox.c.id.in_(ids)))
    log.warning("outbox over %d rows: dropped the %d oldest telemetry samples", max_rows, len(ids))
    return len(ids)


def save_plan(store: Store, site: str, payload: bytes) -> None:
    with store.engine.begin() as conn:
        if conn.execute(plant_plan.update().where(plant_plan.c.site_id == site).values(payload=payload)).rowcount == 0:
            conn.execute(plant_plan.insert().values(site_id=site, payload=payload))


def last_plan(store: Store, site: str) -> bytes | None:
    with store.engine.connect() as conn:
        payload = conn.execute(sa.select(plant_plan.c.payload).where(plant_plan.c.site_id == site)).scalar()
    return bytes(payload) if payload is not None else None


def get_state(store: Store, key: str) -> str | None:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(plant_state.c.value).where(plant_state.c.key == key)).scalar()


def set_state(store: Store, key: str, value: str) -> None:
    with store.engine.begin() as conn:
        if conn.execute(plant_state.update().where(plant_state.c.key == key).values(value=value)).rowcount == 0:
            conn.execute(plant_state.insert().values(key=key, value=value))


def enqueue_intervals(store: Store, site: str, currency: str, interval: pd.Timedelta, unit_ids: Sequence[str], at: pd.Timestamp) -> int:
    """Enqueue one ``IntervalRecord`` per interval settled since the last call (oldest first)."""
    sent = get_state(store, "intervals_sent")
    query = sa.select(settled_intervals.c.interval_start).order_by(settled_intervals.c.interval_start)
    if sent is not None:
        query = query.where(settled_intervals.c.interval_start > utc(sent).to_pydatetime())
    with store.engine.connect() as conn:
        starts = [utc(v) for v in conn.execute(query).scalars()]
    if not starts:
        return 0
    settled = read_settlements(store.engine, starts[0], starts[-1] + interval)
    metered = metered_rows(store.engine, starts[0], starts[-1] + interval, unit_ids)
    rows = []
    for start in starts:
        s = settled[settled.interval_start == start]
        m = metered[metered.interval_start == start]
        record = IntervalRecord(
            site=site,
            interval_start=start.to_pydatetime(),
            currency=currency,
            rows=tuple(SettledRow(unit_id=u, stream=st, amount_minor=int(a)) for u, st, a in zip(s.unit_id, s.stream, s.amount_minor)),
            energy=tuple(MeteredRow(unit_id=u, discharged_wh=round(d * 1000), charged_wh=round(c * 1000)) for u, d, c in zip(m.unit_id, m.discharged_kwh, m.charged_kwh)),
        )
        rows.append({"kind": "interval", "topic": site_topic(site, "interval"), "payload": encode(record), "created_at": at.to_pydatetime()})
    with store.engine.begin() as conn:
        conn.execute(outbox.insert(), rows)
        if conn.execute(plant_state.update().where(plant_state.c.key == "intervals_sent").values(value=starts[-1].isoformat())).rowcount == 0:
            conn.execute(plant_state.insert().values(key="intervals_sent", value=starts[-1].isoformat()))
    return len(rows)
