"""A simulated Modbus TCP gateway: one pymodbus server answering for many simulated devices by slave id.

Each device is a register image (``SunSpecImage`` or ``RegisterMapImage``)
over a ``SimulatedUnit``. A tick task advances every unit's physics and revert
timers even when nobody polls. Faults are injected where a real device shows
them: ``WireFault.SILENT`` drops the answers of one slave, ``WireFault.GARBAGE``
replaces the registers in its answers with random values, ``drop_connections``
cuts every client, and ``unit.fault`` puts the device itself into its fault state.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from functools import partial
from typing import Protocol

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice

from adapters.service import Service
from simulators.sim_unit import SimulatedUnit, WireFault

log = logging.getLogger(__name__)

MBAP_UNIT_ID = 6  # byte of the Modbus TCP header that carries the slave id


class RegisterImage(Protocol):
    unit: SimulatedUnit

    def simdata(self) -> list[SimData] | tuple[list[SimData], list[SimData], list[SimData], list[SimData]]: ...

    async def action(
        self, function_code: int, start: int, address: int, count: int, registers: list[int], values: list[int] | None
    ) -> ExcCodes | None: ...


class ModbusDeviceServer(Service):
    def __init__(
        self, images: Mapping[int, RegisterImage], host: str = "127.0.0.1", port: int = 0, tick_s: float = 0.2, seed: int = 0
    ) -> None:
        self.images = dict(images)
        self.host = host
        self.port = port  # 0: any free port, known after start()
        self.tick_s = tick_s
        self._random = random.Random(seed)
        self._server: ModbusTcpServer | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        devices = [
            SimDevice(slave_id, simdata=image.simdata(), action=partial(self._action, image)) for slave_id, image in self.images.items()
        ]
        self._server = ModbusTcpServer(
            devices, address=(self.host, self.port), trace_packet=self._trace_packet, trace_pdu=self._trace_pdu
        )
        await self._server.serve_forever(background=True)
        if self._server.transport is None:
            raise OSError(f"modbus simulator could not listen on {self.host}:{self.port}")
        self.port = self._server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._ticker = asyncio.create_task(self._tick())
        log.info("modbus simulator listening=%s:%d devices=%d", self.host, self.port, len(self.images))

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    def drop_connections(self) -> None:
        """Cut every client connection, as a gateway reboot or a cable pull would."""
        assert self._server is not None
        for connection in list(self._server.active_connections.values()):
            connection.close()

    async def _tick(self) -> None:
        while True:
            now = time.monotonic()
            for image in self.images.values():
                image.unit.advance(now)
            await asyncio.sleep(self.tick_s)

    @staticmethod
    async def _action(
        image: RegisterImage, function_code: int, start: int, address: int, count: int, registers: list[int], values: list[int] | None
    ) -> ExcCodes | None:
        if image.unit.wire_fault is WireFault.SILENT:
            return ExcCodes.DEVICE_BUSY  # not applied; the answer is swallowed by _trace_packet
        return await image.action(function_code, start, address, count, registers, values)

    def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
        """Swallow the answers of a silent slave: the client sees a timeout, as with a dead device."""
        if sending and len(packet) > MBAP_UNIT_ID:
            image = self.images.get(packet[MBAP_UNIT_ID])
            if image is not None and image.unit.wire_fault is WireFault.SILENT:
                return b""
        return packet

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        image = self.images.get(pdu.dev_id)
        if sending and pdu.function_code in (3, 4) and image is not None and image.unit.wire_fault is WireFault.GARBAGE:
            pdu.registers = [self._random.randrange(0x10000) for _ in pdu.registers]
        return pdu
