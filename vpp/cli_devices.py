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

app = typer.Typer(no_args_is_help=True, help="Device adapters: scan a SunSpec device, simulate a fleet's devices, check a site's meter.")


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
    meter_noise_kw: float = typer.Option(0.2, help="simulated meters: uniform noise, ± kW"),
    load_step_at_s: float | None = typer.Option(None, help="simulated meters: step every site's load this many seconds after start"),
    load_step_factor: float = typer.Option(0.2, help="the load step: new load = factor x load (0.2: a line stops, -80 %)"),
    meter_fault: str | None = typer.Option(None, help="simulated meters: frozen, silent or inverted, from --meter-fault-at-s on"),
    meter_fault_at_s: float = typer.Option(0.0, help="when the meter fault starts, seconds after start"),
) -> None:
    """Serve simulated devices for every unit with a device: block, and a grid meter for every site with a
    meter: block (it reads load - PV - the simulated batteries' power), on the addresses the config names."""
    from simulators.device_fleet import SimulatedFleet
    from simulators.sim_meter import inject_meter_fault
    from vpp.config import load_config

    if meter_fault is not None and meter_fault not in ("frozen", "silent", "inverted"):
        raise InputError("vpp devices simulate", "--meter-fault", meter_fault, "one of frozen, silent, inverted")
    cfg = load_config(config)
    loads, pv, ratings = site_powers(cfg)

    async def run() -> None:
        async with SimulatedFleet(cfg.units, cfg.mqtt, config.parent, tick_s, publish_s, cfg.meters, loads, pv, meter_noise_kw, ratings) as fleet:
            for line in fleet.endpoints():
                print(f"simulating {line}", flush=True)
            events = []
            if load_step_at_s is not None:
                events.append((load_step_at_s, lambda: [m.step_load(load_step_factor) for m in fleet.meters.values()], f"load step x{load_step_factor:g}"))
            if meter_fault is not None:
                events.append((meter_fault_at_s, lambda: [inject_meter_fault(m, meter_fault) for m in fleet.meters.values()], f"meter fault {meter_fault}"))
            started = asyncio.get_running_loop().time()
            for at_s, act, what in sorted(events, key=lambda e: e[0]):
                await asyncio.sleep(max(at_s - (asyncio.get_running_loop().time() - started), 0.0))
                act()
                print(f"injected {what} at {at_s:g} s", flush=True)
            rest = None if duration_s is None else max(duration_s - (asyncio.get_running_loop().time() - started), 0.0)
            await (asyncio.sleep(rest) if rest is not None else asyncio.Event().wait())

    asyncio.run(run())


@app.command()
def check(
    config: Path = typer.Option(..., "--config", "-c", help="the fleet config YAML"),
    site: str = typer.Option(..., "--site", "-s", help="the metered site to check"),
    unit: str | None = typer.Option(None, "--unit", help="the battery to step (default: the site's first)"),
    step_kw: float = typer.Option(-50.0, "--step-kw", help="the step, kW (+ discharge); a charge by default, which cannot make a site export"),
    settle_s: float = typer.Option(2.0, help="seconds the battery and meter get to settle after the step"),
) -> None:
    """Commissioning: step one battery by a known power and confirm the meter moves by as much, with the
    expected sign. Exit 1 when sign or scale disagree."""
    from adapters.commissioning import check_site
    from vpp.config import load_config

    cfg = load_config(config)
    report = asyncio.run(check_site(cfg, site, unit, step_kw, settle_s=settle_s))
    battery = f"{report.battery_delta_kw:+.1f} kW measured" if report.battery_delta_kw is not None else "not measured"
    print(f"site {report.site_id}: unit {report.unit_id} stepped {report.commanded_kw:+.1f} kW ({battery}); meter {report.meter_before_kw:+.1f} -> {report.meter_after_kw:+.1f} kW (+ export)")
    print(("ok: " if report.verdict.ok else "PROBLEM: ") + report.verdict.message)
    if not report.verdict.ok:
        raise typer.Exit(1)


def site_powers(cfg) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Each metered site's load and PV for the simulated meter (the configured value at the config's start,
    or at the daemon's market start; 0 when unknown) and its connection rating."""
    import pandas as pd

    from vpp.meter import connection_rating_kw
    from vpp.timeseries import profile_on

    start = (cfg.daemon.clock.sim_start if cfg.daemon is not None and cfg.daemon.clock.sim_start else None) or cfg.start or pd.Timestamp.now(tz="UTC")
    index = pd.DatetimeIndex([pd.Timestamp(start).tz_localize(cfg.timezone) if pd.Timestamp(start).tzinfo is None else pd.Timestamp(start)]).tz_convert("UTC").floor(cfg.interval)
    loads, pv, ratings = {}, {}, {}
    for site in cfg.fleet.sites:
        if site.id not in cfg.meters:
            continue
        for name, profile, out in (("load_kw", site.load_kw, loads), ("pv_kw", site.pv_kw, pv)):
            try:
                out[site.id] = float(profile_on(profile, index, site.id)[0])
            except InputError:
                out[site.id] = 0.0
        battery = sum(max(u.max_charge_kw, u.max_discharge_kw) for u in cfg.units if u.site_id == site.id)
        ratings[site.id] = connection_rating_kw(cfg.meters[site.id].rating_kw, site.import_limit_kw, site.export_limit_kw, battery)
    return loads, pv, ratings


def _host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":") if ":" in target else (target, "", "502")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InputError("vpp devices scan", "HOST[:PORT]", target, "a host name or address, optionally :port (1-65535)")
    return host, int(port)


def _kw(value: float | None) -> str:
    return f"{value:.1f} kW" if value is not None else "missing"
