"""A site for daemon tests: a config on free ports, simulated devices speaking real Modbus/MQTT, helpers.

The market clock runs ``SPEED`` times faster than the wall clock: a 5-minute
market interval lasts 3 wall seconds, so tests see intervals close, solves
run and settlement happen in seconds. Device-side times (revert, staleness,
the tick) stay in wall seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
SPEED = 100.0  # market seconds per wall second
INTERVAL_WALL_S = 300.0 / SPEED
SIM_START = "2020-08-18T00:00:00-08:00"
TOKEN = "test-token-0123456789abcdef"


def write_config(directory: Path, broker_port: int, *, daemon: dict[str, Any] | None = None, units: int = 1) -> Path:
    """Two SunSpec units and a register-map unit on two simulated gateways, one MQTT unit."""
    sunspec_port, map_port = free_port(), free_port()
    device = {"host": "127.0.0.1", "timeout_s": 0.3, "revert_s": 5, "backoff_max_s": 1}
    settings = {
        "tick_s": 0.25,
        "poll_s": 0.25,
        "stale_after_s": 1.5,
        "setpoint_valid_s": 2.0,
        "soc_feedback_gain": 0.0,  # devices run in wall time, the plan in market time: no SoC correction
        "reoptimize_every_min": 5,
        "solve_time_limit_s": 20,
        "horizon_h": 2,
        "telemetry_downsample_s": 60,
        "api": {"host": "127.0.0.1", "port": free_port(), "token": TOKEN},
        "clock": {"speed": SPEED, "sim_start": SIM_START, "wall_start": pd.Timestamp.now(tz="UTC").isoformat()},
    }
    settings.update(daemon or {})
    (directory / "overrides.yaml").write_text("overrides: []\n")
    config = {
        **gateway_config("daemon-e2e", broker_port, settings),
        "sites": [
            {
                "id": "depot",
                "market": "wholesale",
                "import_limit_kw": 2000,
                "export_limit_kw": 2000,
                "units": [
                    {"id": "ss-1", "power_kw": 250, "energy_kwh": 500, "soc_min": 0.1, "soc_max": 0.9, "initial_soc": 0.5, "device": {"protocol": "sunspec", "port": sunspec_port, "slave_id": 1, **device}},
                    {"id": "ss-2", "power_kw": 250, "energy_kwh": 500, "soc_min": 0.1, "soc_max": 0.9, "initial_soc": 0.4, "device": {"protocol": "sunspec", "port": sunspec_port, "slave_id": 2, **device}},
                    {"id": "pcs-1", "power_kw": 250, "energy_kwh": 500, "soc_min": 0.1, "soc_max": 0.9, "initial_soc": 0.6, "device": {"protocol": "modbus_map", "port": map_port, "slave_id": 1, "register_map": str(ROOT / "config/devices/acme_pcs250.yaml"), **device}},
                    {"id": "mq-1", "power_kw": 100, "energy_kwh": 200, "soc_min": 0.1, "soc_max": 0.9, "initial_soc": 0.5, "device": {"protocol": "mqtt", "topic_prefix": "vpp", "revert_s": 5, "stale_after_s": 1.5}},
                ],
            }
        ],
    }
    path = directory / "site.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def hang(*args: Any, **kwargs: Any) -> None:
    """A solve that never returns (runs in the daemon's solver worker)."""
    time.sleep(3600)


def gateway_config(name: str, broker_port: int, settings: dict) -> dict:
    """What every test gateway's config shares: CAISO prices on a 5-minute grid, the broker, the overrides
    file next to it and the daemon block (``sites`` is the caller's)."""
    return {
        "name": name,
        "currency": "USD",
        "timezone": "Etc/GMT+8",
        "interval_min": 5,
        "horizon_h": 2,
        "data": {
            "caiso": {
                "file": str(ROOT / "config/data/caiso_2020_hourly_energy_as.csv"),
                "time_column": "timestamp_start",
                "timezone": "Etc/GMT+8",
                "columns": {"da_lmp": {"column": "da_lmp_usd_per_mwh", "unit": "per_mwh"}},
            }
        },
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "client_id": f"gw-{free_port()}", "keepalive_s": 5, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        "overrides": "overrides.yaml",
        "daemon": settings,
        "market": {"energy_price": "caiso.da_lmp"},
    }
