"""One database for everything the daemon keeps: engine, WAL mode, and the shared table metadata.

SQLite (a file beside the config) is the default because a site gateway has no
database server; PostgreSQL by URL for central deployments. Every module that
owns tables (the ledger, the daemon's schedule/command/telemetry/audit store)
declares them on ``METADATA`` so ``open_database`` creates all of them at once,
on either backend, with the same code.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

METADATA = sa.MetaData()


def database_url(url_or_path: str | Path) -> str:
    """A URL stays a URL; a bare path means an SQLite file there."""
    text = str(url_or_path)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).resolve()}"


def default_database(config_path: str | Path) -> Path:
    """Where ``vpp run`` and ``vpp ledger`` keep their SQLite file when no --db is given: beside the
    config, named after it (``config/site.yaml`` → ``config/site.db``). One function so both agree."""
    path = Path(config_path)
    return path.with_name(f"{path.stem}.db")


def open_database(url_or_path: str | Path) -> Engine:
    """Connect and create missing tables. SQLite gets WAL (readers never block the control loop's
    writer, and a ``kill -9`` loses at most the uncommitted transaction) and a busy timeout."""
    url = database_url(url_or_path)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DBAPI connection
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    _import_table_owners()
    METADATA.create_all(engine)
    return engine


def _import_table_owners() -> None:
    """Table-owning modules register on METADATA when imported; import them so none is missed."""
    import vpp.daemon.market_data_store  # noqa: F401
    import vpp.daemon.meter_store  # noqa: F401
    import vpp.daemon.store  # noqa: F401
    import vpp.ledger.store  # noqa: F401
