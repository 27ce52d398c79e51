"""Billing a metered site on its grid meter's counters (vpp.site_billing): the counters' delta when they can
be trusted, the integrated power (flagged, never higher) when they cannot, a demand charge whose
bookings add up to the month's saving whichever interval set the peak, and the site's ledger rows
recorded exactly once on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.databases import empty_database
from vpp.db import open_database
from vpp.ledger.store import SettlementConflict, record_settlements, site_energy_rows
from vpp.site_billing import COUNTERS, POWER, demand_saving_minor, interval_energy, site_bill, window_peaks_kw

START = pd.Timestamp("2026-11-02T00:05:00Z")
MIN = pd.Timedelta(minutes=1)


def buckets(imports: list[float | None], exports: list[float] | None = None, power_kw: float = -120.0, samples: int = 240) -> pd.DataFrame:
    """One bucket a minute from START − 1 min: the counters at each bucket's last reading."""
    exports = exports or [0.0] * len(imports)
    return pd.DataFrame(
        {"bucket_start": [START - MIN + k * MIN for k in range(len(imports))], "power_kw_mean": power_kw, "import_kwh": imports, "export_kwh": exports, "samples": samples}
    )


def energy(frame: pd.DataFrame):
    return interval_energy(frame, START, START + 5 * MIN, MIN, sample_s=0.25, rating_kw=1000.0)


def test_the_interval_bills_the_counters_delta_between_the_buckets_that_close_it():
    e = energy(buckets([1000.0, 1002.0, 1004.0, 1006.0, 1008.0, 1010.123], [5.0, 5.0, 5.0, 5.0, 5.0, 5.5]))
    assert (e.import_wh, e.export_wh, e.source, e.flag) == (10_123, 500, COUNTERS, "")


def test_a_counter_that_goes_backwards_falls_back_to_the_integrated_power_flagged():
    e = energy(buckets([1000.0, 1002.0, 3.0, 5.0, 7.0, 9.0]))  # a reset (or a new meter)
    assert e.source == POWER and "import counter went backwards" in e.flag
    assert (e.import_wh, e.export_wh) == (10_000, 0)  # 120 kW × 5 min, every bucket fully read


def test_a_rollover_jump_and_a_gap_are_flagged_and_never_bill_more_than_was_read():
    jump = energy(buckets([1000.0, 1002.0, 1004.0, 9000.0, 9002.0, 9004.0]))
    assert jump.source == POWER and "jumped" in jump.flag
    gap = buckets([1000.0, 1002.0, 1004.0, 1006.0, 1008.0, 1010.0], samples=120).drop(index=3)  # a minute nobody read, the rest half read
    e = energy(gap)
    assert e.source == POWER and "meter gap" in e.flag
    assert e.import_wh == 4 * 1000  # 4 buckets × 120 kW × 30 s: the missing minute and the unread halves count 0
    first = energy(buckets([None, 1002.0, 1004.0, 1006.0, 1008.0, 1010.0]))
    assert first.source == POWER and "no import counter" in first.flag
    no_export = energy(buckets([1000.0, 1002.0, 1004.0, 1006.0, 1008.0, 1010.0], [None] * 6))  # a meter without that counter
    assert (no_export.import_wh, no_export.export_wh, no_export.source) == (10_000, 0, COUNTERS)


def test_the_bill_without_the_battery_adds_its_metered_energy_back_and_rounds_once():
    e = energy(buckets([1000.0, 1002.0, 1004.0, 1006.0, 1008.0, 1010.001]))
    bill = site_bill(e, battery_wh=25_000, price_per_kwh=1.105, feed_in_per_kwh=0.0, exponent=2)
    assert (bill.baseline_import_wh, bill.baseline_export_wh) == (35_001, 0)
    exact = lambda wh: int((Decimal("1.105") * wh / 1000 * 100).quantize(Decimal(1), ROUND_HALF_EVEN))  # noqa: E731
    assert (bill.bill_minor, bill.baseline_bill_minor) == (exact(10_001), exact(35_001))
    assert bill.tou_savings_minor == exact(35_001) - exact(10_001)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400_000), st.integers(0, 300_000)), min_size=1, max_size=24), st.floats(0, 3000))
