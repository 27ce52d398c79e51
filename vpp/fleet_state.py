"""The process image of the fleet: the latest telemetry and adapter health of every unit.

Adapters (Modbus polling, MQTT ingest) write into it; the dispatcher reads it
once per tick. Telemetry only moves forward in time, so a late or retained
message never overwrites a newer reading (or a newer "offline" verdict).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from vpp.errors import InputError
from vpp.telemetry import Telemetry


@dataclass(frozen=True, slots=True)
class AdapterHealth:
    """How the link to one device is doing, as its adapter last saw it."""

    last_good_read: datetime | None = None
    consecutive_failures: int = 0
    backoff_until: datetime | None = None  # no request is sent to the device before this time
    last_error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.last_good_read is not None and self.consecutive_failures == 0


class FleetState:
    def __init__(self, unit_ids: Iterable[str]) -> None:
        self._telemetry: dict[str, Telemetry | None] = {u: None for u in unit_ids}
        self._health: dict[str, AdapterHealth] = {u: AdapterHealth() for u in self._telemetry}
        self.updates = 0  # telemetry records accepted since start

    def apply(self, telemetry: Telemetry) -> bool:
        """Keep ``telemetry`` if it is newer than what the unit has; return whether it was kept."""
        if telemetry.unit_id not in self._telemetry:
            raise InputError("fleet state", "unit_id", telemetry.unit_id, f"one of {len(self._telemetry)} fleet units")
        current = self._telemetry[telemetry.unit_id]
        if current is not None and telemetry.timestamp <= current.timestamp:
            return False
        self._telemetry[telemetry.unit_id] = telemetry
        self.updates += 1
        return True

    def telemetry(self, unit_id: str) -> Telemetry | None:
        return self._telemetry[unit_id]

    def set_health(self, unit_id: str, health: AdapterHealth) -> None:
        if unit_id not in self._health:
            raise InputError("fleet state", "unit_id", unit_id, f"one of {len(self._health)} fleet units")
        self._health[unit_id] = health

    def health(self, unit_id: str) -> AdapterHealth:
        return self._health[unit_id]
