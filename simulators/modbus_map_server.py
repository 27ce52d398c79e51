"""The register image of a non-SunSpec device, laid out by the same register-map YAML the adapter reads.

Holding and input registers are separate spaces (as on real PCS/BMS), every
mapped point is its own block, and unmapped addresses answer "illegal address"
except gaps of up to the map's ``max_gap``, which the map says the device reads.
Every read renders the touched points from the ``SimulatedUnit``; writes to the
setpoint, revert and heartbeat registers are handed to it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData

from adapters.modbus_map import decode_point, encode_point
from simulators.sim_unit import SimulatedUnit
from vpp.device_config import RegisterMap, RegisterPoint


@dataclass
class RegisterMapImage:
    unit: SimulatedUnit
    register_map: RegisterMap
    revert_s: float = math.inf  # until the gateway writes a revert time

    def _points(self) -> dict[str, RegisterPoint]:
        return {role: point for role, point in self.register_map.points if point is not None}

    def simdata(self) -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
        """(coils, discrete inputs, holding, input): one block per mapped point, and readable filler
        between points no further apart than the map's ``max_gap`` (the device tolerates such reads)."""
        spaces: dict[int, list[SimData]] = {3: [], 4: []}
        for function, blocks in spaces.items():
            points = sorted((p for p in self._points().values() if p.function == function), key=lambda p: p.address)
            for point, following in zip(points, [*points[1:], None]):
                blocks.append(SimData(point.address, values=[0] * point.size, datatype=DataType.REGISTERS, readonly=point.access == "r"))
                gap = following.address - (point.address + point.size) if following else 0
                if 0 < gap <= self.register_map.max_gap:
                    blocks.append(SimData(point.address + point.size, values=[0] * gap, datatype=DataType.REGISTERS, readonly=True))
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]  # pymodbus needs a non-empty bit space
        empty = [SimData(0, datatype=DataType.INVALID)]
        return bits, list(bits), spaces[3] or empty, spaces[4] or list(empty)

    async def action(
        self, function_code: int, start: int, address: int, count: int, registers: list[int], values: list[int] | None
    ) -> ExcCodes | None:
        now = time.monotonic()
        self.unit.advance(now)
        space = 4 if function_code == 4 else 3
        touched = {
            role: point
            for role, point in self._points().items()
            if point.function == space and point.address < address + count and address < point.address + point.size
        }
        if values is not None:
            return self._write(touched, address, values, now)
        for role, point in touched.items():
            offset = point.address - start
            registers[offset : offset + point.size] = encode_point(self.register_map, point, self._value(role))
        return None

    def _value(self, role: str) -> float:
        unit = self.unit
        charge_kw, discharge_kw = unit.limits_kw()
        if role == "state" and self.register_map.points.state is not None:
            wanted = "fault" if unit.fault else "ok"
            return float(next((raw for raw, name in self.register_map.points.state.states.items() if name == wanted), 0))
        return {
            "soc": unit.soc,
            "power": unit.power_kw,
            "max_charge_power": charge_kw,
            "max_discharge_power": discharge_kw,
            "fault_code": 1.0 if unit.fault else 0.0,
            "power_setpoint": unit.setpoint_kw or 0.0,
            "setpoint_revert": 0.0 if math.isinf(self.revert_s) else self.revert_s,
            "heartbeat": float(unit.heartbeat_value or 0),
        }[role]

    def _write(self, touched: dict[str, RegisterPoint], address: int, values: list[int], now: float) -> ExcCodes | None:
        decoded = {}
        for role, point in touched.items():
            offset = point.address - address
            if offset < 0 or offset + point.size > len(values):
                return ExcCodes.ILLEGAL_ADDRESS  # a write covering a point only in part
            decoded[role] = decode_point(self.register_map, point, values[offset : offset + point.size])
        if (revert := decoded.get("setpoint_revert")) is not None:
            self.revert_s = revert if revert > 0 else math.inf
        if (beat := decoded.get("heartbeat")) is not None:
            self.unit.heartbeat(int(beat), now)
        if (power := decoded.get("power_setpoint")) is not None:
            self.unit.command(power, self.revert_s, now)
        return None
