"""SunSpec adapter against the pymodbus SunSpec simulator: discovery, telemetry, setpoints, revert, heartbeat, faults."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from adapters.health import Backoff
from adapters.modbus_link import ModbusLink
from adapters.poller import FleetPoller
from adapters.sunspec import SunSpecAdapter, discover
from simulators.modbus_server import ModbusDeviceServer
from simulators.sim_unit import SimulatedUnit, WireFault
from simulators.sunspec_server import STORAGE_MODELS, SunSpecImage
from tests.conftest import sim_unit
from vpp.errors import AdapterError
from vpp.fleet_state import FleetState
from vpp.telemetry import Setpoint, UnitState

WITH_715 = (1, 701, 702, 704, 713, 715)
WITHOUT_802 = (1, 701, 702, 704, 713)


def gateway(*units: SimulatedUnit, models: tuple[int, ...] | None = None, base: int = 40000) -> ModbusDeviceServer:
    images = {}
    for slave_id, unit in enumerate(units, start=1):
        image = SunSpecImage(unit, slave_id=slave_id, base=base) if models is None else SunSpecImage(unit, slave_id, models, base)
        images[slave_id] = image
    return ModbusDeviceServer(images, tick_s=0.05)


def setpoint(unit_id: str, power_kw: float, valid_s: float) -> Setpoint:
    return Setpoint(unit_id, power_kw, datetime.now(UTC), valid_s)


async def wait_until(condition, timeout_s: float) -> float:
    """Seconds until ``condition()`` held; fails the test after ``timeout_s``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"condition not met within {timeout_s} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@pytest.mark.parametrize("base", [40000, 0, 50000])
async def test_discovery_finds_the_marker_at_each_base_address_and_walks_every_model(base: int) -> None:
    async with gateway(sim_unit(), base=base) as server:
        link = ModbusLink("127.0.0.1", server.port, 1.0)
        layout = await discover(link, 1)
        link.close()
    assert layout.base == base
    assert list(layout.models) == [1, 701, 702, 704, 713, 802]
    assert layout.models[701] == (base + 2 + 2 + 66, 153)  # after "SunS" and model 1 (66 + header)


@pytest.mark.parametrize("models", [None, WITHOUT_802, STORAGE_MODELS], ids=["soc 802", "soc 713", "soc 124"])
async def test_telemetry_read_matches_the_simulated_battery(models: tuple[int, ...] | None) -> None:
    unit = sim_unit(soc=0.634, rating_kw=250.0, energy_kwh=500.0)
    unit.command(-123.4, valid_s=600, now=time.monotonic())
    async with gateway(unit, models=models) as server:
        adapter = SunSpecAdapter("u1", ModbusLink("127.0.0.1", server.port, 1.0), 1, rating_kw=250.0)
        telemetry = await adapter.read()
        adapter.link.close()
    assert telemetry.soc == pytest.approx(0.634, abs=0.001)
    assert telemetry.power_kw == pytest.approx(-123.4, abs=0.01)  # 701 W with W_SF 1: 10 W resolution
    assert telemetry.max_charge_kw == pytest.approx(250.0)
    assert telemetry.max_discharge_kw == pytest.approx(250.0)
    assert telemetry.state is UnitState.OK
    assert adapter.health.healthy


@pytest.mark.parametrize("models", [None, STORAGE_MODELS], ids=["704", "124"])
async def test_setpoint_written_is_what_the_simulator_applies(models: tuple[int, ...] | None) -> None:
    unit = sim_unit()
    async with gateway(unit, models=models) as server:
        adapter = SunSpecAdapter("u1", ModbusLink("127.0.0.1", server.port, 1.0), 1)
        await adapter.write(setpoint("u1", 40.0, valid_s=30))
        assert unit.setpoint_kw == pytest.approx(40.0)
        await asyncio.sleep(0.15)
        assert (await adapter.read()).power_kw == pytest.approx(40.0)
        await adapter.write(setpoint("u1", -25.0, valid_s=30))
        await asyncio.sleep(0.15)
        telemetry = await adapter.read()
        adapter.link.close()
    assert unit.setpoint_kw == pytest.approx(-25.0)
    assert telemetry.power_kw == pytest.approx(-25.0)
    assert unit.revert_s == 30


async def test_a_setpoint_reverts_to_zero_by_itself_when_not_renewed() -> None:
    unit = sim_unit()
    async with gateway(unit) as server:
        adapter = SunSpecAdapter("u1", ModbusLink("127.0.0.1", server.port, 1.0), 1)
        await adapter.write(setpoint("u1", 50.0, valid_s=1))
        await asyncio.sleep(0.2)
        assert (await adapter.read()).power_kw == pytest.approx(50.0)
        waited = await wait_until(lambda: unit.power_kw == 0.0, timeout_s=2.0)
        adapter.link.close()
    assert waited < 1.2
    assert unit.reverts == 1


@pytest.mark.parametrize("models", [None, WITH_715], ids=["802 CtrlHb", "715 ControllerHb"])
async def test_stopping_the_heartbeat_makes_the_device_revert_within_its_revert_time(models: tuple[int, ...] | None) -> None:
    unit = sim_unit(heartbeat_timeout_s=1.0)
    async with gateway(unit, models=models) as server:
        adapter = SunSpecAdapter("u1", ModbusLink("127.0.0.1", server.port, 1.0), 1, heartbeat_s=0.25)
        await adapter.write(setpoint("u1", 60.0, valid_s=600))  # the setpoint alone would hold for 10 minutes
        polling_until = time.monotonic() + 2.0
        while time.monotonic() < polling_until:  # reads drive the heartbeat: the device must keep the setpoint
            await adapter.read()
            await asyncio.sleep(0.1)
        assert unit.power_kw == pytest.approx(60.0)
        assert unit.heartbeat_value is not None and unit.heartbeat_value >= 6
        stopped = time.monotonic()
        await wait_until(lambda: unit.power_kw == 0.0, timeout_s=3.0)
        adapter.link.close()
    assert time.monotonic() - stopped <= 1.0 + 0.3  # revert time plus one simulator tick and polling slack
    assert unit.reverts == 1


