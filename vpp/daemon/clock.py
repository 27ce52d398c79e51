"""Market time as an affine function of wall time, so tests and demos can run a day in minutes.

``now = sim_start + speed × (wall − wall_start)``. Being a pure function of the
wall clock (not of process start), the mapping survives a restart: a daemon
killed and started again with the same config resumes at the market time it
would have reached. Device-side things (revert timers, telemetry age) stay in
wall seconds; only the schedule, intervals and settlement use market time.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


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
