"""Tomorrow's prices arrive at a running daemon (tests/daemon_rig.py: real Modbus and MQTT devices, a real
Mosquitto, HiGHS in the worker, SQLite, the HTTP API), by drop folder, ``PUT /market-data`` and MQTT.

The config's price file ends at midnight; the market clock starts at 23:40 (100x), so the 2-hour horizon
reaches into a day nobody has delivered: the plan forecasts it (persistence: yesterday's flat 30 USD/MWh)
and /status says the data is late. Tomorrow's prices (300 USD/MWh for 00:00-00:45) come by drop folder,
a correction (500 for 00:45) by PUT; each re-plans, and the daemon discharges as the new prices say.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import httpx
import numpy as np
import pandas as pd
import pytest
import pytest_asyncio
import yaml

from simulators.device_fleet import SimulatedFleet
from tests.conftest import Mosquitto
from tests.daemon_rig import TOKEN, wait_for, write_config
from vpp.config import load_config
from vpp.daemon.app import Daemon

pytestmark = pytest.mark.asyncio(loop_scope="module")

STEP = pd.Timedelta(minutes=15)
MIDNIGHT = pd.Timestamp("2020-08-19T08:00:00Z")  # 00:00 local (Etc/GMT+8): the first interval of tomorrow
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def rows(start: pd.Timestamp, values: list[float]) -> str:
    local = pd.date_range(start.tz_convert("Etc/GMT+8").tz_localize(None), periods=len(values), freq=STEP)
    return "time,price\n" + "".join(f"{t:%Y-%m-%d %H:%M},{v}\n" for t, v in zip(local, values))


@dataclass
class Site:
    daemon: Daemon
    dir: Path
    api: str
    broker_port: int


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    directory = tmp_path_factory.mktemp("market-data-e2e")
    broker = Mosquitto(directory)
    broker.start()
    clock = {"speed": 100.0, "sim_start": "2020-08-18T23:40:00-08:00", "wall_start": pd.Timestamp.now(tz="UTC").isoformat()}
    market_data = {"drop_folder": "inbox", "drop_poll_s": 0.2, "mqtt_topic": "vpp/market-data", "published_at": "13:00"}
    path = write_config(directory, broker.port, daemon={"clock": clock, "market_data": market_data})
    raw = yaml.safe_load(path.read_text())
    (directory / "prices.csv").write_text(rows(pd.Timestamp("2020-08-17T08:00Z"), [30.0] * 192))  # 17th and 18th, local
    raw["data"] = {"prices": {"file": "prices.csv", "time_column": "time", "columns": {"da": {"column": "price", "unit": "per_mwh"}}}}
    raw["market"] = {"energy_price": "prices.da"}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(path)
    sim = SimulatedFleet(cfg.units, cfg.mqtt, cfg.path.parent, tick_s=0.05, publish_s=0.2)
    await sim.start()
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run(install_signals=False))
    await wait_for(lambda: daemon.schedule.schedule is not None and daemon.control.out == frozenset(), 30, "a schedule and every unit in dispatch")
    yield Site(daemon, directory, f"http://127.0.0.1:{cfg.daemon.api.port}", broker.port)
    daemon.stop_event.set()
    await task
    await sim.stop()
    broker.stop()


def planned_kw(daemon: Daemon, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
    """The schedule in force's fleet power (kW, + discharge) for each 5-minute interval in [start, end)."""
    s = daemon.schedule.schedule
    return s.power_kw[:, (s.index >= start) & (s.index < end)].sum(axis=0)


async def solved_after(daemon: Daemon, trigger: str) -> None:
    await wait_for(lambda: daemon.schedule.trigger is not None and trigger in daemon.schedule.trigger, 20, f"a schedule triggered by {trigger!r}")


async def test_before_tomorrow_arrives_the_plan_forecasts_it_and_status_and_metrics_say_late(site: Site) -> None:
    async with httpx.AsyncClient() as client:
        status = (await client.get(f"{site.api}/status")).json()
        metrics = (await client.get(f"{site.api}/metrics")).text
    series = status["market_data"]["series"]["prices.da"]
    assert series["late"] is True and series["missing_intervals"] > 0 and series["covered_until"] == MIDNIGHT.isoformat()
    assert any("market data late for prices.da" in r for r in status["health"]["reasons"])
    assert 'vpp_market_data_late{series="prices.da"} 1.0' in metrics
    assert np.abs(planned_kw(site.daemon, MIDNIGHT, MIDNIGHT + 3 * STEP)).max() < 1.0  # flat forecast: nothing to gain


async def test_tomorrows_prices_by_drop_folder_replan_and_the_schedule_discharges_into_them(site: Site) -> None:
    d = site.daemon
    assert d.clock.now() < MIDNIGHT - pd.Timedelta(minutes=10), "the clock ran past the test's window"
    inbox = site.dir / "inbox"
    (inbox / ".prices-0819.csv").write_text(rows(MIDNIGHT, [300.0] * 3 + [30.0] * 93))
    os.replace(inbox / ".prices-0819.csv", inbox / "prices-0819.csv")  # written, then moved in
    await solved_after(d, "market data prices via drop")
    assert [p.name.endswith("-prices-0819.csv") for p in (inbox / "done").iterdir()] == [True]
    peak = planned_kw(d, MIDNIGHT, MIDNIGHT + 3 * STEP)
    assert peak.min() > 100.0, peak  # 300 USD/MWh against 30 the hour before: the fleet discharges
    status = d.market_data.status()["series"]["prices.da"]
    assert status["late"] is False and status["missing_intervals"] == 0