async def test_a_device_in_fault_state_is_reported_as_fault_with_its_alarms() -> None:
    unit = sim_unit()
    unit.fault = True
    async with gateway(unit) as server:
        adapter = SunSpecAdapter("u1", ModbusLink("127.0.0.1", server.port, 1.0), 1)
        await adapter.write(setpoint("u1", 30.0, valid_s=30))
        await asyncio.sleep(0.15)
        telemetry = await adapter.read()
        adapter.link.close()
    assert telemetry.state is UnitState.FAULT
    assert set(telemetry.faults) == {"MANUFACTURER_ALRM", "OTHER_ALARM"}
    assert telemetry.power_kw == 0.0 and telemetry.max_discharge_kw == 0.0


async def test_a_silent_device_is_backed_off_and_marked_unhealthy_then_recovers_without_disturbing_its_neighbour() -> None:
    quiet, neighbour = sim_unit("quiet"), sim_unit("neighbour")
    async with gateway(quiet, neighbour) as server:
        link = ModbusLink("127.0.0.1", server.port, 0.3)
        adapters = [SunSpecAdapter(u.unit_id, link, slave, backoff=Backoff(base_s=0.4, max_s=0.8)) for slave, u in ((1, quiet), (2, neighbour))]
        state = FleetState(["quiet", "neighbour"])
        poller = FleetPoller(adapters, state, cycle_s=0.1)
        await poller.poll_once()
        assert state.health("quiet").healthy

        quiet.wire_fault = WireFault.SILENT
        await poller.poll_once()
        health = state.health("quiet")
        assert not health.healthy and health.consecutive_failures == 1 and health.backoff_until is not None
        assert state.telemetry("quiet").state is UnitState.OFFLINE and state.telemetry("quiet").soc is None
        requests = link.requests
        await FleetPoller(adapters[:1], state).poll_once()  # backing off: the device is not asked at all
        assert link.requests == requests
        await poller.run(duration_s=1.5)
        assert state.health("quiet").consecutive_failures >= 2
        assert state.health("neighbour").healthy and state.telemetry("neighbour").soc == pytest.approx(0.5)

        quiet.wire_fault = None
        await asyncio.sleep(0.8)  # the longest back-off
        await poller.poll_once()
        link.close()
    assert state.health("quiet").healthy
    assert state.telemetry("quiet").state is UnitState.OK and state.telemetry("quiet").soc == pytest.approx(0.5)


async def test_garbage_answers_are_rejected_and_never_become_numbers() -> None:
    unit = sim_unit()
    async with gateway(unit) as server:
        adapter = SunSpecAdapter("u1", ModbusLink("127.0.0.1", server.port, 1.0), 1, backoff=Backoff(base_s=0.0))
        await adapter.read()
        unit.wire_fault = WireFault.GARBAGE
        outcomes = []
        for _ in range(20):
            try:
                outcomes.append(await adapter.read())
            except AdapterError as err:
                outcomes.append(err)
        unit.wire_fault = None
        recovered = await adapter.read()
        adapter.link.close()
    assert all(isinstance(o, AdapterError) for o in outcomes)  # the model headers in the answer do not match
    assert recovered.soc == pytest.approx(0.5)


async def test_a_dropped_connection_is_reopened_on_the_next_poll() -> None:
    unit = sim_unit()
    async with gateway(unit) as server:
        adapter = SunSpecAdapter("u1", ModbusLink("127.0.0.1", server.port, 1.0), 1, backoff=Backoff(base_s=0.0))
        await adapter.read()
        server.drop_connections()
        await asyncio.sleep(0.05)
        telemetry = None
        for _ in range(5):
            try:
                telemetry = await adapter.read()
                break
            except AdapterError:
                await asyncio.sleep(0.25)  # the link's own reconnect back-off
        adapter.link.close()
    assert telemetry is not None and telemetry.soc == pytest.approx(0.5)


@pytest.mark.parametrize("urgent", ["setpoint", "meter read"])
async def test_the_control_loop_goes_ahead_of_a_queued_poll_cycle_on_a_shared_link(urgent: str) -> None:
    """Twenty units behind one gateway: a whole cycle of reads is queued when a setpoint (the loop's output)
    or a site meter's read (its input) is issued; it takes the link's next turn, so it is done after at
    most a couple of the reads, not after all of them."""
    units = [sim_unit() for _ in range(20)]
    async with gateway(*units) as server:
        link = ModbusLink("127.0.0.1", server.port, 2.0)
        adapters = [SunSpecAdapter(f"u{i}", link, i) for i in range(1, 21)]
        await asyncio.gather(*(a.read() for a in adapters))  # discovered: a read is now one poll's requests
        done: list[str] = []

        async def read(adapter: SunSpecAdapter) -> None:
            await adapter.read()
            done.append("read")

        async def control() -> None:
            await asyncio.sleep(0)  # issued once every read of the cycle is queued
            if urgent == "setpoint":
                await adapters[0].write(setpoint("u1", 30.0, valid_s=30))
            else:
                await link.read(1, 3, 40000, 4, control=True)
            done.append(urgent)

        await asyncio.gather(*(read(a) for a in adapters), control())
        link.close()
    assert done.index(urgent) <= 2, done
    assert done.count("read") == 20
    if urgent == "setpoint":
        assert units[0].setpoint_kw == pytest.approx(30.0)
