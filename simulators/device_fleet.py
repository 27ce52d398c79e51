"""A simulated fleet matching a fleet config, so the daemon and demos run against real protocol stacks.

Every unit with a ``device:`` block gets a ``SimulatedUnit`` (its battery from
the unit's own parameters, its heartbeat timeout from ``revert_s``); Modbus
units are served by one ``ModbusDeviceServer`` per host:port (SunSpec or
register-map image by slave id), MQTT units by one ``MqttDeviceSimulator``.
Every site with a ``meter:`` gets a ``SimulatedMeter`` over its units (its load
and PV from ``site_load_kw``/``site_pv_kw``), served where the meter block says;
each of its sub-meters a ``SimulatedSubMeter`` reading that meter's load or PV.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from adapters.fleet import mqtt_unit, rating_kw, require_broker
from adapters.meter import load_meter_map
from adapters.modbus_map import load_register_map
from adapters.service import Service
from simulators.battery import BatteryParams
from simulators.modbus_map_server import RegisterMapImage
from simulators.modbus_server import ModbusDeviceServer, RegisterImage
from simulators.mqtt_device import MqttDeviceSimulator
from simulators.sim_meter import MeterMapImage, MqttMeterSimulator, SimulatedMeter, SimulatedSubMeter, SunSpecMeterImage
from simulators.sim_unit import SimulatedUnit
from simulators.sunspec_server import SunSpecImage
from vpp.device_config import ModbusMapDevice, MqttBrokerConfig, MqttDevice, SunSpecDevice
from vpp.fleet import BatteryUnit
from vpp.meter import sub_meter_key
from vpp.meter_config import MeterModel, ModbusMapMeterDevice, MqttMeterDevice, SunSpecMeterDevice


def simulated_unit(unit: BatteryUnit, revert_s: float) -> SimulatedUnit:
    params = BatteryParams(
        energy_kwh=unit.energy_kwh,
        max_charge_kw=unit.max_charge_kw,
        max_discharge_kw=unit.max_discharge_kw,
        soc_min=unit.soc_min,
        soc_max=unit.soc_max,
        eta_charge=unit.eta_charge,
        eta_discharge=unit.eta_discharge,
        self_discharge_per_h=unit.self_discharge_per_h,
    )
    return SimulatedUnit(unit.id, params, soc=unit.initial_soc, heartbeat_timeout_s=revert_s)


class SimulatedFleet(Service):
    def __init__(
        self,
        units: Sequence[BatteryUnit],
        broker: MqttBrokerConfig | None,
        config_dir: Path,
        tick_s: float = 0.5,
        publish_s: float = 1.0,
        meters: Mapping[str, MeterModel] | None = None,
        site_load_kw: Mapping[str, float] | None = None,
        site_pv_kw: Mapping[str, float] | None = None,
        meter_noise_kw: float = 0.2,
        site_rating_kw: Mapping[str, float] | None = None,
    ) -> None:
        require_broker(units, broker, str(config_dir))
        self.units: dict[str, SimulatedUnit] = {}
        gateways: dict[tuple[str, int], dict[int, RegisterImage]] = defaultdict(dict)
        mqtt_devices = []
        for unit in units:
            device = unit.device
            if device is None:
                continue
            sim = self.units[unit.id] = simulated_unit(unit, device.revert_s)
            if isinstance(device, SunSpecDevice):
                gateways[(device.host, device.port)][device.slave_id] = SunSpecImage(sim, slave_id=device.slave_id)
            elif isinstance(device, ModbusMapDevice):
                register_map = load_register_map(config_dir / device.register_map)
                gateways[(device.host, device.port)][device.slave_id] = RegisterMapImage(sim, register_map)
            elif isinstance(device, MqttDevice):
                mqtt_devices.append((mqtt_unit(unit, device), sim))
        self.meters: dict[str, SimulatedMeter] = {}
        self.sub_meters: dict[str, SimulatedSubMeter] = {}  # by <site>/<id>
        mqtt_meters = []
        site_rating_kw = site_rating_kw or {}

        def serve(sim_meter: SimulatedMeter, device, rating: float) -> None:
            if isinstance(device, SunSpecMeterDevice):
                gateways[(device.host, device.port)][device.slave_id] = SunSpecMeterImage(sim_meter, rating, slave_id=device.slave_id)  # type: ignore[assignment]
            elif isinstance(device, ModbusMapMeterDevice):
                gateways[(device.host, device.port)][device.slave_id] = MeterMapImage(sim_meter, load_meter_map(config_dir / device.register_map))  # type: ignore[arg-type]
            elif isinstance(device, MqttMeterDevice):
                mqtt_meters.append((device.topic_prefix, sim_meter))

        for k, (site_id, meter) in enumerate((meters or {}).items()):
            members = [self.units[u.id] for u in units if u.site_id == site_id and u.id in self.units]
            sim_meter = self.meters[site_id] = SimulatedMeter(site_id, members, (site_load_kw or {}).get(site_id, 0.0), (site_pv_kw or {}).get(site_id, 0.0), meter_noise_kw, seed=k)
            rating = meter.rating_kw or site_rating_kw.get(site_id) or 10.0 * sum(rating_kw(u) for u in units if u.site_id == site_id)
            serve(sim_meter, meter.device, rating)
            for j, sub in enumerate(meter.sub_meters):
                key = sub_meter_key(site_id, sub.id)
                self.sub_meters[key] = SimulatedSubMeter(key, [], 0.0, 0.0, meter_noise_kw, seed=1000 * (k + 1) + j, parent=sim_meter, role=sub.role)
                serve(self.sub_meters[key], sub.device, rating)
        self.servers = [ModbusDeviceServer(images, host, port, tick_s) for (host, port), images in gateways.items()]
        self.mqtt = MqttDeviceSimulator(broker, mqtt_devices, publish_s) if mqtt_devices and broker is not None else None
        self.mqtt_meters = MqttMeterSimulator(broker, mqtt_meters, min(publish_s, 0.25)) if mqtt_meters and broker is not None else None

    async def start(self) -> None:
        for server in self.servers:
            await server.start()
        if self.mqtt is not None:
            await self.mqtt.start()
        if self.mqtt_meters is not None:
            await self.mqtt_meters.start()

    async def stop(self) -> None:
        if self.mqtt_meters is not None:
            await self.mqtt_meters.stop()
        if self.mqtt is not None:
            await self.mqtt.stop()
        for server in self.servers:
            await server.stop()

    def endpoints(self) -> list[str]:
        """One line per simulated endpoint, for the CLI."""
        lines = [f"modbus {s.host}:{s.port} slaves {sorted(s.images)}" for s in self.servers]
        if self.mqtt is not None:
            broker = self.mqtt.session.broker
            lines.append(f"mqtt {broker.host}:{broker.port} units {len(self.mqtt.devices)}")
        if self.mqtt_meters is not None:
            lines.append(f"mqtt meters {', '.join(t for t, _ in self.mqtt_meters.meters)}")
        return lines
