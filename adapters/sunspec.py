"""SunSpec batteries over Modbus TCP: discovery, polling, setpoints with device-side revert, heartbeat.

Discovery finds the "SunS" marker at 40000, 0 or 50000 and walks the model
headers. A poll reads, in as few requests as batching allows, the points the
engine uses: SoC from 802, else 713, else 124; AC power and state from 701;
allowed power from 702 (else 802, else 124). Setpoints go through 704 ``WSet``
with ``WSetRvrtTms`` (else 124 ``InWRte``/``OutWRte`` with
``InOutWRte_RvrtTms``), so the device drops to 0 W by itself if the gateway
dies; the controller heartbeat (802 ``CtrlHb`` / 715 ``ControllerHb``) is
written once a second when the device has one. The revert time is written
before the first setpoint; a device that refuses it is commanded only if it has
a heartbeat (which then reverts it), never otherwise.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from adapters.batching import MAX_READ_REGISTERS, RegisterWindow, Span, plan_reads
from adapters.heartbeat import ControllerHeartbeat
from adapters.modbus_device import ModbusDeviceAdapter
from adapters.modbus_link import ModbusLink, ModbusRefused
from adapters.plausibility import limit_or_none, power_or_none, soc_or_none
from adapters.sunspec_models import (
    BASE_ADDRESSES,
    END_MODEL_ID,
    HEADER_REGISTERS,
    SUNS_MARKER,
    ModelView,
    encode,
    model_def,
    to_raw,
)
from vpp.errors import AdapterError, InputError
from vpp.telemetry import Setpoint, Telemetry, UnitState

log = logging.getLogger(__name__)

HOLDING = 3
MAX_MODELS = 100  # a walk longer than this is a device answering garbage

# Points a poll reads, per model (their scale factors come along).
POLLED_POINTS: Mapping[int, tuple[str, ...]] = {
    701: ("St", "InvSt", "ConnSt", "Alrm", "W"),
    702: ("WMaxRtg", "WChaRteMaxRtg", "WDisChaRteMaxRtg", "WChaRteMax", "WDisChaRteMax"),
    713: ("SoC",),
    802: ("SoC", "ChaSt", "LocRemCtl", "State", "Evt1", "WChaRteMax", "WDisChaRteMax"),
    124: ("ChaState", "ChaSt", "WChaMax"),
}
SOC_MODELS = (802, 713, 124)
CONTROL_MODELS = (704, 124)

# Enumerations, from the model definitions' symbols.
INV_RUNNING = {3, 4}  # 701 InvSt RUNNING, THROTTLED
INV_FAULT = 6  # 701 InvSt FAULT
BAT_OK = {3, 5}  # 802 State CONNECTED, SOC PROTECTION
BAT_FAULT = 99  # 802 State FAULT
LOCAL_CONTROL = 1  # 802 LocRemCtl LOCAL
CHA_EMPTY, CHA_FULL = 2, 5  # 802/124 ChaSt
WSET_MODE_WATTS = 1  # 704 WSetMod
ENABLED = 1
STORCTL_CHARGE_AND_DISCHARGE_LIMITS = 0b11  # 124 StorCtl_Mod


@dataclass(frozen=True, slots=True)
class SunSpecLayout:
    base: int
    models: Mapping[int, tuple[int, int]]  # model id -> (address of its ID register, length after the header)

    def address(self, model_id: int, point: str) -> int:
        return self.models[model_id][0] + model_def(model_id).points[point].offset


async def discover(link: ModbusLink, slave_id: int) -> SunSpecLayout:
    """Find the SunSpec marker and walk the model headers (an illegal-address answer ends the walk)."""
    for base in BASE_ADDRESSES:
        try:
            marker = await link.read(slave_id, HOLDING, base, 2)
        except ModbusRefused:
            continue
        if tuple(marker) == SUNS_MARKER:
            return SunSpecLayout(base, await _walk(link, slave_id, base + 2))
    raise AdapterError(f"modbus {link.name} slave {slave_id}: no SunSpec marker at {', '.join(map(str, BASE_ADDRESSES))}")


async def _walk(link: ModbusLink, slave_id: int, address: int) -> dict[int, tuple[int, int]]:
    models: dict[int, tuple[int, int]] = {}
    for _ in range(MAX_MODELS):
        try:
            model_id, length = await link.read(slave_id, HOLDING, address, HEADER_REGISTERS)
        except ModbusRefused as err:  # a walk should end at the end marker: say where and why it did not
            log.warning("modbus %s slave %d: SunSpec model walk stopped at address %d after models %s: %s", link.name, slave_id, address, sorted(models), err)
            break
        if model_id == END_MODEL_ID:
            break
        models.setdefault(model_id, (address, length))
        address += HEADER_REGISTERS + length
        if address > 0xFFFF:
            break
    return models


async def read_model(link: ModbusLink, slave_id: int, layout: SunSpecLayout, model_id: int) -> ModelView:
    """A whole model, in requests of at most 125 registers."""
    start, length = layout.models[model_id]
    total = HEADER_REGISTERS + length
    blocks = [Span(HOLDING, start + i, min(MAX_READ_REGISTERS, total - i)) for i in range(0, total, MAX_READ_REGISTERS)]
    return _view(model_id, layout, await link.read_blocks(slave_id, blocks))


def _view(model_id: int, layout: SunSpecLayout, window: RegisterWindow) -> ModelView:
    start = layout.models[model_id][0]
    return ModelView(model_def(model_id), lambda offset, count: window.get(HOLDING, start + offset, count))


def _usable(layout: SunSpecLayout, model_id: int) -> bool:
    """Present, and long enough for the points the engine reads (older revisions can be shorter)."""
    if model_id not in layout.models:
        return False
    names = POLLED_POINTS.get(model_id) or tuple(model_def(model_id).points)[HEADER_REGISTERS:]
    return model_def(model_id).span(*names)[1] <= HEADER_REGISTERS + layout.models[model_id][1]


def poll_blocks(layout: SunSpecLayout) -> tuple[Span, ...]:
    """The read requests of one poll: each polled model from its header to its last needed point."""
    spans = []
    for model_id, names in POLLED_POINTS.items():
        if _usable(layout, model_id):
            end = model_def(model_id).span(*names)[1]
            spans.append(Span(HOLDING, layout.models[model_id][0], end))
    return plan_reads(spans, max_gap=MAX_READ_REGISTERS)  # a SunSpec map is contiguous: gaps are free to read


def decode_telemetry(
    unit_id: str, now: datetime, layout: SunSpecLayout, window: RegisterWindow, rating_kw: float | None
) -> Telemetry:
    """Telemetry from one poll's registers. Raises ``AdapterError`` if a model header moved (garbage or reboot)."""
    views = {m: _view(m, layout, window) for m in POLLED_POINTS if _usable(layout, m)}
    for model_id, view in views.items():
        if (view.raw("ID"), view.raw("L")) != (model_id, layout.models[model_id][1]):
            raise AdapterError(f"model {model_id} header reads {view.raw('ID')}/{view.raw('L')}: layout changed or garbage")

    def value(model_id: int, name: str) -> float | None:
        return views[model_id].value(name) if model_id in views else None

    def enum(model_id: int, name: str) -> int | None:
        return views[model_id].enum(name) if model_id in views else None

    rating_w = rating_kw * 1000.0 if rating_kw is not None else value(702, "WMaxRtg")
    rating = rating_w / 1000.0 if rating_w is not None else None
    soc_source = next(((m, p) for m, p in ((802, "SoC"), (713, "SoC"), (124, "ChaState")) if value(m, p) is not None), None)
    soc_pct = value(*soc_source) if soc_source else None
    charge_w = _first(value(702, "WChaRteMax"), value(702, "WChaRteMaxRtg"), value(802, "WChaRteMax"), value(124, "WChaMax"))
    discharge_w = _first(
        value(702, "WDisChaRteMax"), value(702, "WDisChaRteMaxRtg"), value(802, "WDisChaRteMax"), value(124, "WChaMax")
    )
    charge_state = _first(enum(802, "ChaSt"), enum(124, "ChaSt"))
    if charge_state == CHA_FULL:
        charge_w = 0.0
    if charge_state == CHA_EMPTY:
        discharge_w = 0.0
    power_w = value(701, "W")
    faults = tuple(f for m, p in ((701, "Alrm"), (802, "Evt1")) if m in views for f in views[m].flags(p))
    return Telemetry(
        unit_id=unit_id,
        timestamp=now,
        soc=soc_or_none(soc_pct / 100.0 if soc_pct is not None else None),
        power_kw=power_or_none(_kw(power_w), rating),
        max_charge_kw=limit_or_none(_kw(charge_w), rating),
        max_discharge_kw=limit_or_none(_kw(discharge_w), rating),
        state=unit_state(enum(701, "InvSt"), enum(802, "State"), enum(802, "LocRemCtl")),
        faults=faults,
        soc_resolution=_step(views[soc_source[0]], soc_source[1]) / 100.0 if soc_source else None,
    )


