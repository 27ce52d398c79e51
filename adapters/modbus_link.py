"""Shared Modbus TCP connections: one per gateway host:port, whatever the number of units behind it.

Gateways to RS-485 buses accept few TCP connections and answer one request at a
time, so every unit on a host:port shares one pymodbus client. Requests take
turns on the link, the control loop's first — setpoint writes and the site
meter's reads (its output and its input) — then the units' telemetry polls: a
poll cycle queues a read for every unit behind the gateway at once, and
pymodbus' own lock is first come, first served, so a control tick's writes
would otherwise wait behind a whole poll cycle (OpenEMS' Modbus bridge likewise
runs its write tasks first).
Reconnection has its own back-off here; per-device back-off is the adapters' business. Every failure surfaces as ``AdapterError``
naming host, port, slave and registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import AsyncIterator, Sequence

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from adapters.base import utcnow
from adapters.batching import RegisterWindow, Span
from adapters.health import Backoff
from vpp.errors import AdapterError

log = logging.getLogger(__name__)


class ModbusRefused(AdapterError):
    """The device answered with a Modbus exception (e.g. illegal address) instead of data."""


CONTROL, POLL = 0, 1  # turn priorities: lower goes first


class Turns:
    """One request at a time; among those waiting, the lowest priority number first, then the earliest."""

    def __init__(self) -> None:
        self._busy = False
        self._waiting: list[tuple[int, int, asyncio.Future]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def turn(self, priority: int) -> AsyncIterator[None]:
        if self._busy:
            granted = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._order), granted))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():  # handed the turn, then cancelled: pass it on
                    self._pass()
                raise
        self._busy = True
        try:
            yield
        finally:
            self._pass()

    def _pass(self) -> None:
        while self._waiting:
            granted = heapq.heappop(self._waiting)[2]
            if not granted.done():  # a cancelled waiter is skipped
                granted.set_result(None)  # the link stays busy: the turn is handed over
                return
        self._busy = False


class ModbusLink:
    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.requests = 0
        self._client: AsyncModbusTcpClient | None = None
        self._connect_lock = asyncio.Lock()
        self._reconnect = Backoff(base_s=0.2, max_s=10.0)
        self._turns = Turns()

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    async def read(self, slave_id: int, function: int, address: int, count: int, *, control: bool = False) -> list[int]:
        """Read ``count`` registers with function 3 (holding) or 4 (input); ``control``: the control loop's
        input (a site meter), which takes its turn with the setpoints, ahead of the telemetry polls."""
        async with self._turns.turn(CONTROL if control else POLL):
            client = await self._connected()
            call = client.read_holding_registers if function == 3 else client.read_input_registers
            response = await self._execute(call(address, count=count, device_id=slave_id), slave_id, f"read {address}+{count}")
        registers = list(response.registers)
        if len(registers) != count:
            raise AdapterError(f"modbus {self.name} slave {slave_id}: read {address}+{count} returned {len(registers)} registers")
        return registers

    async def read_blocks(self, slave_id: int, blocks: Sequence[Span], *, control: bool = False) -> RegisterWindow:
        """One request per planned block (see ``batching.plan_reads``)."""
        window = RegisterWindow()
        for block in blocks:
            window.add(block, await self.read(slave_id, block.function, block.address, block.count, control=control))
        return window

    async def write(self, slave_id: int, address: int, values: Sequence[int], function: int = 16) -> None:
        """Write registers with function 16, or a single register with function 6."""
        async with self._turns.turn(CONTROL):
            client = await self._connected()
            if function == 6:
                request = client.write_register(address, values[0], device_id=slave_id)
            else:
                request = client.write_registers(address, list(values), device_id=slave_id)
            await self._execute(request, slave_id, f"write {address}+{len(values)}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    async def _execute(self, request, slave_id: int, what: str):
        self.requests += 1
        try:
            response = await request
        except ModbusException as err:
            raise AdapterError(f"modbus {self.name} slave {slave_id}: {what}: {err}") from None
        if response.isError():
            raise ModbusRefused(f"modbus {self.name} slave {slave_id}: {what}: exception code {response.exception_code}")
        return response

    async def _connected(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        async with self._connect_lock:
            if self._client is None:
                self._client = AsyncModbusTcpClient(
                    self.host, port=self.port, timeout=self.timeout_s, retries=0, reconnect_delay=0
                )
            if self._client.connected:
                return self._client
            now = utcnow()
            if not self._reconnect.ready(now):
                raise AdapterError(f"modbus {self.name}: not connected ({self._reconnect.last_error}); retrying at {self._reconnect.retry_at:%H:%M:%S}")
            if not await self._client.connect():
                self._reconnect.failure(utcnow(), "connect failed")
                raise AdapterError(f"modbus {self.name}: connect failed")
            self._reconnect.success(utcnow())
            log.info("modbus link=%s connected", self.name)
            return self._client


class ModbusLinks:
    """The connections of one fleet, keyed by host:port; units with the same gateway get the same link."""

    def __init__(self) -> None:
        self._links: dict[tuple[str, int], ModbusLink] = {}

    def get(self, host: str, port: int, timeout_s: float) -> ModbusLink:
        link = self._links.get((host, port))
        if link is None:
            link = self._links[(host, port)] = ModbusLink(host, port, timeout_s)
        else:
            link.timeout_s = min(link.timeout_s, timeout_s)
        return link

    def close(self) -> None:
        for link in self._links.values():
            link.close()
