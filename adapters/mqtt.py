"""MQTT batteries: every MQTT unit of the fleet over one broker session.

State messages are parsed (pydantic), checked for plausibility and applied to
the ``FleetState`` as they arrive; malformed ones are counted and logged,
never raised. Losing the broker marks every MQTT unit offline at once (a
retained message replayed after reconnecting is older than that verdict, so
it cannot resurrect stale values). ``MqttUnitAdapter`` gives each unit the
common adapter interface on top.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from adapters.base import DeviceAdapter, utcnow
from adapters.health import Backoff
from adapters.mqtt_payloads import SetpointPayload, StatePayload, setpoint_topic, state_topic
from adapters.mqtt_session import MqttSession
from adapters.service import Service
from vpp.device_config import MqttBrokerConfig
from vpp.errors import AdapterError
from vpp.fleet_state import FleetState
from vpp.telemetry import Setpoint, Telemetry, UnitState

log = logging.getLogger(__name__)

MAX_CLOCK_SKEW = timedelta(seconds=30)  # a device timestamp further in the future than this is implausible
MAX_AGE = timedelta(days=1)  # and one older than this (stale long before: it could only be garbage or a dead clock)
MAX_PAYLOAD_BYTES = 16 * 1024  # a state message is ~200 bytes


@dataclass(frozen=True, slots=True)
class MqttUnit:
    unit_id: str
    site_id: str
    topic_prefix: str
    rating_kw: float | None = None
    stale_after_s: float = 10.0

    @property
    def state_topic(self) -> str:
        return state_topic(self.topic_prefix, self.site_id, self.unit_id)

    @property
    def setpoint_topic(self) -> str:
        return setpoint_topic(self.topic_prefix, self.site_id, self.unit_id)


@dataclass
class IngestStats:
    received: int = 0
    applied: int = 0
    malformed: int = 0  # not JSON, wrong shape, or a timestamp from the future
    unknown_topic: int = 0  # a unit the fleet config does not have
    superseded: int = 0  # older than what the fleet state holds (e.g. retained, replayed)


def parse_state(unit: MqttUnit, payload: bytes, now: datetime) -> Telemetry:
    """Telemetry from a state message. Raises ``ValueError`` (incl. pydantic's) for a malformed one: too
    large, not the shape, or a timestamp outside [now − MAX_AGE, now + MAX_CLOCK_SKEW]."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}")
    state = StatePayload.model_validate_json(payload)
    if not _plausible(state.timestamp, now):
        raise ValueError(f"timestamp {state.timestamp.isoformat()} is not within {MAX_AGE} before and {MAX_CLOCK_SKEW} after now")
    return state.telemetry(unit.unit_id, unit.rating_kw)


def _plausible(timestamp: datetime, now: datetime) -> bool:
    try:
        return now - MAX_AGE <= timestamp <= now + MAX_CLOCK_SKEW
    except OverflowError:  # the aware comparison converts to UTC, which may not exist near year 1 or 9999
        return False


def _reason(err: Exception) -> str:
    """One short line: pydantic's first problem (its own first line only says how many there are)."""
    if isinstance(err, ValidationError) and err.errors():
        first = err.errors(include_url=False)[0]
        return f"{'.'.join(map(str, first['loc'])) or 'payload'}: {first['msg']}"[:200]
    return (str(err).splitlines() or [type(err).__name__])[0][:200]


class MqttGateway(Service):
    def __init__(self, broker: MqttBrokerConfig, units: Sequence[MqttUnit], state: FleetState) -> None:
        self.units = {u.unit_id: u for u in units}
        self.state = state
        self.stats = IngestStats()
        self._by_topic = {u.state_topic: u for u in units}
        prefixes = sorted({u.topic_prefix for u in units})
        self.session = MqttSession(
            broker, broker.client_id, [f"{p}/+/+/state" for p in prefixes], self._on_message, broker.status_topic, self._on_link
        )

    async def start(self) -> None:
        self.session.start()

    async def stop(self) -> None:
        await self.session.stop()

    async def send_setpoint(self, setpoint: Setpoint) -> None:
        """Publish with QoS 1; the broker drops it when it is older than its validity (MQTT v5 expiry)."""
        unit = self.units[setpoint.unit_id]
        payload = SetpointPayload(power_kw=setpoint.power_kw, issued_at=setpoint.issued_at, valid_s=setpoint.valid_s)
        properties = Properties(PacketTypes.PUBLISH)
        properties.MessageExpiryInterval = max(1, math.ceil(setpoint.valid_s))
        await self.session.publish(unit.setpoint_topic, payload.model_dump_json().encode(), qos=1, properties=properties)

    def _on_message(self, message: aiomqtt.Message) -> None:
        self.stats.received += 1
        unit = self._by_topic.get(message.topic.value)
        if unit is None:
            self.stats.unknown_topic += 1
            return
        try:
            telemetry = parse_state(unit, message.payload, utcnow())  # type: ignore[arg-type]
        except (ValueError, OverflowError) as err:
            self._malformed(message.topic.value, _reason(err), message.payload)  # type: ignore[arg-type]
            return
        if self.state.apply(telemetry):
            self.stats.applied += 1
        else:
            self.stats.superseded += 1

    def _malformed(self, topic: str, reason: str, payload: bytes) -> None:
        self.stats.malformed += 1
        count = self.stats.malformed
        if count & (count - 1) == 0:  # 1st, 2nd, 4th, 8th, ...: a flood of garbage does not flood the log
            log.warning("mqtt malformed topic=%s reason=%s payload_head=%r malformed_total=%d", topic, reason, bytes(payload[:64]), count)

    def _on_link(self, up: bool) -> None:
        if up:
            return
        now = utcnow()
        for unit_id in self.units:
            self.state.apply(Telemetry(unit_id, now, state=UnitState.OFFLINE, faults=("mqtt broker connection lost",)))


class MqttUnitAdapter(DeviceAdapter):
    """One MQTT unit; reads come from what the gateway has ingested, writes are published."""

    def __init__(self, unit: MqttUnit, gateway: MqttGateway) -> None:
        super().__init__(unit.unit_id, Backoff(base_s=0.0))  # nothing to back off from: reads cost no request
        self.unit = unit
        self.gateway = gateway

    async def connect(self) -> None:
        """The gateway's session is shared and started by its owner."""

    async def close(self) -> None:
        """See ``connect``."""

    async def _read(self, now: datetime) -> Telemetry:
        telemetry = self.gateway.state.telemetry(self.unit_id)
        if telemetry is None:
            raise AdapterError(f"no telemetry on {self.unit.state_topic} yet")
        if telemetry.state is UnitState.OFFLINE:
            raise AdapterError(f"offline since {telemetry.timestamp:%H:%M:%S}: {', '.join(telemetry.faults)}")
        age_s = (now - telemetry.timestamp).total_seconds()
        if age_s > self.unit.stale_after_s:
            raise AdapterError(f"telemetry on {self.unit.state_topic} is {age_s:.0f} s old")
        return telemetry

    async def _write(self, setpoint: Setpoint) -> None:
        await self.gateway.send_setpoint(setpoint)
