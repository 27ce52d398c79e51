"""The dispatcher core: one control tick from (schedule, telemetry, overrides, limits) to setpoints.

The daemon calls it every tick against real devices and the simulator every
step against simulated batteries — the same function, so a backtest exercises
the production safety logic. It is pure (no I/O, no clock of its own) and
vectorized over units, because 200 units must clear a tick in milliseconds.

Each step narrows what the next may do:

1. **Eligibility**: fresh, plausible telemetry (SoC known, state OK), no ``unit_out``
   override, no 0 derate. A unit that fails gets *no* command: its device-side revert
   timer brings it to 0 W, and we never act on numbers we do not trust.
   ``unit_out`` on a unit that still answers is commanded to 0 W explicitly.
2. **Target**: the schedule's power for the interval containing ``now`` plus SoC feedback
   (the planned SoC is linear within an interval; a gain × the deviation is corrected over
   one interval length), kept inside the band that leaves the scheduled reserve headroom.
   No schedule covering ``now`` → target 0 W.
3. **Force overrides** (unit or site) replace the target.
4. **Unit clamps**: rating × derate, the limits the device itself reports, and the power
   that keeps SoC inside its window (tightened by floor/ceiling overrides) for the
   ``step_s`` seconds until the setpoint can next change (``vpp.physics``).
5. **Site import/export limits**, then **fleet export/import caps**: the excess is taken off
   the units in proportion to the room each has left; forced units move only if the others
   cannot absorb it.

Steps 4-5 are the safety invariant — no returned power leaves them — and
tests/test_dispatch.py checks it on random inputs. When a force override
conflicts with a limit, the limit wins and the command's reason says so.
Sign: + discharge / export.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from vpp.fleet import Fleet, interval_length
from vpp.markets import Market
from vpp.overrides import Override, OverrideKind
from vpp.physics import soc_power_limits
from vpp.schedule import Schedule
from vpp.telemetry import Setpoint, Telemetry, UnitState

TOLERANCE_KW = 1e-9  # below this a clamp did not really change the target


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    stale_after_s: float = 10.0  # telemetry older than this takes the unit out of dispatch
    soc_feedback_gain: float = 0.5  # share of the SoC deviation from plan corrected over one interval
    # Margins for what a register cannot say exactly. A reported SoC may be off by its resolution (802 SoC is
    # in 0.1 % steps: 0.5 kWh of a 500 kWh unit, 180 kW over a 10 s setpoint), so the SoC clamp counts it
    # against the unit; a written setpoint is rounded to the device's power resolution, so each unit may be
    # off by half of it, and the site and fleet limits keep that much room per unit.
    soc_resolution: float = 0.001  # fraction; a device that reports a coarser one (Telemetry.soc_resolution) wins
    setpoint_resolution_kw: float = 0.1


@dataclass(frozen=True)
class DispatchFleet:
    """The fleet's static limits as arrays, built once, so a tick is numpy arithmetic only."""

    fleet: Fleet
    unit_ids: tuple[str, ...]
    site_ids: tuple[str, ...]
    unit_site: np.ndarray  # (U,) site position
    max_charge_kw: np.ndarray
    max_discharge_kw: np.ndarray
    energy_kwh: np.ndarray
    soc_min: np.ndarray
    soc_max: np.ndarray
    eta_charge: np.ndarray
    eta_discharge: np.ndarray
    self_discharge_per_h: np.ndarray
    import_limit_kw: np.ndarray  # (S,)
    export_limit_kw: np.ndarray  # (S,)
    up_products: dict[str, bool]  # reserve product -> whether it needs headroom above the base point (else below)

    @classmethod
    def of(cls, fleet: Fleet, market: Market | None = None) -> DispatchFleet:
        units = fleet.units
        site_ids = tuple(s.id for s in fleet.sites)
        pos = {s: i for i, s in enumerate(site_ids)}

        def col(name: str) -> np.ndarray:
            return np.array([float(getattr(u, name)) for u in units])

        return cls(
            fleet=fleet,
            unit_ids=tuple(u.id for u in units),
            site_ids=site_ids,
            unit_site=np.array([pos[u.site_id] for u in units], dtype=int),
            max_charge_kw=col("max_charge_kw"),
            max_discharge_kw=col("max_discharge_kw"),
            energy_kwh=col("energy_kwh"),
            soc_min=col("soc_min"),
            soc_max=col("soc_max"),
            eta_charge=col("eta_charge"),
            eta_discharge=col("eta_discharge"),
            self_discharge_per_h=col("self_discharge_per_h"),
            import_limit_kw=np.array([s.import_limit_kw for s in fleet.sites], dtype=float),
            export_limit_kw=np.array([s.export_limit_kw for s in fleet.sites], dtype=float),
            up_products={p.id: p.kind.is_up for p in market.products} if market else {},
        )


