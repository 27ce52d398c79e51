"""A site's grid-connection meter as the config describes it: how to reach it, how to read it, what to trust.

``sites[].meter`` names the device (SunSpec meter models 201-204, a register-map
YAML such as ``config/devices/chint_dtsu666.yaml``, or MQTT), the sign and
transformer ratios the installation needs, and the thresholds past which a
reading is not trusted (staleness, frozen value, beyond the connection's
rating). Kept in ``vpp/`` beside ``device_config`` because the fleet config
validates it; ``adapters/meter.py`` turns it into a live reader.
Sign: power + = export at the connection point, as everywhere in the engine.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vpp.device_config import RegisterPoint, WordOrder


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ModbusMeter(_Strict):
    host: str = Field(description="host name or address of the meter or its Modbus TCP gateway")
    port: int = Field(502, ge=1, le=65535, description="Modbus TCP port")
    slave_id: int = Field(1, ge=0, le=247, description="Modbus unit id behind the gateway")
    timeout_s: float = Field(0.5, gt=0, description="per request: a meter that answers later than this is as good as silent")


class SunSpecMeterDevice(_ModbusMeter):
    protocol: Literal["sunspec"] = Field(description="sunspec: SunSpec meter model 201, 202, 203 or 204 (W + = import, TotWhImp, TotWhExp)")


class ModbusMapMeterDevice(_ModbusMeter):
    protocol: Literal["modbus_map"] = Field(description="modbus_map: a meter register map YAML (config/devices/chint_dtsu666.yaml)")
    register_map: str = Field(description="path of the meter register-map YAML, relative to the config file")


class MqttMeterDevice(_Strict):
    protocol: Literal["mqtt"] = Field(description="mqtt: JSON on <topic_prefix>/<site>/meter/state through the fleet's broker")
    topic_prefix: str = Field("vpp", description="<prefix>/<site>/meter/state")


MeterDevice = Annotated[SunSpecMeterDevice | ModbusMapMeterDevice | MqttMeterDevice, Field(discriminator="protocol")]


class SubMeterModel(_Strict):
    """``sites[].meter.sub_meters[]``: a meter on the site's load or PV feeder, behind the grid meter."""

    id: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$", description="the sub-meter's id within its site (its readings are stored and reported as <site>/<id>)")
    role: Literal["load", "pv"] = Field(description="load: it meters what the site consumes; pv: what its PV generates")
    device: MeterDevice = Field(description="how the sub-meter is reached (mqtt: <topic_prefix>/<site>/<id>/meter/state)")
    invert: bool = Field(False, description="true: flip its sign (and swap its counters), as for the grid meter")
    ct_ratio: float = Field(1.0, gt=0, le=100000, description="current-transformer ratio its readings are multiplied by")
    pt_ratio: float = Field(1.0, gt=0, le=10000, description="voltage-transformer ratio, likewise")
    poll_s: float = Field(1.0, gt=0, le=10, description="how often it is read (wall seconds)")
    stale_after_s: float = Field(5.0, gt=0, le=600, description="a reading older than this is stale: not used")
    frozen_after_s: float = Field(60.0, gt=0, le=3600, description="a reading unchanged (power and counters) this long is frozen: not used")

    @model_validator(mode="after")
    def _window(self) -> SubMeterModel:
        if self.stale_after_s < self.poll_s:
            raise ValueError(f"stale_after_s {self.stale_after_s} is shorter than poll_s {self.poll_s}: every reading would be stale")
        return self


class MeterModel(_Strict):
    """``sites[].meter``: the grid-connection meter the site control loop closes on."""

    device: MeterDevice = Field(description="how the meter is reached")
    invert: bool = Field(False, description="true: the meter (or its CT) counts export as negative of what its protocol says; flips power and swaps the energy counters")
    ct_ratio: float = Field(1.0, gt=0, le=100000, description="current-transformer ratio the meter's readings are multiplied by (1: it reports primary values)")
    pt_ratio: float = Field(1.0, gt=0, le=10000, description="voltage-transformer ratio, likewise")
    rating_kw: float | None = Field(None, gt=0, description="the connection's rating: a reading beyond 1.5x this is implausible (default: the larger finite site limit, else the sum of the units' ratings plus the site's configured load)")
    poll_s: float = Field(0.25, gt=0, le=10, description="how often the meter is read (wall seconds)")
    stale_after_s: float = Field(1.0, gt=0, le=60, description="a reading older than this is stale: the site fails safe")
    frozen_after_s: float = Field(10.0, gt=0, le=3600, description="a power reading that has not changed in its last bit for this long is frozen: the site fails safe")
    export_margin_kw: float = Field(2.0, ge=0, description="the control loop keeps the meter this far inside the export limit")
    import_margin_kw: float = Field(2.0, ge=0, description="and this far inside the import limit")
    demand_target_kw: float | None = Field(None, gt=0, description="operator cap on the demand-window average import, kW (default: the plan's peak import over its horizon)")
    demand_window_min: float = Field(15.0, gt=0, le=60, description="the tariff's demand window: its average import is what the demand charge bills")
    sub_meters: list[SubMeterModel] = Field([], max_length=8, description="meters on the site's load and PV feeders: stored, cross-checked against the grid meter (base load = load − PV), and the base load the tick dispatches against while the grid meter is not trusted")
    agreement_kw: float = Field(10.0, gt=0, description="the sub-meters' load − PV may differ this much from the grid meter's base load (grid − batteries) before the site raises a sub-meter alarm")

    @model_validator(mode="after")
    def _window(self) -> MeterModel:
        if self.stale_after_s < self.poll_s:
            raise ValueError(f"stale_after_s {self.stale_after_s} is shorter than poll_s {self.poll_s}: every reading would be stale")
        ids = [m.id for m in self.sub_meters]
        if len(set(ids)) < len(ids):
            raise ValueError(f"sub_meters: ids {ids} repeat")
        if sum(m.role == "load" for m in self.sub_meters) > 1 or sum(m.role == "pv" for m in self.sub_meters) > 1:
            raise ValueError("sub_meters: at most one load and one pv sub-meter per site")
        return self


# ---------------------------------------------------------------- meter register maps

MeterUnit = Literal["W", "kW", "Wh", "kWh"]


class MeterPoint(RegisterPoint):
    unit: MeterUnit = "W"  # type: ignore[assignment]


class MeterMapPoints(_Strict):
    power: MeterPoint = Field(description="total active power; scale it so + = export (a meter counting import positive takes a negative scale)")
    import_energy: MeterPoint | None = Field(None, description="total imported active energy counter")
    export_energy: MeterPoint | None = Field(None, description="total exported active energy counter")

    @model_validator(mode="after")
    def _units(self) -> MeterMapPoints:
        if self.power.unit not in ("W", "kW"):
            raise ValueError(f"power: unit {self.power.unit!r} must be W or kW")
        for role in ("import_energy", "export_energy"):
            point = getattr(self, role)
            if point is not None and point.unit not in ("Wh", "kWh"):
                raise ValueError(f"{role}: unit {point.unit!r} must be Wh or kWh")
        return self


class MeterRegisterMap(_Strict):
    """A non-SunSpec meter described as data (same point grammar as battery register maps)."""

    kind: Literal["meter"] = Field(description="meter: tells a meter map from a battery map")
    name: str = Field(min_length=1)
    word_order: WordOrder = "big"
    max_gap: int = Field(0, ge=0, le=100, description="unused registers a batched read may span")
    points: MeterMapPoints

    def word_order_of(self, point: RegisterPoint) -> WordOrder:
        return point.word_order or self.word_order
