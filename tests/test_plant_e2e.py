"""One plant, three sites: `vpp central` and three `vpp run` gateways as real processes, on a real plant
Mosquitto as deployed (TLS, a password per gateway, deploy/mosquitto/plant.acl), devices on their own.

What must hold: plans flow down and are followed; telemetry flows up; with the central killed (-9)
the gateways follow the cached plan, then fall back when it expires, never commanding a unit past
its rating; malformed, oversized, stale and replayed plans are refused and the plan in force stays;
with the broker stopped for a few seconds (and a gateway killed meanwhile) nothing is lost (every
telemetry sample and interval record arrives after the replay, none twice); the restarted central resumes; and the central ledger
equals the gateways' own ledgers row for row, to the minor unit.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path

import aiomqtt
import pandas as pd
import psutil
import pytest
import sqlalchemy as sa

from simulators.device_fleet import SimulatedFleet
from tests.conftest import Mosquitto
from tests.daemon_rig import ROOT, wait_for
from tests.plant_rig import get, start, write_plant
from vpp.config import load_config
from vpp.daemon.clock import utc
from vpp.daemon.orphans import MARK, config_key
from vpp.plant.messages import SitePlan, site_topic

pytestmark = pytest.mark.asyncio

SITES = ["north", "south", "east"]


def rows(db: Path, sql: str, **params: object) -> list[tuple]:
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params).all()]
    finally:
        engine.dispose()


async def status(port: int) -> dict | None:
    return await asyncio.to_thread(get, port, "/status")


USERS = {"central": "central-secret-0123", **{s: f"{s}-secret-0123" for s in SITES}}


@pytest.fixture
def mosquitto(tmp_path: Path):
    """The plant broker as deployed: TLS, a password per gateway, the shipped ACL, and sessions kept
    across its restart (deploy/mosquitto/plant.conf)."""
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker", users=USERS, tls=True, persistence=True, acl_file=ROOT / "deploy/mosquitto/plant.acl")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def devices(tmp_path: Path):
    """The sites' device broker (the gateways' mqtt: block), apart from the plant's."""
    (tmp_path / "devices").mkdir()
    broker = Mosquitto(tmp_path / "devices")
    broker.start()
    yield broker
    broker.stop()


