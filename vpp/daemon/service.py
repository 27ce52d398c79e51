"""The life of a long-running process (the gateway, the central): start, run until told to stop, shut down."""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol


class Service(Protocol):
    stop_event: asyncio.Event

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...


async def run_service(service: Service, *, install_signals: bool = True) -> None:
    """Start ``service`` and run it until ``stop_event`` (SIGTERM, SIGINT, or a test setting it); its
    ``shutdown`` runs however the run ends, a failed start included, so nothing it opened is left behind."""
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stop_event.set)
    try:
        await service.start()
        await service.stop_event.wait()
    finally:
        await service.shutdown()
