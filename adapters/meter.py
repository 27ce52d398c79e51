"""Grid meters: SunSpec 201-204, register-map meters (config/devices/chint_dtsu666.yaml) and MQTT meters.

Every reader turns what its protocol says into a ``vpp.meter.MeterReading`` in
the engine's sign (+ export) and primary values (× CT × PT ratio; ``invert``
flips the sign and swaps the counters for a CT mounted the wrong way round).
``MeterPoller`` reads every Modbus meter at its own ``poll_s`` (one task per
meter, so a silent meter costs its own timeout and nobody else's), the MQTT
feed applies messages as they come; both hand each reading to ``on_reading``,
which is where plausibility is judged (``vpp.daemon.site_loop``). A failed read
is not a reading: the site's last one simply ages until it is stale.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from adapters.base import utcnow
from adapters.batching import Span, plan_reads
from adapters.modbus_link import ModbusLink, ModbusLinks
from adapters.modbus_map import decode_point
from adapters.mqtt import MAX_PAYLOAD_BYTES, _plausible, _reason
from adapters.mqtt_session import MqttSession
from adapters.service import Service
from adapters.sunspec import HOLDING, SunSpecLayout, _view, discover
from adapters.sunspec_models import model_def
from vpp.config import read_yaml
from vpp.device_config import MqttBrokerConfig
from vpp.errors import AdapterError, InputError, from_validation_error
from vpp.log_limit import LogLimiter, held_note
from vpp.meter import MeterReading, sub_meter_key
from vpp.meter_config import ModbusMapMeterDevice, MeterModel, MeterRegisterMap, MqttMeterDevice, SubMeterModel, SunSpecMeterDevice

log = logging.getLogger(__name__)

METER_MODELS = (201, 202, 203, 204)  # single phase, split phase, wye, delta: the points used here sit at the same offsets
METER_POINTS = ("W", "W_SF", "TotWhExp", "TotWhImp", "TotWh_SF")


def meter_topic(prefix: str, site_id: str) -> str:
    return f"{prefix}/{site_id}/meter/state"


def load_meter_map(path: Path) -> MeterRegisterMap:
    try:
        return MeterRegisterMap.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise from_validation_error(exc, str(path)) from None


def to_engine(site_id: str, timestamp: datetime, meter: MeterModel | SubMeterModel, power_kw: float | None, import_kwh: float | None, export_kwh: float | None) -> MeterReading:
    """Apply the installation: CT × PT ratio, then ``invert`` (which also swaps import and export)."""
    k = meter.ct_ratio * meter.pt_ratio
    power, imp, exp = (None if v is None else v * k for v in (power_kw, import_kwh, export_kwh))
    if meter.invert:
        power, imp, exp = (None if power is None else -power), exp, imp
    return MeterReading(site_id, timestamp, power, imp, exp)


class MeterReader(abc.ABC):
    def __init__(self, site_id: str, meter: MeterModel | SubMeterModel) -> None:
        self.site_id, self.meter = site_id, meter

    @abc.abstractmethod
    async def read(self) -> MeterReading:
        """One reading now. Raises ``AdapterError``."""


class SunSpecMeterReader(MeterReader):
    """Meter models 201-204: ``W`` counts import positive (the SunSpec meter convention), so export is −W."""

    def __init__(self, site_id: str, meter: MeterModel, link: ModbusLink, slave_id: int) -> None:
        super().__init__(site_id, meter)
        self.link, self.slave_id = link, slave_id
        self._layout: tuple[SunSpecLayout, int, tuple[Span, ...]] | None = None

    async def read(self) -> MeterReading:
        try:
            layout, model_id, blocks = self._layout or await self._discover()
            now = utcnow()
            view = _view(model_id, layout, await self.link.read_blocks(self.slave_id, blocks, control=True))
            if (view.raw("ID"), view.raw("L")) != (model_id, layout.models[model_id][1]):
                raise AdapterError(f"meter model {model_id} header moved: layout changed or garbage")
        except AdapterError:
            self._layout = None
            raise
        w = view.value("W")
        return to_engine(self.site_id, now, self.meter, None if w is None else -w / 1000.0, _kwh(view.value("TotWhImp")), _kwh(view.value("TotWhExp")))

    async def _discover(self) -> tuple[SunSpecLayout, int, tuple[Span, ...]]:
        layout = await discover(self.link, self.slave_id)
        model_id = next((m for m in METER_MODELS if m in layout.models), None)
        if model_id is None:
            raise AdapterError(f"modbus {self.link.name} slave {self.slave_id}: no SunSpec meter model ({', '.join(map(str, METER_MODELS))}) among {sorted(layout.models)}")
        end = model_def(model_id).span(*METER_POINTS)[1]
        self._layout = (layout, model_id, (Span(HOLDING, layout.models[model_id][0], end),))
        log.info("meter site=%s sunspec model=%d at %s slave %d", self.site_id, model_id, self.link.name, self.slave_id)
        return self._layout


class MapMeterReader(MeterReader):
    def __init__(self, site_id: str, meter: MeterModel, link: ModbusLink, slave_id: int, register_map: MeterRegisterMap) -> None:
        super().__init__(site_id, meter)
        self.link, self.slave_id, self.map = link, slave_id, register_map
        points = [p for _, p in register_map.points if p is not None]
        self._blocks = plan_reads((Span(p.function, p.address, p.size) for p in points), register_map.max_gap)

    async def read(self) -> MeterReading:
        now = utcnow()
        window = await self.link.read_blocks(self.slave_id, self._blocks, control=True)

        def value(role: str) -> float | None:
            point = getattr(self.map.points, role)
            return None if point is None else decode_point(self.map, point, list(window.get(point.function, point.address, point.size)))

        return to_engine(self.site_id, now, self.meter, value("power"), value("import_energy"), value("export_energy"))


def _kwh(wh: float | None) -> float | None:
    return None if wh is None else wh / 1000.0


class MeterPayload(BaseModel):
    """``<prefix>/<site>/meter/state``: the meter's own reading, + export, with its own timestamp."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, allow_inf_nan=False)

    timestamp: AwareDatetime
    power_kw: float = Field(description="+ export / − import at the connection point")
    import_kwh: float | None = Field(None, ge=0)
    export_kwh: float | None = Field(None, ge=0)


