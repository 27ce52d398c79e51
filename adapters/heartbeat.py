"""The controller heartbeat a device supervises (SunSpec 802 ``CtrlHb`` / 715 ``ControllerHb``, or a mapped register).

The gateway increments a counter about once a second; a device that sees it
stop changing falls back to its safe state even if its TCP link stays up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class ControllerHeartbeat:
    modulus: int  # 2**16 for a uint16 register, 2**32 for uint32
    interval_s: float = 1.0
    value: int = 0
    _sent_at: float | None = None

    def due(self) -> int | None:
        """The next value to write if a beat is due now, else ``None``.

        Due a little early (80 % of the interval), so a poll cycle of the same period,
        with its jitter, beats every cycle instead of every other one.
        """
        now = time.monotonic()
        if self._sent_at is not None and now - self._sent_at < 0.8 * self.interval_s:
            return None
        return (self.value + 1) % self.modulus

    def sent(self, value: int) -> None:
        self.value = value
        self._sent_at = time.monotonic()
