"""Empty databases for tests that must pass on SQLite and on PostgreSQL alike.

PostgreSQL is the server at 127.0.0.1:5432 (trust auth, as `.ci/run` provides it); each use gets a
fresh, uniquely named database that is dropped afterwards, so parallel or repeated runs never collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432


def _pg_admin() -> tuple[object, str]:
    """An autocommit connection to the ``test`` database, as the first user that works."""
    import psycopg

    last: Exception | None = None
    for user in ("postgres", "root"):
        try:
            return psycopg.connect(host=PG_HOST, port=PG_PORT, dbname="test", user=user, autocommit=True, connect_timeout=3), user
        except psycopg.OperationalError as err:
            last = err
    raise ConnectionError(f"no PostgreSQL at {PG_HOST}:{PG_PORT} (database test, users postgres/root): {last}")


@contextmanager
def empty_database(kind: str, directory: Path, prefix: str) -> Iterator[str]:
    """The URL (or SQLite path) of an empty database of ``kind`` ("sqlite" | "postgresql").

    Without a PostgreSQL server only that parameter is skipped, with the reason.
    """
    if kind == "sqlite":
        yield str(directory / f"{prefix}.db")
        return
    try:
        admin, user = _pg_admin()
    except ConnectionError as err:
        pytest.skip(str(err))
    name = f"vpp_{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
