"""Simulated MQTT batteries: one broker session publishing every unit's state and obeying setpoints.

Each unit publishes its state (retained) every ``publish_s`` and takes
setpoints from its setpoint topic: an expired one is ignored, a valid one holds
until its expiry unless renewed. When the gateway's status topic turns
"offline" (its last will), every unit falls back to 0 W at once — the MQTT
counterpart of a Modbus controller heartbeat. Faults: ``WireFault.SILENT`` stops
a unit's publishing, ``WireFault.GARBAGE`` makes it publish junk,
``drop_connection`` cuts the TCP link uncleanly, ``unit.fault`` is the device fault state.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aiomqtt
from pydantic import ValidationError

from adapters.mqtt import MqttUnit
from adapters.mqtt_payloads import SetpointPayload, StatePayload
from adapters.mqtt_session import OFFLINE, MqttSession
from adapters.service import Service
from simulators.sim_unit import SimulatedUnit, WireFault
from vpp.device_config import MqttBrokerConfig
from vpp.errors import AdapterError
from vpp.telemetry import UnitState

log = logging.getLogger(__name__)


@dataclass
class DeviceStats:
    published: int = 0
    setpoints_applied: int = 0
    setpoints_expired: int = 0
    setpoints_malformed: int = 0


class MqttDeviceSimulator(Service):
    def __init__(
        self,
        broker: MqttBrokerConfig,
        devices: Sequence[tuple[MqttUnit, SimulatedUnit]],
        publish_s: float = 1.0,
        client_id: str | None = None,
        seed: int = 0,
    ) -> None:
        self.devices = {topic.setpoint_topic: (topic, unit) for topic, unit in devices}
        self.publish_s = publish_s
        self.stats = DeviceStats()
        self._gateway_status = broker.status_topic
        self._random = random.Random(seed)
        prefixes = sorted({topic.topic_prefix for topic, _ in devices})
        subscriptions = [*(f"{p}/+/+/setpoint" for p in prefixes), self._gateway_status]
        self.session = MqttSession(broker, client_id or f"{broker.client_id}-sim", subscriptions, self._on_message)
        self._publisher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.session.start()
        self._publisher = asyncio.create_task(self._publish_loop())

    async def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
        await self.session.stop()

    def unit(self, unit_id: str) -> SimulatedUnit:
        return next(unit for topic, unit in self.devices.values() if topic.unit_id == unit_id)

    def drop_connection(self) -> None:
        self.session.drop()

    async def publish_all(self) -> None:
        """Advance every unit and publish its state once (skipped while the broker is away)."""
        now = time.monotonic()
        for topic, unit in self.devices.values():
            unit.advance(now)
            if unit.wire_fault is WireFault.SILENT:
                continue
            try:
                await self.session.publish(topic.state_topic, self._payload(unit), qos=0, retain=True)
            except AdapterError:
                return  # disconnected: the session reconnects; state is published again next round
            self.stats.published += 1

    async def _publish_loop(self) -> None:
        while True:
            await self.publish_all()
            await asyncio.sleep(self.publish_s)

    def _payload(self, unit: SimulatedUnit) -> bytes:
        if unit.wire_fault is WireFault.GARBAGE:
            return self._random.randbytes(self._random.randrange(1, 64))
        charge_kw, discharge_kw = unit.limits_kw()
        return StatePayload(
            timestamp=datetime.now(UTC),
            soc=unit.soc,
            power_kw=unit.power_kw,
            max_charge_kw=charge_kw,
            max_discharge_kw=discharge_kw,
            state=UnitState.FAULT if unit.fault else UnitState.OK,
            faults=("simulated fault",) if unit.fault else (),
        ).model_dump_json().encode()

    def _on_message(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        if topic == self._gateway_status:
            if message.payload == OFFLINE:
                for _, unit in self.devices.values():
                    if unit.setpoint_kw is not None:
                        unit.revert("gateway offline")
            return
        device = self.devices.get(topic)
        if device is None:
            return
        _, unit = device
        if unit.wire_fault is WireFault.SILENT:
            return
        try:
            setpoint = SetpointPayload.model_validate_json(message.payload)  # type: ignore[arg-type]
        except ValidationError:
            self.stats.setpoints_malformed += 1
            return
        remaining_s = (setpoint.expires_at - datetime.now(UTC)).total_seconds()
        if remaining_s <= 0:
            self.stats.setpoints_expired += 1
            return
        unit.command(setpoint.power_kw, remaining_s, time.monotonic())
        self.stats.setpoints_applied += 1
