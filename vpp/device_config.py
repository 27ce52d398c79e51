"""How the gateway reaches devices: a unit's ``device:`` block, the fleet-level ``mqtt:`` block,
and the register-map files that describe non-SunSpec devices.

Kept in ``vpp/`` (not ``adapters/``) because the fleet config validates it, and
the domain must not import I/O code; ``adapters/`` turns these into live adapters.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ModbusDevice(_Strict):
    host: str = Field(description="host name or address of the device or its Modbus TCP gateway")
    port: int = Field(502, ge=1, le=65535, description="Modbus TCP port")
    slave_id: int = Field(1, ge=0, le=247, description="Modbus unit id behind the gateway")
    timeout_s: float = Field(1.0, gt=0, description="per request; units behind one gateway share the smallest")
    revert_s: float = Field(30.0, gt=0, description="device reverts to 0 W this long after the last setpoint")
    backoff_max_s: float = Field(300.0, gt=0, description="longest wait between retries of an unanswering device")


class SunSpecDevice(_ModbusDevice):
    protocol: Literal["sunspec"] = Field(description="sunspec: SunSpec models 1/124/701-704/713/802, discovered at 40000, 0 or 50000")


class ModbusMapDevice(_ModbusDevice):
    protocol: Literal["modbus_map"] = Field(description="modbus_map: registers described by a register-map YAML (config/devices/)")
    register_map: str = Field(description="path of the register-map YAML, relative to the config file")


class MqttDevice(_Strict):
    protocol: Literal["mqtt"] = Field(description="mqtt: JSON telemetry and setpoints through the fleet's broker (the mqtt: block)")
    topic_prefix: str = Field("vpp", description="<prefix>/<site>/<unit>/state and .../setpoint")
    revert_s: float = Field(30.0, gt=0, description="the device reverts to 0 W this long after the last setpoint, seconds")
    stale_after_s: float = Field(10.0, gt=0, description="telemetry older than this counts as missing")


DeviceConfig = Annotated[SunSpecDevice | ModbusMapDevice | MqttDevice, Field(discriminator="protocol")]


class MqttTls(_Strict):
    ca_file: str | None = Field(None, description="CA bundle that signed the broker certificate; None = system CAs")
    cert_file: str | None = Field(None, description="client certificate, for brokers that require one")
    key_file: str | None = Field(None, description="the client certificate's private key")
    insecure: bool = Field(False, description="skip host-name verification (test rigs only)")

    @model_validator(mode="after")
    def _pair(self) -> MqttTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file, or neither")
        return self


class MqttBrokerConfig(_Strict):
    """The fleet-level ``mqtt:`` block: one broker session shared by every MQTT unit."""

    host: str = Field("localhost", description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker port (8883 is usual with TLS)")
    client_id: str = Field("vpp-gateway", min_length=1, description="also names the status topic vpp/gateway/<id>/status")
    username: str | None = Field(None, description="user name at the broker")
    password: str | None = Field(None, description="password at the broker; prefer password_env")
    password_env: str | None = Field(None, description="name of an environment variable holding the password")
    tls: MqttTls | None = Field(None, description="TLS settings; none: plain TCP")
    keepalive_s: int = Field(30, ge=5, description="MQTT keepalive, seconds")
    reconnect_min_s: float = Field(0.5, gt=0, description="first wait before reconnecting after the broker is lost, seconds (doubles up to reconnect_max_s)")
    reconnect_max_s: float = Field(30.0, gt=0, description="longest wait between reconnect attempts, seconds")

    @model_validator(mode="after")
    def _credentials(self) -> MqttBrokerConfig:
        if self.password is not None and self.password_env is not None:
            raise ValueError("give password or password_env, not both")
        if (self.password is not None or self.password_env is not None) and self.username is None:
            raise ValueError("a password needs a username")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(f"reconnect_min_s {self.reconnect_min_s} > reconnect_max_s {self.reconnect_max_s}")
        return self

    @property
    def status_topic(self) -> str:
        return f"vpp/gateway/{self.client_id}/status"


# ---------------------------------------------------------------- register maps

RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32"]
RegisterUnit = Literal["W", "kW", "pct", "fraction", "s", "count"]
WordOrder = Literal["big", "little"]


class RegisterPoint(_Strict):
    """One value in a device's register space. Engineering value = raw × ``scale`` in ``unit``."""

    address: int = Field(ge=0, le=65535, description="0-based protocol address")
    function: Literal[3, 4] = Field(3, description="3 = holding register, 4 = input register")
    type: RegisterType = "uint16"
    word_order: WordOrder | None = Field(None, description="32-bit types: big = high word first; default from the map")
    scale: float = Field(1.0, description="negative flips the sign, for devices that count charging as positive")
    unit: RegisterUnit = "count"
    access: Literal["r", "rw"] = "r"
    missing: list[int] = Field([], description="raw values the device uses for 'not available'")

    @model_validator(mode="after")
    def _consistent(self) -> RegisterPoint:
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.access == "rw" and self.function != 3:
            raise ValueError("writable points must be holding registers (function 3)")
        if self.word_order is not None and self.type in ("int16", "uint16"):
            raise ValueError(f"word_order applies to 32-bit types, not {self.type}")
        return self

    @property
    def size(self) -> int:
        return 1 if self.type in ("int16", "uint16") else 2


class StatePoint(RegisterPoint):
    states: dict[int, Literal["ok", "standby", "fault"]] = Field(min_length=1, description="raw value -> unit state")


class RegisterMapPoints(_Strict):
    soc: RegisterPoint
    power: RegisterPoint = Field(description="AC power, + discharge / - charge after scaling")
    power_setpoint: RegisterPoint
    max_charge_power: RegisterPoint | None = None
    max_discharge_power: RegisterPoint | None = None
    state: StatePoint | None = None
    fault_code: RegisterPoint | None = Field(None, description="non-zero raw value = active fault")
    setpoint_revert: RegisterPoint | None = Field(None, description="device-side revert timeout, written with setpoints")
    heartbeat: RegisterPoint | None = Field(None, description="counter the gateway increments; device reverts when it stops")

    @model_validator(mode="after")
    def _roles(self) -> RegisterMapPoints:
        units = {
            "soc": ("pct", "fraction"),
            "power": ("W", "kW"),
            "power_setpoint": ("W", "kW"),
            "max_charge_power": ("W", "kW"),
            "max_discharge_power": ("W", "kW"),
            "state": ("count",),
            "fault_code": ("count",),
            "setpoint_revert": ("s",),
            "heartbeat": ("count",),
        }
        for role, allowed in units.items():
            point = getattr(self, role)
            if point is not None and point.unit not in allowed:
                raise ValueError(f"{role}: unit {point.unit!r} must be one of {allowed}")
        for role in ("power_setpoint", "setpoint_revert", "heartbeat"):
            point = getattr(self, role)
            if point is not None and point.access != "rw":
                raise ValueError(f"{role} is written by the gateway: access must be rw")
        return self


class RegisterMap(_Strict):
    """A non-SunSpec PCS/BMS described as data: a new device is a YAML file, not code."""

    name: str = Field(min_length=1)
    word_order: WordOrder = "big"
    max_gap: int = Field(0, ge=0, le=100, description="unused registers a batched read may span (0: devices that reject them)")
    points: RegisterMapPoints

    def word_order_of(self, point: RegisterPoint) -> WordOrder:
        return point.word_order or self.word_order
