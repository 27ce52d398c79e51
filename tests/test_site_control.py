"""The site control law (vpp/site_control.py) and the meter checks (vpp/meter.py), on random sites and loads.

The closed-loop property runs the law against a simple plant: each cycle the
meter reads Σ battery − load (+ noise within the margin), the law computes the
next commands from it, and the batteries apply them at once. A load that
changes takes effect one cycle before the law can see it — that cycle is the
response time; on every other cycle the export must be within the limit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from vpp.meter import DemandWindow, MeterCheck, MeterReading
from vpp.site_control import (
    EXPORT,
    FAILSAFE,
    base_load_kw,
    demand_import_cap_kw,
    fit_to_site,
    site_sum_bounds,
)

TOL = 1e-6


@st.composite
def sites(draw):
    n_sites = draw(st.integers(1, 4))
    unit_site = np.array(draw(st.lists(st.integers(0, n_sites - 1), min_size=n_sites, max_size=12)) + list(range(n_sites)))
    n = len(unit_site)
    rating = np.array(draw(st.lists(st.floats(10, 500), min_size=n, max_size=n)))
    plan = np.array(draw(st.lists(st.floats(-1, 1), min_size=n, max_size=n))) * rating
    export_limit = np.array(draw(st.lists(st.sampled_from([0.0, 0.0, 50.0, np.inf]), min_size=n_sites, max_size=n_sites)))
    import_limit = np.array(draw(st.lists(st.sampled_from([300.0, 2000.0, np.inf]), min_size=n_sites, max_size=n_sites)))
    return unit_site, rating, plan, export_limit, import_limit


@given(sites(), st.lists(st.lists(st.floats(-200, 1500), min_size=4, max_size=4), min_size=2, max_size=8), st.integers(0, 2**31), st.floats(0.0, 5.0))
def test_after_the_response_time_no_energy_is_exported_above_the_limit_and_unit_limits_hold(site, load_steps, seed, noise_kw):
    unit_site, rating, plan, export_limit, import_limit = site
    n_sites, n = len(export_limit), len(unit_site)
    rng = np.random.default_rng(seed)
    margin = np.full(n_sites, 5.0)  # ≥ the meter noise
    lo, hi = -rating, rating
    power = np.zeros(n)
    loads = [np.array(step[:n_sites]) for step in load_steps for _ in range(3)]  # each load held 3 cycles
    previous_load = None
    for load in loads:
        meter = np.bincount(unit_site, power, n_sites) - load + rng.uniform(-noise_kw, noise_kw, n_sites)
        export_now = np.bincount(unit_site, power, n_sites) - load
        if previous_load is not None and np.array_equal(load, previous_load):  # the law has seen this load
            can_absorb = np.bincount(unit_site, lo, n_sites)  # most the batteries can charge
            feasible = can_absorb - load <= export_limit - margin
            assert np.all(export_now[feasible] <= export_limit[feasible] + TOL), (export_now, export_limit)
        base = base_load_kw(meter, power, unit_site, n_sites)
        sum_lo, sum_hi, kind = site_sum_bounds(base, export_limit, import_limit, margin, margin, np.full(n_sites, np.inf))
        power, _ = fit_to_site(plan, lo, hi, unit_site, sum_lo, sum_hi, kind, np.zeros(n_sites, dtype=bool))
        assert np.all(power >= lo - TOL) and np.all(power <= hi + TOL)
        previous_load = load


@given(sites(), st.lists(st.floats(-300, 1500), min_size=4, max_size=4), st.floats(0, 2000))
def test_the_import_and_demand_bounds_never_loosen_the_export_bound(site, load, demand_cap):
    unit_site, rating, plan, export_limit, import_limit = site
    n_sites = len(export_limit)
    base = np.array(load[:n_sites])
    sum_lo, sum_hi, kind = site_sum_bounds(base, export_limit, import_limit, np.full(n_sites, 2.0), np.full(n_sites, 2.0), np.full(n_sites, demand_cap))
    assert np.all(sum_lo <= sum_hi + TOL)
    power, cut = fit_to_site(plan, -rating, rating, unit_site, sum_lo, sum_hi, kind, np.zeros(n_sites, dtype=bool))
    total = np.bincount(unit_site, power, n_sites)
    capacity_hi, capacity_lo = np.bincount(unit_site, rating, n_sites), -np.bincount(unit_site, rating, n_sites)
    reachable_hi = np.maximum(sum_hi, capacity_lo)  # where even full charging cannot bring it under, the law charges fully
    assert np.all(total <= reachable_hi + 1e-6)
    reachable_lo = np.minimum(sum_lo, capacity_hi)
    assert np.all(total >= np.minimum(reachable_lo, reachable_hi) - 1e-6)
    assert np.all(np.abs(power) <= rating + TOL)
    # a site is only moved off its plan where a bound required it
    planned = np.bincount(unit_site, plan, n_sites)
    untouched = (planned <= sum_hi) & (planned >= sum_lo)
    assert np.allclose(total[untouched], planned[untouched])


def test_export_cut_takes_discharge_off_before_any_unit_is_asked_to_charge():
    unit_site = np.array([0, 0])
    plan = np.array([100.0, -20.0])  # one discharges, one charges: net 80
    base = np.array([50.0])  # the load fell to 50 kW at a no-export site
    sum_lo, sum_hi, kind = site_sum_bounds(base, np.array([0.0]), np.array([np.inf]), np.array([0.0]), np.array([0.0]), np.array([np.inf]))
    power, cut = fit_to_site(plan, np.array([-100.0, -100.0]), np.array([100.0, 100.0]), unit_site, sum_lo, sum_hi, kind, np.array([False]))
    assert cut[0] == EXPORT
    np.testing.assert_allclose(power, [70.0, -20.0])  # the charging unit keeps its plan


def test_a_failed_meter_at_a_no_export_site_stops_discharge_and_keeps_charging():
    unit_site = np.array([0, 0])
    power, cut = fit_to_site(np.array([80.0, -30.0]), np.array([-100.0, -100.0]), np.array([100.0, 100.0]), unit_site, np.array([-np.inf]), np.array([np.inf]), np.array([0]), np.array([True]))
    np.testing.assert_allclose(power, [0.0, -30.0])
    assert cut[0] == FAILSAFE


def test_demand_cap_spreads_the_overshoot_over_the_rest_of_the_window():
    # 15-min window, target 100 kW; 5 min at 160 kW used 13.33 kWh of the 25 allowed: 10 min left for 11.67 kWh
    cap = demand_import_cap_kw(np.array([100.0]), np.array([160.0 * 5 / 60]), 300.0, 900.0)
    np.testing.assert_allclose(cap, [(25.0 - 160.0 * 5 / 60) * 6.0])
    assert cap[0] == np.float64(70.0)


def test_demand_window_integrates_import_and_reports_the_closed_window_average():
    w = DemandWindow(window_s=900.0)
    assert w.add(0.0, -100.0) is None  # importing 100 kW from t=0
    assert w.add(450.0, -300.0) is None  # 300 kW from t=450
    closed = w.add(900.0, 0.0)
    assert closed is not None and closed[0] == 0.0
    np.testing.assert_allclose(closed[1], 200.0)
    assert w.energy_kwh == 0.0 and w.start_s == 900.0


def test_meter_check_frozen_beyond_rating_and_counters_backwards():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    at = lambda s: t0 + timedelta(seconds=s)  # noqa: E731
    check = MeterCheck(rating_kw=1000.0, frozen_after_s=5.0)
    assert check.accept(MeterReading("s", at(0), 10.0, 1.0, 0.0)).ok
    assert check.accept(MeterReading("s", at(4), 10.0, 1.0, 0.0)).ok
    frozen = check.accept(MeterReading("s", at(6), 10.0, 1.0, 0.0))  # power and counters held for 6 s
    assert not frozen.ok and "frozen" in frozen.reason
    assert check.accept(MeterReading("s", at(7), 10.0, 1.1, 0.0)).ok  # the counters moved: a coarse power register, not a hung meter
    assert check.accept(MeterReading("s", at(13), 10.0, 1.2, 0.0)).ok
    assert not check.accept(MeterReading("s", at(14), 1600.0, 1.3, 0.0)).ok  # 1.6x the rating
    backwards = check.accept(MeterReading("s", at(15), 10.7, 1.0, 0.0))
    assert not backwards.ok and "backwards" in backwards.reason


def test_backtest_load_variability_costs_export_only_where_the_site_has_no_meter():
    import dataclasses

    import pandas as pd

    from simulators.backtest import SimulationSettings, run_backtest, sub_interval_load
    from tests.daemon_rig import ROOT
    from vpp.config import load_config

    cfg = load_config(ROOT / "config/examples/ci_site_meters.yaml")
    cfg = dataclasses.replace(cfg, fleet=dataclasses.replace(cfg.fleet, sites=(dataclasses.replace(cfg.fleet.sites[0], load_kw=550.0, demand_peak_so_far_kw=1200.0),)))  # the batteries (500 kW) nearly cover the load; charging costs no demand charge
    start = pd.Timestamp("2017-07-18T00:00", tz="Asia/Shanghai")
    settings = SimulationSettings(every=pd.Timedelta(hours=24), substeps=6, load_variability=0.3, seed=3)
    metered = run_backtest(cfg, start, start + pd.Timedelta(days=1), settings)
    blind = run_backtest(dataclasses.replace(cfg, meters={}), start, start + pd.Timedelta(days=1), settings)
    assert blind.export_above_limit_kwh[0] > 1.0  # planned discharge against a load that dips within the interval
    assert metered.export_above_limit_kwh[0] <= 1e-6
    calm = run_backtest(dataclasses.replace(cfg, meters={}), start, start + pd.Timedelta(days=1), dataclasses.replace(settings, load_variability=0.0))
    assert calm.export_above_limit_kwh[0] <= 1e-6  # without variability the configured series is the truth
    load = sub_interval_load(np.array([550.0, -20.0]), 6, 0.3, np.random.default_rng(0))
    np.testing.assert_allclose(load.mean(axis=1), [550.0, -20.0])  # interval energy unchanged
