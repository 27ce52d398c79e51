"""What the SunSpec and register-map adapters share: a unit id behind a slave id on a shared link."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from adapters.base import DeviceAdapter
from adapters.health import Backoff
from adapters.heartbeat import ControllerHeartbeat
from adapters.modbus_link import ModbusLink


class ModbusDeviceAdapter(DeviceAdapter):
    def __init__(
        self,
        unit_id: str,
        link: ModbusLink,
        slave_id: int,
        rating_kw: float | None = None,
        backoff: Backoff | None = None,
        heartbeat_s: float = 1.0,
    ) -> None:
        super().__init__(unit_id, backoff or Backoff())
        self.link = link
        self.slave_id = slave_id
        self.rating_kw = rating_kw  # power beyond this (+10 %) is implausible
        self.heartbeat_s = heartbeat_s  # how often the controller heartbeat is written, when the device has one

    async def connect(self) -> None:
        """Nothing to open: the shared link connects on first use."""

    @staticmethod
    async def _beat(heartbeat: ControllerHeartbeat | None, write: Callable[[int], Awaitable[None]]) -> None:
        """Write the next heartbeat value if one is due."""
        if heartbeat is not None and (value := heartbeat.due()) is not None:
            await write(value)
            heartbeat.sent(value)
