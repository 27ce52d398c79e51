"""MQTT topics and JSON payloads between the gateway and MQTT batteries (see docs/adapters.md).

``<prefix>/<site>/<unit>/state`` (device -> gateway, retained) carries
telemetry with its own timestamp; ``<prefix>/<site>/<unit>/setpoint``
(gateway -> device, QoS 1, not retained, MQTT v5 message expiry) carries a
power and how long it stays valid. Parsing is strict: a payload of the wrong
shape is malformed as a whole; a well-formed value outside its physical range
becomes missing (``adapters.plausibility``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from adapters.plausibility import limit_or_none, power_or_none, soc_or_none
from vpp.telemetry import Telemetry, UnitState


def state_topic(prefix: str, site_id: str, unit_id: str) -> str:
    return f"{prefix}/{site_id}/{unit_id}/state"


def setpoint_topic(prefix: str, site_id: str, unit_id: str) -> str:
    return f"{prefix}/{site_id}/{unit_id}/setpoint"


class StatePayload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, allow_inf_nan=False)

    timestamp: AwareDatetime
    soc: float | None = Field(None, description="fraction 0..1")
    power_kw: float | None = Field(None, description="+ discharge / - charge, AC side")
    max_charge_kw: float | None = None
    max_discharge_kw: float | None = None
    state: UnitState = UnitState.UNKNOWN
    faults: tuple[str, ...] = ()

    def telemetry(self, unit_id: str, rating_kw: float | None) -> Telemetry:
        return Telemetry(
            unit_id=unit_id,
            timestamp=self.timestamp.astimezone(UTC),
            soc=soc_or_none(self.soc),
            power_kw=power_or_none(self.power_kw, rating_kw),
            max_charge_kw=limit_or_none(self.max_charge_kw, rating_kw),
            max_discharge_kw=limit_or_none(self.max_discharge_kw, rating_kw),
            state=self.state,
            faults=self.faults,
        )


class SetpointPayload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, allow_inf_nan=False)

    power_kw: float
    issued_at: AwareDatetime
    valid_s: float = Field(gt=0, description="the device reverts to 0 W this long after issued_at")

    @property
    def expires_at(self) -> datetime:
        return self.issued_at + timedelta(seconds=self.valid_s)
