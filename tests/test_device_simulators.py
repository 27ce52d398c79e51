"""Battery physics, the simulated device controller, the SunSpec image as pysunspec2 reads it, and a whole simulated fleet."""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sunspec2.device as ss_device
from hypothesis import given
from hypothesis import strategies as st

from adapters.fleet import DeviceFleet
from adapters.poller import FleetPoller
from simulators.battery import BatteryParams, power_limits, step
from simulators.device_fleet import SimulatedFleet
from simulators.sim_unit import SimulatedUnit
from simulators.sunspec_server import STORAGE_MODELS, SunSpecImage
from tests.conftest import Mosquitto, free_port, sim_unit
from vpp.device_config import ModbusMapDevice, MqttDevice, SunSpecDevice
from vpp.errors import InputError
from vpp.fleet import BatteryUnit
from vpp.fleet_state import FleetState
from vpp.telemetry import Setpoint, UnitState

PARAMS = BatteryParams(energy_kwh=100.0, max_charge_kw=50.0, max_discharge_kw=40.0, soc_min=0.1, soc_max=0.9, eta_charge=0.9, eta_discharge=0.8)
DEVICES = Path(__file__).resolve().parents[1] / "config" / "devices"


def test_charging_stores_eta_charge_of_the_energy_drawn() -> None:
    result = step(PARAMS, soc=0.5, power_kw=-20.0, dt_h=1.0)
    assert result.power_kw == -20.0
    assert result.soc == pytest.approx(0.5 + 20.0 * 0.9 / 100.0)


def test_discharging_releases_more_than_it_delivers() -> None:
    result = step(PARAMS, soc=0.5, power_kw=20.0, dt_h=1.0)
    assert result.soc == pytest.approx(0.5 - 20.0 / 0.8 / 100.0)


def test_self_discharge_loses_a_fraction_of_stored_energy_per_hour() -> None:
    leaky = BatteryParams(energy_kwh=100.0, max_charge_kw=50.0, max_discharge_kw=50.0, self_discharge_per_h=0.01)
    assert step(leaky, soc=0.8, power_kw=0.0, dt_h=2.0).soc == pytest.approx(0.8 * (1 - 0.02))


def test_power_is_clamped_by_rating_and_by_the_soc_window() -> None:
    assert step(PARAMS, soc=0.5, power_kw=999.0, dt_h=0.01).power_kw == 40.0
    near_full = step(PARAMS, soc=0.89, power_kw=-50.0, dt_h=1.0)
    assert near_full.soc == pytest.approx(0.9)
    assert near_full.power_kw == pytest.approx(-0.01 * 100.0 / 0.9)
    assert power_limits(PARAMS, soc=0.1, dt_h=1.0) == (50.0, 0.0)


@given(
    soc=st.floats(0.1, 0.9),
    power_kw=st.floats(-200.0, 200.0),
    dt_h=st.floats(1e-4, 2.0),
)
def test_a_step_never_leaves_the_soc_window_and_keeps_the_energy_balance(soc: float, power_kw: float, dt_h: float) -> None:
    result = step(PARAMS, soc, power_kw, dt_h)
    assert PARAMS.soc_min - 1e-9 <= result.soc <= PARAMS.soc_max + 1e-9
    assert -PARAMS.max_charge_kw <= result.power_kw <= PARAMS.max_discharge_kw
    charge, discharge = max(-result.power_kw, 0.0), max(result.power_kw, 0.0)
    balance = soc + (PARAMS.eta_charge * charge - discharge / PARAMS.eta_discharge) * dt_h / PARAMS.energy_kwh
    assert result.soc == pytest.approx(balance, abs=1e-12)


def test_the_device_reverts_when_its_setpoint_expires_or_the_heartbeat_stops() -> None:
    unit = SimulatedUnit("u1", PARAMS, soc=0.5, heartbeat_timeout_s=5.0)
    unit.advance(0.0)
    unit.command(30.0, valid_s=10.0, now=0.0)
    unit.advance(9.9)
    assert unit.power_kw == 30.0 and unit.reverts == 0
    unit.advance(10.0)
    assert unit.setpoint_kw is None and unit.reverts == 1

    unit.heartbeat(1, now=10.0)
    unit.command(-20.0, valid_s=100.0, now=10.0)
    unit.heartbeat(1, now=14.0)  # the same value again is no sign of life
    unit.advance(15.5)
    assert unit.setpoint_kw is None and unit.reverts == 2


