"""The daemon end to end, in this process: real Modbus (SunSpec and register-map) simulators, a real
Mosquitto, real HiGHS solves in the worker process, SQLite, the HTTP API on a free port.

One daemon serves the whole module (start-up costs seconds); tests run in file order and each
leaves the site as it found it. The market clock runs 100× (a 5-minute interval = 3 s).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import pytest_asyncio
import sqlalchemy as sa
import yaml

from simulators.device_fleet import SimulatedFleet
from simulators.sim_unit import WireFault
from tests.conftest import Mosquitto
from tests.daemon_rig import TOKEN, hang, wait_for, write_config
from vpp.config import VppConfig, load_config
from vpp.daemon.app import Daemon
from vpp.daemon.store import override_audit

pytestmark = pytest.mark.asyncio(loop_scope="module")

SUNSPEC_KW_RESOLUTION = 0.005  # WSet in W with scale factor 1: 10 W steps
MAP_KW_RESOLUTION = 0.05  # acme map: 0.1 kW steps


@dataclass
class Site:
    daemon: Daemon
    sim: SimulatedFleet
    cfg: VppConfig
    dir: Path

    def index(self, unit_id: str) -> int:
        return self.daemon.control.dfleet.unit_ids.index(unit_id)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.cfg.daemon.api.port}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    directory = tmp_path_factory.mktemp("daemon-e2e")
    broker = Mosquitto(directory)
    broker.start()
    cfg = load_config(write_config(directory, broker.port))
    sim = SimulatedFleet(cfg.units, cfg.mqtt, cfg.path.parent, tick_s=0.05, publish_s=0.2)
    await sim.start()
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run(install_signals=False))
    await wait_for(lambda: daemon.schedule.schedule is not None and daemon.control.out == frozenset(), 30, "a schedule and every unit in dispatch")
    yield Site(daemon, sim, cfg, directory)
    daemon.stop_event.set()
    await task
    await sim.stop()
    broker.stop()


async def ticks(daemon: Daemon, n: int = 1) -> None:
    target = daemon.control.ticks + n
    await wait_for(lambda: daemon.control.ticks >= target, 10, f"{n} control ticks")


def audit(site: Site) -> list[dict]:
    with site.daemon.store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(override_audit).order_by(override_audit.c.id)).mappings()]


def write_overrides(site: Site, entries: list[dict] | str) -> None:
    text = entries if isinstance(entries, str) else yaml.safe_dump({"overrides": entries})
    (site.dir / "overrides.yaml").write_text(text)


async def test_setpoints_written_are_the_schedule_power_of_the_interval_in_force(site: Site) -> None:
    d = site.daemon
    for _ in range(20):  # a solve may replace the schedule mid-tick; take a tick that ran on one schedule
        schedule_id = d.schedule.id
        await ticks(d)
        if d.schedule.id == schedule_id:
            break
    last, schedule = d.control.last, d.schedule.schedule
    now = d.clock.to_sim(last.wall)
    assert last.result.interval == now.floor("5min")  # the interval containing the market time
    planned = schedule.power_kw[:, schedule.index.get_loc(last.result.interval)]
    order = [schedule.unit_ids.index(u) for u in last.result.unit_ids]
    # SoC feedback is off and SoC is mid-window: what is commanded is exactly the plan
    np.testing.assert_allclose(last.result.power_kw, planned[order], atol=1e-6)
    assert np.abs(planned).max() > 1.0, "the plan moves power, so following it is visible"
    for uid in ("ss-1", "ss-2"):
        assert site.sim.units[uid].setpoint_kw == pytest.approx(last.result.power_kw[site.index(uid)], abs=SUNSPEC_KW_RESOLUTION)
    assert site.sim.units["pcs-1"].setpoint_kw == pytest.approx(last.result.power_kw[site.index("pcs-1")], abs=MAP_KW_RESOLUTION)
    await wait_for(lambda: site.sim.units["mq-1"].setpoint_kw == pytest.approx(d.control.last.result.power_kw[site.index("mq-1")]), 2, "the MQTT unit's setpoint")

    # over the run so far: every recorded command equals the plan of the schedule in force for its interval
    first = d.control.last.result.interval
    await wait_for(lambda: d.control.last.result.interval > first + pd.Timedelta(minutes=5), 10, "two interval boundaries")
    await asyncio.sleep(0.5)  # the database thread stores the commands
    with d.store.engine.connect() as conn:
        rows = pd.DataFrame(conn.execute(sa.text(
            "SELECT c.unit_id, c.interval_start, c.power_kw, p.power_kw AS planned FROM daemon_commands c JOIN daemon_schedule_points p "
            "ON p.schedule_id = c.schedule_id AND p.interval_start = c.interval_start AND p.unit_id = c.unit_id WHERE c.reason = ''"
        )).mappings().all())
    assert rows.interval_start.nunique() >= 3 and set(rows.unit_id) == {"ss-1", "ss-2", "pcs-1", "mq-1"}
    np.testing.assert_allclose(rows.power_kw, rows.planned, atol=1e-6)


async def test_an_override_edit_lands_within_one_tick_and_bad_files_leave_it_in_force(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    d, i = site.daemon, site.index("ss-1")
    now = d.clock.now()
    force = {"kind": "force_power", "unit": "ss-1", "value": -42.0, "start": (now - pd.Timedelta(hours=1)).isoformat(), "end": (now + pd.Timedelta(hours=6)).isoformat(), "author": "alice", "reason": "grid test"}
    in_progress = d._tick_lock.locked()
    started = d.control.ticks
    write_overrides(site, [force])
    await ticks(d, 2 if in_progress else 1)  # the first tick that starts after the edit
    assert d.control.last.result.power_kw[i] == pytest.approx(-42.0)
    assert "override force_power" in d.control.last.result.reasons[i]
    assert d.control.ticks - started <= 2
    assert site.sim.units["ss-1"].setpoint_kw == pytest.approx(-42.0, abs=SUNSPEC_KW_RESOLUTION)
    await wait_for(lambda: any(r["event"] == "applied" and r["unit_id"] == "ss-1" and r["author"] == "alice" for r in audit(site)), 2, "the audit row")

    write_overrides(site, "overrides: [{kind: force_power, unit: ss-1\n")  # broken YAML
    await ticks(d, 2)
    assert d.control.last.result.power_kw[i] == pytest.approx(-42.0)
    assert "overrides.yaml" in d.watcher.last_error and "valid YAML" in d.watcher.last_error
    write_overrides(site, [{**force, "unit": "no-such-unit"}])
    await ticks(d, 2)
    assert d.control.last.result.power_kw[i] == pytest.approx(-42.0)
    assert "overrides[0].unit: got 'no-such-unit'" in d.watcher.last_error
    assert any("overrides rejected" in r.getMessage() and "no-such-unit" in r.getMessage() for r in caplog.records)
    await wait_for(lambda: sum(r["event"] == "rejected" for r in audit(site)) >= 2, 2, "two rejections audited")

    write_overrides(site, [])
    await ticks(d, 2)
    assert "override" not in d.control.last.result.reasons[i]
    await wait_for(lambda: any(r["event"] == "withdrawn" and r["unit_id"] == "ss-1" for r in audit(site)), 2, "the withdrawal audited")


async def test_api_serves_status_schedule_metrics_and_guards_overrides_with_the_token(site: Site) -> None:
    d = site.daemon
    async with httpx.AsyncClient(base_url=site.api, timeout=5) as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        status = (await client.get("/status")).json()
        assert status["fleet"]["units"] == 4 and status["fleet"]["in_dispatch"] == 4
        assert set(status["units"]) == {"ss-1", "ss-2", "pcs-1", "mq-1"}
        assert status["schedule"]["id"] is not None
        schedule = (await client.get("/schedule")).json()
        held = d.schedule.schedule
        if schedule["id"] == d.schedule.id:
            assert schedule["power_kw"]["ss-1"] == pytest.approx(held.power_kw[held.unit_ids.index("ss-1")], abs=1e-3)
        assert len(schedule["intervals"]) == 24

        assert (await client.get("/overrides")).status_code == 401
        assert (await client.get("/overrides", headers={"Authorization": "Bearer wrong-token-wrong-token"})).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await client.get("/overrides", headers=auth)).json()["overrides"] == []

        now = d.clock.now()
        out = {"kind": "unit_out", "unit": "pcs-1", "start": now.isoformat(), "end": (now + pd.Timedelta(hours=6)).isoformat(), "author": "bob", "reason": "maintenance"}
        assert (await client.put("/overrides", json={"overrides": [out]})).status_code == 401
        bad = await client.put("/overrides", json={"overrides": [{**out, "unit": "pcs-9"}]}, headers=auth)
        assert bad.status_code == 422 and "pcs-9" in bad.json()["errors"][0]
        garbage = await client.put("/overrides", content=b"{not: [valid", headers=auth)
        assert garbage.status_code == 422
        assert yaml.safe_load((site.dir / "overrides.yaml").read_text()) == {"overrides": []}  # untouched
        ok = await client.put("/overrides", json={"overrides": [out]}, headers=auth)
        assert ok.status_code == 200 and ok.json()["overrides"][0]["unit"] == "pcs-1"
        assert yaml.safe_load((site.dir / "overrides.yaml").read_text())["overrides"][0]["author"] == "bob"
        await ticks(d, 2)
        i = site.index("pcs-1")
        assert d.control.last.result.power_kw[i] == 0.0 and "override unit_out" in d.control.last.result.reasons[i]
        assert site.sim.units["pcs-1"].setpoint_kw == 0.0

        metrics = (await client.get("/metrics")).text
        assert 'vpp_unit_available{unit="ss-1"} 1.0' in metrics
        assert "vpp_tick_duration_seconds_count" in metrics and 'vpp_solves_total{outcome="ok"}' in metrics
        settled = float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("vpp_settled_intervals_total ")))
        assert settled >= 1  # intervals close every 3 s here
        assert "vpp_override_rejections_total 4.0" in metrics  # two files (previous test), two API bodies

        assert (await client.put("/overrides", json={"overrides": []}, headers=auth)).status_code == 200
    await ticks(d, 2)
    assert d.control.out == frozenset()


async def test_a_unit_whose_device_stops_answering_is_taken_out_and_gets_no_setpoints(site: Site) -> None:
    d, i = site.daemon, site.index("ss-2")
    site.sim.units["ss-2"].wire_fault = WireFault.SILENT
    try:
        await wait_for(lambda: np.isnan(d.control.last.result.power_kw[i]), 5, "ss-2 out of dispatch")
        reason = d.control.last.result.reasons[i]
        assert "stale" in reason or "offline" in reason
        last_write = d.control.written_at["ss-2"]
        await ticks(d, 8)
        assert d.control.written_at["ss-2"] == last_write  # nothing sent to it since
        assert np.isnan(d.control.last.result.power_kw[i])

        def replanned_without_ss2() -> bool:  # the plan no longer counts on it
            held = d.schedule
            return held.created_at > last_write and np.abs(held.schedule.power_kw[held.schedule.unit_ids.index("ss-2")]).max() < 1e-6

        await wait_for(replanned_without_ss2, 15, "a re-plan without ss-2")
    finally:
        site.sim.units["ss-2"].wire_fault = None
    await wait_for(lambda: not np.isnan(d.control.last.result.power_kw[i]), 10, "ss-2 back in dispatch")


async def test_garbage_telemetry_takes_units_out_without_stopping_the_daemon(site: Site) -> None:
    d = site.daemon
    gateway = d.devices.gateway
    malformed = gateway.stats.malformed
    site.sim.units["pcs-1"].wire_fault = WireFault.GARBAGE
    site.sim.units["mq-1"].wire_fault = WireFault.GARBAGE
    try:
        await wait_for(lambda: "mq-1" in (d.control.out or set()), 5, "mq-1 out on garbage")
        before = d.control.ticks
        await asyncio.sleep(1.0)
        assert d.control.ticks >= before + 3  # still ticking
        assert gateway.stats.malformed > malformed
        i = site.index("pcs-1")
        # random registers: rejected outright (out of dispatch), or numbers inside the clamps
        power = d.control.last.result.power_kw[i]
        assert np.isnan(power) or abs(power) <= 250.0 + 1e-9
    finally:
        site.sim.units["pcs-1"].wire_fault = None
        site.sim.units["mq-1"].wire_fault = None
    await wait_for(lambda: d.control.out == frozenset(), 10, "all units back")


async def test_a_solve_that_times_out_leaves_the_last_schedule_in_force(site: Site) -> None:
    d = site.daemon
    await wait_for(lambda: not d.solve_status()["running"], 15, "no solve running")
    held_id, recycles = d.schedule.id, d.reoptimizer.recycles
    d.reoptimizer.solve_fn, d.reoptimizer.time_limit_s = hang, 1.5
    worker_pids = set((d.reoptimizer._pool._processes or {}).keys()) if d.reoptimizer._pool else set()
    try:
        d.request_reoptimization("test")
        ticks_before = d.control.ticks
        await wait_for(lambda: d.last_solve.get("outcome") == "timeout", 10, "the solve to time out")
        assert d.control.ticks - ticks_before >= 4  # the tick ran on while the worker hung
        assert d.schedule.id == held_id
        assert d.reoptimizer.recycles == recycles + 1
        for pid in worker_pids:  # the hung worker was killed, not left behind
            await wait_for(lambda pid=pid: not _alive(pid), 5, f"worker {pid} gone")
        await ticks(d)
        assert d.control.last.result.interval is not None and not np.isnan(d.control.last.result.power_kw).all()
    finally:
        from vpp.daemon.reoptimize import solve

        d.reoptimizer.solve_fn, d.reoptimizer.time_limit_s = solve, site.cfg.daemon.solve_time_limit_s
    await wait_for(lambda: not d.solve_status()["running"], 15, "the pending solves to finish")
    d.request_reoptimization("after timeout")
    await wait_for(lambda: d.schedule.id != held_id and d.last_solve.get("outcome") == "ok", 20, "a fresh worker to solve again")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False
    return True


async def test_a_new_dr_event_in_the_config_is_planned_for_and_fleet_edits_wait_for_a_restart(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    d, path = site.daemon, site.cfg.path
    caplog.set_level(logging.INFO, logger="vpp.daemon.app")
    original = path.read_text()
    raw = yaml.safe_load(original)
    start = (d.clock.now() + pd.Timedelta(minutes=30)).floor("5min")
    event = {"id": "dr-new", "start": start.isoformat(), "end": (start + pd.Timedelta(minutes=30)).isoformat(), "capacity_price_per_kw": 50.0, "baseline": "fixed", "baseline_kw": 0}
    raw["market"]["demand_response"] = [event]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        # a periodic re-plan may replace it within milliseconds: look for it among the plans put in force
        await wait_for(lambda: any("in force trigger=config changed (new DR events: dr-new)" in r.getMessage() for r in caplog.records), 20, "a re-plan for the new DR event")
        assert [e.id for e in d.cfg.market.dr_events] == ["dr-new"]
        assert d.schedule.schedule.dr_commitment_kw["dr-new"] > 0  # worth 50 per kW: the plan commits to it

        raw["sites"][0]["units"][0]["power_kw"] = 300  # a unit's rating: not something to change under a running tick
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        await wait_for(lambda: any("units changed, which needs a restart" in r.getMessage() for r in caplog.records), 10, "the restart notice")
        assert d.cfg.units[0].max_discharge_kw == 250.0

        path.write_text("sites: [\n")
        await wait_for(lambda: any("config change rejected" in r.getMessage() and "valid YAML" in r.getMessage() for r in caplog.records), 10, "the rejection")
        before = d.control.ticks
        await ticks(d, 4)
        assert d.control.ticks >= before + 4 and d.cfg.market.dr_events[0].id == "dr-new"
    finally:
        path.write_text(original)
