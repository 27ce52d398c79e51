"""Commissioning check: step one battery by a known power and confirm the site's meter moves by as much.

A meter wired with a reversed CT, a wrong CT ratio or the wrong site's meter
makes the site control loop act on a lie; this finds it before the site goes
live. The step is a *charge* by default: it raises import and so can never make
a no-export site export. Sequence: the meter's mean over ``window_s`` (the
battery at 0 W), the battery commanded to the step (rewritten every second,
with a short revert timeout), wait ``settle_s``, the meter's mean again, the
battery back to 0 W. The expected move is the battery's *measured* change when
its telemetry has it (else the command); ``vpp.meter.judge_step`` says whether
sign and scale agree.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from adapters.fleet import DeviceFleet
from adapters.meter import MeterPoller
from vpp.config import VppConfig
from vpp.errors import AdapterError, InputError
from vpp.fleet_state import FleetState
from vpp.meter import MeterReading, StepVerdict, judge_step
from vpp.telemetry import Setpoint

REVERT_S = 5.0


@dataclass(frozen=True, slots=True)
class CheckReport:
    site_id: str
    unit_id: str
    commanded_kw: float
    battery_delta_kw: float | None  # measured by the battery's own telemetry
    meter_before_kw: float
    meter_after_kw: float
    verdict: StepVerdict


async def check_site(cfg: VppConfig, site_id: str, unit_id: str | None, step_kw: float, window_s: float = 1.0, settle_s: float = 2.0) -> CheckReport:
    where = str(cfg.path)
    if site_id not in cfg.meters:
        raise InputError(where, "--site", site_id, f"a site with a meter: block (metered: {', '.join(sorted(cfg.meters)) or 'none'})")
    units = [u for u in cfg.units if u.site_id == site_id and u.device is not None and (unit_id is None or u.id == unit_id)]
    if not units:
        raise InputError(where, "--unit", unit_id, f"a unit with a device: block at site {site_id}")
    unit = units[0]
    readings: list[MeterReading] = []
    state = FleetState([unit.id])
    devices = DeviceFleet([unit], cfg.mqtt, Path(cfg.path).parent, state)
    poller = MeterPoller({site_id: cfg.meters[site_id]}, cfg.mqtt, Path(cfg.path).parent, readings.append)
    adapter = devices.adapters[unit.id]
    async with devices, poller:
        before_battery = (await adapter.read()).power_kw
        await _hold(adapter, 0.0, window_s)
        before = _mean_since(readings, time.time() - window_s, site_id)
        await _hold(adapter, step_kw, settle_s)
        mark = time.time()
        await _hold(adapter, step_kw, window_s)
        after = _mean_since(readings, mark, site_id)
        after_battery = (await adapter.read()).power_kw
        await adapter.write(Setpoint(unit.id, 0.0, datetime.now(UTC), REVERT_S))
    battery_delta = after_battery - before_battery if after_battery is not None and before_battery is not None else None
    expected = battery_delta if battery_delta is not None else step_kw
    return CheckReport(site_id, unit.id, step_kw, battery_delta, before, after, judge_step(expected, after - before))


async def _hold(adapter, power_kw: float, seconds: float) -> None:
    """Command ``power_kw`` and renew it every second for ``seconds``."""
    end = time.monotonic() + seconds
    while True:
        await adapter.write(Setpoint(adapter.unit_id, power_kw, datetime.now(UTC), REVERT_S))
        left = end - time.monotonic()
        if left <= 0:
            return
        await asyncio.sleep(min(1.0, left))


def _mean_since(readings: list[MeterReading], since: float, site_id: str) -> float:
    values = [r.power_kw for r in readings if r.timestamp.timestamp() >= since and r.power_kw is not None]
    if not values:
        raise AdapterError(f"meter of site {site_id}: no reading in the last window (is it answering?)")
    return sum(values) / len(values)
