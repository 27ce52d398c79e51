"""Operator overrides while running: the file (and ``PUT /overrides``) → the overrides in force → the audit log.

The file is checked every control tick (a ``stat``, and a hash only when the
stat changed), so an edit lands within one tick. A file that does not parse or
names unknown units/sites/products is rejected whole with a logged one-line
error per problem, and the previous overrides stay in force. ``PUT
/overrides`` goes through the same loader and then replaces the file
atomically, so the file is always the single source of truth.
Every override that starts or stops applying is written to the audit log.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from vpp.config import load_overrides
from vpp.errors import InputError, InputErrors
from vpp.fleet import Fleet
from vpp.markets import Market
from vpp.overrides import Override

log = logging.getLogger(__name__)

AuditSink = Callable[[list[dict[str, Any]]], None]


class OverridesRejected(Exception):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


def audit_row(event: str, source: str, wall: pd.Timestamp, market: pd.Timestamp, override: Override | None = None, detail: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"wall_at": wall.to_pydatetime(), "market_at": market.to_pydatetime(), "event": event, "source": source, "detail": detail}
    if override is not None:
        row.update(
            kind=override.kind.value,
            unit_id=override.unit_id,
            site_id=override.site_id,
            product_id=override.product_id,
            value=override.value,
            start=pd.Timestamp(override.start).to_pydatetime(),
            end=pd.Timestamp(override.end).to_pydatetime(),
            author=override.author,
            reason=override.reason,
        )
    return row


class FileVersion:
    """Whether a file's content changed since it was last seen: a ``stat`` per call, a hash only when the
    stat moved (an editor that rewrites identical bytes is no change). A missing file is a version too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature, self._digest = self._stat(), self._hash()

    def changed(self) -> bool:
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        digest = self._hash()
        if digest == self._digest:
            return False
        self._digest = digest
        return True

    def seen(self) -> None:
        """Take the current content as known (after writing it ourselves)."""
        self._signature, self._digest = self._stat(), self._hash()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _hash(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None


class OverridesWatcher:
    def __init__(self, path: Path | None, fleet: Fleet, market: Market, timezone: str, initial: Sequence[Override], audit: AuditSink, clock_pair: Callable[[], tuple[pd.Timestamp, pd.Timestamp]]) -> None:
        self.path = path
        self._fleet, self._market, self._timezone = fleet, market, timezone
        self.current: tuple[Override, ...] = tuple(initial)
        self.source = "file"
        self.last_error: str | None = None
        self._audit = audit
        self._clock_pair = clock_pair  # () -> (wall, market)
        self._version = FileVersion(path) if path is not None else None

    def poll(self) -> bool:
        """Reload the file if it changed; ``True`` when different overrides are now in force."""
        if self._version is None or not self._version.changed():
            return False
        try:
            overrides = self._load(self.path)
        except OverridesRejected:
            return False
        return self._set(overrides, "file")

    def replace(self, text: str) -> tuple[Override, ...]:
        """Validate ``text`` as an overrides file, then make it the file (``PUT /overrides``).

        Raises ``OverridesRejected`` (nothing changes) or ``RuntimeError`` when no file is configured."""
        if self.path is None:
            raise RuntimeError("the config names no overrides file (add `overrides: overrides.yaml`)")
        fd, tmp = tempfile.mkstemp(prefix=".overrides-", suffix=".yaml", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            overrides = self._load(Path(tmp), shown_as=f"{self.path} (PUT /overrides)", source="api")
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._version.seen()
        self._set(overrides, "api")
        return overrides

    def retarget(self, fleet: Fleet, market: Market) -> None:
        """A reloaded config: check the overrides file again against its fleet and market."""
        self._fleet, self._market = fleet, market
        if self.path is not None:
            try:
                self._set(self._load(self.path), self.source)
            except OverridesRejected:
                pass  # logged and audited; the previous overrides stay in force

    def _load(self, path: Path, shown_as: str | None = None, source: str = "file") -> tuple[Override, ...]:
        try:
            return load_overrides(path, self._fleet, self._market, self._timezone)
        except (InputError, InputErrors) as err:
            lines = [line.replace(str(path), shown_as or str(path)) for line in str(err).splitlines()]
            self.last_error = lines[0]
            for line in lines:
                log.error("overrides rejected, previous overrides stay in force: %s", line)
            wall, market = self._clock_pair()
            self._audit([audit_row("rejected", source, wall, market, detail="\n".join(lines))])
            raise OverridesRejected(lines) from None

    def _set(self, overrides: tuple[Override, ...], source: str) -> bool:
        changed = overrides != self.current
        self.current, self.source, self.last_error = overrides, source, None
        log.info("overrides loaded source=%s count=%d changed=%s", source, len(overrides), changed)
        return changed


class OverrideActivity:
    """Which overrides apply now; reports each one that starts or stops applying, once."""

    def __init__(self) -> None:
        self.active: frozenset[Override] = frozenset()

    def update(self, now: pd.Timestamp, overrides: Sequence[Override]) -> list[tuple[str, Override]]:
        active = frozenset(o for o in overrides if pd.Timestamp(o.start) <= now < pd.Timestamp(o.end))
        events = [("applied", o) for o in active - self.active]
        events += [("expired" if now >= pd.Timestamp(o.end) else "withdrawn", o) for o in self.active - active]
        self.active = active
        return events
