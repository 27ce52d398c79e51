"""`vpp devices ...`: look at a SunSpec device on site, or run a simulated fleet for the daemon and demos."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.table import Table

from vpp.cli_output import console
from vpp.errors import InputError

app = typer.Typer(no_args_is_help=True, help="Device adapters: scan a SunSpec device, simulate a fleet's devices.")


@app.command()
def scan(
    target: str = typer.Argument(..., help="HOST or HOST:PORT of the device or its Modbus TCP gateway"),
    slave_id: int = typer.Option(1, "--slave", "-s", help="Modbus unit id behind the gateway"),
    timeout_s: float = typer.Option(2.0, "--timeout", help="seconds per request"),
) -> None:
    """Print the SunSpec models a device exposes, its SoC, state and ratings."""
    from adapters.modbus_link import ModbusLink
    from adapters.sunspec import scan as scan_device
    from adapters.sunspec_models import model_def

    host, port = _host_port(target)
    logging.getLogger("pymodbus").setLevel(logging.ERROR)  # its connect warnings repeat our one-line error

    async def run():
        link = ModbusLink(host, port, timeout_s)
        try:
            return await scan_device(link, slave_id, datetime.now(UTC))
        finally:
            link.close()

    report = asyncio.run(run())
    out = console()
    common = " ".join(f"{k}={v}" for k, v in report.common.items() if v)
    out.print(f"SunSpec device at {report.host}:{report.port} slave {report.slave_id}, base {report.base}: {common}")
    models = Table("model", "name", "address", "length")
    for model_id, (address, length) in report.models.items():
        try:
            name = model_def(model_id).name
        except KeyError:
            name = "(not defined in pysunspec2)"
        models.add_row(str(model_id), name, str(address), str(length))
    out.print(models)
    if report.telemetry is not None:
        t = report.telemetry
        soc = f"{t.soc:.1%}" if t.soc is not None else "missing"
        out.print(f"SoC {soc}  power {_kw(t.power_kw)}  allowed charge {_kw(t.max_charge_kw)}  discharge {_kw(t.max_discharge_kw)}  state {t.state.value}  faults {', '.join(t.faults) or 'none'}")
    for name, value in report.ratings.items():
        out.print(f"{name} = {value:g}" if value is not None else f"{name} not implemented")


@app.command()
def simulate(
    config: Path = typer.Option(..., "--config", "-c", help="the fleet config YAML"),
    duration_s: float | None = typer.Option(None, "--duration", help="stop after this many seconds (default: until Ctrl-C)"),
    tick_s: float = typer.Option(0.5, help="physics step of the simulated devices"),
    publish_s: float = typer.Option(1.0, help="MQTT state publish interval"),
) -> None:
    """Serve simulated devices for every unit with a device: block, on the addresses the config names."""
    from simulators.device_fleet import SimulatedFleet
    from vpp.config import load_config

    cfg = load_config(config)

    async def run() -> None:
        async with SimulatedFleet(cfg.units, cfg.mqtt, config.parent, tick_s, publish_s) as fleet:
            for line in fleet.endpoints():
                print(f"simulating {line}", flush=True)
            await (asyncio.sleep(duration_s) if duration_s is not None else asyncio.Event().wait())

    asyncio.run(run())


def _host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":") if ":" in target else (target, "", "502")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InputError("vpp devices scan", "HOST[:PORT]", target, "a host name or address, optionally :port (1-65535)")
    return host, int(port)


def _kw(value: float | None) -> str:
    return f"{value:.1f} kW" if value is not None else "missing"
