"""A plant for tests: N site gateways and a central on one Mosquitto, each config written to a tmp dir.

Every site has one MQTT battery (simulated in the test process by ``SimulatedFleet``); the gateways
and the central run the market clock ``SPEED`` times faster with one shared anchor, so an interval
closes every 3 wall seconds and a plan valid for 10 market minutes expires 6 s after its interval began.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tests.conftest import free_port
from tests.daemon_rig import ROOT, SIM_START, SPEED, gateway_config

VPP = str(Path(sys.executable).parent / "vpp")  # the console script, as installed


def write_plant(directory: Path, broker_port: int, sites: list[str], *, fallback: dict[str, str] | None = None, credentials: dict[str, str] | None = None, ca_file: Path | None = None, device_port: int | None = None) -> tuple[Path, dict[str, Path]]:
    """The plant file and one gateway config per site; returns (plant file, site -> gateway config).
    ``broker_port`` is the plant broker (with ``credentials``: user = site id, and ``ca_file``: TLS);
    the devices talk through ``device_port`` (default: the same broker)."""
    wall_start = pd.Timestamp.now(tz="UTC").isoformat()
    clock = {"speed": SPEED, "sim_start": SIM_START, "wall_start": wall_start}
    gateways: dict[str, Path] = {}
    for k, site in enumerate(sites):
        d = directory / site
        d.mkdir()
        broker = {"host": "127.0.0.1", "port": broker_port, "client_id": f"gw-{site}-{free_port()}", "keepalive_s": 5, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
        if credentials:
            broker |= {"username": site, "password": credentials[site]}
        if ca_file:
            broker |= {"tls": {"ca_file": str(ca_file)}}
        settings = {
            "tick_s": 0.25,
            "poll_s": 0.25,
            "stale_after_s": 1.5,
            "setpoint_valid_s": 2.0,
            "soc_feedback_gain": 0.0,
            "reoptimize_every_min": 5,
            "solve_time_limit_s": 20,
            "horizon_h": 1,
            "telemetry_downsample_s": 60,
            "api": {"host": "127.0.0.1", "port": free_port()},
            "clock": clock,
            "central": {"site": site, "broker": broker, "fallback": (fallback or {}).get(site, "idle"), "telemetry_every_s": 0.5, "heartbeat_s": 0.5, "replay_jitter_s": 0.5},
        }
        (d / "overrides.yaml").write_text("overrides: []\n")
        config = {
            **gateway_config(f"gw-{site}", device_port or broker_port, settings),
            "horizon_h": 1,
            "sites": [
                {
                    "id": site,
                    "market": "wholesale",
                    "import_limit_kw": 500,
                    "export_limit_kw": 500,
                    "units": [{"id": f"{site}-b1", "power_kw": 100 + 50 * k, "energy_kwh": 200, "soc_min": 0.1, "soc_max": 0.9, "initial_soc": 0.5, "device": {"protocol": "mqtt", "topic_prefix": "vpp", "revert_s": 5, "stale_after_s": 1.5}}],
                }
            ],
        }
        gateways[site] = d / "gateway.yaml"
        gateways[site].write_text(yaml.safe_dump(config, sort_keys=False))
    central_broker: dict[str, Any] = {"host": "127.0.0.1", "port": broker_port, "client_id": f"central-{free_port()}", "keepalive_s": 5, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
    if credentials:
        central_broker |= {"username": "central", "password": credentials["central"]}
    if ca_file:
        central_broker |= {"tls": {"ca_file": str(ca_file)}}
    plant = {
        "plant": {
            "name": "test-plant",
            "broker": central_broker,
            "database": "plant.db",
            "api": {"host": "127.0.0.1", "port": free_port()},
            "clock": clock,
            "replan_every_min": 5,
            "plan_valid_min": 10,
            "horizon_h": 1,
            "heartbeat_s": 0.5,
            "site_offline_s": 3,
            "solve_time_limit_s": 20,
            "sites": [{"id": s, "config": f"{s}/gateway.yaml"} for s in sites],
        }
    }
    path = directory / "plant.yaml"
    path.write_text(yaml.safe_dump(plant, sort_keys=False))
    return path, gateways


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen([VPP, *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def get(port: int, path: str) -> Any:
    """GET a JSON document from a local API; None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1.0) as r:
            return json.loads(r.read())
    except OSError:
        return None
