"""What a device tells us (``Telemetry``) and what we tell it (``Setpoint``).

These value types are the contract between ``adapters/`` and the rest of the
engine. Anything an adapter could not read, or read as implausible, is ``None``
here — never a made-up number — so the dispatcher can take the unit out.
Sign convention: power is positive when discharging (export), negative when charging.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class UnitState(enum.Enum):
    OK = "ok"  # operating, accepts setpoints
    STANDBY = "standby"  # healthy but idle / not accepting remote control
    FAULT = "fault"  # device reports a fault: never dispatch
    OFFLINE = "offline"  # no answer from the device
    UNKNOWN = "unknown"  # answered, but the state could not be decoded


@dataclass(frozen=True, slots=True)
class Telemetry:
    unit_id: str
    timestamp: datetime  # tz-aware, when the values were read
    soc: float | None = None  # fraction 0..1
    power_kw: float | None = None  # + discharge / - charge, AC side
    max_charge_kw: float | None = None  # currently allowed charge power (positive number)
    max_discharge_kw: float | None = None  # currently allowed discharge power
    state: UnitState = UnitState.UNKNOWN
    faults: tuple[str, ...] = field(default_factory=tuple)
    soc_resolution: float | None = None  # fraction: the step of the register SoC came from, when known


@dataclass(frozen=True, slots=True)
class Setpoint:
    unit_id: str
    power_kw: float  # + discharge / - charge
    issued_at: datetime  # tz-aware
    valid_s: float  # the device reverts to 0 W by itself this long after the last write