def test_demand_bookings_add_up_to_the_months_saving_whichever_interval_sets_the_peak(wh, peak_so_far_kw):
    """3 five-minute intervals per 15-minute window; each interval books the change of the month's saving."""
    interval, window = pd.Timedelta(minutes=5), pd.Timedelta(minutes=15)
    imp, base = [w for w, _ in wh], [w + b for w, b in wh]
    saving = lambda k: demand_saving_minor(32.0, peak_so_far_kw, window_peaks_kw(imp[:k], interval, window), window_peaks_kw(base[:k], interval, window), 2)  # noqa: E731
    booked = [saving(k + 1) - saving(k) for k in range(len(wh))]
    assert sum(booked) == saving(len(wh))
    assert all(b == 0 for k, b in enumerate(booked) if (k + 1) % 3)  # only an interval that closes a window books
    peaks = window_peaks_kw(imp, interval, window)
    assert all(p == Fraction(sum(imp[3 * j : 3 * j + 3]) * 4, 1000) for j, p in enumerate(peaks))  # kW = kWh over a quarter hour × 4


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_sites_rows_are_recorded_once_and_a_different_re_settlement_is_refused(kind, tmp_path):
    row = {"site_id": "ci-a", "interval_start": START, "import_wh": 10_123, "export_wh": 0, "battery_wh": 25_000, "baseline_import_wh": 35_123, "baseline_export_wh": 0, "bill_minor": 1119, "baseline_bill_minor": 3881, "source": COUNTERS, "flag": ""}
    empty = pd.DataFrame(columns=["interval_start", "unit_id", "site_id", "stream", "amount_minor"]).astype({"amount_minor": "int64"})
    with empty_database(kind, tmp_path, "sites") as url:
        engine = open_database(url)
        try:
            for _ in range(2):  # again: nothing new, nothing changed
                record_settlements(engine, empty, sites=pd.DataFrame([row]))
            stored = site_energy_rows(engine, START, START + MIN)
            assert stored.drop(columns="interval_start").to_dict("records") == [{k: v for k, v in row.items() if k != "interval_start"}]
            with pytest.raises(SettlementConflict, match="import_wh stored 10123 new 10124"):
                record_settlements(engine, empty, sites=pd.DataFrame([{**row, "import_wh": 10_124}]))
        finally:
            engine.dispose()


def test_an_unmetered_site_s_demand_saving_is_the_month_s_once_not_one_per_interval(tmp_path) -> None:
    """The daemon's settlement of the Guangdong example (retail sites without meters, a demand charge):
    eight quarter-hours of metered battery energy, settled one by one as the daemon does. Per site, the
    demand-charge saving booked sums to charge × (the peak import without the batteries − with them) over
    those intervals, recomputed here from the configured load − PV; a booking of each interval's own peak
    reduction would sum to about eight times that. And the TOU saving is the bill's, interval by interval."""
    from optimizers.problem import build_problem
    from vpp.config import load_config
    from vpp.daemon.clock import Clock
    from vpp.daemon.settle import Settler
    from vpp.daemon.store import Store, energy
    from vpp.ledger.store import read_settlements
    from tests.cli import ROOT

    cfg = load_config(ROOT / "config/examples/guangdong_ci.yaml")
    start = pd.Timestamp("2017-07-19T02:00:00Z")  # 10:00 in Shanghai: a peak-price morning
    starts = pd.date_range(start, periods=8, freq=cfg.interval)
    discharge_kw = [0.3, 0.8, 1.0, 0.5, 0.2, 0.9, 0.0, 0.6]  # of each unit's rating, per interval
    store = Store(open_database(tmp_path / "ledger.db"))
    rows = [
        {"bucket_start": (t + k * MIN).to_pydatetime(), "unit_id": u.id, "energy_kwh": share * u.max_discharge_kw / 60.0, "covered_s": 60.0, "dispatch_s": 60.0}
        for t, share in zip(starts, discharge_kw)
        for k in range(15)
        for u in cfg.units
    ]
    with store.engine.begin() as conn:
        conn.execute(energy.insert(), rows)
    settler = Settler(cfg, store, Clock.create(1.0, starts[-1] + cfg.interval))
    for t in starts:
        settler.settle_interval(t)
    ledger = read_settlements(store.engine)
    sites = site_energy_rows(store.engine, starts[0], starts[-1] + cfg.interval)
    store.close()

    problem = build_problem(cfg.fleet, cfg.market, starts)
    dt_h = cfg.interval.total_seconds() / 3600.0
    checked = 0
    for s, site in enumerate(cfg.fleet.sites):
        units = [u for u in cfg.units if u.site_id == site.id]
        if site.market != "retail" or site.tariff is None or not units or site.tariff.demand_charge_per_kw_month <= 0:
            continue
        battery_kw = [share * sum(u.max_discharge_kw for u in units) for share in discharge_kw]
        base = [max(float(x), 0.0) for x in problem.site_net_load_kw[s]]
        with_battery = [max(float(x) - b, 0.0) for x, b in zip(problem.site_net_load_kw[s], battery_kw)]
        floor = site.demand_peak_so_far_kw
        saving = Fraction(Decimal(str(site.tariff.demand_charge_per_kw_month))) * (Fraction(max([floor, *base])) - Fraction(max([floor, *with_battery])))
        booked = ledger[(ledger["site_id"] == site.id) & (ledger["stream"] == "demand_charge_savings")]["amount_minor"].sum()
        wh_kw = Fraction(1, 2) / 1000 / Fraction(dt_h)  # a peak read from energy rounded to the Wh moves by up to this
        assert abs(booked - saving * 100) <= 1 + 2 * wh_kw * Fraction(Decimal(str(site.tariff.demand_charge_per_kw_month))) * 100, (site.id, booked, float(saving * 100))
        mine = sites[sites["site_id"] == site.id].set_index("interval_start")
        assert (mine["source"] == "model").all() and len(mine) == len(starts)
        tou = ledger[(ledger["site_id"] == site.id) & (ledger["stream"] == "tou_savings")].groupby("interval_start")["amount_minor"].sum()
        assert tou.reindex(mine.index, fill_value=0).tolist() == (mine["baseline_bill_minor"] - mine["bill_minor"]).tolist()
        assert all(abs(got - b * dt_h * 1000) <= 0.5 + 1e-6 for got, b in zip(mine["baseline_import_wh"], base))  # the load, to the Wh
        checked += 1
    assert checked >= 2
