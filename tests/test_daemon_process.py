"""``python -m vpp run`` as a real process: crash (kill -9) and restart, then SIGTERM.

The devices are simulated in the test process over real Modbus and a real
Mosquitto; the daemon runs its market clock 100× faster, so intervals close
(and are settled) every 3 s. What must hold: a restarted daemon resumes from
the last stored schedule, every closed interval is settled exactly once
(none lost across the crash, none twice), and SIGTERM leaves every unit at 0 W.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from simulators.device_fleet import SimulatedFleet
from tests.conftest import Mosquitto
from tests.daemon_rig import ROOT, wait_for, write_config
from vpp.config import load_config

pytestmark = pytest.mark.asyncio


def start_daemon(config: Path, log: Path, notify_socket: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_socket), "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "vpp", "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


async def exit_code(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Wait without blocking the loop: the simulated devices in this process must keep answering."""
    await wait_for(lambda: process.poll() is not None, timeout_s, f"daemon pid {process.pid} to exit")
    return process.returncode


def scalar(engine: sa.Engine, sql: str) -> object:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def frame(engine: sa.Engine, sql: str) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(sa.text(sql)).mappings().all())


async def test_a_killed_daemon_resumes_settles_every_interval_once_and_sigterm_leaves_units_at_0_w(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = write_config(tmp_path, mosquitto.port, daemon={"tick_s": 0.25})
    cfg = load_config(config)
    engine = sa.create_engine(f"sqlite:///{config.with_suffix('.db')}")
    log = tmp_path / "daemon.log"
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.setblocking(False)
    messages: list[str] = []

    async def drain() -> None:
        while True:
            try:
                messages.append(notify.recv(4096).decode())
            except BlockingIOError:
                await asyncio.sleep(0.02)

    drainer = asyncio.create_task(drain())
    sim = SimulatedFleet(cfg.units, cfg.mqtt, cfg.path.parent, tick_s=0.05, publish_s=0.2)
    await sim.start()
    process = start_daemon(config, log, notify_path)
    try:
        settled = lambda: scalar(engine, "SELECT count(*) FROM daemon_settled_intervals") if config.with_suffix(".db").exists() else 0
        await wait_for(lambda: _safe(settled) >= 2, 40, "two intervals settled by the first run")
        await asyncio.sleep(1.3)  # into the middle of the next interval
        process.send_signal(signal.SIGKILL)
        assert await exit_code(process, 5) == -signal.SIGKILL
        killed_at = pd.Timestamp.now(tz="UTC")
        last_schedule = scalar(engine, "SELECT max(id) FROM daemon_schedules")
        settled_before = settled()
        assert "READY=1" in messages and "WATCHDOG=1" in messages

        process = start_daemon(config, log, notify_path)
        await wait_for(lambda: settled() >= settled_before + 3, 40, "three more intervals settled after the restart")
        await wait_for(lambda: all(sim.units[u].setpoint_kw not in (None, 0.0) for u in ("ss-1", "ss-2", "pcs-1")), 10, "the units running")
        process.send_signal(signal.SIGTERM)
        assert await exit_code(process, 15) == 0, log.read_text()[-3000:]
        after_sigterm = {u: sim.units[u].setpoint_kw for u in sim.units}  # before the 0 W setpoints' own validity ends
    finally:
        if process.poll() is None:
            process.kill()
        drainer.cancel()
        await sim.stop()
        notify.close()

    # SIGTERM: 0 W written to every Modbus unit; the MQTT unit reverts on the gateway's "offline" status
    assert {u: after_sigterm[u] for u in ("ss-1", "ss-2", "pcs-1")} == dict.fromkeys(("ss-1", "ss-2", "pcs-1"), 0.0)
    assert after_sigterm["mq-1"] in (None, 0.0)
    assert messages[-1] == "STOPPING=1"
    text = log.read_text()
    assert "Traceback" not in text

    # the restarted daemon dispatched from the stored schedule before it had solved anything itself
    first = frame(engine, f"SELECT schedule_id FROM daemon_commands WHERE wall_at > '{killed_at.tz_localize(None)}' AND schedule_id IS NOT NULL ORDER BY id LIMIT 1")
    assert int(first.schedule_id[0]) == last_schedule
    assert f"restored schedule id={last_schedule}" in text

    # every interval from the first settled to the last is settled, each unit × stream once
    intervals = pd.to_datetime(frame(engine, "SELECT interval_start FROM daemon_settled_intervals").interval_start, utc=True).sort_values()
    expected = pd.date_range(intervals.iloc[0], intervals.iloc[-1], freq="5min")
    assert list(intervals) == list(expected)
    energy = frame(engine, "SELECT unit_id, interval_start, discharged_wh, charged_wh FROM metered_energy")
    assert len(energy) == 4 * len(expected)
    rows = frame(engine, "SELECT unit_id, interval_start, stream, amount_minor FROM settlements")
    assert not rows.duplicated(["unit_id", "interval_start", "stream"]).any()
    assert set(rows.stream) == {"energy"}

    # each energy row = price × the energy the daemon integrated / 5 min (independent of the settlement code)
    flowed = frame(engine, "SELECT bucket_start, unit_id, energy_kwh FROM daemon_energy")
    flowed["interval_start"] = pd.to_datetime(flowed.bucket_start, utc=True).dt.floor("5min")
    mean_kw = flowed.groupby(["unit_id", "interval_start"]).energy_kwh.sum() / (5 / 60)
    prices = pd.read_csv(ROOT / "config/data/caiso_2020_hourly_energy_as.csv", parse_dates=["timestamp_start"])
    price = prices.set_index(prices.timestamp_start.dt.tz_localize("Etc/GMT+8").dt.tz_convert("UTC")).da_lmp_usd_per_mwh
    rows["interval_start"] = pd.to_datetime(rows.interval_start, utc=True)
    checked = 0
    for row in rows.itertuples():
        kw = mean_kw.get((row.unit_id, row.interval_start), 0.0)
        expected_minor = price[row.interval_start.floor("h")] * kw * (5 / 60) / 1000 * 100
        assert row.amount_minor == pytest.approx(expected_minor, abs=0.51), row
        checked += 1
    assert checked >= 8 and np.abs(rows.amount_minor).sum() > 0


def _safe(fn) -> int:
    try:
        return int(fn())
    except sa.exc.OperationalError:  # the daemon has not created its tables yet
        return 0
