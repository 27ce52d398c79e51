"""Daemon benchmark: control-tick duration and interval start → last setpoint written, for 200 units.

200 simulated batteries over real Modbus TCP (120 SunSpec and 80 register-map PCS,
20 per gateway by default) served by ``vpp devices simulate`` in two
separate processes; ``--mqtt`` adds 40 MQTT units through a Mosquitto on a free
port (240 units). The daemon runs in this process with its
market clock at 50× (a 5-minute interval every 6 s) and a 1 s tick, solving
the real co-optimization in its worker. Prints tick duration p50/p99/max,
overruns, and for every interval start the time until the tick that entered
the interval had written its last setpoint (target: p99 tick ≤ 200 ms on 2 cores).

    python bench/daemon.py              # 90 s
    python bench/daemon.py --seconds 30
    python bench/daemon.py --per-gateway 10   # 20 gateways of 10 instead of 10 of 20
    python bench/daemon.py --mqtt             # + 40 MQTT units
    python bench/daemon.py --fuzz             # 160 Modbus + 40 MQTT units, and a hostile client in another
                                              # process: 100 malformed MQTT messages and 10 hostile API requests a second

Requests to the devices behind one gateway connection go one at a time, so the tick's write time grows
with the devices per gateway (pymodbus holds one request in flight per connection).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import numpy as np
import pandas as pd
import psutil
import yaml

SPEED = 50.0
TICK_S = 1.0
POLL_S = 2.0  # telemetry poll period (one simulator process answers for all 200 Modbus devices)
SUNSPEC_UNITS, MAP_UNITS = 120, 80
MQTT_UNITS = 40
TOKEN = "bench-token-0123456789abcdef"
FUZZ_MQTT_PER_S, FUZZ_API_PER_S = 100, 10

# What the hostile client sends: each a different way for a parser to fail (issue 14).
BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "\n".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8))
WINDOW = 'start: "2020-08-17T00:00:00Z", end: "2020-08-25T00:00:00Z", author: fuzz, reason: fuzz'
HOSTILE_BODIES: list[tuple[bytes, bool]] = [  # (body, with the token)
    (BOMB.encode(), True),
    (("overrides: [{kind: force_power, unit: ss0-0, value: .nan, " + WINDOW + "}]").encode(), True),
    (("overrides: [{kind: fleet_export_cap, value: .inf, " + WINDOW + "}]").encode(), True),
    (b"", True),
    (b"[" * 5000, True),
    (b"\xff\xfe\x00", True),
    (b"x" * 1_100_000, True),
    (b"overrides: []", False),  # no token: 401
    (("overrides: [{kind: unit_out, unit: ss0-0, start: '2020-08-17T00:00:00Z', end: '9999-12-31T23:59:59-01:00', author: f, reason: f}]").encode(), True),
    (b'{"overrides": [{"kind": "soc_floor", "unit": "ss0-0", "value": 1e999}]}', True),
]
MALFORMED_STATES = [
    b'{"timestamp": "9999-12-31T23:59:59-01:00", "soc": 0.5}',
    b'{"timestamp": "0001-01-01T00:00:00+01:00", "soc": 0.5}',
    b"\xff\xfe garbage",
    b"{" * 2000,
    b'{"timestamp": "2020-01-01T00:00:00Z", "soc": NaN, "power_kw": Infinity}',
    b'{"timestamp": 12, "soc": "half"}',
    b"x" * 20_000,
    b"[]",
    b'{"timestamp": "2999-01-01T00:00:00Z", "soc": 0.5}',
    b"null",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(directory: Path, mqtt_port: int | None, per_gateway: int, modbus_units: tuple[int, int] = (SUNSPEC_UNITS, MAP_UNITS)) -> Path:
    device = {"host": "127.0.0.1", "timeout_s": 0.5, "revert_s": 10, "backoff_max_s": 5}
    units = []
    sunspec_units, map_units = modbus_units
    for g in range(sunspec_units // per_gateway):
        port = free_port()
        units += [{"id": f"ss{g}-{k}", "power_kw": 250, "energy_kwh": 500, "soc_min": 0.1, "soc_max": 0.9, "initial_soc": 0.3 + 0.4 * k / per_gateway, "device": {"protocol": "sunspec", "port": port, "slave_id": k + 1, **device}} for k in range(per_gateway)]
    for g in range(map_units // per_gateway):
        port = free_port()
        units += [{"id": f"pcs{g}-{k}", "power_kw": 250, "energy_kwh": 500, "soc_min": 0.1, "soc_max": 0.9, "initial_soc": 0.5, "device": {"protocol": "modbus_map", "port": port, "slave_id": k + 1, "register_map": str(ROOT / "config/devices/acme_pcs250.yaml"), **device}} for k in range(per_gateway)]
    if mqtt_port is not None:
        units += [{"id": f"mq-{k}", "power_kw": 100, "energy_kwh": 200, "soc_min": 0.1, "soc_max": 0.9, "initial_soc": 0.5, "device": {"protocol": "mqtt", "revert_s": 10, "stale_after_s": 5}} for k in range(MQTT_UNITS)]
    config = {
        "name": "bench-daemon",
        "currency": "USD",
        "timezone": "Etc/GMT+8",
        "interval_min": 5,
        "horizon_h": 2,
        "data": {"caiso": {"file": str(ROOT / "config/data/caiso_2020_hourly_energy_as.csv"), "time_column": "timestamp_start", "timezone": "Etc/GMT+8", "columns": {"da_lmp": {"column": "da_lmp_usd_per_mwh", "unit": "per_mwh"}}}},
        "overrides": "bench.overrides.yaml",
        "sites": [{"id": f"site{s}", "market": "wholesale", "import_limit_kw": 20000, "export_limit_kw": 20000, "units": units[s::4]} for s in range(4)],
        "market": {"energy_price": "caiso.da_lmp"},
        "daemon": {
            "tick_s": TICK_S,
            "poll_s": POLL_S,
            "stale_after_s": 5,
            "setpoint_valid_s": 10,
            "solve_time_limit_s": 30,
            "horizon_h": 2,
            "telemetry_downsample_s": 60,
            "api": {"port": free_port(), "token": TOKEN},
            "clock": {"speed": SPEED, "sim_start": "2020-08-18T00:00:00-08:00"},
        },
    }
    if mqtt_port is not None:
        config["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port, "client_id": "bench-gateway"}
    (directory / "bench.overrides.yaml").write_text("overrides: []\n")
    path = directory / "bench.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def simulator_configs(config: Path) -> list[Path]:
    """The fleet split in two for two simulator processes (SunSpec | register map + MQTT): real devices
    answer in parallel, one Python process answering for all 240 would be the bottleneck measured."""
    full = yaml.safe_load(config.read_text())
    paths = []
    for name, keep in (("sunspec", lambda u: u["device"]["protocol"] == "sunspec"), ("other", lambda u: u["device"]["protocol"] != "sunspec")):
        part = {**full, "sites": [{**site, "units": [u for u in site["units"] if keep(u)]} for site in full["sites"]]}
        part["sites"] = [site for site in part["sites"] if site["units"]]
        part.pop("daemon")
        path = config.with_name(f"sim-{name}.yaml")
        path.write_text(yaml.safe_dump(part, sort_keys=False))
        paths.append(path)
    return paths


def start_mosquitto(directory: Path) -> tuple[subprocess.Popen | None, int | None]:
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        return None, None
    port = free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n")
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    return None, None


async def fuzz(mqtt_port: int, api_port: int, topics: list[str], seconds: float) -> None:
    """The hostile client (its own process): FUZZ_MQTT_PER_S malformed state messages and FUZZ_API_PER_S hostile
    PUT /overrides a second, for ``seconds``, to loopback only. Prints what it sent and the answers' codes."""
    import aiomqtt
    import httpx

    codes: dict[int | str, int] = {}
    sent = 0
    batch = FUZZ_MQTT_PER_S // FUZZ_API_PER_S  # messages per API request, every 1 / FUZZ_API_PER_S s

    async def put(body: bytes, authorized: bool) -> None:
        try:
            response = await api.put("/overrides", content=body, headers={"Authorization": f"Bearer {TOKEN}"} if authorized else {})
            codes[response.status_code] = codes.get(response.status_code, 0) + 1
        except httpx.HTTPError as err:
            codes[type(err).__name__] = codes.get(type(err).__name__, 0) + 1

    async with aiomqtt.Client("127.0.0.1", mqtt_port, identifier="bench-fuzzer") as mqtt, httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as api:
        pending: set[asyncio.Task] = set()
        step, k = 1.0 / FUZZ_API_PER_S, 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            for i in range(batch):
                await mqtt.publish(topics[(k * batch + i) % len(topics)], MALFORMED_STATES[(k * batch + i) % len(MALFORMED_STATES)], qos=0)
                sent += 1
            body, authorized = HOSTILE_BODIES[k % len(HOSTILE_BODIES)]
            task = asyncio.create_task(put(body, authorized))
            pending.add(task)
            task.add_done_callback(pending.discard)
            k += 1
            await asyncio.sleep(max(0.0, start + k * step - time.monotonic()))
        await asyncio.gather(*pending)
    print(f"fuzzer: {sent} malformed MQTT messages, {k} hostile API requests in {time.monotonic() - start:.0f} s; answers {dict(sorted(codes.items(), key=str))}", flush=True)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def measure(config: Path, seconds: float, simulator_pids: list[int], fuzzer: list[str] | None = None) -> None:
    from vpp.config import load_config
    from vpp.daemon.app import Daemon

    cfg = load_config(config)
    daemon = Daemon(cfg)
    runner = asyncio.create_task(daemon.run(install_signals=False))
    deadline = time.monotonic() + 60
    while (daemon.control.out is None or len(daemon.control.out) > 0 or daemon.schedule.schedule is None) and time.monotonic() < deadline:
        if runner.done():
            runner.result()  # the daemon failed to start: raise its error
        await asyncio.sleep(0.2)
    if daemon.control.last is None:
        raise SystemExit("the daemon did not tick within 60 s")
    print(f"units {len(cfg.units)}, in dispatch {len(cfg.units) - len(daemon.control.out or ())}, schedule {daemon.schedule.id}")
    durations, decide, latencies, written, into = [], [], [], [], []
    last_interval = daemon.control.last.result.interval if daemon.control.last else None
    ticks0 = daemon.control.ticks
    overruns0 = daemon.metrics.tick_overruns._value.get()
    cpu0 = time.process_time()
    simulators = [psutil.Process(pid) for pid in simulator_pids]
    sim0 = sum(sum(p.cpu_times()[:2]) for p in simulators)
    client = subprocess.Popen([*fuzzer, str(seconds)], cwd=ROOT) if fuzzer else None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await daemon.control.ticked.wait()
        record = daemon.control.last
        durations.append(record.duration_s)
        into.append((record.wall - daemon.clock.to_wall(daemon.clock.to_sim(record.wall).floor(daemon.interval))).total_seconds())
        decide.append(record.decide_s * 1000)
        written.append(record.written)
        interval = record.result.interval
        if interval is not None and last_interval is not None and interval != last_interval:
            interval_wall = daemon.clock.to_wall(interval)
            latencies.append((record.wall - interval_wall).total_seconds() + record.duration_s)
        last_interval = interval
    overruns = daemon.metrics.tick_overruns._value.get() - overruns0
    cpu_share = (time.process_time() - cpu0) / seconds
    sim_share = (sum(sum(p.cpu_times()[:2]) for p in simulators) - sim0) / seconds
    solves = daemon.metrics.solve_duration
    if client is not None:
        while client.poll() is None:
            await asyncio.sleep(0.1)  # the fuzzer's summary first, the daemon keeps ticking meanwhile
        gateway = daemon.devices.gateway
        print(f"daemon: MQTT malformed {gateway.stats.malformed if gateway else 0}, session reconnects {gateway.session.stats.disconnects if gateway else 0}, override rejections {daemon.metrics.override_rejections._value.get():.0f}, units in dispatch {int(daemon.control.last.result.dispatched().sum())}/{len(cfg.units)}")
    daemon.stop_event.set()
    await runner
    ms = [d * 1000 for d in durations]
    print(f"ticks {daemon.control.ticks - ticks0} over {seconds:.0f} s (tick {TICK_S:g} s, poll {POLL_S:g} s, market clock {SPEED:g}x)")
    print(f"tick duration ms: p50 {pct(ms, 50):.1f}  p99 {pct(ms, 99):.1f}  max {max(ms):.1f}  overruns {overruns:.0f}")
    slowest = sorted(zip(ms, into), reverse=True)[:3]
    print("  slowest ticks: " + ", ".join(f"{d:.0f} ms at {t:.2f} s into the interval" for d, t in slowest))
    print(f"  of which telemetry snapshot + dispatch ms: p50 {pct(decide, 50):.1f}  p99 {pct(decide, 99):.1f}")
    print(f"setpoints written per tick: median {int(np.median(written))}; CPU: daemon process {cpu_share:.0%}, simulator processes {sim_share:.0%} of one core; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    lat = [x * 1000 for x in latencies]
    print(f"interval start -> last setpoint written ms ({len(lat)} interval starts): p50 {pct(lat, 50):.1f}  p99 {pct(lat, 99):.1f}  max {max(lat) if lat else float('nan'):.1f}")
    total = sum(s.value for s in solves.collect()[0].samples if s.name.endswith("_sum"))
    count = sum(s.value for s in solves.collect()[0].samples if s.name.endswith("_count"))
    print(f"solves {count:.0f}, mean wall time {total / max(count, 1):.2f} s (worker process, never on the tick)")


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--mqtt", action="store_true", help="add 40 MQTT units through a Mosquitto on a free port")
    parser.add_argument("--per-gateway", type=int, default=20, choices=(1, 5, 10, 20, 40), help="Modbus devices behind one gateway connection (requests to them queue on it)")
    parser.add_argument("--fuzz", action="store_true", help="200 units (160 Modbus + 40 MQTT) under a hostile client: 100 malformed MQTT messages and 10 hostile API requests a second")
    parser.add_argument("--fuzz-client", nargs=4, metavar=("MQTT_PORT", "API_PORT", "CONFIG", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fuzz_client:
        mqtt_port, api_port, config, seconds = args.fuzz_client
        cfg = yaml.safe_load(Path(config).read_text())
        topics = [f"vpp/{site['id']}/{u['id']}/state" for site in cfg["sites"] for u in site["units"] if u["device"]["protocol"] == "mqtt"]
        asyncio.run(fuzz(int(mqtt_port), int(api_port), topics, float(seconds)))
        return
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        broker, mqtt_port = start_mosquitto(directory) if args.mqtt or args.fuzz else (None, None)
        if args.fuzz and mqtt_port is None:
            raise SystemExit("--fuzz needs mosquitto")
        modbus = (SUNSPEC_UNITS - 20, MAP_UNITS - 20) if args.fuzz else (SUNSPEC_UNITS, MAP_UNITS)  # 200 units in all
        config = write_config(directory, mqtt_port, args.per_gateway, modbus)
        sims = [
            subprocess.Popen([sys.executable, "-m", "vpp", "devices", "simulate", "--config", str(part), "--tick-s", "0.5", "--publish-s", "1.0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
            for part in simulator_configs(config)
        ]
        try:
            for sim, endpoints in zip(sims, (modbus[0] // args.per_gateway, modbus[1] // args.per_gateway + (1 if mqtt_port else 0))):
                for _ in range(endpoints):
                    sim.stdout.readline()
            api_port = yaml.safe_load(config.read_text())["daemon"]["api"]["port"]
            fuzzer = [sys.executable, str(Path(__file__).resolve()), "--fuzz-client", str(mqtt_port), str(api_port), str(config)] if args.fuzz else None
            asyncio.run(measure(config, args.seconds, [sim.pid for sim in sims], fuzzer))
        finally:
            for sim in sims:
                sim.terminate()
                sim.wait(10)
            if broker is not None:
                broker.terminate()
                broker.wait(5)


if __name__ == "__main__":
    pd.set_option("display.width", 120)
    main()
