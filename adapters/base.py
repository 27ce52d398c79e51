"""The adapter interface every device protocol implements.

An adapter is an async context manager with three verbs: ``read`` the unit's
telemetry, ``write`` a setpoint, and report its ``health``. Failures are
``AdapterError`` exceptions; the base class books every attempt into the
unit's back-off, so retry policy lives in one place and a device that is
backing off is not asked at all.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Self, TypeVar

from adapters.health import Backoff
from vpp.errors import AdapterError
from vpp.fleet_state import AdapterHealth
from vpp.telemetry import Setpoint, Telemetry

T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


class DeviceAdapter(abc.ABC):
    def __init__(self, unit_id: str, backoff: Backoff) -> None:
        self.unit_id = unit_id
        self._backoff = backoff

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    @property
    def health(self) -> AdapterHealth:
        return self._backoff.health()

    async def read(self) -> Telemetry:
        """The unit's telemetry now; implausible values are ``None``. Raises ``AdapterError``."""
        return await self._attempt(lambda: self._read(utcnow()))

    async def write(self, setpoint: Setpoint) -> None:
        """Command ``setpoint``; the device reverts to 0 W by itself after ``setpoint.valid_s``."""
        await self._attempt(partial(self._write, setpoint))

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open (or join) the connection. Device trouble is not raised here but found by ``read``."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def _read(self, now: datetime) -> Telemetry: ...

    @abc.abstractmethod
    async def _write(self, setpoint: Setpoint) -> None: ...

    async def _attempt(self, operation: Callable[[], Awaitable[T]]) -> T:
        if not self._backoff.ready(utcnow()):
            raise AdapterError(f"unit {self.unit_id}: backing off until {self._backoff.retry_at:%H:%M:%S} after: {self._backoff.last_error}")
        try:
            result = await operation()
        except AdapterError as err:
            self._backoff.failure(utcnow(), str(err))
            raise AdapterError(f"unit {self.unit_id}: {err}") from err
        self._backoff.success(utcnow())
        return result

