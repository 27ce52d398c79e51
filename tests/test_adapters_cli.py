"""`vpp devices scan` against a simulated SunSpec device, as an installer would run it on site."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from simulators.modbus_server import ModbusDeviceServer
from simulators.sunspec_server import SunSpecImage
from tests.conftest import free_port, sim_unit


async def vpp(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vpp", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "200"}
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_scan_prints_models_soc_state_and_ratings() -> None:
    unit = sim_unit(soc=0.634, rating_kw=250.0, energy_kwh=500.0)
    unit.command(-50.0, valid_s=600, now=time.monotonic())
    async with ModbusDeviceServer({5: SunSpecImage(unit, slave_id=5)}, tick_s=0.05) as server:
        code, out, err = await vpp("devices", "scan", f"127.0.0.1:{server.port}", "--slave", "5")
    assert code == 0, err
    assert "SN=SIM-u1" in out and "base 40000" in out
    for model_id, name in ((701, "DERMeasureAC"), (704, "DERCtlAC"), (802, "battery")):
        assert str(model_id) in out and name in out
    assert "SoC 63.4%" in out and "power -50.0 kW" in out and "state ok" in out
    assert "702.WMaxRtg = 250000" in out and "802.WHRtg = 500000" in out


async def test_scan_of_an_address_where_nothing_answers_is_one_error_line() -> None:
    code, _, err = await vpp("devices", "scan", f"127.0.0.1:{free_port()}", "--timeout", "0.5")
    assert code == 2
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: modbus 127.0.0.1:") and "connect failed" in err


async def test_scan_rejects_a_malformed_target() -> None:
    code, _, err = await vpp("devices", "scan", "127.0.0.1:notaport")
    assert code == 2 and "HOST[:PORT]" in err
