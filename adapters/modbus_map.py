"""Non-SunSpec PCS/BMS over Modbus TCP, driven by a register-map YAML (see docs/adapters.md).

The map names, per role (soc, power, setpoint, ...), an address, function
code, data type, word order, scale and unit; this module plans batched reads
from it, decodes with pymodbus' own converters, and converts units once, here.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError
from pymodbus.client import AsyncModbusTcpClient

from adapters.batching import RegisterWindow, Span, plan_reads
from adapters.heartbeat import ControllerHeartbeat
from adapters.modbus_device import ModbusDeviceAdapter
from adapters.modbus_link import ModbusLink
from adapters.plausibility import limit_or_none, power_or_none, soc_or_none
from vpp.config import read_yaml  # the config loader's reader: same errors for every YAML file
from vpp.device_config import RegisterMap, RegisterPoint
from vpp.errors import InputError, from_validation_error
from vpp.telemetry import Setpoint, Telemetry, UnitState

DATATYPES = {
    "int16": AsyncModbusTcpClient.DATATYPE.INT16,
    "uint16": AsyncModbusTcpClient.DATATYPE.UINT16,
    "int32": AsyncModbusTcpClient.DATATYPE.INT32,
    "uint32": AsyncModbusTcpClient.DATATYPE.UINT32,
    "float32": AsyncModbusTcpClient.DATATYPE.FLOAT32,
}
TO_BASE_UNIT = {"W": 0.001, "kW": 1.0, "Wh": 0.001, "kWh": 1.0, "pct": 0.01, "fraction": 1.0, "s": 1.0, "count": 1.0}  # -> kW, kWh, fraction, s
COUNTER_MODULUS = {"int16": 1 << 15, "uint16": 1 << 16, "int32": 1 << 31, "uint32": 1 << 32, "float32": 1 << 24}
READ_ROLES = ("soc", "power", "max_charge_power", "max_discharge_power", "state", "fault_code")


def load_register_map(path: Path) -> RegisterMap:
    """Parse and check a register-map YAML; problems are ``InputError``s naming the file and field."""
    try:
        return RegisterMap.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise from_validation_error(exc, str(path)) from None


def decode_point(register_map: RegisterMap, point: RegisterPoint, registers: list[int]) -> float | None:
    """The point's value in its base unit (kW, fraction, s, count); ``None`` for a 'missing' raw value or NaN."""
    raw = cast(float, AsyncModbusTcpClient.convert_from_registers(registers, DATATYPES[point.type], register_map.word_order_of(point)))
    if raw in point.missing or not math.isfinite(raw):
        return None
    return raw * point.scale * TO_BASE_UNIT[point.unit]


def encode_point(register_map: RegisterMap, point: RegisterPoint, value: float) -> list[int]:
    """Registers for a value in base units. Raises ``ValueError`` when it does not fit the data type."""
    raw: float | int = value / TO_BASE_UNIT[point.unit] / point.scale
    if point.type != "float32":
        raw = round(raw)
        bits = 16 if point.type.endswith("16") else 32
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if point.type.startswith("int") else (0, (1 << bits) - 1)
        if not low <= raw <= high:
            raise ValueError(f"{value:g} is raw {raw}, outside {point.type}")
    return AsyncModbusTcpClient.convert_to_registers(raw, DATATYPES[point.type], register_map.word_order_of(point))


def read_blocks(register_map: RegisterMap) -> tuple[Span, ...]:
    """The read requests of one poll."""
    points = (getattr(register_map.points, role) for role in READ_ROLES)
    return plan_reads((Span(p.function, p.address, p.size) for p in points if p is not None), register_map.max_gap)


def decode_telemetry(
    unit_id: str, now: datetime, register_map: RegisterMap, window: RegisterWindow, rating_kw: float | None
) -> Telemetry:
    def value(role: str) -> float | None:
        point = getattr(register_map.points, role)
        if point is None:
            return None
        return decode_point(register_map, point, list(window.get(point.function, point.address, point.size)))

    state, faults = UnitState.UNKNOWN, ()
    if (state_point := register_map.points.state) is not None and (raw_state := value("state")) is not None:
        state = UnitState(state_point.states.get(int(raw_state), "unknown")) if raw_state.is_integer() else UnitState.UNKNOWN
    if (code := value("fault_code")) is not None and code != 0:
        state, faults = UnitState.FAULT, (f"fault code {code:g}",)
    return Telemetry(
        unit_id=unit_id,
        timestamp=now,
        soc=soc_or_none(value("soc")),
        power_kw=power_or_none(value("power"), rating_kw),
        max_charge_kw=limit_or_none(value("max_charge_power"), rating_kw),
        max_discharge_kw=limit_or_none(value("max_discharge_power"), rating_kw),
        state=state,
        faults=faults,
    )


class RegisterMapAdapter(ModbusDeviceAdapter):
    def __init__(self, unit_id: str, link: ModbusLink, slave_id: int, register_map: RegisterMap, **options: Any) -> None:
        """``options``: rating_kw, backoff, heartbeat_s (see ``ModbusDeviceAdapter``)."""
        super().__init__(unit_id, link, slave_id, **options)
        self.register_map = register_map
        self._blocks = read_blocks(register_map)
        beat = register_map.points.heartbeat
        self._heartbeat = ControllerHeartbeat(COUNTER_MODULUS[beat.type], self.heartbeat_s) if beat is not None else None
        self._revert_written: float | None = None

    async def close(self) -> None:
        self._revert_written = None

    async def _read(self, now: datetime) -> Telemetry:
        window = await self.link.read_blocks(self.slave_id, self._blocks)
        telemetry = decode_telemetry(self.unit_id, now, self.register_map, window, self.rating_kw)
        await self._beat(self._heartbeat, lambda value: self._write_point("heartbeat", value))
        return telemetry

    async def _write(self, setpoint: Setpoint) -> None:
        revert_s = float(max(1, math.ceil(setpoint.valid_s)))
        if self.register_map.points.setpoint_revert is not None and self._revert_written != revert_s:
            await self._write_point("setpoint_revert", revert_s)
            self._revert_written = revert_s
        await self._write_point("power_setpoint", setpoint.power_kw)

    async def _write_point(self, role: str, value: float) -> None:
        point = getattr(self.register_map.points, role)
        try:
            registers = encode_point(self.register_map, point, value)
        except ValueError as err:
            raise InputError(f"unit {self.unit_id}", f"{self.register_map.name}.{role}", value, str(err)) from None
        await self.link.write(self.slave_id, point.address, registers, function=6 if len(registers) == 1 else 16)
