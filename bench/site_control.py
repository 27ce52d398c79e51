"""Site control benchmark: load step → no export at the meter, for 20 no-export sites × 10 units on one gateway.

Every site has ten 250 kW SunSpec batteries and a grid meter (SunSpec 203, the
DTSU666 register map and MQTT in turn) on its own simulated Modbus gateway,
served by a simulator in a separate process; the daemon runs in this process
with its real tick (2 s), telemetry poll (1 s) and site control loop (meters
read every 0.25 s). Each site's plan is pinned at 1,500 kW of discharge against
2,000 kW of load; then, on every site concurrently and at seeded random
moments, a line stops (load × 0.2: the site would export 1,100 kW). The
simulator measures, from its own physics, the time from the step until the
true flow at the connection is back within the limit (≤ 0.5 kW export), and
restores the load for the next step. Prints load-step-to-no-export p50/p99/max,
meter-to-setpoint latency p50/p99, control cycle p99 and the CPU share of the
loop and of the whole daemon process.

    python bench/site_control.py                # 20 sites x 10 units, 6 steps per site (120 steps)
    python bench/site_control.py --steps-per-site 10 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import numpy as np
import psutil

LOAD_KW, PLAN_KW, STEP_FACTOR = 2000.0, 1500.0, 0.2
EXPORT_TOLERANCE_KW = 0.5
STEP_TIMEOUT_S = 10.0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def receive(conn):
    """The next message on a pipe, without a thread blocked in ``recv`` (which would hold up the loop's exit)."""
    while not conn.poll():
        await asyncio.sleep(0.002)
    return conn.recv()


# ---------------------------------------------------------------- the simulator process


def simulator(config: str, loads: dict[str, float], ratings: dict[str, float], conn) -> None:
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_simulate(config, loads, ratings, conn))