@dataclass(frozen=True)
class TickResult:
    """What one tick decided, per unit. ``power_kw`` is NaN where no command is sent."""

    at: datetime
    interval: pd.Timestamp | None  # the schedule interval in force; None = no schedule covers ``at``
    unit_ids: tuple[str, ...]
    power_kw: np.ndarray  # (U,) commanded, + discharge; NaN = unit out of dispatch, no command
    scheduled_kw: np.ndarray  # (U,) the schedule's power for the interval (0 without schedule)
    reasons: tuple[str, ...]  # why each command differs from the schedule ("" = it does not)
    in_dispatch: np.ndarray | None = None  # (U,) bool: eligible and not under unit_out (a unit_out unit is sent 0 W)
    lo_kw: np.ndarray | None = None  # (U,) the unit clamps of step 4 (charge side, ≤ 0): the site control loop stays inside them
    hi_kw: np.ndarray | None = None  # (U,) and the discharge side

    def dispatched(self) -> np.ndarray:
        return self.in_dispatch if self.in_dispatch is not None else ~np.isnan(self.power_kw)

    def setpoints(self, valid_s: float) -> list[Setpoint]:
        """The commands to write, each with the revert timeout the device falls back on."""
        return [
            Setpoint(uid, float(p), self.at, valid_s)
            for uid, p in zip(self.unit_ids, self.power_kw)
            if not np.isnan(p)
        ]


