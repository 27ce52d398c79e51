"""Market rules, DR, overrides, infeasibility reports, exclusivity modes and the Pyomo export, on hand-sized cases."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizers.model import build_model, optimize
from tests.builders import START, dr_event, flat_tariff, hours, market, problem, product, series, unit, wholesale_site
from tests.invariants import assert_schedule_feasible
from vpp.fleet import Site
from vpp.markets import Market, ProductKind
from vpp.overrides import Override, OverrideKind
from vpp.schedule import SolverOptions

EXACT = SolverOptions(mip_gap=1e-7)  # ten times tighter than the 1e-6 the checks ask for


def _override(kind, start_h=0, end_h=24, **kw):
    return Override(kind, START + pd.Timedelta(hours=start_h), START + pd.Timedelta(hours=end_h), "test", "because", **kw)


def test_bids_are_rounded_to_increments_and_dropped_below_the_minimum():
    idx = hours(4)
    # three units of 123 kW: free allocation would bid 369 kW of regulation up every hour
    units = [unit(f"u{i}", max_charge_kw=123.0, max_discharge_kw=123.0, energy_kwh=1000.0) for i in range(3)]
    reg = product("reg_up", ProductKind.REGULATION_UP, [30.0] * 4, idx, increment_kw=100.0, min_bid_kw=0.0)
    p = problem(units, [wholesale_site()], market([0.0] * 4, idx, [reg]), idx)
    s = optimize(p, EXACT)
    assert_schedule_feasible(p, s)
    assert (s.bids_kw["reg_up"] % 100 == 0).all() and s.bids_kw["reg_up"].max() == pytest.approx(700.0)  # 3 × (123 + 123) = 738 -> 700

    big_min = replace(reg, min_bid_kw=1000.0)
    p2 = problem(units, [wholesale_site()], market([0.0] * 4, idx, [big_min]), idx)
    s2 = optimize(p2, EXACT)
    assert_schedule_feasible(p2, s2)
    assert (s2.bids_kw["reg_up"] == 0).all() and s2.revenue["reg_up"] == 0.0


def test_a_bid_is_valued_on_its_blocks_while_they_are_chosen_and_on_the_allocations_once_pinned():
    # Branch-and-bound needs the value on the integer blocks (with it on the allocations a 24-unit random
    # fleet found no solution in 39 s); a pinned bid (a decomposition repair) carries it on the
    # allocations, like a bid without a block rule, so their models share reduced costs. Same optimum.
    idx = hours(4)
    units = [unit(f"u{i}", max_charge_kw=123.0, max_discharge_kw=123.0, energy_kwh=1000.0) for i in range(3)]
    reg = product("reg_up", ProductKind.REGULATION_UP, [30.0, 0.0, 25.0, 40.0], idx, increment_kw=100.0, min_bid_kw=0.0)
    p = problem(units, [wholesale_site()], market([20.0, 50.0, 10.0, 80.0], idx, [reg]), idx)

    def costs(q):
        lm = build_model(q, EXACT).lm
        cost = lm.cost()
        block = lambda name: next(cost[b.start : b.start + b.size] for b in lm.col_blocks if b.name == name)  # noqa: E731
        return block, lm

    block, lm = costs(p)
    assert block("bid.reg_up.blocks")[[0, 2, 3]].all() and not block("reg_up.from_discharge").any()
    chosen = optimize(p, EXACT)
    pinned = replace(p, products=(replace(p.products[0], fixed_kw=chosen.bids_kw["reg_up"]),))
    block, lm = costs(pinned)
    assert not block("bid.reg_up.blocks").any() and block("reg_up.from_discharge").reshape(3, 4)[:, [0, 2, 3]].all()
    again = optimize(pinned, EXACT)
    assert_schedule_feasible(pinned, again)
    assert again.total_revenue == pytest.approx(chosen.total_revenue, rel=1e-7)


def test_gate_closure_times_follow_day_ahead_and_real_time_rules():
    from datetime import time

    from vpp.markets import GateClosure

    delivery = pd.Timestamp("2020-08-18T22:00", tz="UTC")  # 14:00 on the 18th in fixed PST
    day_ahead = GateClosure(days_before=1, time=time(10, 0))
    assert day_ahead.closes_at(delivery, "Etc/GMT+8") == pd.Timestamp("2020-08-17T10:00", tz="Etc/GMT+8")
    assert GateClosure(lead_min=75).closes_at(delivery, "UTC") == pd.Timestamp("2020-08-18T20:45", tz="UTC")


def test_gate_closed_bids_are_kept_as_submitted():
    idx = hours(4)
    reg = product("reg_up", ProductKind.REGULATION_UP, [30.0, 0.0, 0.0, 30.0], idx, increment_kw=10.0)
    fixed = np.array([50.0, 40.0, np.nan, np.nan])  # already submitted for the first two hours
    p = problem([unit(energy_kwh=1000.0)], [wholesale_site()], market([10.0] * 4, idx, [reg]), idx, fixed_bids_kw={"reg_up": fixed})
    s = optimize(p, EXACT)
    assert_schedule_feasible(p, s)
    assert s.bids_kw["reg_up"][:2] == pytest.approx([50.0, 40.0])


def test_dr_commitment_is_delivered_against_the_no_battery_baseline_and_paid():
    idx = hours(6)
    load = series([300.0] * 6, idx, "power", "load")
    site = Site("factory", "retail", import_limit_kw=1000.0, export_limit_kw=0.0, tariff=flat_tariff(0.5), load_kw=load)
    ev = dr_event("dr1", START + pd.Timedelta(hours=2), START + pd.Timedelta(hours=4), {"factory"}, capacity_price_per_kw=10.0, energy_price_per_mwh=1000.0, increment_kw=50.0, min_kw=100.0)
    p = problem([unit(site="factory", max_discharge_kw=180.0, energy_kwh=1000.0)], [site], Market("CNY", None, (), (ev,)), idx)
    s = optimize(p, EXACT)
    assert_schedule_feasible(p, s)
    # the battery can take 180 kW off the 300 kW import in hours 2-3: committed in 50 kW blocks -> 150 kW
    assert s.dr_commitment_kw["dr1"] == pytest.approx(150.0)
    net_import = -s.site_net_kw[0]
    assert (300.0 - net_import[2:4] >= 150.0 - 1e-6).all()
    assert s.revenue["demand_response"] == pytest.approx(150.0 * (10.0 + 1000.0 * 2 / 1000.0))


def test_mandatory_dr_event_is_joined_even_at_a_loss():
    idx = hours(4)
    site = Site("s", "retail", import_limit_kw=1000.0, tariff=flat_tariff(0.5), load_kw=series([200.0] * 4, idx, "power"))
    ev = dr_event("must", START + pd.Timedelta(hours=1), START + pd.Timedelta(hours=2), {"s"}, capacity_price_per_kw=0.0, min_kw=80.0, mandatory=True)
    p = problem([unit(site="s")], [site], Market("CNY", None, (), (ev,)), idx)
    s = optimize(p, EXACT)
    assert_schedule_feasible(p, s)
    assert s.dr_commitment_kw["must"] >= 80.0 - 1e-6


@pytest.mark.parametrize(
    "override, check",
    [
        (_override(OverrideKind.FORCE_POWER, 1, 3, unit_id="u1", value=-60.0), lambda s: np.allclose(s.power_kw[0, 1:3], -60.0)),
        (_override(OverrideKind.UNIT_OUT, 0, 24, unit_id="u1"), lambda s: np.allclose(s.power_kw[0], 0.0) and np.allclose(s.reserve_kw["reg_up"][0], 0.0)),
        (_override(OverrideKind.SOC_FLOOR, 0, 24, unit_id="u1", value=0.45), lambda s: (s.soc_kwh[0, 1:] >= 0.45 * 200 - 1e-6).all()),
        (_override(OverrideKind.SOC_CEILING, 0, 24, unit_id="u1", value=0.55), lambda s: (s.soc_kwh[0, 1:] <= 0.55 * 200 + 1e-6).all()),
        (_override(OverrideKind.BLOCK_PRODUCT, 0, 3, product_id="reg_up"), lambda s: np.allclose(s.bids_kw["reg_up"][:3], 0.0)),
        (_override(OverrideKind.FLEET_EXPORT_CAP, 0, 24, value=25.0), lambda s: (s.site_net_kw.sum(axis=0) <= 25.0 + 1e-6).all()),
        (_override(OverrideKind.FLEET_IMPORT_CAP, 0, 24, value=30.0), lambda s: (-s.site_net_kw.sum(axis=0) <= 30.0 + 1e-6).all()),
        (_override(OverrideKind.FORCE_POWER, 4, 5, site_id="s1", value=80.0), lambda s: np.isclose(s.power_kw[:, 4].sum(), 80.0)),
    ],
    ids=["force_unit", "unit_out", "soc_floor", "soc_ceiling", "block_product", "export_cap", "import_cap", "force_site"],
)
def test_overrides_are_honoured(override, check):
    idx = hours(6)
    prices = [10.0, 80.0, 5.0, 90.0, 20.0, 100.0]
    reg = product("reg_up", ProductKind.REGULATION_UP, [15.0] * 6, idx)
    units = [unit("u1"), unit("u2")]
    free = optimize(problem(units, [wholesale_site()], market(prices, idx, [reg]), idx), EXACT)
    p = problem(units, [wholesale_site()], market(prices, idx, [reg]), idx, overrides=(override,))
    s = optimize(p, EXACT)
    assert s.stats.status == "optimal"
    assert_schedule_feasible(p, s)
    assert check(s)
    assert s.total_revenue <= free.total_revenue + 1e-6  # an override can only cost money


def test_an_infeasible_plan_is_solved_elastically_and_the_violated_constraints_are_named():
    idx = hours(4)
    force = _override(OverrideKind.FORCE_POWER, 2, 3, unit_id="u1", value=250.0)  # beyond the 100 kW inverter
    p = problem([unit("u1")], [wholesale_site()], market([20.0] * 4, idx), idx, overrides=(force,))
    s = optimize(p, EXACT)
    assert s.stats.status == "infeasible_relaxed"
    bad = [v for v in s.violations if v.family == "override_unit_power"]
    assert len(bad) == 1 and bad[0].element == "u1" and bad[0].interval == idx[2]
    assert bad[0].amount == pytest.approx(150.0, rel=1e-6)
    assert (s.discharge_kw <= 100.0 + 1e-6).all()  # bounds are never the thing that gives


def test_site_import_limit_violation_is_reported_with_site_and_interval():
    idx = hours(3)
    load = series([500.0, 900.0, 500.0], idx, "power")
    site = Site("plant", "retail", import_limit_kw=600.0, export_limit_kw=0.0, tariff=flat_tariff(0.5), load_kw=load)
    p = problem([unit(site="plant", initial_soc=0.1)], [site], Market("CNY", None), idx)  # empty battery cannot cover 300 kW
    s = optimize(p, EXACT)
    assert s.stats.status == "infeasible_relaxed"
    fams = {(v.family, v.element, v.interval) for v in s.violations}
    assert any(f[1] == "plant" and f[2] == idx[1] for f in fams)


NEGATIVE_DAY = [12.0, -5.0, -20.0, -18.0, -3.0, 8.0, 25.0, 40.0, 60.0, 35.0, -10.0, -25.0, -22.0, 5.0, 30.0, 70.0, 90.0, 55.0, 30.0, 15.0, -2.0, -8.0, 10.0, 20.0]


def test_lazy_exclusivity_equals_binaries_everywhere_and_uses_far_fewer():
    idx = hours(24)
    units = [unit(f"u{i}", energy_kwh=200.0 + 100 * i, eta_charge=0.9, eta_discharge=0.9) for i in range(3)]
    p = problem(units, [wholesale_site()], market(NEGATIVE_DAY, idx), idx)
    lazy = optimize(p, EXACT)
    full = optimize(p, replace(EXACT, exclusivity="binary"))
    hull = optimize(p, replace(EXACT, exclusivity="hull"))
    relaxed = optimize(p, replace(EXACT, exclusivity="relaxed"))
    assert_schedule_feasible(p, lazy)
    assert_schedule_feasible(p, full)
    assert lazy.total_revenue == pytest.approx(full.total_revenue, rel=1e-6)
    assert 0 < lazy.stats.exclusivity_binaries < full.stats.exclusivity_binaries
    # the relaxations can only earn more (burning energy at negative prices), in this order
    assert relaxed.total_revenue >= hull.total_revenue - 1e-6 >= full.total_revenue - 2e-6
    assert relaxed.total_revenue > full.total_revenue + 1e-3  # negative prices do reward simultaneous operation
    both = (relaxed.charge_kw > 1e-6) & (relaxed.discharge_kw > 1e-6)
    assert both.any()


def test_tou_tariff_prices_each_interval_by_its_period_and_first_match_wins():
    t = flat_tariff(0.6, peak_per_kwh=1.2, peak_hours=(17.0, 21.0))
    idx = pd.date_range("2020-01-01T16:00", periods=6, freq="h", tz="UTC")
    assert t.energy_price_per_mwh(idx).tolist() == [600.0, 1200.0, 1200.0, 1200.0, 1200.0, 600.0]


def test_demand_charge_savings_equal_the_charge_times_the_peak_reduction():
    idx = hours(4)
    load = series([100.0, 400.0, 100.0, 100.0], idx, "power")
    site = Site("s", "retail", import_limit_kw=1000.0, export_limit_kw=0.0, tariff=flat_tariff(0.1, demand_charge=30.0), load_kw=load)
    p = problem([unit(site="s", max_discharge_kw=100.0, energy_kwh=400.0, initial_soc=0.6)], [site], Market("CNY", None), idx)
    s = optimize(p, EXACT)
    assert_schedule_feasible(p, s)
    peak = (-s.site_net_kw[0]).max()
    assert peak == pytest.approx(300.0)  # the battery takes the top 100 kW off the 400 kW hour
    assert s.revenue["demand_charge_savings"] == pytest.approx(30.0 * (400.0 - 300.0))


@pytest.mark.parametrize("degradation, offered", [(5.0, True), (30.0, False)])
def test_the_expected_deployment_of_up_reserve_pays_degradation(degradation, offered):
    """A unit that cannot charge holds regulation up on its discharge side only; half of it is expected
    to be deployed. At 30 $/MWh the deployed energy's degradation (0.5 × 30 = 15 $/MW·h) costs more than
    the 10 $/MW·h capacity price, so it is not offered; at 5 $/MWh (2.5 $/MW·h) it is."""
    from vpp.schedule import TerminalPolicy

    idx = hours(6)
    u = unit(max_charge_kw=0.0, max_discharge_kw=100.0, energy_kwh=1000.0, soc_min=0.0, soc_max=1.0, initial_soc=0.9, degradation_cost_per_mwh=degradation)
    reg_up = product("reg_up", ProductKind.REGULATION_UP, [10.0] * 6, idx, sustain_h=1.0, deployment_fraction=0.5)
    p = problem([u], [wholesale_site()], market([0.0] * 6, idx, [reg_up]), idx, terminal=TerminalPolicy("value", price_per_mwh=0.0))
    s = optimize(p, EXACT)
    assert_schedule_feasible(p, s)
    held = s.reserve_kw["reg_up"] - s.reserve_from_charge_kw["reg_up"]
    assert bool(held.sum() > 1.0) is offered
    # the degradation stream, computed here: scheduled discharge plus the expected deployment, in $/MWh
    expected = -degradation / 1000.0 * (s.discharge_kw + 0.5 * held).sum() * p.dt_h
    assert s.revenue.get("degradation", 0.0) == pytest.approx(expected, abs=1e-6)
    assert s.total_revenue == pytest.approx(s.stats.objective, abs=1e-6)


@settings(max_examples=12, deadline=None)
@given(
    n_units=st.integers(1, 3),
    prices=st.lists(st.floats(-20.0, 150.0), min_size=6, max_size=6),
    reserve=st.lists(st.floats(0.0, 60.0), min_size=18, max_size=18),
    above=st.sampled_from([100.0, 200.0, 400.0]),
    soc=st.floats(0.2, 0.8),
)
def test_throughput_rows_cut_the_relaxation_and_no_plan(n_units, prices, reserve, above, soc):
    # A fleet too small to reach a bid's minimum from idle gets rows that make a partial minimum bid
    # cost throughput (reserves._throughput_rows). They must be valid: the whole model's optimum with
    # them equals its optimum with their bounds dropped, and the relaxation can only come down.
    idx = hours(6)
    units = [unit(f"u{i}", max_charge_kw=100.0 + 40 * i, max_discharge_kw=120.0 + 30 * i, energy_kwh=300.0, initial_soc=soc) for i in range(n_units)]
    min_kw = sum(u.max_discharge_kw for u in units) + above  # above the fleet's idle room both ways
    kinds = (("reg_up", ProductKind.REGULATION_UP), ("spin", ProductKind.SPINNING_RESERVE), ("reg_down", ProductKind.REGULATION_DOWN))
    products = [product(pid, kind, reserve[6 * k : 6 * k + 6], idx, min_bid_kw=min_kw, increment_kw=100.0, deployment_fraction=0.1) for k, (pid, kind) in enumerate(kinds)]
    p = problem(units, [wholesale_site()], market(prices, idx, products), idx)
    b = build_model(p, EXACT)
    rows = [blk for blk in b.lm.row_blocks if blk.name.startswith("throughput_for_")]
    assert len(rows) == 2, "every minimum here is above the fleet's idle room: rows for up- and down-bids"
    with_rows = b.lm.solve(60.0, 1e-9)
    without = build_model(p, EXACT)
    for blk in rows:
        without.lm.release(np.arange(blk.start, blk.start + blk.size))
    plain = without.lm.solve(60.0, 1e-9)
    assert with_rows.status == plain.status == "optimal"
    assert with_rows.objective == pytest.approx(plain.objective, abs=1e-6, rel=1e-7)
    assert b.lm.session(60.0, 1e-9).relax().objective <= without.lm.session(60.0, 1e-9).relax().objective + 1e-6
