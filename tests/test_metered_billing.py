"""A metered retail site is billed on what its grid meter counted: the real daemon, a SunSpec 203 meter and
SunSpec batteries over real pymodbus, SQLite; checked against the stored counters, the tariff and the
simulated physics, a counter reset, and a re-settlement after the daemon stopped.

One site, two 250 kW batteries pinned at 300 kW against 500 kW of load, no export: the meter imports
about 200 kW (less where the demand cap adds discharge), the site without its batteries would import 500 kW. The simulated meter's counters count market
time (``counter_speed``), as the daemon integrates battery energy.
"""

from __future__ import annotations

import asyncio
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import pandas as pd
import pytest

from simulators.device_fleet import SimulatedFleet
from tests.conftest import Mosquitto
from tests.daemon_rig import wait_for
from tests.meter_rig import SPEED, write_meter_config
from vpp.config import load_config
from vpp.daemon.app import Daemon
from vpp.daemon.meter_store import readings
from vpp.daemon.settle import Settler
from vpp.daemon.store import Store, settled_intervals
from vpp.db import open_database
from vpp.ledger.report import month_bounds
from vpp.ledger.store import read_settlements, site_energy_rows
from vpp.web.statement_data import _bill_without_battery

pytestmark = pytest.mark.asyncio

PRICE, DEMAND_CHARGE = "0.85", "12.5"
TARIFFS = {"flat": {"periods": [{"name": "flat", "price_per_kwh": float(PRICE), "hours": ["00:00-24:00"]}], "demand_charge_per_kw_month": float(DEMAND_CHARGE)}}
SITE = {"id": "ci-a", "meter": "sunspec", "load_kw": 500.0, "plan_kw": 300.0, "tariff": "flat", "demand_window_min": 10}
INTERVAL = pd.Timedelta(minutes=5)


def cents(wh: int) -> int:
    return int((Decimal(PRICE) * wh / 1000 * 100).quantize(Decimal(1), ROUND_HALF_EVEN))


async def test_a_metered_site_is_billed_on_its_counters_flags_a_reset_and_resettles_identically(tmp_path):
    broker = Mosquitto(tmp_path)
    broker.start()
    cfg = load_config(write_meter_config(tmp_path, broker.port, [SITE], tariffs=TARIFFS))
    sim = SimulatedFleet(cfg.units, cfg.mqtt, cfg.path.parent, tick_s=0.05, publish_s=0.2, meters=cfg.meters, site_load_kw={"ci-a": 500.0}, site_rating_kw={"ci-a": 2000.0})
    meter = sim.meters["ci-a"]
    meter.counter_speed = SPEED
    await sim.start()
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run(install_signals=False))
    engine = daemon.store.engine
    rows = lambda: site_energy_rows(engine, pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC"))  # noqa: E731
    try:
        await wait_for(lambda: (rows()["source"] == "counters").sum() >= 2, 45, "two intervals billed on the counters")
        meter.import_kwh = 0.0  # the counter is reset (a replaced meter): the meter alarm stops trusting it
        reset_at = daemon.clock.now()
        await wait_for(lambda: (rows()["interval_start"] > reset_at).sum() >= 1, 20, "an interval settled after the reset")
    finally:
        daemon.stop_event.set()
        await task
        await sim.stop()
        broker.stop()

    site = rows()
    counted = site[site["source"] == "counters"]
    buckets = readings(engine, pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC"), ["ci-a"]).groupby("bucket_start").agg(imp=("import_kwh", "max"))["imp"]
    for r in counted.itertuples():
        closing, opening = r.interval_start + INTERVAL - pd.Timedelta(minutes=1), r.interval_start - pd.Timedelta(minutes=1)
        assert r.import_wh == round((buckets[closing] - buckets[opening]) * 1000)  # the counters' delta, to the Wh
        assert r.baseline_import_wh == r.import_wh + r.battery_wh - r.export_wh
        assert r.baseline_import_wh == pytest.approx(500 * 5 / 60 * 1000, rel=0.1)  # the site without its batteries: the load
        assert r.battery_wh > 0.5 * 300 * 5 / 60 * 1000  # they ran (the demand cap may add discharge to the plan's 300 kW)
        assert (r.bill_minor, r.baseline_bill_minor) == (cents(r.import_wh), cents(r.baseline_import_wh))
    # the interval before the first stored bucket, and those after the reset, fall back, flagged: never billed high
    flagged = site[site["source"] == "power"]
    assert len(flagged) >= 2 and (flagged["flag"] != "").all() and flagged["flag"].str.contains("gap").any()
    assert (flagged["import_wh"] <= 500 * 5 / 60 * 1000 * 1.01).all()  # at most the whole load: the fail-safe stops discharge

    ledger = read_settlements(engine)
    tou = ledger[ledger["stream"] == "tou_savings"].groupby("interval_start")["amount_minor"].sum()
    assert tou.reindex(site["interval_start"], fill_value=0).tolist() == (site["baseline_bill_minor"] - site["bill_minor"]).tolist()
    # the demand charge saved: each month's 10-minute windows (two intervals from the month's start), recomputed here
    windows = site.assign(w=site["interval_start"].dt.floor("10min")).groupby("w")[["import_wh", "baseline_import_wh"]].sum()
    peak = lambda col: max([Fraction(0), *(Fraction(int(wh) * 6, 1000) for wh in windows[col])])  # noqa: E731
    complete = windows.index[site.groupby(site["interval_start"].dt.floor("10min")).size().reindex(windows.index) == 2]
    windows = windows.loc[complete]
    expected = round(Fraction(Decimal(DEMAND_CHARGE)) * (peak("baseline_import_wh") - peak("import_wh")) * 100)
    assert ledger.loc[ledger["stream"] == "demand_charge_savings", "amount_minor"].sum() == expected > 0

    # the statement's bill without the battery is the ledger's; less the settled savings, it is the metered bill
    start, end = month_bounds("2020-08", cfg.timezone)
    without = _bill_without_battery(engine, start, end, pd.DatetimeIndex(site["interval_start"]), {"ci-a"}, {s.id: s for s in cfg.fleet.sites}, cfg)
    with_battery = int(site["bill_minor"].sum()) + round(Fraction(Decimal(DEMAND_CHARGE)) * peak("import_wh") * 100)
    assert abs(without - int(ledger["amount_minor"][ledger["stream"].isin(["tou_savings", "demand_charge_savings"])].sum()) - with_battery) <= 1  # two roundings

    # re-settling every interval from what is stored (a restart that lost its bookkeeping) changes nothing
    store = Store(open_database(cfg.path.with_suffix(".db")))
    with store.engine.begin() as conn:
        conn.execute(settled_intervals.delete())
    settler = Settler(cfg, store, daemon.clock)
    assert sum(settler.settle_interval(s) for s in site["interval_start"]) == 0
    pd.testing.assert_frame_equal(site_energy_rows(store.engine, pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC")), site)
    assert read_settlements(store.engine).equals(ledger)
    store.close()
