"""The fixed-rate poll cycle: read every adapter, write the results into the fleet state.

All units are read concurrently; units behind one gateway queue on their
shared link, so a cycle costs about one round trip per request on the busiest
gateway. A unit that fails (or is backing off) is recorded as OFFLINE with its
health, never with its last values. A cycle that outlasts its period is an
overrun: the next one starts at once instead of piling up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from adapters.base import DeviceAdapter, utcnow
from vpp.errors import AdapterError
from vpp.fleet_state import FleetState
from vpp.telemetry import Telemetry, UnitState

log = logging.getLogger(__name__)


@dataclass
class PollStats:
    cycles: int = 0
    overruns: int = 0
    durations_s: list[float] = field(default_factory=list)


class FleetPoller:
    def __init__(self, adapters: Sequence[DeviceAdapter], state: FleetState, cycle_s: float = 1.0) -> None:
        self.adapters = tuple(adapters)
        self.state = state
        self.cycle_s = cycle_s
        self.stats = PollStats()

    async def poll_once(self) -> float:
        """Read every unit once; return the cycle's duration in seconds."""
        started = time.perf_counter()
        await asyncio.gather(*(self._poll(adapter) for adapter in self.adapters))
        duration = time.perf_counter() - started
        self.stats.cycles += 1
        self.stats.durations_s.append(duration)
        return duration

    async def run(self, duration_s: float | None = None) -> PollStats:
        """Poll every ``cycle_s`` (for ``duration_s``, or until cancelled)."""
        start = next_start = time.monotonic()
        while duration_s is None or time.monotonic() - start < duration_s:
            await self.poll_once()
            next_start += self.cycle_s
            late_s = time.monotonic() - next_start
            if late_s > 0:
                self.stats.overruns += 1
                log.warning("poll cycle overrun late_s=%.3f units=%d", late_s, len(self.adapters))
                next_start = time.monotonic()
            else:
                await asyncio.sleep(-late_s)
        return self.stats

    async def _poll(self, adapter: DeviceAdapter) -> None:
        try:
            telemetry = await adapter.read()
        except AdapterError as err:
            log.debug("poll failed: %s", err)
            telemetry = Telemetry(adapter.unit_id, utcnow(), state=UnitState.OFFLINE)
        self.state.apply(telemetry)
        self.state.set_health(adapter.unit_id, adapter.health)
