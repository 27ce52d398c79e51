"""The daemon process: one asyncio loop running adapters, the control tick, re-optimization, API and storage.

Start-up: open the database, restore the last schedule, connect the devices,
start polling, the solver worker, the API and the scheduler jobs; settle any
interval a previous run left unsettled; tell systemd READY=1. Jobs (APScheduler
``AsyncIOScheduler``, wall time, aligned to the market intervals through the clock):

- control tick every ``tick_s`` (``control.ControlLoop.tick``), the watchdog fed from it;
- re-optimization every ``reoptimize_every_min`` of market time, before each
  day-ahead gate closure, and on events (overrides changed, a unit out or back);
  solves are coalesced, never run two at a time, and never block the tick;
- settlement when the tick sees an interval close.

SIGTERM/SIGINT: stop the jobs, wait for a running tick, command 0 W to every
unit that answers (the others revert by their own timers), flush telemetry,
close devices and the database.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from adapters.fleet import DeviceFleet
from adapters.meter import MeterPoller
from adapters.poller import FleetPoller
from vpp.config import VppConfig, load_config, to_utc
from vpp.daemon import api, orphans
from vpp.daemon.clock import Clock, market_clock
from vpp.daemon.config import DaemonModel
from vpp.daemon.control import ControlLoop, ScheduleInForce
from vpp.daemon.market_data import MarketDataIntake, Outcome
from vpp.daemon.metrics import Metrics
from vpp.daemon.notify import notify, watchdog_period_s
from vpp.daemon.plant_link import PlantLink
from vpp.daemon.reoptimize import (
    Reoptimizer,
    committed_bids,
    initial_soc,
    next_gate_closure,
    outage_overrides,
    solve,
)
from vpp.daemon.service import run_service
from vpp.daemon.settle import Settler
from vpp.daemon.site_loop import SiteLoop
from vpp.daemon.stall import StallWatch
from vpp.daemon.store import Store, override_audit
from vpp.daemon.watch import FileVersion, OverridesWatcher
from vpp.db import open_database
from vpp.dispatch import DispatchFleet, DispatchSettings
from vpp.errors import InputError, InputErrors
from vpp.fleet_state import FleetState
from vpp.telemetry import UnitState
from vpp.timeseries import profile_on

log = logging.getLogger(__name__)

STALL_TICKS = 3  # no tick finished for this many periods (+1 s): unhealthy, and the stall watch says so
CONFIG_CHECK_S = 2.0  # how often the config file is checked for edits (a stat; parsed only when it changed)


class Daemon:
    def __init__(self, cfg: VppConfig, *, clock: Clock | None = None, solve_fn=solve) -> None:
        d = self.settings = cfg.daemon or DaemonModel()
        self.cfg = cfg
        where = str(cfg.path)
        self.interval = cfg.interval
        self.downsample = pd.Timedelta(seconds=d.telemetry_downsample_s)
        if self.interval % self.downsample != pd.Timedelta(0):
            raise InputError(where, "daemon.telemetry_downsample_s", d.telemetry_downsample_s, f"a divisor of the market interval ({self.interval.total_seconds():g} s)")
        self.horizon = pd.Timedelta(hours=d.horizon_h) if d.horizon_h is not None else cfg.horizon
        self.reopt_every = pd.Timedelta(minutes=d.reoptimize_every_min) if d.reoptimize_every_min is not None else self.interval
        self.token = d.api.resolve_token(cfg.path.parent, where)
        self.metrics = Metrics()
        orphans.sweep(cfg.path)
        orphans.mark_children(cfg.path)
        self.store = Store(open_database(d.database_target(cfg.path)))
        self.clock = clock or market_clock(d.clock.speed, to_utc(d.clock.sim_start, cfg.timezone) if d.clock.sim_start else None, d.clock.wall_start, self.store)
        self.settler = Settler(cfg, self.store, self.clock, self.metrics.settled_intervals.inc)
        self.state = FleetState(u.id for u in cfg.units)
        self.devices = DeviceFleet(cfg.units, cfg.mqtt, cfg.path.parent, self.state)
        self.poller = FleetPoller(list(self.devices.adapters.values()), self.state, d.poll_s)
        self.reoptimizer = Reoptimizer(cfg, d.solve_time_limit_s, solve_fn)
        # Market data pushed in (daemon.market_data): the plan and settlement see the config's series overlaid with it.
        self.market_data = MarketDataIntake(cfg, d.market_data, self.store, self.clock, self.metrics.registry) if d.market_data is not None else None
        if self.market_data is not None:
            self.market_data.on_change = self._market_data_arrived
            self.settler.cfg = self.market_data.settlement_config(cfg)
        self._config_version = FileVersion(cfg.path)
        self.watcher = OverridesWatcher(cfg.overrides_path, cfg.fleet, cfg.market, cfg.timezone, cfg.overrides, self._audit_rows, self._clock_pair)
        self.schedule = ScheduleInForce()
        # Site meters (sites[].meter): the site control loop closes on them. None configured: as before.
        self.site_loop = SiteLoop(DispatchFleet.of(cfg.fleet, cfg.market), cfg.meters, self.state, self.clock, self.store, self.metrics.registry, cfg.timezone, self.downsample) if cfg.meters else None
        self.meter_poller = MeterPoller(cfg.meters, cfg.mqtt, cfg.path.parent, self.site_loop.on_reading) if self.site_loop is not None else None
        self.control = ControlLoop(
            dfleet=DispatchFleet.of(cfg.fleet, cfg.market),
            state=self.state,
            adapters=self.devices.adapters,
            schedule=self.schedule,
            watcher=self.watcher,
            clock=self.clock,
            store=self.store,
            metrics=self.metrics,
            settings=DispatchSettings(stale_after_s=d.stale_after_s, soc_feedback_gain=d.soc_feedback_gain),
            tick_s=d.tick_s,
            setpoint_valid_s=d.setpoint_valid_s,
            interval=self.interval,
            downsample=self.downsample,
            site_base=self._site_base,
            on_availability=lambda out: self._planning and self.request_reoptimization("units out of dispatch changed"),
            on_overrides=self.overrides_changed,
            on_interval_closed=lambda start: self.store.submit(self.settler.catch_up, self.clock.now()),
            site_loop=self.site_loop,
            extra_overrides=lambda: self.plant.overrides() if self.plant is not None else (),
        )
        self.stall_watch = StallWatch(self.control.tick_age_s, limit_s=STALL_TICKS * d.tick_s + 1.0)
        started = time.monotonic()
        self.metrics.tick_age.set_function(lambda: a if (a := self.control.tick_age_s()) is not None else time.monotonic() - started)
        self.stop_event = asyncio.Event()
        self._planning = False  # set with the start-up solve: availability seen before it is what that solve plans on
        self.last_solve: dict[str, Any] = {"outcome": None}
        self._tick_lock = asyncio.Lock()
        self._reopt_task: asyncio.Task | None = None
        self._pending: str | None = None
        self._tasks: list[asyncio.Task] = []
        self._devices_started = False
        self._scheduler: AsyncIOScheduler | None = None
        self._api: api.Server | None = None
        self._site_base_cache: tuple[pd.Timestamp, np.ndarray] | None = None
        # daemon.central: one site of a plant; the central's plans rule while valid (vpp.daemon.plant_link)
        self.plant = PlantLink(self, d.central) if d.central is not None else None
        self._restore()

    # ------------------------------------------------------------ life cycle

    async def run(self, *, install_signals: bool = True) -> None:
        await run_service(self, install_signals=install_signals)

    async def start(self) -> None:
        d = self.settings
        # Intervals closed before this moment hold no sample of this process: they can be settled now.
        # Later ones are settled by the tick that closes them, after it stored their last bucket.
        started_at = self.clock.now()
        sock = api.listen(d.api.host, d.api.port, str(self.cfg.path))
        self._devices_started = True
        await self.devices.start()
        self._tasks.append(asyncio.create_task(self.poller.run(), name="poller"))
        if self.site_loop is not None and self.meter_poller is not None:
            await asyncio.to_thread(self.site_loop.restore)
            await self.meter_poller.start()
            self._tasks.append(asyncio.create_task(self.site_loop.run(self.control, self._tick_lock), name="site-control"))
        self._api = api.server(api.build_app(self), d.api.host, d.api.port)
        if self.market_data is not None:
            await self.market_data.start()
        self._tasks.append(asyncio.create_task(self._api.serve(sockets=[sock]), name="api"))
        scheduler = self._scheduler = AsyncIOScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
        boundary = self.clock.to_wall(self.clock.now().floor(self.interval))
        scheduler.add_job(self._tick, IntervalTrigger(seconds=d.tick_s, start_date=boundary.to_pydatetime()), id="tick", misfire_grace_time=max(1, math.ceil(d.tick_s)))
        reopt_wall_s = self.clock.wall_seconds(self.reopt_every.total_seconds())
        # Half a tick after the interval starts: the tick that enters the interval runs without a solve's
        # bookkeeping beside it (the schedule in force already covers the new interval).
        reopt_start = boundary + pd.Timedelta(seconds=d.tick_s / 2)
        scheduler.add_job(self._periodic_reoptimization, IntervalTrigger(seconds=reopt_wall_s, start_date=reopt_start.to_pydatetime()), id="reoptimize", misfire_grace_time=None)
        scheduler.add_job(self._check_config, IntervalTrigger(seconds=CONFIG_CHECK_S), id="config", misfire_grace_time=None)
        scheduler.start()  # dispatch starts now, on the restored schedule if there is one
        self.stall_watch.start()
        await asyncio.to_thread(self.reoptimizer.start)  # the first worker imports the optimizer: not on the loop
        _freeze_startup_heap()
        self._arm_gate_closure()
        await self._first_look()
        self._planning = True
        self.request_reoptimization("start")
        if self.plant is not None:
            await self.plant.start()
        self.store.submit(self.settler.catch_up, started_at)
        notify("READY=1")
        watchdog_s = watchdog_period_s()
        if watchdog_s is not None and watchdog_s < d.tick_s:
            log.warning("systemd WatchdogSec/2 = %.1f s is shorter than tick_s %.1f s: raise WatchdogSec", watchdog_s, d.tick_s)
        log.info("daemon started name=%s units=%d adapters=%d tick_s=%g market_interval=%s clock_speed=%g api=%s:%d", self.cfg.name, len(self.cfg.units), len(self.devices.adapters), d.tick_s, self.interval, self.clock.speed, d.api.host, d.api.port)

    async def _first_look(self) -> None:
        """Wait (at most ``stale_after_s``) until every unit has been heard from and one tick has seen them,
        so the start-up solve plans with the units that are really there. Solving at once would plan every
        unit out, and their coming in a moment later would trigger a second solve."""
        deadline = time.monotonic() + self.settings.stale_after_s
        while time.monotonic() < deadline and not all(self._heard(u.id) for u in self.cfg.units):
            await asyncio.sleep(0.05)
        try:
            await asyncio.wait_for(self.control.ticked.wait(), max(deadline - time.monotonic(), 2 * self.settings.tick_s))
        except TimeoutError:
            pass

    def _heard(self, unit_id: str) -> bool:
        """The unit answered in order, or failed twice in a row (a dead unit must not hold up the first plan)."""
        t = self.state.telemetry(unit_id)
        return t is not None and (t.state is UnitState.OK or self.state.health(unit_id).consecutive_failures >= 2)

    async def shutdown(self) -> None:
        log.info("daemon stopping")
        running = self._scheduler is not None and self._scheduler.running
        if running:
            self._scheduler.pause()  # no new jobs; shutting down now would cancel a tick mid-write
        async with self._tick_lock:  # a tick in progress finishes first (and feeds the watchdog a last time)
            notify("STOPPING=1")
            if self._devices_started:
                written = await self.control.zero_all()
                log.info("shutdown: 0 W written to %d of %d units", written, len(self.devices.adapters))
        if running:
            self._scheduler.shutdown(wait=False)
        self.control.flush()
        if self.market_data is not None:
            await self.market_data.stop()
        if self.meter_poller is not None and self.site_loop is not None:
            await self.meter_poller.stop()
            self.site_loop.flush()
        if self._api is not None:
            self._api.should_exit = True
        if self._reopt_task is not None:
            self._reopt_task.cancel()
        for task in self._tasks:
            if task.get_name() != "api":
                task.cancel()
        await asyncio.gather(*self._tasks, *([self._reopt_task] if self._reopt_task else []), return_exceptions=True)
        self.reoptimizer.close()
        self.stall_watch.stop()
        if self.plant is not None:
            await self.plant.stop()
        if self._devices_started:
            await self.devices.stop()
        await asyncio.to_thread(self.store.close)
        log.info("daemon stopped")

    # ------------------------------------------------------------ jobs

    async def _tick(self) -> None:
        if self._tick_lock.locked():  # the previous tick still runs: this period is counted as an overrun by the next
            return
        async with self._tick_lock:
            try:
                await self.control.tick()
            except Exception:  # a bug in one tick must not end the daemon; the next tick tries again
                log.exception("control tick failed")

    async def _periodic_reoptimization(self) -> None:
        if self._planning:  # the start-up solve comes first
            self.request_reoptimization("periodic")

    async def _gate_closure(self) -> None:
        self.request_reoptimization("gate closure")
        self._arm_gate_closure()

    def _arm_gate_closure(self) -> None:
        lead = pd.Timedelta(minutes=self.settings.gate_lead_min)
        closes = next_gate_closure(self.cfg.market, self.cfg.timezone, self.clock.now() + lead, self.horizon)
        if closes is not None and self._scheduler is not None:
            at = self.clock.to_wall(closes - lead)
            self._scheduler.add_job(self._gate_closure, DateTrigger(at.to_pydatetime()), id="gate-closure", replace_existing=True, misfire_grace_time=None)
            log.info("next day-ahead gate closure=%s re-optimization at market time %s", closes.isoformat(), (closes - lead).isoformat())

    async def _check_config(self) -> None:
        """Adopt an edited config (new DR events, prices, products, site limits) and re-plan; changes to the
        units, their devices, the broker, the daemon block or the time grid need a restart."""
        if not self._config_version.changed():
            return
        try:
            cfg = await asyncio.to_thread(load_config, self.cfg.path)
        except (InputError, InputErrors) as err:
            for line in str(err).splitlines():
                log.error("config change rejected, the running config stays: %s", line)
            return
        fixed = ("units", "mqtt", "daemon", "interval", "timezone", "currency", "overrides_path", "meters")
        differs = [name for name in fixed if getattr(cfg, name) != getattr(self.cfg, name)]
        if differs:
            log.error("config change not applied: %s changed, which needs a restart (systemctl restart vpp-daemon)", ", ".join(differs))
            return
        new_events = sorted({e.id for e in cfg.market.dr_events} - {e.id for e in self.cfg.market.dr_events})
        self.cfg = self.settler.cfg = cfg
        self.control.dfleet = DispatchFleet.of(cfg.fleet, cfg.market)
        if self.site_loop is not None:
            self.site_loop.dfleet = self.control.dfleet
        self._site_base_cache = None
        self.watcher.retarget(cfg.fleet, cfg.market)
        self.reoptimizer.reconfigure(cfg)
        if self.market_data is not None:
            await asyncio.to_thread(self.market_data.retarget, cfg)
            self.settler.cfg = self.market_data.settlement_config(cfg)
        log.info("config change applied: new DR events %s", ", ".join(new_events) or "none")
        self.request_reoptimization(f"config changed (new DR events: {', '.join(new_events)})" if new_events else "config changed")

    # ------------------------------------------------------------ re-optimization

    def request_reoptimization(self, trigger: str) -> None:
        """Solve soon; requests during a solve collapse into one more solve after it (naming all of them).
        A gateway following its central's plan does not solve (``PlantLink.planning_locally``)."""
        if self.plant is not None and not self.plant.planning_locally():
            log.info("re-optimization trigger=%s skipped: mode %s (the central plans)", trigger, self.plant.mode)
            return
        if self._reopt_task is not None and not self._reopt_task.done():
            self._pending = trigger if self._pending is None or trigger in self._pending.split("; ") else f"{self._pending}; {trigger}"
            return
        self._reopt_task = asyncio.get_running_loop().create_task(self._reoptimize_until_settled(trigger))

    def overrides_changed(self) -> None:
        self.request_reoptimization("overrides changed")

    def _market_data_arrived(self, outcome: Outcome) -> None:
        """Settle on what arrived; re-plan when it changed an interval of the horizon."""
        assert self.market_data is not None and outcome.span is not None
        self.settler.cfg = self.market_data.settlement_config(self.cfg)
        start = self.clock.now().floor(self.interval)
        first, last = outcome.span
        if self._planning and first < start + self.horizon and last + self.interval > start:
            self.request_reoptimization(f"market data {outcome.source} via {outcome.via}")

    async def _reoptimize_until_settled(self, trigger: str | None) -> None:
        while trigger is not None:
            try:
                await self._reoptimize(trigger)
            except Exception:
                log.exception("re-optimization failed; the last schedule stays in force")
            trigger, self._pending = self._pending, None

    async def _reoptimize(self, trigger: str) -> None:
        now = self.clock.now()
        start = now.floor(self.interval)
        index = self.cfg.horizon_index(start, self.horizon)
        last = self.control.last
        soc_now: dict[str, float | None] = {}
        out_reasons: dict[str, str] = {}
        if last is not None:
            for i, uid in enumerate(last.result.unit_ids):
                if np.isnan(last.result.power_kw[i]):
                    out_reasons[uid] = last.result.reasons[i]
                else:
                    t = self.state.telemetry(uid)
                    soc_now[uid] = t.soc if t is not None else None
        overrides = self.watcher.current + outage_overrides(out_reasons, index, out_reasons)
        fixed = committed_bids(self.cfg.market, self.cfg.timezone, index, now, self.schedule.schedule)
        log.info("re-optimizing trigger=%s start=%s intervals=%d units_out=%d", trigger, start.isoformat(), len(index), len(out_reasons))
        if self.market_data is not None and (view := self.market_data.plan_config(self.cfg, start, start + self.horizon, now)) is not None:
            self.reoptimizer.adopt(view)  # the worker solves on delivered data, forecasts where none arrived
        outcome = await self.reoptimizer.solve(start, self.horizon, initial_soc(self.control.dfleet.unit_ids, soc_now), overrides, fixed)
        self.metrics.solve_duration.observe(outcome.duration_s)
        self.metrics.solves.labels(outcome.outcome).inc()
        self.last_solve = {"outcome": outcome.outcome, "trigger": trigger, "duration_s": outcome.duration_s, "error": outcome.error, "at": self.clock.wall().isoformat()}
        if outcome.schedule is None:
            kept = f"schedule id={self.schedule.id} stays in force" if self.schedule.schedule is not None else "no schedule: units idle at 0 W"
            log.warning("solve %s trigger=%s after %.2f s: %s; %s", outcome.outcome, trigger, outcome.duration_s, outcome.error, kept)
            return
        if self.plant is not None and not self.plant.planning_locally():
            log.info("solve trigger=%s discarded: a central plan came in force meanwhile (mode %s)", trigger, self.plant.mode)
            return
        created = self.clock.wall()
        schedule_id = await asyncio.wrap_future(self.store.submit(partial(self.store.save_schedule, outcome.schedule, created_at=created, market_at=now, trigger=trigger, points_until=start + max(self.reopt_every, self.interval))))
        held = self.schedule
        held.schedule, held.id, held.created_at, held.trigger, held.source = outcome.schedule, schedule_id, created, trigger, "solved"
        stats = outcome.schedule.stats
        log.info("schedule id=%d in force trigger=%s status=%s objective=%.2f solve_s=%.2f wall_s=%.2f violations=%d", schedule_id, trigger, stats.status, stats.objective, stats.solve_time_s, outcome.duration_s, len(outcome.schedule.violations))

    def solve_status(self) -> dict[str, Any]:
        return {"running": self._reopt_task is not None and not self._reopt_task.done(), "recycled_workers": self.reoptimizer.recycles, **self.last_solve}

    # ------------------------------------------------------------ helpers

    def _restore(self) -> None:
        stored = self.store.latest_schedule()
        if stored is None:
            return
        held = self.schedule
        held.schedule, held.id, held.created_at, held.trigger, held.source = stored.schedule, stored.id, stored.created_at, stored.trigger, "restored"
        log.info("restored schedule id=%d created_at=%s start=%s", stored.id, stored.created_at.isoformat(), stored.schedule.index[0].isoformat())

    def _site_base(self, now: pd.Timestamp) -> np.ndarray | None:
        """Each site's load − PV in the interval of ``now`` (from the config's series), cached per interval."""
        start = now.floor(self.interval)
        if self._site_base_cache is None or self._site_base_cache[0] != start:
            index = pd.date_range(start, periods=1, freq=self.interval)
            try:
                base = np.array([profile_on(s.load_kw, index, s.id)[0] - profile_on(s.pv_kw, index, s.id)[0] for s in self.cfg.fleet.sites])
            except InputError as err:
                log.warning("site load/PV unknown at %s, site limits assume 0 kW: %s", start.isoformat(), err)
                base = np.zeros(len(self.cfg.fleet.sites))
            self._site_base_cache = (start, base)
        if self.site_loop is not None:  # metered sites: the live base load while their meter is good
            return self.site_loop.dispatch_base(self._site_base_cache[1])
        return self._site_base_cache[1]

    def _audit_rows(self, rows: list[dict[str, Any]]) -> None:
        self.metrics.override_rejections.inc(sum(r["event"] == "rejected" for r in rows))
        self.store.submit(self.store.insert, override_audit, rows)

    def _clock_pair(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        wall = self.clock.wall()
        return wall, self.clock.to_sim(wall)


def _freeze_startup_heap() -> None:
    """What start-up built (modules, the config and fleet model, pandas' and pydantic's caches) lives as long
    as the process: move it out of the cyclic collector's sight (``gc.freeze``), so that a full collection
    scans only what the run itself allocated. Otherwise every full collection walks the whole heap while
    the event loop waits, and the control tick and the meter loop with it (decision 25)."""
    gc.collect()
    gc.freeze()