async def test_a_correction_by_put_replans_and_the_schedule_follows_it(site: Site) -> None:
    d = site.daemon
    before = planned_kw(d, MIDNIGHT + 3 * STEP, MIDNIGHT + 4 * STEP)
    body = rows(MIDNIGHT + 3 * STEP, [500.0, 30.0])
    async with httpx.AsyncClient() as client:
        answer = await client.put(f"{site.api}/market-data", params={"source": "prices"}, content=body, headers=AUTH)
        refused = await client.put(f"{site.api}/market-data", params={"source": "prices"}, content=body)
    assert answer.status_code == 200, answer.text
    assert answer.json() | {"changed": None} == {"outcome": "accepted", "source": "prices", "added": 0, "replaced": 1, "unchanged": 1, "changed": None}
    assert refused.status_code == 401
    await solved_after(d, "market data prices via api")
    after = planned_kw(d, MIDNIGHT + 3 * STEP, MIDNIGHT + 4 * STEP)
    assert after.min() > before.max() + 50.0, (before, after)  # 500 USD/MWh at 00:45: discharging moves there


async def test_a_duplicate_a_malformed_and_an_out_of_order_delivery_change_nothing(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vpp.daemon")
    d = site.daemon
    book, version = d.market_data.book.series["prices.da"].copy(), d.market_data.book.version
    async with httpx.AsyncClient() as client:
        duplicate = await client.put(f"{site.api}/market-data", params={"source": "prices"}, content=rows(MIDNIGHT + 3 * STEP, [500.0, 30.0]), headers=AUTH)
        malformed = await client.put(f"{site.api}/market-data", params={"source": "prices"}, content="time,price\n2020-08-19 01:00,abc\n2020-08-19 01:15,31\n", headers=AUTH)
    assert duplicate.status_code == 200 and duplicate.json()["outcome"] == "duplicate"
    assert malformed.status_code == 422 and "a finite number" in malformed.json()["error"]
    inbox = site.dir / "inbox"
    reversed_rows = "time,price\n2020-08-19 01:15,31\n2020-08-19 01:00,32\n"
    (inbox / "prices-reversed.csv").write_text(reversed_rows)
    (inbox / "prices-rewrite.csv").write_text(rows(pd.Timestamp("2020-08-18T08:00Z"), [45.0] * 4))  # yesterday, other values
    await wait_for(lambda: len(list((inbox / "rejected").glob("*.reason"))) == 2, 10, "both files rejected")
    reasons = {p.name: p.read_text() for p in (inbox / "rejected").glob("*.reason")}
    assert any("strictly increasing timestamps" in r for n, r in reasons.items() if "reversed" in n)
    assert any("the interval has started" in r for n, r in reasons.items() if "rewrite" in n)
    # yesterday again, as it is held, over MQTT: out of order, merged idempotently
    async with aiomqtt.Client("127.0.0.1", site.broker_port) as mqtt:
        await mqtt.publish("vpp/market-data/prices", rows(pd.Timestamp("2020-08-18T08:00Z"), [30.0] * 4).encode(), qos=1)
        await mqtt.publish("vpp/market-data/prices", b"time,price\n" + b"2020-08-19 01:00,31\n" * 60_000, qos=1)  # 1.2 MB
    await wait_for(lambda: any("duplicate via=mqtt" in r.getMessage() for r in caplog.records), 10, "the MQTT delivery")
    await wait_for(lambda: any("more than 1000000" in r.getMessage() for r in caplog.records), 10, "the oversized MQTT payload refused")
    pd.testing.assert_series_equal(d.market_data.book.series["prices.da"], book)
    assert d.market_data.book.version == version
    lines = [r.getMessage() for r in caplog.records if r.name == "vpp.daemon.market_data"]
    assert sum("market data rejected" in m for m in lines) == 4, lines  # malformed, reversed, rewrite, too large: one line each
    assert sum("market data duplicate" in m for m in lines) == 2, lines
    assert not any("trigger=market data" in r.getMessage() for r in caplog.records), "nothing changed: no re-plan"


async def test_the_daemon_follows_the_new_plan_into_tomorrow(site: Site) -> None:
    d = site.daemon
    await wait_for(lambda: d.control.last is not None and d.control.last.result.interval is not None and d.control.last.result.interval >= MIDNIGHT, 30, "market time past midnight")
    last, schedule = d.control.last, d.schedule.schedule
    assert last.result.interval < MIDNIGHT + 3 * STEP, "the clock ran past the 300 USD/MWh intervals"
    planned = schedule.power_kw[:, schedule.index.get_loc(last.result.interval)]
    order = [schedule.unit_ids.index(u) for u in last.result.unit_ids]
    np.testing.assert_allclose(last.result.power_kw, planned[order], atol=1e-6)
    assert last.result.power_kw.sum() > 100.0  # discharging into the delivered price, as planned
