"""The control tick, top to bottom: telemetry → dispatch → setpoints written → what was commanded recorded.

``vpp.dispatch.dispatch`` makes every decision (eligibility, schedule target with
SoC feedback, overrides, unit/SoC/site clamps); this module only feeds it and
carries its answer out. The setpoints written are exactly ``TickResult.setpoints``
(stamped with the wall time, which is what device revert timers count from).
Recording is deadbanded: a unit's command is stored when it changes (power,
reason, interval or schedule), so the table reads as a step-hold history
without a row per unit every two seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from adapters.base import DeviceAdapter
from vpp.daemon import store as tables
from vpp.daemon.clock import Clock
from vpp.daemon.energy import EnergyBuckets, flowing_power
from vpp.daemon.metrics import Metrics
from vpp.daemon.notify import Watchdog, watchdog_period_s
from vpp.daemon.store import Store, bucket_rows
from vpp.daemon.watch import OverrideActivity, OverridesWatcher, audit_row
from vpp.dispatch import DispatchFleet, DispatchSettings, TickResult, dispatch, write_first
from vpp.fleet_state import FleetState
from vpp.schedule import Schedule
from vpp.telemetry import Setpoint, Telemetry

log = logging.getLogger(__name__)

DEADBAND_KW = 0.01
STALL_PERIODS = 1.5  # a gap between two finished ticks longer than this many periods is a stall


@dataclass
class ScheduleInForce:
    """The last good schedule; replaced only by a successful solve."""

    schedule: Schedule | None = None
    id: int | None = None
    created_at: pd.Timestamp | None = None  # wall time
    trigger: str | None = None
    source: str | None = None  # solved | restored


@dataclass
class TelemetryBucket:
    """Per-unit sums of the good samples seen in one downsample bucket (market time)."""

    start: pd.Timestamp | None
    power_sum: np.ndarray
    soc_first: np.ndarray
    soc_last: np.ndarray
    samples: np.ndarray

    @classmethod
    def empty(cls, start: pd.Timestamp | None, n: int) -> TelemetryBucket:
        return cls(start, np.zeros(n), np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=int))

    def add(self, power_kw: np.ndarray, soc: np.ndarray) -> None:
        good = ~np.isnan(power_kw) & ~np.isnan(soc)
        self.power_sum[good] += power_kw[good]
        first = good & (self.samples == 0)
        self.soc_first[first] = soc[first]
        self.soc_last[good] = soc[good]
        self.samples[good] += 1


@dataclass
class TickRecord:
    result: TickResult
    wall: pd.Timestamp
    duration_s: float  # from reading the clock to the last setpoint written
    decide_s: float  # of which: telemetry snapshot and dispatch (the rest is waiting for devices)
    written: int
    errors: dict[str, str] = field(default_factory=dict)


class ControlLoop:
    def __init__(
        self,
        *,
        dfleet: DispatchFleet,
        state: FleetState,
        adapters: Mapping[str, DeviceAdapter],
        schedule: ScheduleInForce,
        watcher: OverridesWatcher,
        clock: Clock,
        store: Store,
        metrics: Metrics,
        settings: DispatchSettings,
        tick_s: float,
        setpoint_valid_s: float,
        interval: pd.Timedelta,
        downsample: pd.Timedelta,
        site_base: Callable[[pd.Timestamp], np.ndarray | None] = lambda now: None,
        on_availability: Callable[[frozenset[str]], None] = lambda out: None,
        on_overrides: Callable[[], None] = lambda: None,
        on_interval_closed: Callable[[pd.Timestamp], None] = lambda start: None,
        site_loop=None,  # vpp.daemon.site_loop.SiteLoop: the metered sites' law, applied before every write
        extra_overrides: Callable[[], tuple] = lambda: (),  # caps not from the operator (a central plan's site envelope)
    ) -> None:
        self.dfleet, self.state, self.adapters = dfleet, state, adapters
        self.schedule, self.watcher, self.clock = schedule, watcher, clock
        self.store, self.metrics, self.settings = store, metrics, settings
        self.tick_s, self.valid_s = tick_s, setpoint_valid_s
        self.step_s = max(tick_s, setpoint_valid_s)  # a setpoint may stay in force until it reverts
        self.interval, self.downsample, self.site_base = interval, downsample, site_base
        self.on_availability, self.on_overrides, self.on_interval_closed = on_availability, on_overrides, on_interval_closed
        self.site_loop = site_loop
        self.extra_overrides = extra_overrides
        self.activity = OverrideActivity()
        self.watchdog = Watchdog(min(1.0, watchdog_period_s() or 1.0))
        self.last: TickRecord | None = None
        self.ticks = 0
        self.completed_at: float | None = None  # time.monotonic() when the last tick finished (the stall detector's)
        self.longest_gap_s = 0.0
        self._slot: int | None = None  # the tick period (since the first tick, rounded) the last tick started in
        self._first_started: float | None = None
        self.written_at: dict[str, pd.Timestamp] = {}  # wall time each unit's last successful write was acknowledged
        self.out: frozenset[str] | None = None
        self.ticked = asyncio.Event()  # set after every tick (tests and the bench wait on it)
        n = len(dfleet.unit_ids)
        self._position = {uid: i for i, uid in enumerate(dfleet.unit_ids)}
        self._bucket = TelemetryBucket.empty(None, n)
        self._energy = EnergyBuckets(dfleet.unit_ids, downsample, pd.Timedelta(seconds=self.step_s * clock.speed))
        self._interval: pd.Timestamp | None = None
        self._recorded: dict[str, tuple] = {}
        self._write_failing: dict[str, str] = {}  # unit -> error of its current run of failed writes
        self._failures = dict.fromkeys(dfleet.unit_ids, 0)
        self._available = [metrics.unit_available.labels(u) for u in dfleet.unit_ids]
        self._deviation = [metrics.setpoint_deviation.labels(u) for u in dfleet.unit_ids]
        self._last_kw = np.full(n, np.nan)  # last power commanded to each unit
        self._measured = np.full(n, np.nan)

    async def tick(self) -> TickRecord:
        self._count_missed()
        started = time.perf_counter()
        wall = self.clock.wall()
        now = self.clock.to_sim(wall)
        if await self.watcher.refresh():
            self.on_overrides()
        overrides = self.watcher.current
        telemetry = self._telemetry(now - wall)
        schedule, schedule_id = self.schedule.schedule, self.schedule.id  # a solve may land while we write
        result = dispatch(self.dfleet, now.to_pydatetime(), schedule, telemetry, (*overrides, *self.extra_overrides()), site_base_kw=self.site_base(now), step_s=self.step_s, settings=self.settings)
        if self.site_loop is not None:  # metered sites: the plan stays the loop's target, the live meter bounds it
            self.site_loop.plan, self.site_loop.schedule = result, schedule
            result = self.site_loop.apply(result, wall, now, self.written_at, self._last_kw)
        setpoints = [replace(sp, issued_at=wall.to_pydatetime()) for sp in result.setpoints(self.valid_s)]
        first = write_first(self.dfleet, result.power_kw, self._last_kw, self.site_base(now))
        decided = time.perf_counter()
        errors = await self._write_waves(setpoints, first)
        duration = time.perf_counter() - started

        self._record(result, schedule_id, wall, now, errors)
        self._audit(now, wall, overrides)
        self._sample(now, telemetry, result)
        self._observe(result, duration, len(setpoints) - len(errors))
        self._track_interval(now)
        self.last = TickRecord(result, wall, duration, decided - started, len(setpoints) - len(errors), errors)
        self._completed()
        self.ticks += 1
        self.watchdog.feed()
        self.ticked.set()
        self.ticked.clear()
        return self.last

    @property
    def last_kw(self) -> np.ndarray:
        """(U,) the power last commanded to each unit (NaN: none yet)."""
        return self._last_kw

    async def rewrite(self, result: TickResult, wall: pd.Timestamp, now: pd.Timestamp, site_base_kw: np.ndarray | None) -> int:
        """Between ticks (the site control loop): write the setpoints of ``result`` that differ from the
        last ones commanded, safe side first, and record them. Returns how many were written."""
        changed = ~np.isnan(result.power_kw) & ~(np.abs(result.power_kw - self._last_kw) <= DEADBAND_KW)
        if not changed.any():
            return 0
        setpoints = [replace(sp, issued_at=wall.to_pydatetime()) for sp in result.setpoints(self.valid_s) if changed[self._position[sp.unit_id]]]
        errors = await self._write_waves(setpoints, write_first(self.dfleet, result.power_kw, self._last_kw, site_base_kw))
        ok = changed & np.array([uid not in errors for uid in self.dfleet.unit_ids])
        self._last_kw = np.where(ok, result.power_kw, self._last_kw)
        self._record(result, self.schedule.id, wall, now, errors)
        return int(ok.sum())

    async def zero_all(self) -> int:
        """Shutdown: command 0 W to every unit that answers (a unit out of reach reverts by its own timer)."""
        wall = self.clock.wall()
        if self.last is not None:  # the units ran their last commands until now: that energy flowed too
            self._energy.add(self.clock.to_sim(wall), np.nan_to_num(self.last.result.power_kw), self.last.result.dispatched())
        setpoints = [Setpoint(uid, 0.0, wall.to_pydatetime(), self.valid_s) for uid in self.adapters]
        errors = await self._write(setpoints)
        for uid, err in errors.items():
            log.warning("shutdown: 0 W not written unit=%s error=%s (its revert timer takes over)", uid, err)
        return len(setpoints) - len(errors)

    def flush(self) -> None:
        """Store the telemetry bucket in progress (shutdown)."""
        self._flush_bucket()

    # ------------------------------------------------------------ steps

    def _telemetry(self, offset: pd.Timedelta) -> dict[str, Telemetry | None]:
        """The process image, re-stamped into market time so its age stays in wall seconds."""
        snapshot = {uid: self.state.telemetry(uid) for uid in self.dfleet.unit_ids}
        if offset == pd.Timedelta(0):
            return snapshot
        delta = offset.to_pytimedelta()
        return {uid: (replace(t, timestamp=t.timestamp + delta) if t is not None else None) for uid, t in snapshot.items()}

    async def _write_waves(self, setpoints: list[Setpoint], first: np.ndarray) -> dict[str, str]:
        """Each site in two waves, the units that move toward its limits' safe side (``first``) acknowledged
        before the others are written; the sites themselves in parallel, so one slow gateway's first wave
        holds back only its own sites' second wave."""
        waves: dict[int, tuple[list[Setpoint], list[Setpoint]]] = {}
        for sp in setpoints:
            i = self._position[sp.unit_id]
            waves.setdefault(int(self.dfleet.unit_site[i]), ([], []))[0 if first[i] else 1].append(sp)

        async def site(safe_side: list[Setpoint], rest: list[Setpoint]) -> dict[str, str]:
            return await self._write(safe_side) | await self._write(rest)

        errors: dict[str, str] = {}
        for site_errors in await asyncio.gather(*(site(*w) for w in waves.values())):
            errors |= site_errors
        return errors

    async def _write(self, setpoints: list[Setpoint]) -> dict[str, str]:
        results = await asyncio.gather(*(self.adapters[sp.unit_id].write(sp) for sp in setpoints), return_exceptions=True)
        # acknowledged by now: a meter reading is known to see these setpoints only if it was taken after this
        # (stamping the tick's start instead let a reading taken while the writes queued pass for one that did)
        acked = self.clock.wall()
        errors: dict[str, str] = {}
        for sp, outcome in zip(setpoints, results):
            if isinstance(outcome, BaseException):
                errors[sp.unit_id] = str(outcome) or type(outcome).__name__
                self.metrics.adapter_errors.labels(sp.unit_id, "write").inc()
                if self._write_failing.get(sp.unit_id) is None:  # log the first failure of a run, not every tick
                    log.warning("setpoint not written unit=%s power_kw=%.3f error=%s", sp.unit_id, sp.power_kw, errors[sp.unit_id])
                self._write_failing[sp.unit_id] = errors[sp.unit_id]
            else:
                self.written_at[sp.unit_id] = acked
                if self._write_failing.pop(sp.unit_id, None) is not None:
                    log.info("setpoints written again unit=%s", sp.unit_id)
        return errors

    def _record(self, result: TickResult, schedule_id: int | None, wall: pd.Timestamp, now: pd.Timestamp, errors: dict[str, str]) -> None:
        interval = result.interval.to_pydatetime() if result.interval is not None else None
        schedule_id = schedule_id if result.interval is not None else None
        rows = []
        for i, uid in enumerate(result.unit_ids):
            p = result.power_kw[i]
            power = None if np.isnan(p) else float(p)
            key = (power, result.reasons[i], interval, schedule_id, errors.get(uid))
            last = self._recorded.get(uid)
            if last is not None and _same(last, key):
                continue
            self._recorded[uid] = key
            rows.append(
                {
                    "market_at": now.to_pydatetime(),
                    "wall_at": wall.to_pydatetime(),
                    "unit_id": uid,
                    "power_kw": power,
                    "scheduled_kw": float(result.scheduled_kw[i]),
                    "interval_start": interval,
                    "schedule_id": schedule_id,
                    "reason": result.reasons[i][:256],
                    "error": errors[uid][:256] if uid in errors else None,
                }
            )
        if rows:
            self.store.submit(self.store.insert, tables.commands, rows)

    def _audit(self, now: pd.Timestamp, wall: pd.Timestamp, overrides) -> None:
        events = self.activity.update(now, overrides)
        if events:
            for event, o in events:
                log.info("override %s kind=%s unit=%s site=%s value=%s author=%s reason=%s", event, o.kind.value, o.unit_id, o.site_id, o.value, o.author, o.reason)
            self.store.submit(self.store.insert, tables.override_audit, [audit_row(event, self.watcher.source, wall, now, o) for event, o in events])

    def _sample(self, now: pd.Timestamp, telemetry: Mapping[str, Telemetry | None], result: TickResult) -> None:
        """Credit the energy that flowed since the last tick; add this tick's measured power and SoC (units in
        dispatch only) to the telemetry bucket."""
        power = np.array([_num(t.power_kw) if t is not None else np.nan for t in telemetry.values()])
        soc = np.array([_num(t.soc) if t is not None else np.nan for t in telemetry.values()])
        fresh = np.array([t is not None and (now - pd.Timestamp(t.timestamp)).total_seconds() <= self.settings.stale_after_s for t in telemetry.values()])
        self._energy.add(now, flowing_power(power, fresh, result.power_kw), result.dispatched())
        start = now.floor(self.downsample)
        if self._bucket.start != start:
            self._flush_bucket(now)
            self._bucket = TelemetryBucket.empty(start, len(self.dfleet.unit_ids))
        commanded = ~np.isnan(result.power_kw)
        self._bucket.add(np.where(commanded, power, np.nan), np.where(commanded, soc, np.nan))
        self._measured = power

    def _flush_bucket(self, now: pd.Timestamp | None = None) -> None:
        """Store the telemetry bucket in progress and the energy of the buckets that closed by ``now``
        (every open one without ``now``: shutdown)."""
        b = self._bucket
        if b.start is not None and b.samples.any():
            self.store.submit(self.store.insert, tables.telemetry, bucket_rows(b.start, self.dfleet.unit_ids, b.power_sum, b.soc_first, b.soc_last, b.samples))
        self._bucket = TelemetryBucket.empty(None, len(self.dfleet.unit_ids))
        energy = self._energy.closed(now) if now is not None else self._energy.drain()
        if energy:
            self.store.submit(self.store.insert, tables.energy, energy)

    def _observe(self, result: TickResult, duration: float, written: int) -> None:
        m = self.metrics
        m.ticks.inc()
        m.tick_duration.observe(duration)
        if duration > self.tick_s:  # counted as an overrun when the next tick finds its period gone
            log.warning("control tick overrun duration_s=%.3f period_s=%.3f", duration, self.tick_s)
        m.setpoints_written.inc(written)
        available = result.dispatched()
        m.units_in_dispatch.set(int(available.sum()))
        self._last_kw = np.where(np.isnan(result.power_kw), self._last_kw, result.power_kw)
        deviation = self._measured - self._last_kw
        for i, uid in enumerate(result.unit_ids):
            self._available[i].set(1.0 if available[i] else 0.0)
            if not np.isnan(deviation[i]):
                self._deviation[i].set(float(deviation[i]))
            failures, before = self.state.health(uid).consecutive_failures, self._failures[uid]
            if failures != before:  # new failures since the last tick (a reset to 0 in between counts from 0)
                m.adapter_errors.labels(uid, "read").inc(failures - before if failures > before else failures)
                self._failures[uid] = failures
        if self.schedule.created_at is not None:
            m.schedule_age.set((self.clock.wall() - self.schedule.created_at).total_seconds())
        out = frozenset(uid for uid, a in zip(result.unit_ids, available) if not a)
        if self.out is not None and out != self.out:
            came, went = sorted(self.out - out), sorted(out - self.out)
            log.info("units out of dispatch changed out=%s back=%s", ",".join(went) or "-", ",".join(came) or "-")
            self.on_availability(out)
        self.out = out

    def tick_age_s(self) -> float | None:
        """Seconds since the last tick finished, by the monotonic clock: what a stall shows as, whatever the
        scheduler did with the ticks it could not run (APScheduler coalesces them silently)."""
        return None if self.completed_at is None else time.monotonic() - self.completed_at

    def _count_missed(self) -> None:
        """Every tick period in which no tick started is an overrun: one skipped because the previous tick
        still ran, one the scheduler coalesced after a stall, one lost while the event loop was blocked."""
        now = time.monotonic()
        if self._first_started is None:
            self._first_started = now
        slot = round((now - self._first_started) / self.tick_s)  # from the first tick: jitter must reach half a period
        if self._slot is not None and slot - self._slot > 1:
            self.metrics.tick_overruns.inc(slot - self._slot - 1)
        self._slot = slot

    def _completed(self) -> None:
        now = time.monotonic()
        if self.completed_at is not None:
            gap = now - self.completed_at
            self.longest_gap_s = max(self.longest_gap_s, gap)
            if gap > STALL_PERIODS * self.tick_s:
                self.metrics.tick_stalls.inc()
                log.warning("control tick stalled gap_s=%.3f period_s=%.3f", gap, self.tick_s)
        self.completed_at = now

    def _track_interval(self, now: pd.Timestamp) -> None:
        current = now.floor(self.interval)
        previous, self._interval = self._interval, current
        if previous is not None and current > previous:
            self._flush_bucket(now)  # the closed interval's last bucket, before it is settled
            if self.site_loop is not None:
                self.site_loop.flush_closed(now)  # and its meters' last buckets
            self.on_interval_closed(previous)


def _num(value: float | None) -> float:
    return np.nan if value is None else float(value)


def _same(a: tuple, b: tuple) -> bool:
    (pa, *ra), (pb, *rb) = a, b
    if ra != rb or (pa is None) != (pb is None):
        return False
    return pa is None or abs(pa - pb) <= DEADBAND_KW
