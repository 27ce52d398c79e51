"""Per-device health and exponential back-off.

A device that fails is not asked again until its back-off expires, and the
wait doubles with every consecutive failure (up to ``max_s``), so one dead unit
behind a shared gateway costs the others at most one timeout per back-off
period. The first good answer resets everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from vpp.fleet_state import AdapterHealth


@dataclass
class Backoff:
    base_s: float = 1.0
    max_s: float = 300.0
    failures: int = 0
    last_good: datetime | None = None
    retry_at: datetime | None = None
    last_error: str | None = None

    def ready(self, now: datetime) -> bool:
        return self.retry_at is None or now >= self.retry_at

    def failure(self, now: datetime, error: str) -> None:
        self.failures += 1
        self.last_error = error
        self.retry_at = now + timedelta(seconds=self.delay_s())

    def success(self, now: datetime) -> None:
        self.failures = 0
        self.last_good = now
        self.retry_at = None
        self.last_error = None

    def delay_s(self) -> float:
        """Wait after the current run of failures: base, 2·base, 4·base, ... capped at max_s."""
        if self.failures == 0:
            return 0.0
        return min(self.base_s * 2.0 ** min(self.failures - 1, 30), self.max_s)

    def health(self) -> AdapterHealth:
        return AdapterHealth(
            last_good_read=self.last_good,
            consecutive_failures=self.failures,
            backoff_until=self.retry_at,
            last_error=self.last_error,
        )
