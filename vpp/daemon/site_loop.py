"""The site control loop on the gateway: grid meters in, the site law applied, changed setpoints out.

Every meter cycle (the fastest meter's ``poll_s``, at most 1 s), top to bottom:
meters judged (fresh, plausible) → base load measured → ``vpp.site_control``
bounds and fit, on the last tick's dispatch result (the plan's setpoints after
unit and configured-site clamps) → the setpoints that moved written, safe side
first → cuts recorded with their reason. The control tick runs the same law
on its own result before it writes (``apply``), so a tick never writes what
the loop would take back.

The battery power the base load is measured with is, per unit, the measured
power when that reading is newer than the unit's last write, else the power
last written (the device had its new command before its telemetry could show
it). A meter reading older than the last write at its site is not acted on:
it shows the batteries before that write, and would make the loop undo it.
Sites without a meter are left to the tick (configured series), as before.

Sub-meters on a site's load and PV feeders (``meter.sub_meters``) are read,
judged and stored like the grid meter (under ``<site>/<id>``). Where the
site's sub-meters are good, their load − PV is checked against the grid
meter's base load (an alarm when they disagree by more than ``agreement_kw``
for longer than the sub-meters' ``stale_after_s``: a CT on the wrong phase, a
feeder nobody metered), and while the grid meter is not trusted it is the base
the tick dispatches against instead of the configured series. It never
loosens the fail-safe: a no-export site with a bad grid meter still stops
discharging (the grid meter is what the utility measures).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import pandas as pd
from prometheus_client import Counter, Gauge, Histogram

from vpp.daemon.clock import Clock
from vpp.daemon.meter_store import demand_windows, meter_readings, month_peaks
from vpp.dispatch import TOLERANCE_KW, DispatchFleet, TickResult
from vpp.fleet import Site
from vpp.fleet_state import FleetState
from vpp.meter import DemandWindow, MeterCheck, MeterReading, MeterVerdict, connection_rating_kw, staleness, sub_meter_key
from vpp.meter_config import MeterModel, SubMeterModel
from vpp.schedule import Schedule
from vpp.site_control import CUT_REASONS, NONE, base_load_kw, demand_import_cap_kw, fit_to_site, site_sum_bounds

log = logging.getLogger(__name__)

MAX_CYCLE_S = 1.0
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
BREACH_TOLERANCE_KW = 0.5  # a window average this close to its target is held (integration and rounding)


@dataclass
class MeterBucket:
    start: pd.Timestamp | None = None
    power_sum: float = 0.0
    samples: int = 0
    import_kwh: float | None = None
    export_kwh: float | None = None


@dataclass
class SiteMeter:
    """One metered site: its meter, its checks, what it last said, its demand window."""

    index: int  # position in the fleet's sites
    site: Site
    meter: MeterModel
    check: MeterCheck
    window: DemandWindow
    reading: MeterReading | None = None
    verdict: MeterVerdict = field(default_factory=lambda: MeterVerdict(False, "no reading yet"))  # what the loop acts on
    accepted: MeterVerdict = field(default_factory=lambda: MeterVerdict(True))  # the plausibility of the last reading received
    alarm: str | None = "no reading yet"
    month_peak_kw: float = 0.0
    breaches: int = 0
    bucket: MeterBucket = field(default_factory=MeterBucket)
    closed_before: pd.Timestamp | None = None  # buckets before this are stored: a late reading is not added to them
    subs: dict[str, SubMeter] = field(default_factory=dict)  # by role: load, pv
    sub_disagreement_kw: float | None = None  # grid base − sub-meters' load − PV, when both were good
    disagree_since: datetime | None = None
    sub_alarm: str | None = None

    @property
    def key(self) -> str:
        return self.site.id


@dataclass
class SubMeter:
    """A meter on one of a site's feeders (load or PV); + = out of the feeder towards the grid, as the grid meter."""

    key: str  # <site>/<id>
    model: SubMeterModel
    check: MeterCheck
    reading: MeterReading | None = None
    accepted: MeterVerdict = field(default_factory=lambda: MeterVerdict(True))
    bucket: MeterBucket = field(default_factory=MeterBucket)
    closed_before: pd.Timestamp | None = None

    def verdict(self, wall: datetime) -> MeterVerdict:
        fresh = staleness(self.reading, wall, self.model.stale_after_s)
        return fresh if not fresh.ok else self.accepted if not self.accepted.ok else self.check.verdict(wall)

    def kw(self) -> float:
        """What the feeder carries, kW: the load consumed, or the PV generated."""
        assert self.reading is not None and self.reading.power_kw is not None
        return -self.reading.power_kw if self.model.role == "load" else self.reading.power_kw


