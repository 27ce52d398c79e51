"""A thread that notices what the event loop cannot: no tick finishing, because the loop itself is blocked.

Everything else in the daemon (the scheduler, the API, the metrics endpoint) runs
on the loop, so a parser or a bug that blocks it silences them all at once, and
APScheduler coalesces the ticks it could not run without a word. This thread
reads the control loop's monotonic "last tick finished" and logs one line when
the age passes ``limit_s`` and one when ticks resume: a stall is in the log
while it lasts, not only after. (``/healthz`` and ``vpp_tick_age_seconds`` show
the same age once the loop answers again; systemd's watchdog kills a loop that
never does.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class StallWatch:
    def __init__(self, age_s: Callable[[], float | None], limit_s: float, period_s: float = 1.0) -> None:
        self.age_s, self.limit_s, self.period_s = age_s, limit_s, period_s
        self.stalls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vpp-stall-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * self.period_s)

    def _run(self) -> None:
        stalled_for = 0.0
        while not self._stop.wait(self.period_s):
            age = self.age_s()
            if age is None:
                continue
            if age > self.limit_s:
                if not stalled_for:
                    self.stalls += 1
                    log.error("control loop stalled: no tick has finished for %.1f s (event loop blocked?); devices revert to 0 W by their timers", age)
                stalled_for = max(stalled_for, age)
            elif stalled_for:
                log.warning("control loop ticking again after a stall of at least %.1f s", stalled_for)
                stalled_for = 0.0
