"""A simulated grid meter: load − PV − Σ battery power of the site's simulated units, over real protocols.

The meter reads what the physics of its site makes flow: the simulated
batteries' applied power (advanced to the moment of the read, as the battery
simulators do on every request), the site's load and PV, and seeded noise.
Its counters integrate the true flow. Faults a test injects: a load step (a
line stopping: ``step_load(0.2)``), ``frozen`` (the comms module repeats its
last answer), ``wire_fault = SILENT`` (no answer), ``inverted`` (a CT mounted
the wrong way round). Served as SunSpec model 203 (``SunSpecMeterImage``), a
register map (``MeterMapImage``, e.g. the DTSU666) or MQTT
(``MqttMeterSimulator``). Times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData

from adapters.meter import MeterPayload, meter_topic
from adapters.mqtt_session import MqttSession
from adapters.service import Service
from adapters.sunspec_models import END_MODEL_ID, HEADER_REGISTERS, SUNS_MARKER, encode, model_def, to_raw
from simulators.modbus_map_server import RegisterMapImage
from simulators.sim_unit import SimulatedUnit, WireFault
from vpp.device_config import MqttBrokerConfig
from vpp.errors import AdapterError


@dataclass
class SimulatedMeter:
    site_id: str
    units: Sequence[SimulatedUnit]
    load_kw: float
    pv_kw: float = 0.0
    noise_kw: float = 0.2  # uniform ± this; a real meter's last digits never stand still (the frozen check relies on it)
    seed: int = 0
    frozen: bool = False
    inverted: bool = False
    wire_fault: WireFault | None = None
    import_kwh: float = 0.0
    export_kwh: float = 0.0
    counter_speed: float = 1.0  # seconds its counters count per second: a test's accelerated market clock (the daemon integrates battery energy in market time)
    reads: int = 0
    _last_t: float | None = field(default=None, repr=False)
    _last_true_kw: float = field(default=0.0, repr=False)
    _last_answer: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0), repr=False)
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def step_load(self, factor: float) -> None:
        """Multiply the load at once (0.2: a line stopping, −80 % in one step)."""
        self.load_kw *= factor

    def true_export_kw(self, now: float) -> float:
        """What flows at the connection now (+ export), the batteries advanced to ``now``."""
        for unit in self.units:
            unit.advance(now)
        return sum(u.power_kw for u in self.units) - self.load_kw + self.pv_kw

    def advance(self, now: float) -> None:
        """Integrate the counters up to ``now`` (step-hold of the flow at the last call)."""
        if self._last_t is not None and now > self._last_t:
            kwh = self._last_true_kw * (now - self._last_t) * self.counter_speed / 3600.0
            if kwh > 0:
                self.export_kwh += kwh
            else:
                self.import_kwh -= kwh
        self._last_t = now
        self._last_true_kw = self.true_export_kw(now)

    def answer(self, now: float) -> tuple[float, float, float]:
        """(power_kw + export, import_kwh, export_kwh) as the meter reports them."""
        self.advance(now)
        if not self.frozen:
            power = self._last_true_kw + self._random.uniform(-self.noise_kw, self.noise_kw)
            imp, exp = self.import_kwh, self.export_kwh
            self._last_answer = (-power, exp, imp) if self.inverted else (power, imp, exp)
        self.reads += 1
        return self._last_answer


@dataclass
class SimulatedSubMeter(SimulatedMeter):
    """A meter on one feeder of a site, following the site's meter: its load (reads −load: + is out of the
    feeder towards the grid, as a grid meter counts) or its PV (reads +PV). Same faults as a grid meter."""

    parent: SimulatedMeter | None = None
    role: str = "load"

    def true_export_kw(self, now: float) -> float:
        assert self.parent is not None
        return -self.parent.load_kw if self.role == "load" else self.parent.pv_kw


def inject_meter_fault(meter: SimulatedMeter, kind: str) -> None:
    """frozen: repeats its last answer; silent: stops answering; inverted: a CT the wrong way round."""
    if kind == "frozen":
        meter.frozen = True
    elif kind == "silent":
        meter.wire_fault = WireFault.SILENT
    elif kind == "inverted":
        meter.inverted = True
    else:
        raise ValueError(f"meter fault {kind!r}: frozen, silent or inverted")


def _power_sf(max_w: float) -> int:
    return max(0, math.ceil(math.log10(max_w / 32767))) if max_w > 32767 else 0


@dataclass
class SunSpecMeterImage:
    """Common model 1, meter model 203 (three-phase wye), end marker at 40000. ``unit`` is the meter
    (the Modbus server advances it and asks it for wire faults, as it does a battery)."""

    unit: SimulatedMeter
    rating_kw: float
    slave_id: int = 1
    base: int = 40000
    model_id: int = 203
    w_sf: int = field(init=False)

    def __post_init__(self) -> None:
        self.w_sf = _power_sf(self.rating_kw * 1500.0)
        self._address = self.base + len(SUNS_MARKER) + HEADER_REGISTERS + model_def(1).length
        self._template = self._blank(self.model_id)

    @staticmethod
    def _blank(model_id: int) -> list[int]:
        m = model_def(model_id)
        registers = [0] * (HEADER_REGISTERS + m.length)
        for point in m.points.values():
            registers[point.offset : point.offset + point.size] = encode(point, {"ID": model_id, "L": m.length}.get(point.name))
        return registers

    def simdata(self) -> list[SimData]:
        common = self._blank(1)
        for name, raw in {"Mn": "VPP Engine", "Md": "Simulated meter", "SN": f"SIM-METER-{self.unit.site_id}", "DA": self.slave_id}.items():
            point = model_def(1).points[name]
            common[point.offset : point.offset + point.size] = encode(point, raw)
        end = self._address + len(self._template)
        return [
            SimData(self.base, values=list(SUNS_MARKER), datatype=DataType.REGISTERS, readonly=True),
            SimData(self.base + len(SUNS_MARKER), values=common, datatype=DataType.REGISTERS, readonly=True),
            SimData(self._address, values=list(self._template), datatype=DataType.REGISTERS, readonly=True),
            SimData(end, values=[END_MODEL_ID, 0], datatype=DataType.REGISTERS, readonly=True),
        ]

    async def action(self, function_code: int, start: int, address: int, count: int, registers: list[int], values: list[int] | None) -> ExcCodes | None:
        if values is not None:
            return ExcCodes.ILLEGAL_ADDRESS
        first, length = self._address, len(self._template)
        lo, hi = max(address, first), min(address + count, first + length)
        if lo < hi:
            power, imp, exp = self.unit.answer(time.monotonic())
            rendered = list(self._template)
            points = model_def(self.model_id).points
            for name, raw in {"W": to_raw(-power * 1000.0, self.w_sf), "W_SF": self.w_sf, "TotWhImp": round(imp * 1000.0) % (1 << 32), "TotWhExp": round(exp * 1000.0) % (1 << 32), "TotWh_SF": 0}.items():
                p = points[name]
                rendered[p.offset : p.offset + p.size] = encode(p, raw)
            registers[lo - start : hi - start] = rendered[lo - first : hi - first]
        return None


class MeterMapImage(RegisterMapImage):
    """The register image of a map meter (config/devices/chint_dtsu666.yaml), laid out by the same YAML."""

    def _value(self, role: str) -> float:
        power, imp, exp = self.unit.answer(time.monotonic())  # type: ignore[attr-defined]
        return {"power": power, "import_energy": imp, "export_energy": exp}[role]

    def _write(self, touched, address, values, now) -> ExcCodes | None:  # type: ignore[override]
        return ExcCodes.ILLEGAL_ADDRESS  # a meter takes no commands


class MqttMeterSimulator(Service):
    """Publishes every simulated MQTT meter's reading every ``publish_s`` on <prefix>/<site>/meter/state."""

    def __init__(self, broker: MqttBrokerConfig, meters: Sequence[tuple[str, SimulatedMeter]], publish_s: float = 0.25) -> None:
        self.meters = [(meter_topic(prefix, m.site_id), m) for prefix, m in meters]
        self.publish_s = publish_s
        self.session = MqttSession(broker, f"{broker.client_id}-sim-meters", [], lambda message: None)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.session.start()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.session.stop()

    async def _loop(self) -> None:
        while True:
            for topic, meter in self.meters:
                if meter.wire_fault is WireFault.SILENT:
                    continue
                power, imp, exp = meter.answer(time.monotonic())
                payload = MeterPayload(timestamp=datetime.now(UTC), power_kw=power, import_kwh=imp, export_kwh=exp)
                try:
                    await self.session.publish(topic, payload.model_dump_json().encode(), qos=0)
                except AdapterError:
                    break  # disconnected: the session reconnects
            await asyncio.sleep(self.publish_s)
