"""Sub-meters on a site's load feeder, end to end: the real daemon, a SunSpec 203 grid meter and a SunSpec
203 load sub-meter over real pymodbus, SQLite. The sub-meter's load is stored, agrees with the grid meter's
base load, a reversed sub-meter CT raises the site's sub-meter alarm, and while the grid meter is silent
the tick dispatches against the sub-meter's load instead of the configured series."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from simulators.device_fleet import SimulatedFleet
from simulators.sim_meter import inject_meter_fault
from tests.conftest import Mosquitto
from tests.daemon_rig import wait_for
from tests.meter_rig import write_meter_config
from vpp.config import load_config
from vpp.daemon.app import Daemon
from vpp.daemon.meter_store import meter_readings

pytestmark = pytest.mark.asyncio

SITE = {"id": "sm-a", "meter": "sunspec", "load_kw": 500.0, "plan_kw": 100.0, "export_allowed": True, "sub_meters": [{"id": "load", "role": "load", "meter": "sunspec"}]}


async def test_a_load_sub_meter_is_stored_cross_checked_and_carries_the_base_while_the_grid_meter_is_silent(tmp_path):
    broker = Mosquitto(tmp_path)
    broker.start()
    cfg = load_config(write_meter_config(tmp_path, broker.port, [SITE]))
    sim = SimulatedFleet(cfg.units, cfg.mqtt, cfg.path.parent, tick_s=0.05, publish_s=0.2, meters=cfg.meters, site_load_kw={"sm-a": 500.0}, site_rating_kw={"sm-a": 2000.0})
    await sim.start()
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run(install_signals=False))
    status = lambda: daemon.site_loop.status(daemon.clock.wall().to_pydatetime())["sm-a"]  # noqa: E731
    try:
        await wait_for(lambda: (d := status()["sub_meters"]["disagreement_kw"]) is not None and abs(d) < 5.0, 30, "the sub-meter agreeing with the grid meter")
        assert status()["sub_meters"]["sm-a/load"]["kw"] == pytest.approx(500.0, abs=1.0) and status()["sub_meters"]["alarm"] is None
        sim.sub_meters["sm-a/load"].inverted = True  # its CT turned round: −500 kW of load
        await wait_for(lambda: status()["sub_meters"]["alarm"], 10, "the sub-meter alarm")
        assert "check the sub-meters' CT" in status()["sub_meters"]["alarm"] and status()["ok"]  # the grid meter itself is fine
        sim.sub_meters["sm-a/load"].inverted = False
        await wait_for(lambda: status()["sub_meters"]["alarm"] is None, 10, "the sub-meter alarm clearing")
        inject_meter_fault(sim.meters["sm-a"], "silent")
        sim.meters["sm-a"].load_kw = 300.0  # a line stops while nobody reads the grid meter; the sub-meter sees it
        await wait_for(lambda: not status()["ok"] and status()["sub_meters"]["base_load_kw"] is not None and abs(status()["sub_meters"]["base_load_kw"] - 300.0) < 2.0, 10, "the sub-meter's base in use")
        assert daemon.site_loop.dispatch_base(np.array([500.0]))[0] == pytest.approx(300.0, abs=2.0)  # not the configured 500 kW
    finally:
        daemon.stop_event.set()
        await task
        await sim.stop()
        broker.stop()
    with daemon.store.engine.connect() as conn:
        stored = pd.DataFrame(conn.execute(sa.select(meter_readings.c.site_id, meter_readings.c.power_kw_mean).where(meter_readings.c.site_id == "sm-a/load")).all())
    assert stored["power_kw_mean"].iloc[0] == pytest.approx(-500.0, abs=1.0) and stored["power_kw_mean"].iloc[-1] == pytest.approx(-300.0, abs=1.0)  # as read: − is into the load
