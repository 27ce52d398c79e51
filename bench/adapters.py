"""Adapter benchmark: Modbus poll cycle through one gateway, and MQTT telemetry ingest through Mosquitto.

Modbus: N simulated SunSpec batteries behind one gateway (a pymodbus server in
a separate process, one slave id per battery) polled by ``FleetPoller`` over
one shared connection every 1 s: the first cycle (discovery) and then cycle
time percentiles and overruns over the run (target: 200 devices within the
1 s cycle, no overruns over 60 s).
MQTT: a separate process publishes simulated batteries' state as fast as it
can through a Mosquitto on a free port; the gateway parses and applies it to
the fleet state; prints messages/s applied (target >= 5,000).

    python bench/adapters.py            # 50 and 200 devices (200 for 60 s), MQTT for 10 s
    python bench/adapters.py --quick    # 200 devices for 10 s, MQTT for 5 s
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

# This file is called adapters.py: keep its folder off the import path so `adapters` is the package.
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

CYCLE_S = 1.0
MQTT_UNITS = 500
MQTT_OFFERED_PER_S = (5_000, 10_000, 20_000)  # the gateway keeps up while applied == offered


def _battery(unit_id: str, soc: float):
    from simulators.battery import BatteryParams
    from simulators.sim_unit import SimulatedUnit

    return SimulatedUnit(unit_id, BatteryParams(200.0, 100.0, 100.0, 0.05, 0.95), soc=soc)


def _serve_gateway(n_devices: int, ports: multiprocessing.Queue) -> None:
    """Child process: one pymodbus gateway with ``n_devices`` SunSpec batteries."""
    from simulators.modbus_server import ModbusDeviceServer
    from simulators.sunspec_server import SunSpecImage

    async def serve() -> None:
        images = {i: SunSpecImage(_battery(f"u{i}", 0.2 + 0.6 * i / n_devices), slave_id=i) for i in range(1, n_devices + 1)}
        async with ModbusDeviceServer(images, tick_s=1.0) as server:
            ports.put(server.port)
            await asyncio.Event().wait()

    asyncio.run(serve())


def _publish_states(port: int, rate_per_s: float, seconds: float, published: multiprocessing.Queue) -> None:
    """Child process: device state messages at ``rate_per_s`` from a plain paho client (a load generator,
    so the figure measures the gateway, not a simulator's physics)."""
    from datetime import UTC, datetime

    import paho.mqtt.client as paho

    from adapters.mqtt_payloads import state_topic

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-devices", protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    topics = [state_topic("vpp", "bench", f"u{i}") for i in range(MQTT_UNITS)]
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        for topic in topics[:100]:
            stamp = datetime.now(UTC).isoformat()
            payload = f'{{"timestamp":"{stamp}","soc":0.5,"power_kw":-12.5,"max_charge_kw":100.0,"max_discharge_kw":100.0,"state":"ok"}}'
            client.publish(topic, payload.encode())
        topics = topics[100:] + topics[:100]
        sent += 100
        time.sleep(max(0.0, start + sent / rate_per_s - time.monotonic()))  # pace to the offered rate
    client.loop_stop()
    published.put(sent)


async def modbus_cycle(n_devices: int, seconds: float) -> dict[str, float]:
    from adapters.modbus_link import ModbusLink
    from adapters.poller import FleetPoller
    from adapters.sunspec import SunSpecAdapter
    from vpp.fleet_state import FleetState

    ctx = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue = ctx.Queue()
    server = ctx.Process(target=_serve_gateway, args=(n_devices, ports), daemon=True)
    server.start()
    try:
        link = ModbusLink("127.0.0.1", ports.get(timeout=60), timeout_s=1.0)
        adapters = [SunSpecAdapter(f"u{i}", link, i, rating_kw=100.0) for i in range(1, n_devices + 1)]
        state = FleetState(a.unit_id for a in adapters)
        poller = FleetPoller(adapters, state, cycle_s=CYCLE_S)
        discovery_s = await poller.poll_once()
        requests = link.requests
        poller.stats.durations_s.clear()
        stats = await poller.run(duration_s=seconds)
        healthy = sum(state.health(a.unit_id).healthy for a in adapters)
        link.close()
    finally:
        server.terminate()
        server.join()
    cycles = sorted(stats.durations_s)
    return {
        "devices": n_devices,
        "discovery_s": discovery_s,
        "cycles": len(cycles),
        "mean_s": sum(cycles) / len(cycles),
        "p95_s": cycles[int(0.95 * (len(cycles) - 1))],
        "max_s": cycles[-1],
        "overruns": stats.overruns,
        "requests_per_cycle": (link.requests - requests) / len(cycles),
        "healthy": healthy,
    }


async def mqtt_ingest(rate_per_s: float, seconds: float) -> dict[str, float]:
    from adapters.mqtt import MqttGateway, MqttUnit
    from vpp.device_config import MqttBrokerConfig
    from vpp.fleet_state import FleetState

    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = Path(tempfile.mkdtemp(prefix="vpp-bench-"))
    (workdir / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser {_user()}\n")
    broker_process = await asyncio.create_subprocess_exec(
        mosquitto, "-c", str(workdir / "mosquitto.conf"), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    ctx = multiprocessing.get_context("spawn")
    published: multiprocessing.Queue = ctx.Queue()
    try:
        await asyncio.sleep(0.3)
        units = [MqttUnit(f"u{i}", "bench", "vpp", rating_kw=100.0) for i in range(MQTT_UNITS)]
        state = FleetState(u.unit_id for u in units)
        async with MqttGateway(MqttBrokerConfig(host="127.0.0.1", port=port, client_id="bench-gateway"), units, state) as gateway:
            await gateway.session.connected.wait()
            publisher = ctx.Process(target=_publish_states, args=(port, rate_per_s, seconds + 2.0, published), daemon=True)
            publisher.start()
            await asyncio.sleep(1.0)  # warm-up: the publisher connects and gets going
            applied, started, cpu = gateway.stats.applied, time.perf_counter(), time.process_time()
            await asyncio.sleep(seconds)
            rate = (gateway.stats.applied - applied) / (time.perf_counter() - started)
            cpu_per_message_us = (time.process_time() - cpu) / max(1, gateway.stats.applied - applied) * 1e6
            sent = published.get(timeout=30)
            publisher.join()
            stats = gateway.stats
    finally:
        broker_process.terminate()
        await broker_process.wait()
        shutil.rmtree(workdir)
    return {"offered_per_s": rate_per_s, "applied_per_s": rate, "cpu_us": cpu_per_message_us, "published": sent, "received": stats.received, "malformed": stats.malformed, "superseded": stats.superseded}


def _user() -> str:
    import getpass

    return getpass.getuser()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs (the 60 s overrun check becomes 10 s)")
    args = parser.parse_args()
    cases = [(200, 10.0)] if args.quick else [(50, 10.0), (200, 60.0)]
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    for n_devices, seconds in cases:
        r = asyncio.run(modbus_cycle(n_devices, seconds))
        print(
            f"modbus sunspec: {r['devices']} devices on one gateway, {CYCLE_S:g} s cycle for {seconds:g} s: "
            f"discovery {r['discovery_s']:.2f} s; cycle mean {r['mean_s'] * 1000:.0f} ms, p95 {r['p95_s'] * 1000:.0f} ms, "
            f"max {r['max_s'] * 1000:.0f} ms over {r['cycles']} cycles; overruns {r['overruns']}; "
            f"{r['requests_per_cycle']:.0f} requests/cycle; healthy {r['healthy']}/{r['devices']}"
        )
    for offered in MQTT_OFFERED_PER_S:
        m = asyncio.run(mqtt_ingest(offered, 5.0 if args.quick else 10.0))
        print(
            f"mqtt ingest via mosquitto: offered {m['offered_per_s']:.0f}/s -> {m['applied_per_s']:.0f} messages/s parsed and applied, "
            f"gateway CPU {m['cpu_us']:.0f} us/message ({MQTT_UNITS} units; published {m['published']}, received {m['received']}, malformed {m['malformed']}, superseded {m['superseded']})"
        )


if __name__ == "__main__":
    main()