class MeterPoller(Service):
    """Reads every meter of a fleet (grid meters and their sub-meters, ``sub_meter_key``) and hands each
    reading to ``on_reading(reading)``."""

    def __init__(self, meters: Mapping[str, MeterModel], broker: MqttBrokerConfig | None, config_dir: Path, on_reading: Callable[[MeterReading], None]) -> None:
        self.on_reading = on_reading
        self.links = ModbusLinks()
        self.readers: dict[str, MeterReader] = {}
        self.failures: dict[str, str] = {}  # site -> error of its current run of failed reads
        self._mqtt: dict[str, tuple[str, MeterModel]] = {}  # topic -> (site, meter)
        self._tasks: list[asyncio.Task] = []
        self._rejections = LogLimiter()
        every = [(key, m) for site_id, grid in meters.items() for key, m in ((site_id, grid), *((sub_meter_key(site_id, sub.id), sub) for sub in grid.sub_meters))]
        for site_id, meter in every:
            device = meter.device
            if isinstance(device, SunSpecMeterDevice):
                self.readers[site_id] = SunSpecMeterReader(site_id, meter, self.links.get(device.host, device.port, device.timeout_s), device.slave_id)
            elif isinstance(device, ModbusMapMeterDevice):
                register_map = load_meter_map(config_dir / device.register_map)
                self.readers[site_id] = MapMeterReader(site_id, meter, self.links.get(device.host, device.port, device.timeout_s), device.slave_id, register_map)
            elif isinstance(device, MqttMeterDevice):
                self._mqtt[meter_topic(device.topic_prefix, site_id)] = (site_id, meter)
        if self._mqtt and broker is None:
            raise InputError(str(config_dir), "mqtt", None, f"an mqtt: broker block (the meters of {', '.join(s for s, _ in self._mqtt.values())} use protocol mqtt)")
        self.session = MqttSession(broker, f"{broker.client_id}-meters", sorted(self._mqtt), self._on_message) if self._mqtt and broker is not None else None

    async def start(self) -> None:
        if self.session is not None:
            self.session.start()
        self._tasks = [asyncio.create_task(self._poll(reader), name=f"meter-{site}") for site, reader in self.readers.items()]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.stop()
        self.links.close()

    async def _poll(self, reader: MeterReader) -> None:
        period = reader.meter.poll_s
        next_start = time.monotonic()
        while True:
            try:
                reading = await reader.read()
            except AdapterError as err:
                if self.failures.get(reader.site_id) is None:
                    log.warning("meter read failed site=%s error=%s", reader.site_id, err)
                self.failures[reader.site_id] = str(err)
            else:
                if self.failures.pop(reader.site_id, None) is not None:
                    log.info("meter answers again site=%s", reader.site_id)
                self.on_reading(reading)
            next_start += period
            late = time.monotonic() - next_start
            if late > 0:  # a timeout ate the period: start again now, not in a burst
                next_start = time.monotonic()
            await asyncio.sleep(max(-late, 0.0))

    def _on_message(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        site = self._mqtt.get(topic)
        if site is None:
            return
        payload = bytes(message.payload)  # type: ignore[arg-type]
        now = datetime.now(UTC)
        try:
            if len(payload) > MAX_PAYLOAD_BYTES:
                raise ValueError(f"payload of {len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}")
            state = MeterPayload.model_validate_json(payload)
            if not _plausible(state.timestamp, now):
                raise ValueError(f"timestamp {state.timestamp.isoformat()} is not near now")
        except (ValueError, OverflowError) as err:
            if (held := self._rejections.allow()) is not None:
                log.warning("meter message rejected topic=%s reason=%s%s", topic, _reason(err), held_note(held))
            return
        site_id, meter = site
        if not math.isfinite(state.power_kw):
            return
        self.on_reading(to_engine(site_id, state.timestamp.astimezone(UTC), meter, state.power_kw, state.import_kwh, state.export_kwh))
