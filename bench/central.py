"""Central benchmark: telemetry ingest from N simulated site gateways, and a plant re-plan delivered to all.

A real Mosquitto on a free port and a real `vpp central` (``Central`` in a child process, on SQLite)
for a synthetic plant of ``--gateways`` sites × ``--units`` batteries. Publisher processes play the
gateways: each site sends one telemetry message (all its units) every second, spread evenly over the
second, over a few shared connections (one per publisher process, not one per gateway: the broker's
per-connection cost is not what is measured). A subscriber records when each site's plan arrives.

Ingest: messages/s stored at the central over the steady window (offered: gateways/s), latency from
the sample's time at the "gateway" to its row committed at the central (p50/p99), the central's CPU
and memory. Re-plan: from the start of the first plant re-plan after every site was online to the
last site holding that plan (solve of the whole plant with the existing optimizer, decomposition on,
plus cutting, recording and publishing one retained plan per site).

    python bench/central.py                          # 1,000 gateways x 10 units (targets: p99 <= 1 s, re-plan <= 60 s)
    python bench/central.py --gateways 200 --json    # reduced, one JSON object
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import pandas as pd  # noqa: E402
import psutil  # noqa: E402
import yaml  # noqa: E402

from bench.daemon import free_port, pct, start_mosquitto  # noqa: E402

SPEED = 30.0  # market seconds per wall second: a 5-minute re-plan period is 10 wall seconds
PUBLISHERS = 2


def write_template(directory: Path, units: int, broker_port: int) -> Path:
    """One site gateway's config: ``units`` batteries on CAISO prices (the plant is made of copies)."""
    config = {
        "name": "bench-site",
        "currency": "USD",
        "timezone": "Etc/GMT+8",
        "interval_min": 5,
        "horizon_h": 1,
        "data": {"caiso": {"file": str(ROOT / "config/data/caiso_2020_hourly_energy_as.csv"), "time_column": "timestamp_start", "timezone": "Etc/GMT+8", "columns": {"da_lmp": {"column": "da_lmp_usd_per_mwh", "unit": "per_mwh"}}}},
        "market": {"energy_price": "caiso.da_lmp"},
        "daemon": {"central": {"site": "template", "broker": {"host": "127.0.0.1", "port": broker_port}}},
        "sites": [{"id": "template", "market": "wholesale", "import_limit_kw": 5000, "export_limit_kw": 5000, "units": [{"id": f"u{j}", "power_kw": 100 + 10 * j, "energy_kwh": 200 + 20 * j, "initial_soc": 0.5} for j in range(units)]}],
    }
    path = directory / "template.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def synthetic_plant(template: Path, gateways: int, broker_port: int, api_port: int):
    """The plant of ``gateways`` copies of the template site (built in memory: a thousand gateway files
    would only measure YAML and CSV loading)."""
    from vpp.config import load_config
    from vpp.fleet import Fleet
    from vpp.plant.config import CentralModel, Plant, PlantSite

    gw = load_config(template)
    sites, units, plant_sites = [], [], []
    for i in range(gateways):
        sid = f"s{i:04d}"
        sites.append(dataclasses.replace(gw.fleet.sites[0], id=sid))
        mine = [dataclasses.replace(u, id=f"{sid}-{u.id}", site_id=sid) for u in gw.units]
        units += mine
        plant_sites.append(PlantSite(sid, gw, tuple(u.id for u in mine)))
    central = CentralModel.model_validate(
        {
            "name": "bench-plant",
            "broker": {"host": "127.0.0.1", "port": broker_port, "client_id": "bench-central"},
            "database": str(template.parent / "plant.db"),
            "api": {"host": "127.0.0.1", "port": api_port},
            "clock": {"speed": SPEED, "sim_start": "2020-08-18T10:00:00-08:00"},
            "replan_every_min": 5,
            "plan_valid_min": 15,
            "heartbeat_s": 2,
            "site_offline_s": 10,
            "solve_time_limit_s": 120,
            "sites": [{"id": s.id, "config": "template.yaml"} for s in plant_sites],
        }
    )
    cfg = dataclasses.replace(gw, path=template.parent / "plant.yaml", name="bench-plant", fleet=Fleet(tuple(sites), tuple(units)), daemon=None)
    return Plant(template.parent / "plant.yaml", central, tuple(plant_sites), cfg)


