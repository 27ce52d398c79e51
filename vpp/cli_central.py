"""`vpp central --config plant.yaml`: the plant's aggregator in the foreground (docs/plant.md)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer

from vpp.cli_run import LogLevel


def central_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="the plant file (plant: with its sites and their gateway configs)"),  # noqa: B008 - typer's idiom
    log_level: LogLevel = typer.Option(LogLevel.INFO, "--log-level", case_sensitive=False, help="how much the central logs"),
) -> None:
    """Run the central: ingest the gateways' telemetry and interval records, plan the plant, send each site its plan."""
    from vpp.plant.central import Central
    from vpp.plant.config import load_plant

    logging.basicConfig(level=log_level.value, format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True)
    plant = load_plant(config)

    async def main() -> None:
        await Central(plant).run()

    asyncio.run(main())
