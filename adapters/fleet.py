"""The adapters of a fleet config, built once: Modbus links shared per gateway, one MQTT session.

This is the only place that reads ``device:`` blocks; the daemon and the CLI
get a ready ``DeviceFleet`` and use its adapters by unit id.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from adapters.base import DeviceAdapter
from adapters.health import Backoff
from adapters.modbus_link import ModbusLinks
from adapters.modbus_map import RegisterMapAdapter, load_register_map
from adapters.mqtt import MqttGateway, MqttUnit, MqttUnitAdapter
from adapters.service import Service
from adapters.sunspec import SunSpecAdapter
from vpp.device_config import ModbusMapDevice, MqttBrokerConfig, MqttDevice, RegisterMap, SunSpecDevice
from vpp.errors import InputError
from vpp.fleet import BatteryUnit
from vpp.fleet_state import FleetState


def rating_kw(unit: BatteryUnit) -> float:
    return max(unit.max_charge_kw, unit.max_discharge_kw)


def mqtt_unit(unit: BatteryUnit, device: MqttDevice) -> MqttUnit:
    return MqttUnit(unit.id, unit.site_id, device.topic_prefix, rating_kw(unit), device.stale_after_s)


def require_broker(units: Sequence[BatteryUnit], broker: MqttBrokerConfig | None, where: str) -> None:
    """MQTT units need the fleet-level ``mqtt:`` block."""
    mqtt_ids = [u.id for u in units if isinstance(u.device, MqttDevice)]
    if mqtt_ids and broker is None:
        raise InputError(where, "mqtt", None, f"an mqtt: broker block (units {', '.join(mqtt_ids[:3])} use protocol mqtt)")


class DeviceFleet(Service):
    def __init__(self, units: Sequence[BatteryUnit], broker: MqttBrokerConfig | None, config_dir: Path, state: FleetState) -> None:
        require_broker(units, broker, str(config_dir))
        self.links = ModbusLinks()
        self.adapters: dict[str, DeviceAdapter] = {}
        self.gateway: MqttGateway | None = None
        mqtt_units: list[MqttUnit] = []
        maps: dict[Path, RegisterMap] = {}
        for unit in units:
            device = unit.device
            if isinstance(device, SunSpecDevice | ModbusMapDevice):
                link = self.links.get(device.host, device.port, device.timeout_s)
                options = {"rating_kw": rating_kw(unit), "backoff": Backoff(max_s=device.backoff_max_s)}
                if isinstance(device, SunSpecDevice):
                    self.adapters[unit.id] = SunSpecAdapter(unit.id, link, device.slave_id, **options)
                else:
                    path = config_dir / device.register_map
                    if path not in maps:
                        maps[path] = load_register_map(path)
                    self.adapters[unit.id] = RegisterMapAdapter(unit.id, link, device.slave_id, maps[path], **options)
            elif isinstance(device, MqttDevice):
                mqtt_units.append(mqtt_unit(unit, device))
        if mqtt_units and broker is not None:
            self.gateway = MqttGateway(broker, mqtt_units, state)
            self.adapters.update({u.unit_id: MqttUnitAdapter(u, self.gateway) for u in mqtt_units})

    async def start(self) -> None:
        if self.gateway is not None:
            await self.gateway.start()
        for adapter in self.adapters.values():
            await adapter.connect()

    async def stop(self) -> None:
        for adapter in self.adapters.values():
            await adapter.close()
        if self.gateway is not None:
            await self.gateway.stop()
        self.links.close()