def serve_central(template: Path, gateways: int, broker_port: int, api_port: int) -> None:
    """Child process: the central."""
    import logging

    from vpp.plant.central import Central

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    central = Central(synthetic_plant(template, gateways, broker_port, api_port))
    if (out := os.environ.get("VPP_BENCH_PROFILE")) is None:
        asyncio.run(central.run())
        return
    import cProfile  # where the central's time goes (all threads' Python frames are not included: the loop's only)

    cProfile.runctx("asyncio.run(central.run())", globals(), {"asyncio": asyncio, "central": central}, out)


def publish(k: int, gateways: int, units: int, broker_port: int, seconds: float, sent) -> None:
    """Child process: telemetry of every site ``i`` with ``i % PUBLISHERS == k``, once a second each; the
    publishes are not awaited one by one (a gateway does not wait for another's PUBACK). ``sent`` counts
    what went out (the offered rate is measured, not assumed)."""
    import aiomqtt

    from vpp.plant.messages import Telemetry, UnitTelemetry, encode, site_topic

    mine = [f"s{i:04d}" for i in range(gateways) if i % PUBLISHERS == k]

    async def run() -> None:
        async with aiomqtt.Client("127.0.0.1", broker_port, identifier=f"bench-pub-{k}", protocol=aiomqtt.ProtocolVersion.V5, max_queued_outgoing_messages=100_000) as client:
            client.pending_calls_threshold = 100_000
            start = time.monotonic()
            n = 0
            inflight: set[asyncio.Task] = set()
            while time.monotonic() - start < seconds:
                for j, sid in enumerate(mine):
                    due = start + n + j / len(mine)
                    if (delay := due - time.monotonic()) > 0:
                        await asyncio.sleep(delay)
                    now = pd.Timestamp.now(tz="UTC")
                    msg = Telemetry(site=sid, sampled_at=now.to_pydatetime(), market_at=now.to_pydatetime(), mode="central", units=tuple(UnitTelemetry(id=f"{sid}-u{u}", soc=0.5, power_kw=10.0, in_dispatch=True) for u in range(units)))
                    task = asyncio.create_task(client.publish(site_topic(sid, "telemetry"), encode(msg), qos=1))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                    sent.value += 1
                n += 1

    asyncio.run(run())


async def watch_plans(broker_port: int, arrivals: dict[tuple[str, int], float], stop: asyncio.Event) -> None:
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", broker_port, identifier="bench-plans", protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe("vpp/plant/v1/site/+/plan", qos=1)
        async for m in client.messages:
            plan = json.loads(m.payload)
            arrivals.setdefault((plan["site"], plan["plan_id"]), time.time())
            if stop.is_set():
                return


def status(port: int) -> dict | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
            return json.loads(r.read())
    except OSError:
        return None


