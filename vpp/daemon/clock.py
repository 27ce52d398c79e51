"""Market time as an affine function of wall time, so tests and demos can run a day in minutes.

``now = sim_start + speed × (wall − wall_start)``. Device-side things (revert
timers, telemetry age) stay in wall seconds; only the schedule, intervals and
settlement use market time.

Market time never runs backwards across restarts (``market_clock``): the anchor
is stored in the database the first time (``daemon_clock``), so a config without
``wall_start`` resumes where it would have been instead of at ``sim_start``
again, and a clock that would still land before what was already recorded (a
changed anchor, a wall clock set back) is re-anchored at that point, with a
warning, rather than dispatching and storing settled intervals a second time.
Only the plain wall clock (no ``speed``, no ``sim_start``) is never moved: market
time is then real time, and a wall clock behind the records is logged as an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from vpp.daemon.store import Store

log = logging.getLogger(__name__)


def utc(value: object) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True)
class Clock:
    speed: float
    sim_start: pd.Timestamp
    wall_start: pd.Timestamp

    @classmethod
    def create(cls, speed: float = 1.0, sim_start: object | None = None, wall_start: object | None = None) -> Clock:
        wall0 = utc(wall_start) if wall_start is not None else pd.Timestamp.now(tz="UTC")
        return cls(speed, utc(sim_start) if sim_start is not None else wall0, wall0)

    @staticmethod
    def wall() -> pd.Timestamp:
        return pd.Timestamp.now(tz="UTC")

    def to_sim(self, wall: pd.Timestamp) -> pd.Timestamp:
        return self.sim_start + (wall - self.wall_start) * self.speed

    def to_wall(self, sim: pd.Timestamp) -> pd.Timestamp:
        return self.wall_start + (sim - self.sim_start) / self.speed

    def now(self) -> pd.Timestamp:
        return self.to_sim(self.wall())

    def wall_seconds(self, market_seconds: float) -> float:
        return market_seconds / self.speed


def market_clock(speed: float, sim_start: pd.Timestamp | None, wall_start: object | None, store: Store) -> Clock:
    """The configured clock, anchored so that market time continues from the last run (see the module doc)."""
    configured = Clock.create(speed, sim_start, wall_start)
    origin = f"{speed:g}@{configured.sim_start.isoformat()}" if wall_start is None else f"{speed:g}@{configured.sim_start.isoformat()}/{configured.wall_start.isoformat()}"
    clock = configured
    if not (speed == 1.0 and sim_start is None):
        stored = store.clock_anchor()
        if wall_start is None and stored is not None and stored[1] == origin:
            clock = stored[0]
    recorded = store.market_high_water()
    now = clock.now()
    if recorded is not None and now < recorded:
        if clock is configured and speed == 1.0 and sim_start is None:
            log.error("the wall clock %s is behind what this database recorded (%s): check time synchronisation", now.isoformat(), recorded.isoformat())
        else:
            log.warning("market clock would start at %s, before what was recorded (%s): continuing from there", now.isoformat(), recorded.isoformat())
            clock = Clock(speed, recorded, pd.Timestamp.now(tz="UTC"))
    if not (speed == 1.0 and sim_start is None):
        store.save_clock_anchor(clock, origin)
    return clock