def unit_state(inverter: int | None, battery: int | None, control: int | None) -> UnitState:
    """FAULT if either says so; STANDBY under local control or when not running; OK when all known say running."""
    if inverter == INV_FAULT or battery == BAT_FAULT:
        return UnitState.FAULT
    if inverter is None and battery is None:
        return UnitState.UNKNOWN
    if control == LOCAL_CONTROL:
        return UnitState.STANDBY
    running = (inverter is None or inverter in INV_RUNNING) and (battery is None or battery in BAT_OK)
    return UnitState.OK if running else UnitState.STANDBY


def _step(view: ModelView, name: str) -> float:
    """The engineering value of one raw step of a point (10^sf)."""
    sf = view.model.points[name].sf
    exponent = sf if isinstance(sf, int) else view.raw(sf) if isinstance(sf, str) else 0
    return 10.0 ** (exponent if isinstance(exponent, int) else 0)


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def _kw(watts: float | None) -> float | None:
    return watts / 1000.0 if watts is not None else None


@dataclass
class _Session:
    """What discovery learned about the device; dropped on any failure so the next read rediscovers."""

    layout: SunSpecLayout
    blocks: tuple[Span, ...]  # the poll's read requests
    controls: ModelView  # 704 or 124 as read at discovery: scale factors and WChaMax for setpoints
    heartbeat: tuple[int, str, ControllerHeartbeat] | None
    revert_written: int | None = None  # revert time the device holds, once written
    no_revert_timer: bool = False  # the device refused the revert points: only the heartbeat brings it to 0 W