def dispatch(
    fleet: DispatchFleet,
    now: datetime,
    schedule: Schedule | None,
    telemetry: Mapping[str, Telemetry | None],
    overrides: Sequence[Override] = (),
    *,
    site_base_kw: np.ndarray | None = None,
    step_s: float,
    settings: DispatchSettings = DispatchSettings(),
) -> TickResult:
    """One control tick. ``site_base_kw`` (S,) is each site's load − PV now (0 if not given);
    ``step_s`` is how long the setpoints may stay in force (tick length or revert timeout, the longer)."""
    n = len(fleet.unit_ids)
    now_ts = pd.Timestamp(now)
    step_h = step_s / 3600.0
    reasons = [[] for _ in range(n)]
    active = [o for o in overrides if pd.Timestamp(o.start) <= now_ts < pd.Timestamp(o.end)]

    soc, soc_res, eligible, reported_ch, reported_dis = _read_telemetry(fleet, now_ts, telemetry, settings, reasons)
    factor = _availability(fleet, now_ts)
    eligible &= factor > 0
    for i in np.flatnonzero(factor <= 0):
        reasons[i].append("derated to 0")

    interval, scheduled, target = _target(fleet, now_ts, schedule, soc, settings, active)
    unit_out = _unit_mask(fleet, active, OverrideKind.UNIT_OUT)
    forced, target = _forced(fleet, active, target, reasons)

    # Step 4: unit clamps.
    soc_lo, soc_hi = fleet.soc_min.copy(), fleet.soc_max.copy()
    for o in active:
        if o.kind in (OverrideKind.SOC_FLOOR, OverrideKind.SOC_CEILING) and o.unit_id in fleet.unit_ids:
            i = fleet.unit_ids.index(o.unit_id)
            if o.kind is OverrideKind.SOC_FLOOR:
                soc_lo[i] = max(soc_lo[i], float(o.value))
            else:
                soc_hi[i] = min(soc_hi[i], float(o.value))
    limits = {
        "energy_kwh": fleet.energy_kwh,
        "soc_min": soc_lo,
        "soc_max": soc_hi,
        "eta_charge": fleet.eta_charge,
        "eta_discharge": fleet.eta_discharge,
        "self_discharge_per_h": fleet.self_discharge_per_h,
        "dt_h": step_h,
    }
    known = np.nan_to_num(soc)
    soc_ch, _ = soc_power_limits(np.minimum(known + soc_res, 1.0), **limits)  # it may be that much fuller
    _, soc_dis = soc_power_limits(np.maximum(known - soc_res, 0.0), **limits)  # or emptier
    hi = np.minimum.reduce([fleet.max_discharge_kw * factor, reported_dis, soc_dis])
    lo = -np.minimum.reduce([fleet.max_charge_kw * factor, reported_ch, soc_ch])
    hi[~eligible | unit_out] = 0.0
    lo[~eligible | unit_out] = 0.0
    power = np.clip(target, lo, hi)
    for i in np.flatnonzero((np.abs(power - target) > TOLERANCE_KW) & eligible & ~unit_out):
        reasons[i].append("unit limit")

    # Step 5: site limits, then fleet caps.
    base = np.zeros(len(fleet.site_ids)) if site_base_kw is None else np.asarray(site_base_kw, dtype=float)
    margin = np.bincount(fleet.unit_site, np.where(eligible, settings.setpoint_resolution_kw / 2.0, 0.0), len(fleet.site_ids))
    power = _site_limits(fleet, power, lo, hi, forced, base, margin, reasons)
    power = np.clip(_fleet_caps(fleet, active, power, lo, hi, forced, base, margin.sum(), reasons), lo, hi)  # clip: rounding only

    power[~eligible] = np.nan
    for i in np.flatnonzero(unit_out & eligible):
        reasons[i].append("override unit_out")
    return TickResult(now, interval, fleet.unit_ids, power, scheduled, tuple("; ".join(dict.fromkeys(r)) for r in reasons), eligible & ~unit_out, lo, hi)


def write_first(fleet: DispatchFleet, power_kw: np.ndarray, last_kw: np.ndarray, site_base_kw: np.ndarray | None = None) -> np.ndarray:
    """(U,) bool: the setpoints to write (and see acknowledged) before the others, so that no site passes
    its limit while its units are written one after another. Where a site's new net flow is export, the
    units that decrease go first; where it is import, the ones that increase. ``last_kw`` NaN = 0 W."""
    new, last = np.nan_to_num(power_kw), np.nan_to_num(last_kw)
    base = np.zeros(len(fleet.site_ids)) if site_base_kw is None else np.asarray(site_base_kw, dtype=float)
    exporting = (np.bincount(fleet.unit_site, new, len(fleet.site_ids)) - base)[fleet.unit_site] >= 0
    return np.where(exporting, new <= last, new >= last)


def _read_telemetry(fleet: DispatchFleet, now: pd.Timestamp, telemetry: Mapping[str, Telemetry | None], settings: DispatchSettings, reasons: list[list[str]]):
    n = len(fleet.unit_ids)
    soc = np.full(n, np.nan)
    eligible = np.zeros(n, dtype=bool)
    reported_ch = np.full(n, np.inf)
    reported_dis = np.full(n, np.inf)
    soc_res = np.full(n, settings.soc_resolution)
    for i, uid in enumerate(fleet.unit_ids):
        t = telemetry.get(uid)
        if t is None:
            reasons[i].append("no telemetry")
            continue
        age_s = (now - pd.Timestamp(t.timestamp)).total_seconds()
        if age_s > settings.stale_after_s:
            reasons[i].append(f"telemetry stale ({age_s:.0f} s)")
        elif t.state is not UnitState.OK:
            reasons[i].append(f"state {t.state.value}")
        elif t.soc is None or not 0.0 <= t.soc <= 1.0:
            reasons[i].append("SoC missing or implausible")
        else:
            eligible[i] = True
            soc[i] = t.soc
            if t.soc_resolution is not None and t.soc_resolution > soc_res[i]:
                soc_res[i] = t.soc_resolution
            if t.max_charge_kw is not None:
                reported_ch[i] = max(t.max_charge_kw, 0.0)
            if t.max_discharge_kw is not None:
                reported_dis[i] = max(t.max_discharge_kw, 0.0)
    return soc, soc_res, eligible, reported_ch, reported_dis


