"""The controller inside one simulated battery, independent of the protocol that reaches it.

It holds what a real PCS holds: the battery (physics in ``battery.py``), the
active setpoint and the time it reverts to 0 W by itself, the controller
heartbeat it supervises, and the faults a test can inject. The Modbus and MQTT
simulators only translate registers or JSON to and from this object, so both
protocols revert, time out and fail the same way.
Times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from simulators.battery import BatteryParams, power_limits, step

log = logging.getLogger(__name__)

LIMIT_HORIZON_H = 1.0 / 3600.0  # allowed power is reported for the next second


class WireFault(enum.Enum):
    SILENT = "silent"  # stops answering; writes are not applied
    GARBAGE = "garbage"  # answers, with random values


@dataclass
class SimulatedUnit:
    unit_id: str
    params: BatteryParams
    soc: float
    heartbeat_timeout_s: float = 30.0  # revert to 0 W when the controller heartbeat stops this long
    power_kw: float = 0.0  # applied during the last step
    setpoint_kw: float | None = None  # None: idle (0 W)
    setpoint_until: float | None = None  # revert deadline of the active setpoint
    revert_s: float | None = None  # validity of the last setpoint (what the device reports back)
    fault: bool = False  # device fault state: refuses power, reports FAULT
    wire_fault: WireFault | None = None
    reverts: int = 0  # times the device fell back to 0 W on its own
    heartbeat_value: int | None = None
    _last_heartbeat: float | None = field(default=None, repr=False)
    _last_step: float | None = field(default=None, repr=False)

    def command(self, power_kw: float, valid_s: float, now: float) -> None:
        """Accept a setpoint that holds for ``valid_s`` seconds unless renewed."""
        self.setpoint_kw = power_kw
        self.revert_s = valid_s
        self.setpoint_until = now + valid_s

    def heartbeat(self, value: int, now: float) -> None:
        """The controller wrote its heartbeat; only a changed value proves it is alive."""
        if value != self.heartbeat_value:
            self._last_heartbeat = now
        self.heartbeat_value = value

    def advance(self, now: float) -> None:
        """Supervise the setpoint and heartbeat, then integrate the battery up to ``now``."""
        if self.setpoint_kw is not None and self._must_revert(now):
            self.revert("setpoint expired or controller heartbeat lost")
        if self._last_step is not None and now > self._last_step:
            target = 0.0 if self.fault or self.setpoint_kw is None else self.setpoint_kw
            result = step(self.params, self.soc, target, (now - self._last_step) / 3600.0)
            self.soc, self.power_kw = result.soc, result.power_kw
        self._last_step = now

    def revert(self, reason: str) -> None:
        """Fall back to 0 W on the device's own initiative."""
        log.info("unit=%s reverts to 0 W: %s", self.unit_id, reason)
        self.setpoint_kw = None
        self.setpoint_until = None
        self.reverts += 1

    def limits_kw(self) -> tuple[float, float]:
        """(max_charge_kw, max_discharge_kw) the device allows right now."""
        if self.fault:
            return 0.0, 0.0
        return power_limits(self.params, self.soc, LIMIT_HORIZON_H)

    def revert_remaining_s(self, now: float) -> float:
        return 0.0 if self.setpoint_until is None else max(0.0, self.setpoint_until - now)

    def _must_revert(self, now: float) -> bool:
        expired = self.setpoint_until is not None and now >= self.setpoint_until
        heartbeat_lost = self._last_heartbeat is not None and now - self._last_heartbeat > self.heartbeat_timeout_s
        return expired or heartbeat_lost
