"""Register-map adapter against a pymodbus server laid out by the same YAML: a new device is a file, not code."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.modbus_link import ModbusLink
from adapters.modbus_map import RegisterMapAdapter, decode_point, encode_point, load_register_map, read_blocks
from simulators.modbus_map_server import RegisterMapImage
from simulators.modbus_server import ModbusDeviceServer
from tests.conftest import sim_unit
from vpp.device_config import RegisterMap
from vpp.errors import InputError, InputErrors
from vpp.telemetry import Setpoint, UnitState

DEVICES = Path(__file__).resolve().parents[1] / "config" / "devices"
ACME = load_register_map(DEVICES / "acme_pcs250.yaml")
GENERIC = load_register_map(DEVICES / "generic_bms_w.yaml")


def test_32_bit_values_honour_word_order_scale_and_unit() -> None:
    power = ACME.points.power  # int32, low word first, 0.1 kW
    registers = encode_point(ACME, power, -123.4)
    assert registers == [0xFB2E, 0xFFFF]  # -1234 = 0xFFFFFB2E, low word first
    assert decode_point(ACME, power, registers) == pytest.approx(-123.4)
    generic = GENERIC.points.power  # int32 big-endian watts, charging counted positive
    assert encode_point(GENERIC, generic, 2.5) == [0xFFFF, 0xF63C]  # our +2.5 kW discharge is its -2500 W
    assert decode_point(GENERIC, generic, [0x0000, 0x09C4]) == pytest.approx(-2.5)


def test_a_raw_value_the_map_lists_as_missing_is_missing() -> None:
    assert decode_point(ACME, ACME.points.soc, [0xFFFF]) is None
    assert decode_point(ACME, ACME.points.soc, [555]) == pytest.approx(0.555)


def test_reads_are_batched_across_small_gaps_only_when_the_map_allows() -> None:
    assert [(b.function, b.address, b.count) for b in read_blocks(ACME)] == [(4, 0x1000, 6), (4, 0x1010, 2)]
    assert [(b.function, b.address, b.count) for b in read_blocks(GENERIC)] == [(3, 100, 1), (3, 102, 2)]


@pytest.mark.parametrize("register_map", [ACME, GENERIC], ids=["acme", "generic"])
async def test_telemetry_and_setpoints_round_trip_through_the_mapped_registers(register_map: RegisterMap) -> None:
    unit = sim_unit(soc=0.42, rating_kw=250.0, energy_kwh=500.0)
    async with ModbusDeviceServer({7: RegisterMapImage(unit, register_map)}, tick_s=0.05) as server:
        adapter = RegisterMapAdapter("u1", ModbusLink("127.0.0.1", server.port, 1.0), 7, register_map, rating_kw=250.0)
        before = await adapter.read()
        await adapter.write(Setpoint("u1", -120.5, datetime.now(UTC), valid_s=5))
        await asyncio.sleep(0.15)
        after = await adapter.read()
        adapter.link.close()
    assert before.soc == pytest.approx(0.42, abs=0.001)
    assert unit.setpoint_kw == pytest.approx(-120.5)
    assert after.power_kw == pytest.approx(-120.5, abs=0.01)
    if register_map is ACME:
        assert unit.revert_s == 5.0  # written to the map's setpoint_revert register
        assert unit.heartbeat_value == 1
        assert (before.max_charge_kw, before.state) == (pytest.approx(250.0), UnitState.OK)
    else:
        assert (before.max_charge_kw, before.state) == (None, UnitState.UNKNOWN)  # the map has neither


async def test_a_mapped_fault_code_puts_the_unit_in_fault() -> None:
    unit = sim_unit()
    unit.fault = True
    async with ModbusDeviceServer({1: RegisterMapImage(unit, ACME)}, tick_s=0.05) as server:
        adapter = RegisterMapAdapter("u1", ModbusLink("127.0.0.1", server.port, 1.0), 1, ACME)
        telemetry = await adapter.read()
        adapter.link.close()
    assert telemetry.state is UnitState.FAULT
    assert telemetry.faults == ("fault code 1",)


async def test_a_mapped_revert_time_makes_the_device_fall_back_to_zero() -> None:
    unit = sim_unit()
    async with ModbusDeviceServer({1: RegisterMapImage(unit, ACME)}, tick_s=0.05) as server:
        adapter = RegisterMapAdapter("u1", ModbusLink("127.0.0.1", server.port, 1.0), 1, ACME)
        await adapter.write(Setpoint("u1", 80.0, datetime.now(UTC), valid_s=1))
        started = time.monotonic()
        while unit.setpoint_kw is not None and time.monotonic() - started < 3:
            await asyncio.sleep(0.05)
        adapter.link.close()
    assert 0.9 <= time.monotonic() - started <= 1.3
    assert unit.reverts == 1


def test_a_setpoint_that_does_not_fit_the_register_is_refused_before_it_is_sent() -> None:
    with pytest.raises(ValueError, match="outside uint16"):
        encode_point(ACME, ACME.points.setpoint_revert, 70000.0)


def test_a_register_map_with_a_unit_that_does_not_fit_its_role_names_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\npoints:\n  soc: {address: 1, unit: W}\n  power: {address: 2, unit: W}\n"
        "  power_setpoint: {address: 3, unit: W, access: rw}\n"
    )
    with pytest.raises((InputError, InputErrors)) as caught:  # one problem, or several in one pass
        load_register_map(bad)
    message = str(caught.value)
    assert str(bad) in message and "points" in message and "soc: unit 'W'" in message


def test_a_missing_register_map_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="an existing YAML file"):
        load_register_map(tmp_path / "nope.yaml")
