"""A log line per event, but not a flood: at most ``burst`` lines per ``period_s``, then a count of the rest.

Every boundary that rejects outside input logs the rejection; a client sending
garbage in a loop must not turn that into gigabytes of log (one override alias
bomb once wrote 2.29 GB). Callers log when ``allow()`` returns a count (the
number of events held back since the last line, to append to it) and stay
silent when it returns ``None``. Thread-safe: the API thread and the loop share
limiters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class LogLimiter:
    def __init__(self, burst: int = 5, period_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.period_s, self._clock = burst, period_s, clock
        self._window_start = -float("inf")
        self._lines = 0
        self._held = 0
        self._lock = threading.Lock()

    def allow(self) -> int | None:
        """``None``: stay silent; else log, mentioning this many events held back before it."""
        with self._lock:
            now = self._clock()
            if now - self._window_start >= self.period_s:
                self._window_start, self._lines = now, 0
            if self._lines >= self.burst:
                self._held += 1
                return None
            self._lines += 1
            held, self._held = self._held, 0
            return held


def held_note(held: int) -> str:
    return f" ({held} more like it not logged)" if held else ""