def _availability(fleet: DispatchFleet, now: pd.Timestamp) -> np.ndarray:
    factor = np.ones(len(fleet.unit_ids))
    stamp = pd.DatetimeIndex([now])
    for i, u in enumerate(fleet.fleet.units):
        if u.derates:
            factor[i] = u.availability(stamp)[0]
    return factor


def _target(fleet: DispatchFleet, now: pd.Timestamp, schedule: Schedule | None, soc: np.ndarray, settings: DispatchSettings, active: list[Override]):
    """(interval in force, scheduled power, target with SoC feedback inside the reserve band).

    The SoC clamp downstream deliberately ignores the energy the held reserves are *expected* to
    deploy: the plan may charge a full unit because reg-up is expected to drain as much, but if the
    call does not come the cells would overfill. Safety wins; the backtest measures what it costs.
    """
    n = len(fleet.unit_ids)
    idle = (None, np.zeros(n), np.zeros(n))
    if schedule is None or len(schedule.index) == 0:
        return idle
    dt = interval_length(schedule.index)
    t = int(schedule.index.searchsorted(now, side="right")) - 1
    if t < 0 or now >= schedule.index[t] + dt:
        return idle
    row = {uid: k for k, uid in enumerate(schedule.unit_ids)}
    idx = np.array([row.get(uid, -1) for uid in fleet.unit_ids])
    known = idx >= 0
    take = np.where(known, idx, 0)
    scheduled = np.where(known, schedule.power_kw[take, t], 0.0)

    frac = (now - schedule.index[t]) / dt
    planned_kwh = schedule.soc_kwh[take, t] + frac * (schedule.soc_kwh[take, t + 1] - schedule.soc_kwh[take, t])
    dt_h = dt.total_seconds() / 3600.0
    error_kwh = np.where(known & ~np.isnan(soc), np.nan_to_num(soc) * fleet.energy_kwh - planned_kwh, 0.0)
    target = scheduled + settings.soc_feedback_gain * error_kwh / dt_h

    blocked = {o.product_id for o in active if o.kind is OverrideKind.BLOCK_PRODUCT}
    up, down = np.zeros(n), np.zeros(n)
    for pid, alloc in schedule.reserve_kw.items():
        if pid in blocked or pid not in fleet.up_products:
            continue
        held = np.where(known, alloc[take, t], 0.0)
        if fleet.up_products[pid]:
            up += held
        else:
            down += held
    band_hi = np.maximum(fleet.max_discharge_kw - up, scheduled)
    band_lo = np.minimum(-fleet.max_charge_kw + down, scheduled)
    return schedule.index[t], scheduled, np.clip(target, band_lo, band_hi)


def _unit_mask(fleet: DispatchFleet, active: list[Override], kind: OverrideKind) -> np.ndarray:
    ids = {o.unit_id for o in active if o.kind is kind}
    return np.array([uid in ids for uid in fleet.unit_ids], dtype=bool)


def _forced(fleet: DispatchFleet, active: list[Override], target: np.ndarray, reasons: list[list[str]]):
    """Apply force_power overrides; a site's forced power is shared in proportion to the units' ratings."""
    target = target.copy()
    forced = np.zeros(len(target), dtype=bool)
    for o in active:
        if o.kind is not OverrideKind.FORCE_POWER:
            continue
        value = float(o.value)
        if o.unit_id is not None and o.unit_id in fleet.unit_ids:
            i = fleet.unit_ids.index(o.unit_id)
            target[i], forced[i] = value, True
            reasons[i].append("override force_power")
        elif o.site_id is not None and o.site_id in fleet.site_ids:
            members = fleet.unit_site == fleet.site_ids.index(o.site_id)
            rating = (fleet.max_discharge_kw if value >= 0 else fleet.max_charge_kw)[members]
            target[members] = value * rating / rating.sum() if rating.sum() > 0 else 0.0
            forced[members] = True
            for i in np.flatnonzero(members):
                reasons[i].append("override site force_power")
    return forced, target