def test_a_faulted_device_delivers_no_power_whatever_it_is_told() -> None:
    unit = SimulatedUnit("u1", PARAMS, soc=0.5)
    unit.fault = True
    unit.advance(0.0)
    unit.command(30.0, valid_s=60.0, now=0.0)
    unit.advance(1.0)
    assert unit.power_kw == 0.0 and unit.limits_kw() == (0.0, 0.0)


@pytest.mark.parametrize("models", [None, STORAGE_MODELS], ids=["default", "124"])
def test_the_sunspec_image_reads_the_same_through_pysunspec2(models: tuple[int, ...] | None) -> None:
    """An independent decoder (the Alliance's own) agrees with what the simulator meant to publish."""
    unit = sim_unit(soc=0.634, rating_kw=250.0, energy_kwh=500.0)
    image = SunSpecImage(unit) if models is None else SunSpecImage(unit, models=models)
    decoded = {}
    for model_id in image.models:
        registers = image.render(model_id, now=0.0)
        data = struct.pack(f">{len(registers)}H", *registers)
        decoded[model_id] = ss_device.Model(model_id=model_id, model_addr=0, model_len=len(registers) - 2, data=data)
    assert decoded[1].SN.value == "SIM-u1"
    assert decoded[701].W.cvalue == 0.0 and decoded[702].WMaxRtg.cvalue == 250_000.0
    if models is None:
        assert decoded[802].SoC.cvalue == pytest.approx(63.4)
        assert decoded[713].SoC.cvalue == pytest.approx(63.4)
        assert decoded[713].WHRtg.cvalue == 500_000.0
        assert decoded[802].State.value == 3  # CONNECTED
    else:
        assert decoded[124].ChaState.cvalue == pytest.approx(63.4)
        assert decoded[124].WChaMax.cvalue == 250_000.0


def battery(uid: str, device: object, soc: float) -> BatteryUnit:
    return BatteryUnit(uid, "site-a", 100.0, 100.0, 200.0, soc_min=0.05, soc_max=0.95, initial_soc=soc, device=device)  # type: ignore[arg-type]


async def test_a_simulated_fleet_matches_its_config_and_the_adapters_of_that_config_drive_it(mosquitto: Mosquitto) -> None:
    port = free_port()
    units = [
        battery("ss1", SunSpecDevice(protocol="sunspec", host="127.0.0.1", port=port, slave_id=1), 0.2),
        battery("ss2", SunSpecDevice(protocol="sunspec", host="127.0.0.1", port=port, slave_id=2), 0.4),
        battery("map1", ModbusMapDevice(protocol="modbus_map", host="127.0.0.1", port=port, slave_id=3, register_map="acme_pcs250.yaml"), 0.6),
        battery("mq1", MqttDevice(protocol="mqtt"), 0.8),
        BatteryUnit("plain", "site-a", 10.0, 10.0, 20.0),  # no device: not simulated, not polled
    ]
    broker = mosquitto.broker()
    state = FleetState([u.id for u in units])
    async with SimulatedFleet(units, broker, DEVICES, tick_s=0.05, publish_s=0.1) as sim, DeviceFleet(units, broker, DEVICES, state) as fleet:
        assert sim.endpoints() == [f"modbus 127.0.0.1:{port} slaves [1, 2, 3]", f"mqtt 127.0.0.1:{mosquitto.port} units 1"]
        assert sorted(fleet.adapters) == ["map1", "mq1", "ss1", "ss2"]
        await asyncio.sleep(0.3)  # the MQTT device publishes its first state
        await FleetPoller(list(fleet.adapters.values()), state).poll_once()
        for adapter in fleet.adapters.values():
            await adapter.write(Setpoint(adapter.unit_id, -10.0, datetime.now(UTC), valid_s=30))
        await asyncio.sleep(0.3)
        socs = {uid: state.telemetry(uid).soc for uid in fleet.adapters}
        assert all(state.health(uid).healthy for uid in fleet.adapters)
        assert all(state.telemetry(uid).state is UnitState.OK for uid in fleet.adapters)
        assert {uid: sim.units[uid].setpoint_kw for uid in fleet.adapters} == dict.fromkeys(fleet.adapters, -10.0)
    assert socs == pytest.approx({"ss1": 0.2, "ss2": 0.4, "map1": 0.6, "mq1": 0.8}, abs=1e-3)
    assert state.telemetry("plain") is None


def test_mqtt_units_without_a_broker_block_are_a_config_error() -> None:
    with pytest.raises(InputError, match="mqtt: broker block"):
        SimulatedFleet([battery("mq1", MqttDevice(protocol="mqtt"), 0.5)], None, DEVICES)
