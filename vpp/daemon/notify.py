"""systemd's sd_notify protocol over ``$NOTIFY_SOCKET``: READY=1 at start, WATCHDOG=1 from the control tick.

A datagram to a Unix socket; a leading ``@`` names an abstract socket. Without
``$NOTIFY_SOCKET`` (not under systemd) every call is a no-op. Sends never
block: a supervisor that stops reading must not stall the tick (its watchdog
will act instead).
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``); ``True`` if a supervisor socket took it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(message.encode(), address)
    except OSError as err:
        log.warning("sd_notify to %s failed: %s", address, err)
        return False
    return True


def watchdog_period_s() -> float | None:
    """Half the watchdog timeout systemd set (``$WATCHDOG_USEC``), the period it should be fed at."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
        return None
    return int(usec) / 2e6


class Watchdog:
    """WATCHDOG=1 at most every ``min_interval_s``, however often the tick runs; fed only by ticks that finish."""

    def __init__(self, min_interval_s: float = 1.0) -> None:
        self.min_interval_s = min_interval_s
        self._last = float("-inf")

    def feed(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.min_interval_s:
            self._last = now
            notify("WATCHDOG=1")