async def _simulate(config: str, loads: dict[str, float], ratings: dict[str, float], conn) -> None:
    from simulators.device_fleet import SimulatedFleet
    from vpp.config import load_config

    cfg = load_config(config)
    async with SimulatedFleet(cfg.units, cfg.mqtt, cfg.path.parent, tick_s=0.05, publish_s=0.25, meters=cfg.meters, site_load_kw=loads, site_rating_kw=ratings) as fleet:
        conn.send(("ready",))

        async def step(site: str) -> None:
            meter = fleet.meters[site]
            meter.load_kw = LOAD_KW * STEP_FACTOR
            started = time.monotonic()
            while time.monotonic() - started < STEP_TIMEOUT_S:
                if meter.true_export_kw(time.monotonic()) <= EXPORT_TOLERANCE_KW:
                    conn.send(("stepped", site, time.monotonic() - started))
                    return
                await asyncio.sleep(0.005)
            conn.send(("stepped", site, None))

        async def restore(site: str) -> None:
            meter = fleet.meters[site]
            meter.load_kw = LOAD_KW
            started = time.monotonic()
            while time.monotonic() - started < STEP_TIMEOUT_S and abs(sum(u.power_kw for u in meter.units) - PLAN_KW) > 1.0:
                await asyncio.sleep(0.02)
            conn.send(("restored", site, time.monotonic() - started))

        tasks = set()
        while True:
            message = await receive(conn)
            if message[0] == "stop":
                return
            task = asyncio.create_task(step(message[1]) if message[0] == "step" else restore(message[1]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


# ---------------------------------------------------------------- the daemon and the measurement


async def measure(config: Path, conn, steps_per_site: int, seed: int) -> dict:
    from tests.daemon_rig import wait_for
    from vpp.config import load_config
    from vpp.daemon.app import Daemon

    cfg = load_config(config)
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run(install_signals=False))
    loop = asyncio.get_running_loop()
    waiting: dict[tuple[str, str], asyncio.Future] = {}

    async def reader() -> None:
        while True:
            kind, site, value = await receive(conn)
            waiting.pop((kind, site)).set_result(value)

    def ask(kind: str, site: str) -> asyncio.Future:
        future = waiting[({"step": "stepped", "restore": "restored"}[kind], site)] = loop.create_future()
        conn.send((kind, site))
        return future

    reading = asyncio.create_task(reader())
    await wait_for(lambda: daemon.control.out == frozenset() and daemon.site_loop is not None and all(sm.alarm is None for sm in daemon.site_loop.sites.values()), 60, "every unit in dispatch and every meter good")
    results: list[float | None] = []
    rng = random.Random(seed)

    async def site_steps(site: str) -> None:
        for _ in range(steps_per_site):
            await ask("restore", site)
            await asyncio.sleep(rng.uniform(0.5, 2.5))  # anywhere in the tick and meter cycles
            results.append(await ask("step", site))

    sl = daemon.site_loop
    sl.durations_s.clear(), sl.latencies_s.clear(), sl.decide_s.clear()
    process = psutil.Process(os.getpid())
    cpu0, wall0 = process.cpu_times(), time.monotonic()
    await asyncio.gather(*(site_steps(s.id) for s in cfg.fleet.sites))
    cpu1, wall1 = process.cpu_times(), time.monotonic()
    elapsed = wall1 - wall0
    reading.cancel()
    daemon.stop_event.set()
    await task
    done = [r for r in results if r is not None]
    return {
        "sites": len(cfg.fleet.sites),
        "units": len(cfg.units),
        "steps": len(results),
        "steps_not_back_within_10_s": len(results) - len(done),
        "step_to_no_export_p50_s": pct(done, 50),
        "step_to_no_export_p99_s": pct(done, 99),
        "step_to_no_export_max_s": max(done) if done else float("nan"),
        "meter_to_setpoint_p50_s": pct(sl.latencies_s, 50),
        "meter_to_setpoint_p99_s": pct(sl.latencies_s, 99),
        "cycle_p50_s": pct(sl.durations_s, 50),
        "cycle_p99_s": pct(sl.durations_s, 99),
        "cycles": len(sl.durations_s),
        "loop_cpu_share": sum(sl.decide_s) / elapsed,
        "loop_busy_share": sum(sl.durations_s) / elapsed,
        "daemon_process_cpu_share": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed,
        "seconds": elapsed,
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--units-per-site", type=int, default=10)
    parser.add_argument("--steps-per-site", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    from tests.conftest import Mosquitto
    from tests.meter_rig import METER_KINDS, write_meter_config

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        broker = Mosquitto(directory)
        broker.start()
        sites = [{"id": f"site{k:02d}", "meter": METER_KINDS[k % len(METER_KINDS)], "load_kw": LOAD_KW, "plan_kw": PLAN_KW, "import_limit_kw": 6000.0, "frozen_after_s": 10.0} for k in range(args.sites)]
        config = write_meter_config(directory, broker.port, sites, units_per_site=args.units_per_site, daemon={"clock": {"speed": 1.0, "sim_start": "2020-08-18T00:00:00-08:00"}, "tick_s": 2.0, "poll_s": 1.0, "stale_after_s": 10.0, "setpoint_valid_s": 10.0})
        parent, child = mp.Pipe()
        sim = mp.get_context("spawn").Process(target=simulator, args=(str(config), {s["id"]: LOAD_KW for s in sites}, {s["id"]: 6000.0 for s in sites}, child), daemon=True)
        sim.start()
        try:
            assert parent.recv()[0] == "ready"
            figures = asyncio.run(measure(config, parent, args.steps_per_site, args.seed))
        finally:
            parent.send(("stop",))
            sim.join(10)
            broker.stop()
    if args.json:
        print(json.dumps(figures))
        return
    f = figures
    print(f"{f['sites']} sites x {f['units'] // f['sites']} units, {f['steps']} load steps (x{STEP_FACTOR:g}: {LOAD_KW * (1 - STEP_FACTOR):.0f} kW of load gone at once), {f['seconds']:.0f} s")
    print(f"load step -> no export at the meter: p50 {f['step_to_no_export_p50_s']:.2f} s  p99 {f['step_to_no_export_p99_s']:.2f} s  max {f['step_to_no_export_max_s']:.2f} s  (not back within {STEP_TIMEOUT_S:g} s: {f['steps_not_back_within_10_s']})")
    print(f"meter reading -> setpoints written: p50 {f['meter_to_setpoint_p50_s'] * 1000:.0f} ms  p99 {f['meter_to_setpoint_p99_s'] * 1000:.0f} ms")
    print(f"control cycle: p50 {f['cycle_p50_s'] * 1000:.1f} ms  p99 {f['cycle_p99_s'] * 1000:.1f} ms over {f['cycles']} cycles")
    print(f"CPU: site loop (law) {f['loop_cpu_share']:.1%} of one core; loop busy incl. writes {f['loop_busy_share']:.1%}; whole daemon process {f['daemon_process_cpu_share']:.1%}")
    print(f"load average {' '.join(f'{x:.2f}' for x in f['load_average'])}")


if __name__ == "__main__":
    main()
