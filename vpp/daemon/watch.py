"""Operator overrides while running: the file (and ``PUT /overrides``) → the overrides in force → the audit log.

The file is checked every control tick (a ``stat``, and a hash only when the
stat changed), so an edit lands within one tick; the tick loads it on a thread
with a time bound, and the loader itself is bounded (``vpp.safe_yaml``: size,
nodes, depth, no aliases), so no file can stall the tick. A file that does not
parse, is empty, or names unknown units/sites/products is rejected whole, with
one audited, rate-limited log line, and the previous overrides stay in force
(an empty file is refused because an editor that truncates before it writes
would otherwise withdraw every override, SoC floors included: withdrawing all
is ``overrides: []``). ``PUT /overrides`` goes through the same loader and then
replaces the file atomically, keeping its comments, layout and mode
(``overrides_file``), so the file is always the single source of truth.
Every override that starts or stops applying is written to the audit log.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from vpp import safe_yaml
from vpp.config import load_overrides
from vpp.daemon.overrides_file import merged
from vpp.errors import InputError, InputErrors
from vpp.fleet import Fleet
from vpp.log_limit import LogLimiter, held_note
from vpp.markets import Market
from vpp.overrides import Override

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 5.0  # a load that takes longer (a hung file system) is a rejection; the loader's budgets make it ms
MAX_LINE = 600  # characters of a rejection kept in the log line

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
            with self.path.open("rb") as f:  # bounded: a file larger than any loader accepts hashes by its head
                return hashlib.sha256(f.read(safe_yaml.CONFIG.max_bytes + 1)).hexdigest()
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
        self._lock = threading.Lock()  # the tick's load and a PUT run on threads
        self._log = LogLimiter()

    def poll(self) -> bool:
        """Reload the file if it changed; ``True`` when different overrides are now in force."""
        if self._version is None or not self._version.changed():
            return False
        with self._lock:
            try:
                overrides, _ = self._load(self.path)
            except OverridesRejected:
                return False
            return self._set(overrides, "file")

    async def refresh(self) -> bool:
        """``poll`` for the control tick: the ``stat`` here, a load (rare) on a thread, bounded in time."""
        if self._version is None or not self._version.changed():
            return False
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._reload), LOAD_TIMEOUT_S)
        except TimeoutError:
            self.reject("file", [f"{self.path}: took longer than {LOAD_TIMEOUT_S:g} s to load"])
            return False

    def _reload(self) -> bool:
        with self._lock:
            try:
                overrides, _ = self._load(self.path)
            except OverridesRejected:
                return False
            return self._set(overrides, "file")

    def replace(self, text: str) -> tuple[Override, ...]:
        """Validate ``text`` as an overrides file, then make it the file (``PUT /overrides``), keeping the
        file's comments, layout and mode. Blocking (file I/O): the API runs it on a thread.

        Raises ``OverridesRejected`` (nothing changes) or ``RuntimeError`` when no file is configured."""
        if self.path is None:
            raise RuntimeError("the config names no overrides file (add `overrides: overrides.yaml`)")
        shown = f"{self.path} (PUT /overrides)"
        with self._lock:
            overrides, items = self._load_text(text, shown)
            try:
                current_text = safe_yaml.read_text(self.path, safe_yaml.OVERRIDES.max_bytes)
                current, _ = self._parse(self.path)
                out = merged(current_text, current, items, overrides)
            except (InputError, InputErrors, OverridesRejected):
                out = text  # the file on disk is not valid itself: the body replaces it as sent
            if self._parse_text(out, shown)[0] != overrides:  # the merge must never change what is in force
                out = text
            self._write(out)
            self._version.seen()
            self._set(overrides, "api")
        return overrides

    def reject(self, source: str, lines: list[str]) -> None:
        """One rejected file or body: audited, logged as one (rate-limited) line, remembered for ``/status``."""
        lines = [line[:MAX_LINE] for line in lines[:50]] or ["rejected"]
        self.last_error = lines[0]
        held = self._log.allow()
        if held is not None:
            more = f" (+{len(lines) - 1} more problems)" if len(lines) > 1 else ""
            log.error("overrides rejected, previous overrides stay in force: source=%s %s%s%s", source, lines[0], more, held_note(held))
        wall, market = self._clock_pair()
        self._audit([audit_row("rejected", source, wall, market, detail="\n".join(lines))])

    def retarget(self, fleet: Fleet, market: Market) -> None:
        """A reloaded config: check the overrides file again against its fleet and market."""
        self._fleet, self._market = fleet, market
        if self.path is not None:
            with self._lock:
                try:
                    self._set(self._load(self.path)[0], self.source)
                except OverridesRejected:
                    pass  # logged and audited; the previous overrides stay in force

    # ------------------------------------------------------------ loading (callers hold the lock)

    def _load(self, path: Path) -> tuple[tuple[Override, ...], list[dict[str, Any]]]:
        try:
            return self._parse(path)
        except OverridesRejected as err:
            self.reject("file", err.errors)
            raise

    def _load_text(self, text: str, shown: str) -> tuple[tuple[Override, ...], list[dict[str, Any]]]:
        try:
            return self._parse_text(text, shown)
        except OverridesRejected as err:
            self.reject("api", err.errors)
            raise

    def _parse_text(self, text: str, shown: str) -> tuple[tuple[Override, ...], list[dict[str, Any]]]:
        fd, tmp = tempfile.mkstemp(prefix=".overrides-", suffix=".yaml", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return self._parse(Path(tmp), shown)
        finally:
            os.unlink(tmp)

    def _parse(self, path: Path, shown: str | None = None) -> tuple[tuple[Override, ...], list[dict[str, Any]]]:
        """The overrides of a file and its raw entries; ``OverridesRejected`` for anything else, whatever it is."""
        name = shown or str(path)
        try:
            raw = safe_yaml.read(path, safe_yaml.OVERRIDES)
            if not isinstance(raw, dict) or "overrides" not in raw:
                raise InputError(name, "overrides", raw if raw is None else type(raw).__name__, "a mapping with an `overrides:` list (to withdraw every override: `overrides: []`)")
            overrides = load_overrides(path, self._fleet, self._market, self._timezone)
        except (InputError, InputErrors) as err:
            raise OverridesRejected([line.replace(str(path), name) for line in str(err).splitlines()]) from None
        except Exception as err:  # noqa: BLE001 - the boundary's catch-all: no input may escape as a crash
            raise OverridesRejected([f"{name}: {type(err).__name__}: {str(err)[:200]}"]) from None
        return overrides, list(raw["overrides"] or [])

    def _write(self, text: str) -> None:
        """Replace the file atomically, with the mode and owner the old one had (mkstemp would make it 0600)."""
        try:
            st = self.path.stat()
        except OSError:
            st = None
        fd, tmp = tempfile.mkstemp(prefix=".overrides-", suffix=".yaml", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            if st is not None:
                os.chmod(tmp, st.st_mode & 0o7777)
                try:
                    os.chown(tmp, st.st_uid, st.st_gid)
                except PermissionError:
                    pass  # not root: the file stays ours, as the old one was (or the directory would not be ours)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

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
