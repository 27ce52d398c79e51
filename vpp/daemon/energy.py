"""Energy that flowed, per unit and telemetry bucket: the integral of power over the time it was known.

Settlement used to spread the mean power of a unit's in-dispatch samples over the
whole interval, so a unit that ran 12 minutes of 60 at 24 kW and sat at 0 W the
rest was settled at 24 kW. Here each tick credits the span since the previous
tick (market time) with the power of that span:

- the measured power when the unit's telemetry is fresh (what the device did since
  the last write: the poll that the tick reads came after it);
- the commanded power when the unit is in dispatch but did not report its power;
- 0 otherwise (out of dispatch and silent: no command, so its device reverted).

A span is at most ``hold`` long (the longest a setpoint may stay in force): after
a stall or a restart nothing is credited for the time before, because the daemon
does not know it, so a daemon that was down contributes 0 and the bucket's
``covered_s`` says how much of it was seen. ``dispatch_s`` is the time each unit
was in dispatch (the share of reserve it is paid for). Two processes that both
stored part of one bucket (a restart) cover disjoint spans, so their rows add up.
Pure bookkeeping: the control loop feeds it, ``Store`` stores its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

ENERGY, COVERED, DISPATCH = 0, 1, 2


@dataclass
class EnergyBuckets:
    unit_ids: Sequence[str]
    bucket: pd.Timedelta  # telemetry_downsample_s, market time
    hold: pd.Timedelta  # longest span one tick may account for, market time
    _open: dict[pd.Timestamp, np.ndarray] = field(default_factory=dict)  # bucket start -> (3, U)
    _last: pd.Timestamp | None = None

    def add(self, now: pd.Timestamp, power_kw: np.ndarray, in_dispatch: np.ndarray) -> None:
        """Credit the span since the previous call (at most ``hold``) with ``power_kw`` (finite, (U,))."""
        last, self._last = self._last, now
        if last is None or now <= last:
            return
        start = max(last, now - self.hold)
        b = start.floor(self.bucket)
        while b < now:
            seconds = (min(b + self.bucket, now) - max(b, start)).total_seconds()
            acc = self._open.get(b)
            if acc is None:
                acc = self._open[b] = np.zeros((3, len(self.unit_ids)))
            acc[ENERGY] += power_kw * (seconds / 3600.0)
            acc[COVERED] += seconds
            acc[DISPATCH] += np.where(in_dispatch, seconds, 0.0)
            b += self.bucket

    def closed(self, now: pd.Timestamp) -> list[dict[str, Any]]:
        """Rows of the buckets that ended by ``now`` (they get no more credit), removed from the open ones."""
        current = now.floor(self.bucket)
        return self._rows([b for b in self._open if b < current])

    def drain(self) -> list[dict[str, Any]]:
        """Rows of every open bucket (shutdown)."""
        return self._rows(list(self._open))

    def _rows(self, starts: list[pd.Timestamp]) -> list[dict[str, Any]]:
        rows = []
        for b in sorted(starts):
            acc = self._open.pop(b)
            rows += [
                {"bucket_start": b.to_pydatetime(), "unit_id": uid, "energy_kwh": float(acc[ENERGY, i]), "covered_s": float(acc[COVERED, i]), "dispatch_s": float(acc[DISPATCH, i])}
                for i, uid in enumerate(self.unit_ids)
            ]
        return rows


def flowing_power(measured_kw: np.ndarray, fresh: np.ndarray, commanded_kw: np.ndarray) -> np.ndarray:
    """(U,) the power of the span just past: measured where fresh and known, else commanded, else 0."""
    known = fresh & np.isfinite(measured_kw)
    return np.where(known, measured_kw, np.where(np.isfinite(commanded_kw), commanded_kw, 0.0))