async def test_plans_flow_down_reports_flow_up_and_nothing_is_lost_or_counted_twice(tmp_path: Path, mosquitto: Mosquitto, devices: Mosquitto) -> None:
    plant_file, gateway_files = write_plant(tmp_path, mosquitto.port, SITES, fallback={"north": "local"}, credentials=USERS, ca_file=mosquitto.ca_file, device_port=devices.port)
    cfgs = {s: load_config(p) for s, p in gateway_files.items()}
    ports = {s: c.daemon.api.port for s, c in cfgs.items()}
    rating = {u.id: u.max_discharge_kw for c in cfgs.values() for u in c.units}
    plant_port = __import__("yaml").safe_load(plant_file.read_text())["plant"]["api"]["port"]
    sims = [SimulatedFleet(c.units, c.mqtt, c.path.parent, tick_s=0.05, publish_s=0.2) for c in cfgs.values()]
    for sim in sims:
        await sim.start()
    gateways = {s: start(["run", "-c", str(p)], tmp_path / f"{s}.log") for s, p in gateway_files.items()}
    central = start(["central", "-c", str(plant_file)], tmp_path / "central.log")
    commanded: list[tuple[str, float]] = []

    async def watch() -> None:  # every command the gateways report, for the limits check
        while True:
            for s, port in ports.items():
                st = await status(port)
                for uid, u in (st or {}).get("units", {}).items():
                    if u["commanded_kw"] is not None:
                        commanded.append((uid, u["commanded_kw"]))
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())

    async def modes() -> dict[str, str | None]:
        out = {}
        for s, port in ports.items():
            st = await status(port)
            out[s] = st["central"]["mode"] if st else None
        return out

    async def until(pred, timeout_s: float, what: str) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if await pred():
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; modes {await modes()}; central log tail: {(tmp_path / 'central.log').read_text()[-1500:]}")

    try:
        # 1. plans flow down and are followed; telemetry flows up
        await until(lambda: _all(modes(), "central"), 60, "every gateway following a central plan")
        st = await status(ports["south"])
        assert st["schedule"]["source"] == "central" and st["central"]["plan_id"] >= 1
        await until(lambda: _ingested(plant_port), 20, "telemetry from every site at the central")
        plant_schedule = await asyncio.to_thread(get, plant_port, "/schedule")
        assert set(plant_schedule["site_net_kw"]) == set(SITES) and plant_schedule["plan_id"] >= 1

        # 2. hostile plans: refused with a reason, the plan in force stays
        before = (await status(ports["east"]))["central"]
        good = SitePlan.model_validate_json(rows(tmp_path / "plant.db", "SELECT payload FROM plant_plans WHERE site_id='east' ORDER BY plan_id DESC LIMIT 1")[0][0])
        replay = good.model_copy(update={"plan_id": 1}).model_dump_json().encode()
        stale = good.model_copy(update={"plan_id": good.plan_id + 10_000, "issued_at": good.issued_at - pd.Timedelta(hours=2)}).model_dump_json().encode()
        wrong_site = good.model_copy(update={"plan_id": good.plan_id + 10_001, "site": "north"}).model_dump_json().encode()
        hostile = [b"{not json", b"x" * 3_000_000, json.dumps({"v": 1, "a": [[[[[[[[[[1]]]]]]]]]]}).encode(), replay, stale, wrong_site]
        tls = aiomqtt.TLSParameters(ca_certs=str(mosquitto.ca_file))
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, username="central", password=USERS["central"], tls_params=tls) as attacker:  # a central gone wrong
            for payload in hostile:
                await attacker.publish(site_topic("east", "plan"), payload, qos=1)
        await until(lambda: _rejections(ports["east"], before["plan_rejections"] + len(hostile)), 10, "every hostile plan refused")
        after = (await status(ports["east"]))["central"]
        assert after["plan_id"] >= before["plan_id"] and after["mode"] == "central"
        log = (tmp_path / "east.log").read_text()
        for reason in ("not JSON", "oversized", "nesting deeper", "replayed", "stale", "for site north"):
            assert reason in log, reason

        # 3. the central dies: cached plan, then the fallback at expiry
        central.send_signal(signal.SIGKILL)
        central.wait(5)
        await until(lambda: _all(modes(), "cached"), 10, "gateways on their cached plans")
        await until(lambda: _modes_are(modes(), {"north": "local", "south": "idle", "east": "idle"}), 20, "the fallback once the cached plans expired")
        await until(lambda: _source_is(ports["north"], "solved"), 30, "north planning on its own (fallback local)")
        await asyncio.sleep(0.6)  # a tick or two on the cleared schedule
        st = await status(ports["south"])
        assert st["central"]["mode"] == "idle" and all(u["commanded_kw"] in (0.0, None) for u in st["units"].values()), st["units"]

        # 4. the central restarts and resumes; plans flow again
        central = start(["central", "-c", str(plant_file)], tmp_path / "central.log")
        await until(lambda: _all(modes(), "central"), 40, "every gateway back on central plans")

        # 5. the broker goes away for a while: the gateways buffer, then replay
        #    (and one gateway is killed meanwhile: what its outbox held is replayed by its next run)
        #    and comes back with the plan it followed, from its own database, though the broker is still away:
        #    followed (cached) while valid, refused as expired if the market clock ran past it meanwhile
        plan_before = (await status(ports["north"]))["central"]["plan_id"]
        mosquitto.stop()
        await asyncio.sleep(2.0)
        gateways["north"].send_signal(signal.SIGKILL)
        gateways["north"].wait(5)
        killed_at = pd.Timestamp.now(tz="UTC")
        north_log = tmp_path / "north.log"
        seen = north_log.stat().st_size
        gateways["north"] = start(["run", "-c", str(gateway_files["north"])], north_log)
        restored = lambda: re.search(rf"central plan (in force|rejected) site=north plan_id={plan_before} origin=restored( reason=expired)?", north_log.read_text()[seen:])  # noqa: E731
        await wait_for(restored, 20, "the restarted north offering itself its last plan from its database")
        if restored().group(1) == "in force":
            await until(lambda: _mode_is(ports["north"], "cached"), 10, "the restarted north on its cached plan without a broker")
        else:
            assert restored().group(2), restored().group(0)  # only an expired plan is refused
        mosquitto.start()
        await until(lambda: _outboxes_empty(ports), 40, "every outbox replayed")
        await until(lambda: _all(modes(), "central"), 30, "central plans after the broker came back")
        await asyncio.sleep(1.0)
    finally:
        watcher.cancel()
        for p in gateways.values():
            p.send_signal(signal.SIGTERM)
        for p in gateways.values():
            await wait_for(lambda p=p: p.poll() is not None, 20, "gateway exit")
        central.send_signal(signal.SIGTERM)
        await wait_for(lambda: central.poll() is not None, 20, "central exit")
        for sim in sims:
            await sim.stop()

    # the killed central's solver worker was swept by the restarted one; nothing of the plant is left running
    key = config_key(plant_file)
    left = [p.pid for p in psutil.process_iter() if _owner(p).startswith(key)]
    assert left == []

    # no command ever outside a unit's rating
    assert commanded and all(abs(kw) <= rating[uid] + 1e-6 for uid, kw in commanded)

    plant_db = tmp_path / "plant.db"
    ledger_rows = 0
    for site, cfg in cfgs.items():
        gw_db = cfg.path.with_suffix(".db")
        # every telemetry sample arrived (no gap across the outage or the central's death), none twice
        samples = [utc(t) for (t,) in rows(plant_db, "SELECT DISTINCT sampled_at FROM plant_telemetry WHERE site_id=:s ORDER BY sampled_at", s=site)]
        gaps = [(a, (b - a).total_seconds()) for a, b in zip(samples, samples[1:])]
        holes = [(a, g) for a, g in gaps if g >= 1.5]
        if site == "north":  # down between the kill and its next run's first sample, and nowhere else
            assert len(holes) == 1 and holes[0][0] <= killed_at <= holes[0][0] + pd.Timedelta(seconds=holes[0][1]), holes
            assert holes[0][0] >= killed_at - pd.Timedelta(seconds=1.0), "samples taken before the kill were lost"
        else:
            assert holes == [], (site, holes)
        assert len(samples) > 20
        dup = rows(plant_db, "SELECT count(*) - count(DISTINCT unit_id || sampled_at) FROM plant_telemetry WHERE site_id=:s", s=site)[0][0]
        assert dup == 0
        # every interval the gateway settled and sent is at the central; the ledgers agree to the minor unit
        sent = rows(gw_db, "SELECT value FROM plant_state WHERE key='intervals_sent'")[0][0]
        waiting = {json.loads(p)["interval_start"] for (p,) in rows(gw_db, "SELECT payload FROM plant_outbox WHERE kind='interval'")}
        gw_intervals = {utc(t) for (t,) in rows(gw_db, "SELECT interval_start FROM daemon_settled_intervals")}
        expected = {t for t in gw_intervals if t <= utc(sent)} - {utc(t) for t in waiting}
        central_intervals = {utc(t) for (t,) in rows(plant_db, "SELECT interval_start FROM plant_intervals WHERE site_id=:s", s=site)}
        assert len(expected) >= 5 and central_intervals == expected, (site, sorted(expected ^ central_intervals))
        unit = cfg.units[0].id
        gw_ledger = {r for r in rows(gw_db, "SELECT unit_id, interval_start, stream, amount_minor FROM settlements") if utc(r[1]) in expected}
        central_ledger = set(rows(plant_db, "SELECT unit_id, interval_start, stream, amount_minor FROM settlements WHERE unit_id=:u", u=unit))
        assert gw_ledger == central_ledger, site
        ledger_rows += len(gw_ledger)
    assert ledger_rows > 0  # some site's plan moved energy: the comparison compared something


def _owner(process: psutil.Process) -> str:
    try:
        return process.environ().get(MARK, "")
    except (psutil.Error, OSError):
        return ""


async def _all(modes_coro, mode: str) -> bool:
    return all(m == mode for m in (await modes_coro).values())


async def _modes_are(modes_coro, want: dict[str, str]) -> bool:
    return await modes_coro == want


async def _ingested(port: int) -> bool:
    counts = await asyncio.to_thread(get, port, "/ingest")
    return bool(counts) and all(counts.get(s, {}).get("telemetry", 0) > 0 for s in SITES)


async def _source_is(port: int, source: str) -> bool:
    st = await status(port)
    return st is not None and st["schedule"]["source"] == source


async def _mode_is(port: int, mode: str) -> bool:
    st = await status(port)
    return st is not None and st["central"]["mode"] == mode


async def _rejections(port: int, n: int) -> bool:
    st = await status(port)
    return st is not None and st["central"]["plan_rejections"] >= n


async def _outboxes_empty(ports: dict[str, int]) -> bool:
    for port in ports.values():
        st = await status(port)
        if st is None or not st["central"]["broker_connected"] or st["central"]["outbox_rows"] > 2:
            return False
    return True
