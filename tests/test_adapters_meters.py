"""Grid meters over real protocols: SunSpec 203 and the DTSU666 register map on a real pymodbus server, MQTT
through a real Mosquitto; sign, CT ratio and invert against the simulator's physics; hostile MQTT refused;
the month's demand peak restored from the database."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pandas as pd
import pytest

from adapters.meter import MapMeterReader, MeterPoller, SunSpecMeterReader, load_meter_map, meter_topic
from adapters.modbus_link import ModbusLink
from simulators.modbus_server import ModbusDeviceServer
from simulators.sim_meter import MeterMapImage, MqttMeterSimulator, SimulatedMeter, SunSpecMeterImage
from simulators.sim_unit import WireFault
from simulators.sunspec_server import SunSpecImage
from tests.conftest import Mosquitto, sim_unit
from tests.daemon_rig import ROOT
from vpp.daemon.clock import Clock
from vpp.daemon.meter_store import demand_windows
from vpp.daemon.site_loop import SiteLoop
from vpp.daemon.store import Store
from vpp.db import open_database
from vpp.dispatch import DispatchFleet
from vpp.fleet import BatteryUnit, Fleet, Site
from vpp.fleet_state import FleetState
from vpp.meter_config import MeterModel

DTSU = ROOT / "config/devices/chint_dtsu666.yaml"


def meter_model(**fields) -> MeterModel:
    return MeterModel.model_validate({"device": {"protocol": "sunspec", "host": "127.0.0.1"}, **fields})


async def test_sunspec_and_dtsu666_meters_read_what_flows_with_ct_ratio_and_invert() -> None:
    unit = sim_unit("u1")
    meter = SimulatedMeter("s", [unit], load_kw=100.0, noise_kw=0.0)
    server = ModbusDeviceServer({1: SunSpecImage(unit, slave_id=1), 100: SunSpecMeterImage(meter, 500.0, slave_id=100), 101: MeterMapImage(meter, load_meter_map(DTSU))}, tick_s=0.05)  # type: ignore[dict-item]
    await server.start()
    link = ModbusLink("127.0.0.1", server.port, 0.5)
    try:
        unit.command(40.0, 30.0, time.monotonic())  # 40 kW discharge against 100 kW of load: 60 kW import
        sunspec = SunSpecMeterReader("s", meter_model(), link, 100)
        dtsu = MapMeterReader("s", meter_model(), link, 101, load_meter_map(DTSU))
        first = await dtsu.read()
        assert (await sunspec.read()).power_kw == pytest.approx(-60.0, abs=0.01)
        assert first.power_kw == pytest.approx(-60.0, abs=0.01)
        await asyncio.sleep(0.6)
        later = await dtsu.read()
        # the counter integrates the true flow between the reads (slack: the server's 0.05 s physics step and the request time)
        assert later.import_kwh - first.import_kwh == pytest.approx(60.0 * (later.timestamp - first.timestamp).total_seconds() / 3600.0, abs=60.0 * 0.3 / 3600.0)
        assert later.export_kwh == 0.0
        flipped = await MapMeterReader("s", meter_model(ct_ratio=2.0, invert=True), link, 101, load_meter_map(DTSU)).read()
        assert flipped.power_kw == pytest.approx(120.0, abs=0.02)  # x2, and + now (the reading says export)
        assert flipped.export_kwh >= 2 * later.import_kwh and flipped.import_kwh == 0.0  # swapped (and still counting)
    finally:
        link.close()
        await server.stop()


async def test_mqtt_meter_readings_arrive_and_hostile_messages_never_become_readings(mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    model = MeterModel.model_validate({"device": {"protocol": "mqtt", "topic_prefix": "vpp"}})
    readings = []
    meter = SimulatedMeter("s", [], load_kw=80.0, noise_kw=0.0)
    poller = MeterPoller({"s": model}, mosquitto.broker(), Path("."), readings.append)
    topic = meter_topic("vpp", "s")
    hostile = [b"{", b"x" * 20000, json.dumps({"timestamp": "2020-01-01T00:00:00Z", "power_kw": 1.0}).encode(), b'{"timestamp": "' + datetime.now(UTC).isoformat().encode() + b'", "power_kw": NaN}', json.dumps({"timestamp": (datetime.now(UTC) + timedelta(hours=2)).isoformat(), "power_kw": 5.0}).encode(), json.dumps({"power_kw": 5.0}).encode()]
    with caplog.at_level(logging.WARNING, logger="adapters.meter"):
        async with poller, MqttMeterSimulator(mosquitto.broker(client_id="sim"), [("vpp", meter)], publish_s=0.05):
            deadline = time.monotonic() + 5
            while not readings and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert readings and readings[-1].power_kw == pytest.approx(-80.0)
            meter.wire_fault = WireFault.SILENT  # only the hostile messages below are on the topic now
            await asyncio.sleep(0.1)
            good = len(readings)
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
                for payload in hostile:
                    await client.publish(topic, payload)
            await asyncio.sleep(0.5)
    assert len(readings) == good  # not one of them became a reading
    rejected = [r for r in caplog.records if "meter message rejected" in r.getMessage()]
    assert 1 <= len(rejected) <= 5  # one line per rejection, bounded


def test_the_month_demand_peak_survives_a_restart(tmp_path: Path) -> None:
    units = (BatteryUnit(id="u1", site_id="s", max_charge_kw=100, max_discharge_kw=100, energy_kwh=200),)
    fleet = Fleet((Site("s", "retail", import_limit_kw=1000.0, export_limit_kw=0.0),), units)
    store = Store(open_database(tmp_path / "d.db"))
    now = pd.Timestamp("2026-11-20T12:00:00Z")
    rows = [
        {"window_start": pd.Timestamp("2026-10-31T10:00:00Z").to_pydatetime(), "site_id": "s", "average_kw": 900.0, "target_kw": None, "breach": True},  # last month (UTC+8: still October)
        {"window_start": pd.Timestamp("2026-11-03T10:00:00Z").to_pydatetime(), "site_id": "s", "average_kw": 420.0, "target_kw": 400.0, "breach": True},
        {"window_start": pd.Timestamp("2026-11-10T10:00:00Z").to_pydatetime(), "site_id": "s", "average_kw": 380.0, "target_kw": 400.0, "breach": False},
    ]
    store.insert(demand_windows, rows)
    loop = SiteLoop(DispatchFleet.of(fleet), {"s": meter_model()}, FleetState(["u1"]), Clock.create(1.0, now, pd.Timestamp.now(tz="UTC")), store, None, "Asia/Shanghai", pd.Timedelta(minutes=1))
    loop.restore()
    assert loop.sites["s"].month_peak_kw == 420.0
    store.close()
