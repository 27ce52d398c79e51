"""`vpp run --config C`: the dispatcher daemon in the foreground (systemd, a container, or a terminal)."""

from __future__ import annotations

import asyncio
import enum
import logging
from pathlib import Path

import typer


class LogLevel(str, enum.Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def run_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="the fleet config (with its daemon: block)"),  # noqa: B008 - typer's idiom
    log_level: LogLevel = typer.Option(LogLevel.INFO, "--log-level", case_sensitive=False, help="how much the daemon logs"),
) -> None:
    """Run the dispatcher: poll devices, dispatch every tick, re-optimize, serve the API, settle intervals."""
    from vpp.config import load_config
    from vpp.daemon.app import Daemon

    logging.basicConfig(level=log_level.value, format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # the adapters report device trouble in one line each
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    cfg = load_config(config)

    async def main() -> None:
        await Daemon(cfg).run()

    asyncio.run(main())
