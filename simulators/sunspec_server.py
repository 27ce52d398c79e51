"""The register image of a SunSpec battery, built from the Alliance's model definitions.

``"SunS"`` at the base address, then models 1, 701, 702, 704, 713, 802 (and
optionally 124, 715), then the end marker. Every read renders the requested
models from the ``SimulatedUnit`` (so values are always current); every write
to a control point is decoded and handed to the unit (setpoint, revert time,
heartbeat). Points the simulator does not implement carry the SunSpec
"not implemented" sentinel; points it does not accept writes for are read-only,
so writing them is answered with "illegal address", as real devices do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData

from adapters.sunspec_models import END_MODEL_ID, HEADER_REGISTERS, SUNS_MARKER, ModelDef, encode, model_def, raw_value, to_raw
from simulators.sim_unit import SimulatedUnit

DEFAULT_MODELS = (1, 701, 702, 704, 713, 802)
STORAGE_MODELS = (1, 701, 702, 124)  # an older storage inverter: 124 controls, SoC in 124, no 704/713/802
NOMINAL_DC_V = 800.0

# Control points the simulator implements, per model; every other point is read-only.
WRITABLE: Mapping[int, frozenset[str]] = {
    704: frozenset({"WSetEna", "WSetMod", "WSet", "WSetRvrt", "WSetEnaRvrt", "WSetRvrtTms"}),
    124: frozenset({"StorCtl_Mod", "OutWRte", "InWRte", "InOutWRte_WinTms", "InOutWRte_RvrtTms", "InOutWRte_RmpTms"}),
    715: frozenset({"ControllerHb"}),
    802: frozenset({"CtrlHb"}),
}

REVERT_POINTS_704 = frozenset({"WSetRvrt", "WSetEnaRvrt", "WSetRvrtTms"})

# Scale factors the image uses for points that are not power or energy (those follow the rating).
PCT_SF_713 = -2
SOC_SF_802 = -1
CHA_STATE_SF_124 = -1
RATE_SF_124 = -2


def _power_sf(max_w: float, limit: int = 32767) -> int:
    """The smallest scale factor >= 0 that fits ``max_w`` into a 16-bit register."""
    return max(0, math.ceil(math.log10(max_w / limit))) if max_w > limit else 0


@dataclass
class SunSpecImage:
    unit: SimulatedUnit
    slave_id: int = 1
    models: Sequence[int] = DEFAULT_MODELS
    base: int = 40000
    revert_timer: bool = True  # False: a 704 without WSetRvrtTms (writes to it are refused; setpoints hold until replaced)
    controls: dict[str, int] = field(default_factory=dict)  # raw values last written to control points
    w_sf: int = field(init=False)  # scale factor of power points, chosen so the rating fits 16 bits
    wh_sf: int = field(init=False)
    _addresses: dict[int, int] = field(init=False)  # model id -> address of its ID register
    _templates: dict[int, list[int]] = field(init=False)  # model registers with every point "not implemented"
    _end_marker: int = field(init=False)  # address of the end-of-models marker
    _started: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        params = self.unit.params
        self.w_sf = _power_sf(max(params.max_charge_kw, params.max_discharge_kw) * 1000.0)
        self.wh_sf = _power_sf(params.energy_kwh * 1000.0, 65534)
        self._addresses, self._templates = {}, {}
        address = self.base + len(SUNS_MARKER)
        for model_id in self.models:
            m = model_def(model_id)
            self._addresses[model_id] = address
            template = [0] * (HEADER_REGISTERS + m.length)
            for point in m.points.values():
                raw = {"ID": model_id, "L": m.length}.get(point.name)
                template[point.offset : point.offset + point.size] = encode(point, raw)
            self._templates[model_id] = template
            address += len(template)
        self._end_marker = address

    def address(self, model_id: int, point: str) -> int:
        return self._addresses[model_id] + model_def(model_id).points[point].offset

    def simdata(self) -> list[SimData]:
        """The initial image for pymodbus: marker, one block per point (read-only unless writable), end marker."""
        blocks = [SimData(self.base, values=list(SUNS_MARKER), datatype=DataType.REGISTERS, readonly=True)]
        for model_id in self.models:
            writable = WRITABLE.get(model_id, frozenset())
            if model_id == 704 and not self.revert_timer:
                writable = writable - REVERT_POINTS_704
            template = self._templates[model_id]
            for point in model_def(model_id).points.values():
                blocks.append(
                    SimData(
                        self._addresses[model_id] + point.offset,
                        values=template[point.offset : point.offset + point.size],
                        datatype=DataType.REGISTERS,
                        readonly=point.name not in writable,
                    )
                )
        blocks.append(SimData(self._end_marker, values=[END_MODEL_ID, 0], datatype=DataType.REGISTERS, readonly=True))
        return blocks

    async def action(
        self, function_code: int, start: int, address: int, count: int, registers: list[int], values: list[int] | None
    ) -> ExcCodes | None:
        """pymodbus calls this before every read or write of this device's registers."""
        now = time.monotonic()
        self.unit.advance(now)
        if values is not None:
            return self._write(address, values, now)
        for model_id in self.models:
            first = self._addresses[model_id]
            lo, hi = max(address, first), min(address + count, first + len(self._templates[model_id]))
            if lo < hi:
                registers[lo - start : hi - start] = self.render(model_id, now)[lo - first : hi - first]
        return None

    def render(self, model_id: int, now: float) -> list[int]:
        registers = list(self._templates[model_id])
        points = model_def(model_id).points
        for name, raw in _RENDERERS[model_id](self, now).items():
            point = points[name]
            registers[point.offset : point.offset + point.size] = encode(point, raw)
        return registers

    # ------------------------------------------------------------ writes

    def _raw_watts(self, kw: float) -> int:
        """A power in kW as a raw watts register at the image's power scale factor."""
        return to_raw(kw * 1000.0, self.w_sf)

    def _write(self, address: int, values: list[int], now: float) -> ExcCodes | None:
        for model_id in self.models:
            first = self._addresses[model_id]
            if first <= address < first + len(self._templates[model_id]):
                written = _written_points(model_def(model_id), address - first, values)
                if written is None:
                    return ExcCodes.ILLEGAL_ADDRESS
                return _WRITERS[model_id](self, written, now) if model_id in _WRITERS else ExcCodes.ILLEGAL_ADDRESS
        return ExcCodes.ILLEGAL_ADDRESS

    def _write_704(self, written: dict[str, int | str | None], now: float) -> ExcCodes | None:
        if not self.revert_timer and REVERT_POINTS_704 & written.keys():
            return ExcCodes.ILLEGAL_ADDRESS  # as a device without the revert timer answers
        if written.get("WSetMod", 1) != 1 or written.get("WSetRvrt", 0) != 0 or written.get("WSetEnaRvrt", 1) != 1:
            return ExcCodes.ILLEGAL_VALUE  # the simulator supports watts mode and reverting to 0 W only
        self.controls.update({k: v for k, v in written.items() if isinstance(v, int)})
        if "WSet" in written or "WSetEna" in written:
            if self.controls.get("WSetEna") == 1:
                self.unit.command(self.controls.get("WSet", 0) * 10.0**self.w_sf / 1000.0, self._revert_s("WSetRvrtTms"), now)
            else:
                self.unit.setpoint_kw = None
        return None

    def _write_124(self, written: dict[str, int | str | None], now: float) -> ExcCodes | None:
        self.controls.update({k: v for k, v in written.items() if isinstance(v, int)})
        if not {"StorCtl_Mod", "OutWRte", "InWRte"} & written.keys():
            return None
        mode = self.controls.get("StorCtl_Mod", 0)
        pct_to_kw = self.unit.params.max_charge_kw / 100.0 * 10.0**RATE_SF_124
        high = self.controls.get("OutWRte", 10000) * pct_to_kw if mode & 0b10 else math.inf
        low = -self.controls.get("InWRte", 10000) * pct_to_kw if mode & 0b01 else -math.inf
        if low > high:
            return ExcCodes.ILLEGAL_VALUE
        self.unit.command(min(max(0.0, low), high), self._revert_s("InOutWRte_RvrtTms"), now)
        return None

    def _write_heartbeat(self, written: dict[str, int | str | None], now: float) -> ExcCodes | None:
        for value in written.values():
            if isinstance(value, int):
                self.unit.heartbeat(value, now)
        return None

    def _revert_s(self, point: str) -> float:
        """The written revert time; 0 or never written means the setpoint holds until replaced."""
        return float(self.controls.get(point) or math.inf)

    # ------------------------------------------------------------ renderers

    def _common(self, now: float) -> dict[str, int | str | None]:
        return {"Mn": "VPP Engine", "Md": "Simulated battery", "Vr": "1.0", "SN": f"SIM-{self.unit.unit_id}", "DA": self.slave_id, "Pad": 0}

    def _measure_ac(self, now: float) -> dict[str, int | str | None]:
        fault = self.unit.fault
        return {
            "ACType": 2,  # THREE_PHASE
            "St": 1,  # ON
            "InvSt": 6 if fault else 3,  # FAULT / RUNNING
            "ConnSt": 1,  # CONNECTED
            "Alrm": 1 << 16 if fault else 0,  # MANUFACTURER_ALRM
            "W": self._raw_watts(self.unit.power_kw),
            "W_SF": self.w_sf,
        }

    def _capacity(self, now: float) -> dict[str, int | str | None]:
        params = self.unit.params
        charge_kw, discharge_kw = self.unit.limits_kw()
        return {
            "WMaxRtg": self._raw_watts(max(params.max_charge_kw, params.max_discharge_kw)),
            "WChaRteMaxRtg": self._raw_watts(params.max_charge_kw),
            "WDisChaRteMaxRtg": self._raw_watts(params.max_discharge_kw),
            "WChaRteMax": self._raw_watts(charge_kw),
            "WDisChaRteMax": self._raw_watts(discharge_kw),
            "W_SF": self.w_sf,
        }

    def _controls_ac(self, now: float) -> dict[str, int | str | None]:
        active = self.unit.setpoint_kw is not None
        remaining = self.unit.revert_remaining_s(now)  # inf: WSet written before (or without) WSetRvrtTms
        controls: dict[str, int | str | None] = {
            "WSetEna": 1 if active else 0,
            "WSetMod": 1,  # WATTS
            "WSet": self._raw_watts(self.unit.setpoint_kw or 0.0),
            "WSetRvrt": 0,
            "WSetEnaRvrt": 1,
            "WSetRvrtTms": self.controls.get("WSetRvrtTms", 0),
            "WSetRvrtRem": math.ceil(remaining) if math.isfinite(remaining) else 0,  # 0: no revert timer running
            "WSet_SF": self.w_sf,
        }
        if not self.revert_timer:
            for name in REVERT_POINTS_704 | {"WSetRvrtRem"}:
                controls[name] = None  # not implemented
        return controls

    def _storage_capacity(self, now: float) -> dict[str, int | str | None]:
        energy_wh = self.unit.params.energy_kwh * 1000.0
        return {
            "WHRtg": to_raw(energy_wh, self.wh_sf),
            "WHAvail": to_raw(energy_wh * self.unit.soc, self.wh_sf),
            "SoC": to_raw(self.unit.soc * 100.0, PCT_SF_713),
            "SoH": to_raw(100.0, PCT_SF_713),
            "Sta": 2 if self.unit.fault else 0,  # ERROR / OK
            "WH_SF": self.wh_sf,
            "Pct_SF": PCT_SF_713,
        }

    def _der_control(self, now: float) -> dict[str, int | str | None]:
        return {
            "LocRemCtl": 0,  # REMOTE
            "DERHb": int(now - self._started),
            "ControllerHb": self.unit.heartbeat_value or 0,
        }

    def _battery(self, now: float) -> dict[str, int | str | None]:
        unit, params = self.unit, self.unit.params
        energy_wh = params.energy_kwh * 1000.0
        return {
            "AHRtg": round(energy_wh / NOMINAL_DC_V),
            "WHRtg": to_raw(energy_wh, self.wh_sf),
            "WChaRteMax": self._raw_watts(params.max_charge_kw),
            "WDisChaRteMax": self._raw_watts(params.max_discharge_kw),
            "SoCMax": 1000,
            "SoCMin": 0,
            "SocRsvMax": to_raw(params.soc_max * 100.0, SOC_SF_802),
            "SoCRsvMin": to_raw(params.soc_min * 100.0, SOC_SF_802),
            "SoC": to_raw(unit.soc * 100.0, SOC_SF_802),
            "SoH": 100,
            "ChaSt": _charge_status(unit),
            "LocRemCtl": 0,  # REMOTE
            "Hb": int(now - self._started) % (1 << 16),
            "CtrlHb": unit.heartbeat_value or 0,
            "AlmRst": 0,
            "Typ": 4,  # LITHIUM_ION
            "State": 99 if unit.fault else 3,  # FAULT / CONNECTED
            "Evt1": 1 << 25 if unit.fault else 0,  # OTHER_ALARM
            "Evt2": 0,
            "EvtVnd1": 0,
            "EvtVnd2": 0,
            "V": to_raw(NOMINAL_DC_V, -1),
            "A": to_raw(unit.power_kw * 1000.0 / NOMINAL_DC_V, -1),
            "W": self._raw_watts(unit.power_kw),
            "SetOp": 1,  # CONNECT
            "SetInvState": 3,  # INVERTER_STARTED
            "AHRtg_SF": 0,
            "WHRtg_SF": self.wh_sf,
            "WChaDisChaMax_SF": self.w_sf,
            "SoC_SF": SOC_SF_802,
            "SoH_SF": 0,
            "V_SF": -1,
            "CellV_SF": -3,
            "A_SF": -1,
            "AMax_SF": -1,
            "W_SF": self.w_sf,
        }

    def _storage_basic(self, now: float) -> dict[str, int | str | None]:
        unit = self.unit
        active = unit.setpoint_kw is not None
        return {
            "WChaMax": self._raw_watts(unit.params.max_charge_kw),
            "WChaGra": 100,
            "WDisChaGra": 100,
            "StorCtl_Mod": self.controls.get("StorCtl_Mod", 0) if active else 0,
            "MinRsvPct": round(unit.params.soc_min * 100.0),
            "ChaState": to_raw(unit.soc * 100.0, CHA_STATE_SF_124),
            "ChaSt": _charge_status(unit),
            "OutWRte": self.controls.get("OutWRte", 10000),
            "InWRte": self.controls.get("InWRte", 10000),
            "InOutWRte_WinTms": 0,
            "InOutWRte_RvrtTms": self.controls.get("InOutWRte_RvrtTms", 0),
            "InOutWRte_RmpTms": 0,
            "WChaMax_SF": self.w_sf,
            "WChaDisChaGra_SF": 0,
            "MinRsvPct_SF": 0,
            "ChaState_SF": CHA_STATE_SF_124,
            "InOutWRte_SF": RATE_SF_124,
        }