class SunSpecAdapter(ModbusDeviceAdapter):
    """Discovery runs on the first read, and again after any failure."""

    _session: _Session | None = None

    async def close(self) -> None:
        self._session = None

    async def _read(self, now: datetime) -> Telemetry:
        try:
            session = self._session or await self._discover()
            window = await self.link.read_blocks(self.slave_id, session.blocks)
            telemetry = decode_telemetry(self.unit_id, now, session.layout, window, self.rating_kw)
            if session.heartbeat is not None:
                model_id, name, heartbeat = session.heartbeat
                await self._beat(heartbeat, lambda value: self._write_points(session.layout, model_id, {name: value}))
        except AdapterError:
            self._session = None  # the device may have rebooted with another map
            raise
        return telemetry

    async def _discover(self) -> _Session:
        layout = await discover(self.link, self.slave_id)
        if not any(_usable(layout, m) for m in SOC_MODELS) or not any(_usable(layout, m) for m in CONTROL_MODELS):
            raise AdapterError(f"SunSpec models {sorted(layout.models)} lack SoC (802/713/124) or control (704/124); retrying")
        control = next(m for m in CONTROL_MODELS if _usable(layout, m))
        controls = await read_model(self.link, self.slave_id, layout, control)
        self._session = _Session(layout, poll_blocks(layout), controls, _heartbeat_point(layout, self.heartbeat_s))
        log.info("unit=%s sunspec models=%s control=%d requests_per_poll=%d", self.unit_id, sorted(layout.models), control, len(self._session.blocks))
        return self._session

    async def _write(self, setpoint: Setpoint) -> None:
        session = self._session or await self._discover()
        model_id = session.controls.model.model_id
        revert_s = max(1, math.ceil(setpoint.valid_s))
        if model_id == 704:
            config = {"WSetRvrt": 0, "WSetEnaRvrt": ENABLED, "WSetRvrtTms": revert_s}
            command = {"WSetEna": ENABLED, "WSetMod": WSET_MODE_WATTS, "WSet": _wset_raw(session.controls, setpoint)}
        else:
            config = {"StorCtl_Mod": STORCTL_CHARGE_AND_DISCHARGE_LIMITS, "InOutWRte_RvrtTms": revert_s}
            rate = _rate_raw(session.controls, setpoint)
            command = {"OutWRte": rate, "InWRte": -rate}  # a window of one point: exactly this rate
        if session.revert_written != revert_s and not session.no_revert_timer:
            try:
                await self._write_points(session.layout, model_id, config)
                session.revert_written = revert_s
            except ModbusRefused as err:
                session.no_revert_timer = True
                log.warning("unit=%s model %d refused its revert timer (%s): %s", self.unit_id, model_id, err, "the controller heartbeat is what reverts it" if session.heartbeat else "no setpoints will be written")
        if session.no_revert_timer and session.heartbeat is None:
            # it would hold the last setpoint for ever if the gateway died: never command it
            raise AdapterError(f"unit {self.unit_id}: model {model_id} has no revert timer and the device no controller heartbeat; not commanding a device that cannot fall back to 0 W by itself")
        await self._write_points(session.layout, model_id, command)

    async def _write_points(self, layout: SunSpecLayout, model_id: int, raws: Mapping[str, int]) -> None:
        """Write points in as few requests as their adjacency allows."""
        points = sorted((model_def(model_id).points[n] for n in raws), key=lambda p: p.offset)
        runs: list[tuple[int, list[int]]] = []
        for point in points:
            try:
                registers = encode(point, raws[point.name])
            except struct.error:
                raise InputError(f"unit {self.unit_id}", f"{model_id}.{point.name}", raws[point.name], f"a {point.type}") from None
            address = layout.address(model_id, point.name)
            if runs and runs[-1][0] + len(runs[-1][1]) == address:
                runs[-1][1].extend(registers)
            else:
                runs.append((address, registers))
        for address, registers in runs:
            await self.link.write(self.slave_id, address, registers)


