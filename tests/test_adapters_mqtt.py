"""MQTT gateway and MQTT battery simulator through a real Mosquitto: ingest, setpoints, expiry, last will, restarts."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import aiomqtt
import pytest

from adapters.mqtt import MqttGateway, MqttUnit, MqttUnitAdapter
from adapters.mqtt_payloads import SetpointPayload
from simulators.mqtt_device import MqttDeviceSimulator
from simulators.sim_unit import WireFault
from tests.conftest import Mosquitto, sim_unit
from vpp.errors import AdapterError
from vpp.fleet_state import FleetState
from vpp.telemetry import Setpoint, UnitState

UNITS = [MqttUnit(f"u{i}", "site-a", "vpp", rating_kw=100.0, stale_after_s=1.0) for i in range(3)]


def simulator(broker: Mosquitto, publish_s: float = 0.1, **overrides: object) -> MqttDeviceSimulator:
    return MqttDeviceSimulator(broker.broker(**overrides), [(u, sim_unit(u.unit_id, soc=0.3 + 0.1 * i)) for i, u in enumerate(UNITS)], publish_s)


def gateway(broker: Mosquitto, **overrides: object) -> MqttGateway:
    return MqttGateway(broker.broker(**overrides), UNITS, FleetState([u.unit_id for u in UNITS]))


async def eventually(condition, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout_s} s"
        await asyncio.sleep(0.02)


async def test_state_published_by_a_device_lands_in_the_fleet_state(mosquitto: Mosquitto) -> None:
    async with gateway(mosquitto) as gw, simulator(mosquitto) as sim:
        await eventually(lambda: all(gw.state.telemetry(u.unit_id) is not None for u in UNITS))
        sim.unit("u2").command(-42.0, 60, time.monotonic())
        await eventually(lambda: gw.state.telemetry("u2").power_kw == pytest.approx(-42.0))
        telemetry = gw.state.telemetry("u1")
    assert telemetry.soc == pytest.approx(0.4, abs=1e-4)
    assert telemetry.max_discharge_kw == pytest.approx(100.0)
    assert telemetry.state is UnitState.OK
    assert gw.stats.malformed == 0 and gw.stats.applied >= 4


async def test_a_setpoint_is_applied_by_the_device_and_reverts_at_its_expiry(mosquitto: Mosquitto) -> None:
    async with gateway(mosquitto) as gw, simulator(mosquitto) as sim:
        await sim.session.connected.wait()
        await gw.session.connected.wait()
        adapter = MqttUnitAdapter(UNITS[0], gw)
        await adapter.write(Setpoint("u0", 55.0, datetime.now(UTC), valid_s=1.0))
        await eventually(lambda: sim.unit("u0").setpoint_kw == 55.0)
        await eventually(lambda: (t := gw.state.telemetry("u0")) is not None and t.power_kw == pytest.approx(55.0))
        applied_at = time.monotonic()
        await eventually(lambda: sim.unit("u0").setpoint_kw is None, timeout_s=2.0)
    assert time.monotonic() - applied_at <= 1.1
    assert sim.unit("u0").reverts == 1
    assert sim.stats.setpoints_applied == 1


async def test_an_expired_setpoint_is_ignored_by_the_device(mosquitto: Mosquitto) -> None:
    async with gateway(mosquitto) as gw, simulator(mosquitto) as sim:
        await sim.session.connected.wait()
        await gw.session.connected.wait()
        stale = Setpoint("u1", 70.0, datetime.now(UTC) - timedelta(seconds=10), valid_s=5.0)
        await gw.send_setpoint(stale)
        await eventually(lambda: sim.stats.setpoints_expired == 1)
    assert sim.unit("u1").setpoint_kw is None


async def test_devices_fall_back_to_zero_when_the_gateway_dies(mosquitto: Mosquitto) -> None:
    async with gateway(mosquitto) as gw, simulator(mosquitto) as sim:
        await sim.session.connected.wait()
        await gw.session.connected.wait()
        await gw.send_setpoint(Setpoint("u0", 30.0, datetime.now(UTC), valid_s=600))
        await eventually(lambda: sim.unit("u0").setpoint_kw == 30.0)
        gw.session.drop()  # no DISCONNECT: the broker publishes the gateway's last will
        await eventually(lambda: sim.unit("u0").setpoint_kw is None, timeout_s=2.0)
        await eventually(lambda: gw.session.stats.connects == 2)  # and the gateway comes back by itself
    assert sim.unit("u0").reverts == 1


async def test_a_broker_restart_mid_stream_is_survived_and_the_gap_reported(mosquitto: Mosquitto) -> None:
    async with gateway(mosquitto) as gw, simulator(mosquitto) as sim:
        await eventually(lambda: gw.stats.applied >= 6)
        mosquitto.stop()
        await eventually(lambda: not gw.session.connected.is_set())
        during = gw.state.telemetry("u0")
        await asyncio.sleep(0.5)
        mosquitto.start()
        restarted = datetime.now(UTC)
        await eventually(lambda: (t := gw.state.telemetry("u0")).timestamp > restarted and t.soc is not None, timeout_s=5.0)
        await gw.send_setpoint(Setpoint("u2", -20.0, datetime.now(UTC), valid_s=30))  # the device resubscribed
        await eventually(lambda: sim.unit("u2").setpoint_kw == -20.0)
    assert during.state is UnitState.OFFLINE and during.soc is None  # the gap invalidated every value
    assert gw.session.stats.disconnects == 1 and gw.session.stats.connects == 2
    (gap,) = gw.session.stats.gaps
    assert gap.duration_s >= 0.5
    assert gw.stats.malformed == 0


async def test_malformed_payloads_are_counted_and_never_become_numbers(mosquitto: Mosquitto) -> None:
    junk = [
        b"",
        b"\xff\xfe not utf-8",
        b"{",
        b"[]",
        b'{"soc": 0.5}',  # no timestamp
        b'{"timestamp": "2024-01-01T00:00:00", "soc": 0.5}',  # naive timestamp
        b'{"timestamp": "2024-01-01T00:00:00Z", "soc": "0.5"}',  # a string is not a number
        b'{"timestamp": "2024-01-01T00:00:00Z", "soc": NaN}',
        b'{"timestamp": "2999-01-01T00:00:00Z", "soc": 0.5}',  # from the future
    ]
    async with gateway(mosquitto) as gw:
        await gw.session.connected.wait()
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as device:
            for payload in junk:
                await device.publish(UNITS[0].state_topic, payload, qos=1)
            await device.publish("vpp/site-a/stranger/state", b'{"timestamp": "2024-01-01T00:00:00Z"}', qos=1)
            now = datetime.now(UTC).isoformat()
            implausible = f'{{"timestamp": "{now}", "soc": 1.7, "power_kw": 5000, "max_charge_kw": -3}}'
            await device.publish(UNITS[0].state_topic, implausible.encode(), qos=1)
            await eventually(lambda: gw.stats.received == len(junk) + 2)
    assert gw.stats.malformed == len(junk)
    assert gw.stats.unknown_topic == 1
    telemetry = gw.state.telemetry("u0")
    assert (telemetry.soc, telemetry.power_kw, telemetry.max_charge_kw) == (None, None, None)


async def test_a_device_that_goes_silent_is_reported_stale_and_garbage_is_counted(mosquitto: Mosquitto) -> None:
    async with gateway(mosquitto) as gw, simulator(mosquitto) as sim:
        adapter = MqttUnitAdapter(UNITS[1], gw)
        await eventually(lambda: gw.state.telemetry("u1") is not None)
        assert (await adapter.read()).soc == pytest.approx(0.4, abs=1e-4)
        sim.unit("u1").wire_fault = WireFault.SILENT
        sim.unit("u2").wire_fault = WireFault.GARBAGE
        await asyncio.sleep(1.2)  # longer than stale_after_s
        with pytest.raises(AdapterError, match="s old"):
            await adapter.read()
        assert not adapter.health.healthy
    assert gw.stats.malformed >= 5
    assert gw.state.telemetry("u2").soc == pytest.approx(0.5, abs=1e-4)  # the last good value, never garbage


async def test_tls_and_username_password_come_from_the_config(tmp_path) -> None:
    broker = Mosquitto(tmp_path, users={"vpp": "s3cret"}, tls=True)
    broker.start()
    try:
        async with gateway(broker, username="vpp", password="s3cret") as gw, simulator(broker, username="vpp", password="s3cret") as sim:
            await eventually(lambda: gw.state.telemetry("u0") is not None, timeout_s=5.0)
        async with gateway(broker, username="vpp", password="wrong") as refused:
            await asyncio.sleep(0.5)
    finally:
        broker.stop()
    assert gw.session.stats.connects == 1 and sim.stats.published >= 3
    assert refused.session.stats.connects == 0 and not refused.session.connected.is_set()


def test_setpoint_payload_states_its_own_expiry() -> None:
    issued = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    payload = SetpointPayload.model_validate_json(SetpointPayload(power_kw=-3.5, issued_at=issued, valid_s=30).model_dump_json())
    assert payload.expires_at == issued + timedelta(seconds=30)
    assert payload.power_kw == -3.5