class SiteLoopMetrics:
    def __init__(self, registry) -> None:
        r = registry
        self.meter_ok = Gauge("vpp_meter_ok", "1 if the site's grid meter is fresh and plausible", ["site"], registry=r)
        self.meter_power = Gauge("vpp_meter_power_kw", "Grid meter power, + export", ["site"], registry=r)
        self.cuts = Counter("vpp_site_cuts_total", "Meter cycles in which the site control loop cut the plan, by reason", ["site", "reason"], registry=r)
        self.breaches = Counter("vpp_demand_breaches_total", "Demand windows whose average import ended above the target", ["site"], registry=r)
        self.cycle = Histogram("vpp_site_cycle_seconds", "Site control cycle: meters to setpoints written", buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("vpp_meter_to_setpoint_seconds", "Age of the meter reading when the setpoints it caused were written", buckets=LATENCY_BUCKETS, registry=r)
        self.sub_disagreement = Gauge("vpp_sub_meter_disagreement_kw", "Grid meter base load minus the sub-meters' load - PV", ["site"], registry=r)


class SiteLoop:
    def __init__(self, dfleet: DispatchFleet, meters: Mapping[str, MeterModel], state: FleetState, clock: Clock, store, metrics_registry, timezone: str, downsample: pd.Timedelta) -> None:
        self.dfleet, self.state, self.clock, self.store = dfleet, state, clock, store
        self.timezone, self.downsample = timezone, downsample
        self.metrics = SiteLoopMetrics(metrics_registry)
        sites = {s.id: (i, s) for i, s in enumerate(dfleet.fleet.sites)}
        self.sites: dict[str, SiteMeter] = {}
        for site_id, meter in meters.items():
            i, site = sites[site_id]
            members = dfleet.unit_site == i
            battery_kw = float(np.maximum(dfleet.max_charge_kw[members], dfleet.max_discharge_kw[members]).sum())
            rating = connection_rating_kw(meter.rating_kw, site.import_limit_kw, site.export_limit_kw, battery_kw)
            sm = self.sites[site_id] = SiteMeter(i, site, meter, MeterCheck(rating, meter.frozen_after_s), DemandWindow(meter.demand_window_min * 60.0), month_peak_kw=site.demand_peak_so_far_kw)
            sm.subs = {sub.role: SubMeter(sub_meter_key(site_id, sub.id), sub, MeterCheck(rating, sub.frozen_after_s)) for sub in meter.sub_meters}
        self.subs: dict[str, SubMeter] = {sub.key: sub for sm in self.sites.values() for sub in sm.subs.values()}
        n = len(dfleet.site_ids)
        self.metered = np.array([sid in self.sites for sid in dfleet.site_ids])
        self.export_margin = np.array([self.sites[s].meter.export_margin_kw if s in self.sites else 0.0 for s in dfleet.site_ids])
        self.import_margin = np.array([self.sites[s].meter.import_margin_kw if s in self.sites else 0.0 for s in dfleet.site_ids])
        self.cycle_s = min([MAX_CYCLE_S, *(m.meter.poll_s for m in self.sites.values())])
        self._base = np.full(n, np.nan)  # last measured base load per site (NaN: none yet)
        self._sub_base = np.full(n, np.nan)  # the sub-meters' load − PV where the grid meter is not trusted
        self.plan: TickResult | None = None  # the last tick's dispatch result, before this loop's law
        self.schedule: Schedule | None = None
        self.cycles = 0
        self.durations_s: list[float] = []  # of the last cycles (the bench reads them)
        self.latencies_s: list[float] = []
        self.decide_s: list[float] = []  # of which: meters judged and the law applied (no waiting for devices)

    def restore(self) -> None:
        """The month's peak so far survives a restart: it is the largest window stored this month."""
        peaks = month_peaks(self.store.engine, self._month_start(self.clock.now()))
        for site_id, peak in peaks.items():
            if site_id in self.sites:
                self.sites[site_id].month_peak_kw = max(self.sites[site_id].month_peak_kw, peak)
                log.info("demand month peak restored site=%s peak_kw=%.1f", site_id, peak)

    # ------------------------------------------------------------ meter input

    def on_reading(self, reading: MeterReading) -> None:
        sub = self.subs.get(reading.site_id)
        if sub is not None:
            if sub.reading is None or reading.timestamp > sub.reading.timestamp:
                sub.accepted = sub.check.accept(reading)
                if sub.accepted.ok:
                    sub.reading = reading
                    self._bucket(sub, self.clock.to_sim(pd.Timestamp(reading.timestamp)), reading)
            return
        sm = self.sites.get(reading.site_id)
        if sm is None or (sm.reading is not None and reading.timestamp <= sm.reading.timestamp):
            return
        sm.accepted = verdict = sm.check.accept(reading)
        if not verdict.ok:
            self._judge(sm, verdict)
            return
        sm.reading = reading
        self.metrics.meter_power.labels(reading.site_id).set(reading.power_kw)
        market = self.clock.to_sim(pd.Timestamp(reading.timestamp))
        closed = sm.window.add(market.timestamp(), reading.power_kw)
        if closed is not None:
            self._window_closed(sm, *closed)
        self._bucket(sm, market, reading)

    def _window_closed(self, sm: SiteMeter, start_s: float, average_kw: float) -> None:
        target = self.demand_target_kw(sm)
        breach = math.isfinite(target) and average_kw > target + BREACH_TOLERANCE_KW
        start = pd.Timestamp(start_s, unit="s", tz="UTC")
        if breach:
            sm.breaches += 1
            self.metrics.breaches.labels(sm.site.id).inc()
            log.warning("demand window breached site=%s window=%s average_kw=%.1f target_kw=%.1f (the batteries could not cover the load)", sm.site.id, start.isoformat(), average_kw, target)
        if start >= self._month_start(self.clock.now()):
            sm.month_peak_kw = max(sm.month_peak_kw, average_kw)
        row = {"window_start": start.to_pydatetime(), "site_id": sm.site.id, "average_kw": average_kw, "target_kw": target if math.isfinite(target) else None, "breach": breach}
        self.store.submit(self.store.insert, demand_windows, [row])

    def _bucket(self, sm: SiteMeter | SubMeter, market: pd.Timestamp, reading: MeterReading) -> None:
        start = market.floor(self.downsample)
        if sm.closed_before is not None and start < sm.closed_before:
            return  # its bucket is stored (and perhaps settled): a bill must not change after the fact
        b = sm.bucket
        if b.start is not None and b.start != start:
            self._flush(sm)
            sm.closed_before = start
            b = sm.bucket
        b.start = start
        b.power_sum += reading.power_kw or 0.0
        b.samples += 1
        b.import_kwh = reading.import_kwh if reading.import_kwh is not None else b.import_kwh
        b.export_kwh = reading.export_kwh if reading.export_kwh is not None else b.export_kwh

    def _flush(self, sm: SiteMeter | SubMeter) -> None:
        b = sm.bucket
        if b.start is not None and b.samples:
            row = {"bucket_start": b.start.to_pydatetime(), "site_id": sm.key, "power_kw_mean": b.power_sum / b.samples, "import_kwh": b.import_kwh, "export_kwh": b.export_kwh, "samples": b.samples}
            self.store.submit(self.store.insert, meter_readings, [row])
        sm.bucket = MeterBucket()

    def flush(self) -> None:
        for sm in [*self.sites.values(), *self.subs.values()]:
            self._flush(sm)

    def flush_closed(self, now: pd.Timestamp) -> None:
        """Store the meter buckets that ended by ``now`` (market time): the tick calls this when an interval
        closes, before it is settled, so settlement never waits for the next meter reading."""
        current = now.floor(self.downsample)
        for sm in [*self.sites.values(), *self.subs.values()]:
            if sm.bucket.start is not None and sm.bucket.start < current:
                self._flush(sm)
            sm.closed_before = current if sm.closed_before is None else max(sm.closed_before, current)

    def _judge(self, sm: SiteMeter, verdict: MeterVerdict) -> None:
        """Raise or clear the site's meter alarm (one log line per change)."""
        sm.verdict = verdict
        alarm = None if verdict.ok else verdict.reason
        if (alarm is None) != (sm.alarm is None):  # log the change, not every cycle's new wording of the same alarm
            if alarm is None:
                log.info("meter alarm cleared site=%s: normal site control resumes", sm.site.id)
            else:
                failsafe = "discharge stopped (no export allowed)" if sm.site.export_limit_kw == 0 else f"site limits held against the {'sub-meters while they are good, else the ' if sm.subs else ''}configured load/PV"
                log.warning("meter alarm site=%s reason=%s: %s", sm.site.id, alarm, failsafe)
        sm.alarm = alarm
        self.metrics.meter_ok.labels(sm.site.id).set(0.0 if alarm else 1.0)

    def refresh(self, wall: datetime) -> None:
        """Stale, else implausible (the last reading received), else frozen (a matter of time), else good."""
        for sm in self.sites.values():
            fresh = staleness(sm.reading, wall, sm.meter.stale_after_s)
            self._judge(sm, fresh if not fresh.ok else sm.accepted if not sm.accepted.ok else sm.check.verdict(wall))

    # ------------------------------------------------------------ the law

    def demand_target_kw(self, sm: SiteMeter) -> float:
        """The cap on the window average: the operator's, else the plan's peak import; never below the
        month's peak so far (import up to it costs no more demand charge). inf: no demand charge to hold."""
        tariff = sm.site.tariff
        if sm.meter.demand_target_kw is None and (tariff is None or tariff.demand_charge_per_kw_month <= 0):
            return math.inf
        target = sm.meter.demand_target_kw
        if target is None:
            s = self.schedule
            if s is None or sm.site.id not in s.site_ids:
                return math.inf
            target = float(max(-s.site_net_kw[s.site_ids.index(sm.site.id)].min(), 0.0))
        return max(target, sm.month_peak_kw)

    def battery_in_effect_kw(self, written_at: Mapping[str, pd.Timestamp], last_kw: np.ndarray) -> np.ndarray:
        power = np.full(len(self.dfleet.unit_ids), np.nan)
        for i, uid in enumerate(self.dfleet.unit_ids):
            t = self.state.telemetry(uid)
            written = written_at.get(uid)
            if t is not None and t.power_kw is not None and (written is None or pd.Timestamp(t.timestamp) > written):
                power[i] = t.power_kw
            elif not np.isnan(last_kw[i]):
                power[i] = last_kw[i]
            elif t is not None and t.power_kw is not None:
                power[i] = t.power_kw
        return power

    def measured_base_kw(self, wall: pd.Timestamp, written_at: Mapping[str, pd.Timestamp], last_kw: np.ndarray) -> np.ndarray:
        """(S,) measured base load where the meter is good (NaN elsewhere); held while the newest reading is
        older than the last write at its site."""
        self.refresh(wall.to_pydatetime())
        battery = self.battery_in_effect_kw(written_at, last_kw)
        n = len(self.dfleet.site_ids)
        for sm in self.sites.values():
            sub_base = self._sub_base_kw(sm, wall.to_pydatetime())
            if not sm.verdict.ok or sm.reading is None:
                self._base[sm.index] = np.nan
                self._sub_base[sm.index] = np.nan if sub_base is None else sub_base
                continue
            self._sub_base[sm.index] = np.nan
            members = np.flatnonzero(self.dfleet.unit_site == sm.index)
            last_write = max((written_at[self.dfleet.unit_ids[i]] for i in members if self.dfleet.unit_ids[i] in written_at), default=None)
            if np.isnan(self._base[sm.index]) or last_write is None or pd.Timestamp(sm.reading.timestamp) > last_write:
                meter = np.zeros(n)
                meter[sm.index] = sm.reading.power_kw
                self._base[sm.index] = base_load_kw(meter, np.where(self.dfleet.unit_site == sm.index, battery, 0.0), self.dfleet.unit_site, n)[sm.index]
            self._cross_check(sm, sub_base, wall.to_pydatetime())
        return self._base.copy()

    def _sub_base_kw(self, sm: SiteMeter, wall: datetime) -> float | None:
        """The site's load − PV from its sub-meters, when they cover it (a load sub-meter, and a PV one where
        the site has PV) and every one is good; else None."""
        load, pv = sm.subs.get("load"), sm.subs.get("pv")
        if load is None or (pv is None and sm.site.pv_kw is not None):
            return None
        if not all(sub.verdict(wall).ok for sub in sm.subs.values()):
            return None
        return load.kw() - (pv.kw() if pv is not None else 0.0)

    def _cross_check(self, sm: SiteMeter, sub_base: float | None, wall: datetime) -> None:
        """Raise (or clear) the site's sub-meter alarm when grid and sub-meters disagree for long enough."""
        if sub_base is None or np.isnan(self._base[sm.index]):
            sm.sub_disagreement_kw, sm.disagree_since = None, None
            return
        d = sm.sub_disagreement_kw = float(self._base[sm.index] - sub_base)
        self.metrics.sub_disagreement.labels(sm.site.id).set(d)
        if abs(d) <= sm.meter.agreement_kw:
            sm.disagree_since = None
            if sm.sub_alarm is not None:
                log.info("sub-meter alarm cleared site=%s: sub-meters agree with the grid meter again", sm.site.id)
            sm.sub_alarm = None
            return
        sm.disagree_since = sm.disagree_since or wall
        patience_s = max(sub.model.stale_after_s for sub in sm.subs.values())
        if sm.sub_alarm is None and (wall - sm.disagree_since).total_seconds() >= patience_s:
            sm.sub_alarm = f"sub-meters' load - PV {sub_base:.1f} kW against the grid meter's base load {self._base[sm.index]:.1f} kW ({d:+.1f} kW, more than {sm.meter.agreement_kw:g} kW): check the sub-meters' CT, sign and phase"
            log.warning("sub-meter alarm site=%s: %s", sm.site.id, sm.sub_alarm)

    def dispatch_base(self, configured_kw: np.ndarray | None) -> np.ndarray | None:
        """The tick's site base: measured where a meter is good, the configured series elsewhere."""
        if not self.sites:
            return configured_kw
        configured = np.zeros(len(self.dfleet.site_ids)) if configured_kw is None else configured_kw
        return np.where(np.isnan(self._base), np.where(np.isnan(self._sub_base), configured, self._sub_base), self._base)

    def apply(self, result: TickResult, wall: pd.Timestamp, now: pd.Timestamp, written_at: Mapping[str, pd.Timestamp], last_kw: np.ndarray) -> TickResult:
        """The site law on a dispatch result (the plan's setpoints stay the target)."""
        if not self.sites or result.lo_kw is None or result.hi_kw is None:
            return result
        base = self.measured_base_kw(wall, written_at, last_kw)
        good = self.metered & ~np.isnan(base)
        n = len(self.dfleet.site_ids)
        demand = np.full(n, np.inf)
        t_s = now.timestamp()
        for sm in self.sites.values():
            target = self.demand_target_kw(sm)
            if math.isfinite(target) and sm.window.start_s is not None:
                demand[sm.index] = demand_import_cap_kw(np.array([target]), np.array([sm.window.energy_kwh + sm.window.last_import_kw * max(t_s - (sm.window.last_s or t_s), 0.0) / 3600.0]), sm.window.elapsed_s(t_s), sm.window.window_s)[0]
        sum_lo, sum_hi, kind = site_sum_bounds(np.nan_to_num(base), self.dfleet.export_limit_kw, self.dfleet.import_limit_kw, self.export_margin, self.import_margin, demand)
        sum_lo, sum_hi = np.where(good, sum_lo, -np.inf), np.where(good, sum_hi, np.inf)
        stop = self.metered & ~good & (self.dfleet.export_limit_kw == 0)
        commanded = ~np.isnan(result.power_kw)
        plan = np.nan_to_num(result.power_kw)
        power, cut = fit_to_site(plan, result.lo_kw, result.hi_kw, self.dfleet.unit_site, sum_lo, sum_hi, kind, stop)
        power = np.where(commanded, power, np.nan)
        moved = commanded & (np.abs(power - plan) > TOLERANCE_KW)
        reasons = list(result.reasons)
        for i in np.flatnonzero(moved):
            why = CUT_REASONS.get(int(cut[self.dfleet.unit_site[i]]))
            if why:
                reasons[i] = f"{reasons[i]}; {why}" if reasons[i] else why
        for s in np.flatnonzero(cut != NONE):
            self.metrics.cuts.labels(self.dfleet.site_ids[s], CUT_REASONS[int(cut[s])]).inc()
        return replace(result, power_kw=power, reasons=tuple(reasons))

    # ------------------------------------------------------------ the cycle

    async def run(self, control, lock: asyncio.Lock) -> None:
        """Every ``cycle_s``: re-apply the law to the last plan and write what moved (skipped while a tick writes)."""
        next_start = time.monotonic()
        while True:
            next_start += self.cycle_s
            if self.plan is not None and not lock.locked():
                async with lock:
                    try:
                        await self.cycle(control)
                    except Exception:  # a bug in one cycle must not end the loop; the tick still applies the law
                        log.exception("site control cycle failed")
            late = time.monotonic() - next_start
            if late > 0:
                next_start = time.monotonic()
            await asyncio.sleep(max(-late, 0.0))

    async def cycle(self, control) -> int:
        """One meter cycle; returns the number of setpoints written."""
        started = time.perf_counter()
        wall = control.clock.wall()
        now = control.clock.to_sim(wall)
        assert self.plan is not None
        result = self.apply(self.plan, wall, now, control.written_at, control.last_kw)
        self.decide_s = [*self.decide_s[-9999:], time.perf_counter() - started]
        written = await control.rewrite(result, wall, now, self.dispatch_base(None))
        duration = time.perf_counter() - started
        self.metrics.cycle.observe(duration)
        self.durations_s = [*self.durations_s[-9999:], duration]
        if written:
            done = pd.Timestamp.now(tz="UTC")
            for sm in self.sites.values():
                if sm.reading is not None:
                    age = (done - pd.Timestamp(sm.reading.timestamp)).total_seconds()
                    self.metrics.latency.observe(age)
                    self.latencies_s = [*self.latencies_s[-9999:], age]
        self.cycles += 1
        return written

    # ------------------------------------------------------------ status

    def status(self, wall: datetime) -> dict[str, dict]:
        now = self.clock.to_sim(pd.Timestamp(wall))
        out = {}
        for site_id, sm in self.sites.items():
            r = sm.reading
            target = self.demand_target_kw(sm)
            out[site_id] = {
                "ok": sm.alarm is None,
                "alarm": sm.alarm,
                "power_kw": r.power_kw if r is not None else None,
                "import_kwh": r.import_kwh if r is not None else None,
                "export_kwh": r.export_kwh if r is not None else None,
                "age_s": (wall - r.timestamp).total_seconds() if r is not None else None,
                "base_load_kw": None if np.isnan(self._base[sm.index]) else float(self._base[sm.index]),
                "demand": {"window_average_kw": sm.window.average_kw(now.timestamp()), "target_kw": target if math.isfinite(target) else None, "month_peak_kw": sm.month_peak_kw, "breaches": sm.breaches},
            }
            if sm.subs:
                out[site_id]["sub_meters"] = {
                    "alarm": sm.sub_alarm,
                    "disagreement_kw": sm.sub_disagreement_kw,
                    "base_load_kw": None if np.isnan(self._sub_base[sm.index]) else float(self._sub_base[sm.index]),  # in use while the grid meter is not trusted
                    **{sub.key: {"role": sub.model.role, "ok": (v := sub.verdict(wall)).ok, "reason": v.reason or None, "kw": sub.kw() if sub.reading is not None else None} for sub in sm.subs.values()},
                }
        return out

    def _month_start(self, at: pd.Timestamp) -> pd.Timestamp:
        local = at.tz_convert(self.timezone)
        return local.normalize().replace(day=1).tz_convert("UTC")