def _wset_raw(controls: ModelView, setpoint: Setpoint) -> int:
    sf = controls.raw("WSet_SF")
    if not isinstance(sf, int):
        raise AdapterError("704 WSet_SF is not implemented: cannot scale a setpoint")
    return to_raw(setpoint.power_kw * 1000.0, sf)


def _rate_raw(controls: ModelView, setpoint: Setpoint) -> int:
    """124 rates are percent of WChaMax: + discharge (OutWRte); the charge limit mirrors it."""
    max_w = controls.value("WChaMax")
    sf = controls.raw("InOutWRte_SF")
    if not max_w or not isinstance(sf, int):
        raise AdapterError("124 WChaMax or InOutWRte_SF is not implemented: cannot express a setpoint")
    pct = setpoint.power_kw * 1000.0 / max_w * 100.0
    if abs(pct) > 100.0:
        raise InputError(f"unit {setpoint.unit_id}", "setpoint.power_kw", setpoint.power_kw, f"within ±{max_w / 1000:g} kW (124 WChaMax)")
    return to_raw(pct, sf)


def _heartbeat_point(layout: SunSpecLayout, interval_s: float) -> tuple[int, str, ControllerHeartbeat] | None:
    for model_id, name, modulus in ((802, "CtrlHb", 1 << 16), (715, "ControllerHb", 1 << 32)):
        if _usable(layout, model_id) and name in model_def(model_id).points:
            return model_id, name, ControllerHeartbeat(modulus, interval_s)
    return None


@dataclass(frozen=True, slots=True)
class ScanReport:
    host: str
    port: int
    slave_id: int
    base: int
    models: Mapping[int, tuple[int, int]]
    common: Mapping[str, str | None]  # model 1: manufacturer, model, version, serial
    telemetry: Telemetry | None  # None when the device lacks the models the engine needs
    ratings: Mapping[str, float | None]  # W / Wh, from 702, 713 and 802


async def scan(link: ModbusLink, slave_id: int, now: datetime) -> ScanReport:
    """What a SunSpec device exposes: the first thing an installer runs on site."""
    layout = await discover(link, slave_id)
    common = await read_model(link, slave_id, layout, 1) if 1 in layout.models else None
    ratings: dict[str, float | None] = {}
    for model_id, names in ((702, ("WMaxRtg", "WChaRteMaxRtg", "WDisChaRteMaxRtg")), (713, ("WHRtg",)), (802, ("WHRtg",))):
        if _usable(layout, model_id):
            view = await read_model(link, slave_id, layout, model_id)
            ratings.update({f"{model_id}.{n}": view.value(n) for n in names})
    telemetry = None
    if any(_usable(layout, m) for m in (*SOC_MODELS, 701)):
        window = await link.read_blocks(slave_id, poll_blocks(layout))
        telemetry = decode_telemetry(f"slave {slave_id}", now, layout, window, None)
    return ScanReport(
        host=link.host,
        port=link.port,
        slave_id=slave_id,
        base=layout.base,
        models=layout.models,
        common={n: common.text(n) for n in ("Mn", "Md", "Vr", "SN")} if common else {},
        telemetry=telemetry,
        ratings=ratings,
    )