def _charge_status(unit: SimulatedUnit) -> int:
    """802/124 ChaSt: 2 EMPTY, 3 DISCHARGING, 4 CHARGING, 5 FULL, 6 HOLDING."""
    charge_kw, discharge_kw = unit.limits_kw()
    if not unit.fault and charge_kw <= 0.0:
        return 5
    if not unit.fault and discharge_kw <= 0.0:
        return 2
    return 3 if unit.power_kw > 0 else 4 if unit.power_kw < 0 else 6


def _written_points(model: ModelDef, offset: int, values: Sequence[int]) -> dict[str, int | str | None] | None:
    """Raw values of the points a write covers; ``None`` if it covers a point only in part."""
    end = offset + len(values)
    written = {}
    for point in model.points.values():
        lo, hi = point.offset, point.offset + point.size
        if lo < end and hi > offset:
            if lo < offset or hi > end:
                return None
            written[point.name] = raw_value(point, values[lo - offset : hi - offset])
    return written


_RENDERERS: Mapping[int, Callable[[SunSpecImage, float], dict[str, int | str | None]]] = {
    1: SunSpecImage._common,
    701: SunSpecImage._measure_ac,
    702: SunSpecImage._capacity,
    704: SunSpecImage._controls_ac,
    713: SunSpecImage._storage_capacity,
    715: SunSpecImage._der_control,
    802: SunSpecImage._battery,
    124: SunSpecImage._storage_basic,
}
_WRITERS: Mapping[int, Callable[[SunSpecImage, dict[str, int | str | None], float], ExcCodes | None]] = {
    704: SunSpecImage._write_704,
    124: SunSpecImage._write_124,
    715: SunSpecImage._write_heartbeat,
    802: SunSpecImage._write_heartbeat,
}