def _site_limits(fleet, power, lo, hi, forced, base, margin, reasons):
    """Keep each site's net export (battery sum − base) within [−import, export], less ``margin`` for the
    setpoints' rounding; the margin never asks more of the batteries than idling (which rounds exactly)."""
    n_sites = len(fleet.site_ids)
    net = np.bincount(fleet.unit_site, power, n_sites) - base
    export_kw = np.maximum(fleet.export_limit_kw - margin, np.minimum(fleet.export_limit_kw, -base))
    import_kw = np.maximum(fleet.import_limit_kw - margin, np.minimum(fleet.import_limit_kw, base))
    # a window narrower than its two margins (neither import nor export allowed: a single point) cannot keep
    # both: its middle, so that the margin on one side never pushes the site over the other limit
    narrow = export_kw < -import_kw
    with np.errstate(invalid="ignore"):  # inf − inf where a site has neither limit: not narrow, unused
        middle = (fleet.export_limit_kw - fleet.import_limit_kw) / 2.0
    export_kw, import_kw = np.where(narrow, middle, export_kw), np.where(narrow, -middle, import_kw)
    over = np.maximum(net - export_kw, 0.0)
    under = np.maximum(-import_kw - net, 0.0)
    before = power.copy()
    power = shift_toward(power, lo, fleet.unit_site, over, forced, down=True)
    power = shift_toward(power, hi, fleet.unit_site, under, forced, down=False)
    for i in np.flatnonzero(np.abs(power - before) > TOLERANCE_KW):
        reasons[i].append("site limit")
    return power


def _fleet_caps(fleet, active, power, lo, hi, forced, base, margin, reasons):
    """Fleet export cap: the sum of the sites' exports; import cap likewise (as the optimizer models them)."""
    n_sites = len(fleet.site_ids)
    before = power.copy()
    for kind, sign, bound in ((OverrideKind.FLEET_EXPORT_CAP, 1.0, lo), (OverrideKind.FLEET_IMPORT_CAP, -1.0, hi)):
        caps = [float(o.value) for o in active if o.kind is kind]
        if not caps:
            continue
        net = sign * (np.bincount(fleet.unit_site, power, n_sites) - base)  # > 0: flow in the capped direction
        idle = np.maximum(-sign * base, 0.0).sum()  # the capped flow with every battery at 0 W
        excess = np.maximum(net, 0.0).sum() - max(min(caps) - margin, min(min(caps), idle))
        if excess <= 0:
            continue
        room = np.abs(np.bincount(fleet.unit_site, power - bound, n_sites))
        reducible = np.minimum(np.maximum(net, 0.0), room)  # a site's flow cannot go below 0 by this
        share = reducible * min(1.0, excess / reducible.sum()) if reducible.sum() > 0 else reducible
        power = shift_toward(power, bound, fleet.unit_site, share, forced, down=sign > 0)
    for i in np.flatnonzero(np.abs(power - before) > TOLERANCE_KW):
        reasons[i].append("fleet cap")
    return power


def shift_toward(power, bound, group, need, forced, *, down: bool):
    """Move units toward ``bound`` so each group's sum changes by ``need`` (≥ 0) where it can,
    in proportion to each unit's room; unforced units first, forced ones only for what is left."""
    n_groups = len(need)
    for movable in (~forced, forced):
        room = np.where(movable, np.abs(power - bound), 0.0)
        room_sum = np.bincount(group, room, n_groups)
        take = np.divide(np.minimum(need, room_sum), room_sum, out=np.zeros(n_groups), where=room_sum > 0)
        step = room * take[group]
        power = power - step if down else power + step
        need = need - np.bincount(group, step, n_groups)
    return power