async def bench(gateways: int, units: int, seconds: float, replan_timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="vpp-bench-central-") as tmp:
        d = Path(tmp)
        broker, port = start_mosquitto(d)
        if broker is None:
            raise SystemExit("mosquitto is not installed")
        api_port = free_port()
        template = write_template(d, units, port)
        ctx = multiprocessing.get_context("spawn")
        central = ctx.Process(target=serve_central, args=(template, gateways, port, api_port))
        central.start()
        arrivals: dict[tuple[str, int], float] = {}
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_plans(port, arrivals, stop))
        publishers = []
        try:
            deadline = time.monotonic() + 120
            while (st := await asyncio.to_thread(status, api_port)) is None:
                if time.monotonic() > deadline:
                    raise SystemExit("the central did not start")
                await asyncio.sleep(0.5)
            proc = psutil.Process(central.pid)
            total_s = seconds + replan_timeout_s
            sent = [ctx.Value("q", 0, lock=False) for _ in range(PUBLISHERS)]
            publishers = [ctx.Process(target=publish, args=(k, gateways, units, port, total_s, sent[k]), daemon=True) for k in range(PUBLISHERS)]
            for p in publishers:
                p.start()
            began = time.time()
            online_at = None
            while online_at is None and time.time() - began < 60:
                st = await asyncio.to_thread(status, api_port)
                if st and all(s["online"] for s in st["sites"].values()):
                    online_at = time.time()
                await asyncio.sleep(0.5)
            proc.cpu_percent()
            window_start, sent_before = time.time(), sum(v.value for v in sent)
            await asyncio.sleep(seconds)
            window_end, sent_after = time.time(), sum(v.value for v in sent)
            cpu = proc.cpu_percent() / 100.0
            rss_mb = proc.memory_info().rss / 2**20
            workers_mb = sum(c.memory_info().rss for c in proc.children(recursive=True)) / 2**20
            # the re-plan: the first to start after every site was online, until its plan is at every site
            delivered_s, plan_id, solve_s = None, None, None
            while online_at is not None and time.time() - window_start < seconds + replan_timeout_s:
                st = await asyncio.to_thread(status, api_port)
                r = (st or {}).get("replan", {})
                if r.get("outcome") == "ok" and r.get("started_at") and pd.Timestamp(r["started_at"]).timestamp() >= online_at:
                    plan_id, solve_s, started = r["plan_id"], r["solve_s"], pd.Timestamp(r["started_at"]).timestamp()
                    got = [arrivals.get((f"s{i:04d}", plan_id)) for i in range(gateways)]
                    if all(t is not None for t in got):
                        delivered_s = max(got) - started
                        break
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)  # its connection closed before the broker goes
            for p in publishers:
                p.terminate()
            central.terminate()
            central.join(30)
            broker.terminate()
        db = sqlite3.connect(d / "plant.db")
        rows = db.execute("SELECT site_id, sampled_at, received_at FROM plant_telemetry WHERE unit_id LIKE '%-u0'").fetchall()
        db.close()
        sampled = pd.to_datetime([r[1] for r in rows], utc=True)
        received = pd.to_datetime([r[2] for r in rows], utc=True)
        lo, hi = pd.Timestamp(window_start, unit="s", tz="UTC"), pd.Timestamp(window_end, unit="s", tz="UTC")
        inside = (sampled >= lo) & (sampled < hi)
        latency = ((received - sampled).total_seconds())[inside]  # of the samples taken in the window
        stored = (received >= lo) & (received < hi)  # sustained: what was stored during the window
        return {
            "gateways": gateways,
            "units": gateways * units,
            "offered_msgs_per_s": (sent_after - sent_before) / (window_end - window_start),
            "ingest_msgs_per_s": float(stored.sum() / (window_end - window_start)),
            "latency_p50_s": pct(list(latency), 50),
            "latency_p99_s": pct(list(latency), 99),
            "central_cpu_cores": cpu,
            "central_rss_mb": rss_mb,
            "solver_workers_rss_mb": workers_mb,
            "replan_plan_id": plan_id,
            "replan_solve_s": solve_s,
            "replan_delivered_s": delivered_s,
            "window_s": window_end - window_start,
            "loadavg": os.getloadavg(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--units", type=int, default=10, help="batteries per gateway")
    parser.add_argument("--seconds", type=float, default=20.0, help="the steady ingest window")
    parser.add_argument("--replan-timeout", type=float, default=180.0, help="give up waiting for the re-plan's delivery after this")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = asyncio.run(bench(args.gateways, args.units, args.seconds, args.replan_timeout))
    if args.json:
        print(json.dumps(out))
        return
    print(f"central ingest: {out['gateways']} gateways x {args.units} units, offered {out['offered_msgs_per_s']:.0f} msg/s -> stored {out['ingest_msgs_per_s']:.0f} msg/s over {out['window_s']:.0f} s")
    print(f"  latency sample -> stored: p50 {out['latency_p50_s']:.3f} s, p99 {out['latency_p99_s']:.3f} s (target p99 <= 1 s)")
    print(f"  central CPU {out['central_cpu_cores']:.2f} cores, RSS {out['central_rss_mb']:.0f} MiB (+ solver worker {out['solver_workers_rss_mb']:.0f} MiB)")
    delivered = f"{out['replan_delivered_s']:.1f} s" if out["replan_delivered_s"] is not None else "not delivered in time"
    solve = f"{out['replan_solve_s']:.1f} s" if out["replan_solve_s"] is not None else "none"
    print(f"re-plan of {out['units']} units: start -> last gateway holding plan {out['replan_plan_id']}: {delivered} (solve {solve}; target <= 60 s)")
    print("  load average " + " ".join(f"{x:.2f}" for x in out["loadavg"]))


if __name__ == "__main__":
    main()
