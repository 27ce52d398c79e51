"""Metered sites for the site-control end-to-end test and bench/site_control.py: a config on free ports.

Every site has SunSpec batteries on one simulated gateway and a grid meter —
SunSpec 203, the DTSU666 register map, or MQTT, in turn — served by the same
``SimulatedFleet`` as the batteries, so the meter reads what the batteries
really do. The plan is pinned with site ``force_power`` overrides (the
optimizer's own plan would move with the prices); the market clock runs
``SPEED`` times faster, so a 15-minute demand window lasts 9 wall seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tests.conftest import free_port
from tests.daemon_rig import ROOT, SIM_START, TOKEN, gateway_config

SPEED = 100.0
METER_KINDS = ("sunspec", "modbus_map", "mqtt")


def meter_device(kind: str, port: int, slave_id: int) -> dict[str, Any]:
    if kind == "mqtt":
        return {"protocol": "mqtt", "topic_prefix": "vpp"}
    device = {"protocol": kind, "host": "127.0.0.1", "port": port, "slave_id": slave_id, "timeout_s": 0.3}
    if kind == "modbus_map":
        device["register_map"] = str(ROOT / "config/devices/chint_dtsu666.yaml")
    return device


def write_meter_config(
    directory: Path,
    broker_port: int,
    sites: list[dict[str, Any]],
    *,
    units_per_site: int = 2,
    unit_kw: float = 250.0,
    daemon: dict[str, Any] | None = None,
    tariffs: dict[str, Any] | None = None,
) -> Path:
    """``sites``: per site {id, meter: kind, load_kw, export_allowed, demand_target_kw?, tariff?, sub_meters?, meter options...};
    a site with a ``tariff`` (one of ``tariffs``) is retail, the others wholesale;
    one Modbus gateway per site (its batteries on slaves 1.., its meter on slave 100)."""
    settings = {
        "tick_s": 2.0,
        "poll_s": 0.5,
        "stale_after_s": 3.0,
        "setpoint_valid_s": 5.0,
        "soc_feedback_gain": 0.0,
        "reoptimize_every_min": 60,
        "solve_time_limit_s": 20,
        "horizon_h": 2,
        "telemetry_downsample_s": 60,
        "api": {"host": "127.0.0.1", "port": free_port(), "token": TOKEN},
        "clock": {"speed": SPEED, "sim_start": SIM_START, "wall_start": pd.Timestamp.now(tz="UTC").isoformat()},
    }
    settings.update(daemon or {})
    site_blocks = []
    for s in sites:
        port = free_port()
        unit = {"power_kw": unit_kw, "energy_kwh": unit_kw * 4, "soc_min": 0.05, "soc_max": 0.95, "initial_soc": 0.6}
        device = {"protocol": "sunspec", "host": "127.0.0.1", "port": port, "timeout_s": 0.3, "revert_s": 5, "backoff_max_s": 1}
        meter = {"device": meter_device(s["meter"], port, 100), "poll_s": 0.25, "stale_after_s": 1.0, "frozen_after_s": 1.0, "export_margin_kw": 5.0, "import_margin_kw": 5.0}
        meter.update({k: v for k, v in s.items() if k in ("demand_target_kw", "demand_window_min", "invert", "ct_ratio", "frozen_after_s", "stale_after_s")})
        for k, sub in enumerate(s.get("sub_meters", ())):  # {id, role, meter: kind}: on the site's gateway, slaves 101..
            meter.setdefault("sub_meters", []).append({"id": sub["id"], "role": sub["role"], "device": meter_device(sub["meter"], port, 101 + k), "poll_s": 0.25, "stale_after_s": 1.0, "frozen_after_s": 5.0})
        site_blocks.append(
            {
                "id": s["id"],
                **({"market": "retail", "tariff": s["tariff"]} if "tariff" in s else {"market": "wholesale"}),
                "import_limit_kw": s.get("import_limit_kw", 2000),
                "export_allowed": s.get("export_allowed", False),
                "load_kw": s["load_kw"],
                "meter": meter,
                "units": [{"id": f"{s['id']}-u{k + 1}", **unit, "device": {**device, "slave_id": k + 1}} for k in range(units_per_site)],
            }
        )
    overrides = [
        {"kind": "force_power", "site": s["id"], "value": s["plan_kw"], "start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z", "author": "rig", "reason": "pinned plan"}
        for s in sites
        if "plan_kw" in s
    ]
    (directory / "overrides.yaml").write_text(yaml.safe_dump({"overrides": overrides}, sort_keys=False))
    config = {**gateway_config("meters-e2e", broker_port, settings), **({"tariffs": tariffs} if tariffs else {}), "sites": site_blocks}
    path = directory / "meters.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
