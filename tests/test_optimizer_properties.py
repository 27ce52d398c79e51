"""Property-based tests over random small fleets, price series and products.

Every solved schedule must satisfy FORMULATION.md (checked independently), its
revenue streams must add up to the solver objective, and the optimum must be
monotone: more products, more units or looser limits never earn less.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizers.model import optimize
from tests.builders import hours, market, problem, product, unit, wholesale_site
from tests.invariants import assert_schedule_feasible
from vpp.markets import ProductKind
from vpp.schedule import SolverOptions

EXACT = SolverOptions(mip_gap=1e-9)
T = 8


@st.composite
def fleets(draw, min_units=1, max_units=3):
    n = draw(st.integers(min_units, max_units))
    units = []
    for i in range(n):
        p_ch = draw(st.floats(10, 500))
        soc_min = draw(st.floats(0.0, 0.3))
        soc_max = draw(st.floats(0.7, 1.0))
        units.append(
            unit(
                f"u{i}",
                site=f"s{i % 2}",
                max_charge_kw=p_ch,
                max_discharge_kw=draw(st.floats(10, 500)),
                energy_kwh=draw(st.floats(20, 2000)),
                soc_min=soc_min,
                soc_max=soc_max,
                eta_charge=draw(st.floats(0.8, 1.0)),
                eta_discharge=draw(st.floats(0.8, 1.0)),
                self_discharge_per_h=draw(st.floats(0.0, 0.01)),
                degradation_cost_per_mwh=draw(st.floats(0.0, 20.0)),
                initial_soc=draw(st.floats(soc_min, soc_max)),
            )
        )
    return units


prices = st.lists(st.floats(-20, 200), min_size=T, max_size=T)
cap_prices = st.lists(st.floats(0, 40), min_size=T, max_size=T)


@st.composite
def products(draw):
    idx = hours(T)
    out = []
    for pid, kind in (("reg_up", ProductKind.REGULATION_UP), ("reg_down", ProductKind.REGULATION_DOWN), ("spin", ProductKind.SPINNING_RESERVE)):
        if draw(st.booleans()):
            out.append(
                product(
                    pid,
                    kind,
                    draw(cap_prices),
                    idx,
                    sustain_h=draw(st.sampled_from([0.25, 0.5, 1.0, 2.0])),
                    deployment_fraction=draw(st.floats(0.0, 0.4)),
                    min_bid_kw=draw(st.sampled_from([0.0, 50.0])),
                    increment_kw=draw(st.sampled_from([0.0, 10.0])),
                )
            )
    return out


def sites(limit_kw=None):
    kw = {} if limit_kw is None else {"import_limit_kw": limit_kw, "export_limit_kw": limit_kw}
    return [wholesale_site("s0", **kw), wholesale_site("s1", **kw)]


def solve(units, prods, energy, limit_kw=None, options=EXACT):
    idx = hours(T)
    p = problem(units, sites(limit_kw), market(energy, idx, prods), idx)
    s = optimize(p, options)
    assert s.stats.status == "optimal"
    assert_schedule_feasible(p, s)
    assert s.stats.objective == pytest.approx(s.total_revenue, rel=1e-9, abs=1e-6)
    return s


@settings(max_examples=60)
@given(units=fleets(), prods=products(), energy=prices, limit=st.one_of(st.none(), st.floats(50, 800)))
def test_every_schedule_satisfies_the_formulation_and_streams_add_up_to_the_objective(units, prods, energy, limit):
    solve(units, prods, energy, limit)


@settings(max_examples=30)
@given(units=fleets(), prods=products(), energy=prices)
def test_adding_a_product_never_lowers_revenue(units, prods, energy):
    if not prods:
        return
    with_all = solve(units, prods, energy).total_revenue
    without_last = solve(units, prods[:-1], energy).total_revenue
    assert with_all >= without_last - 1e-6 * max(1.0, abs(without_last))


@settings(max_examples=30)
@given(units=fleets(min_units=2), prods=products(), energy=prices)
def test_adding_a_unit_never_lowers_revenue(units, prods, energy):
    """Holds for a unit whose idling is free. One with self-discharge must buy back its losses to end
    at its initial SoC (the terminal rule), which can cost money: found by this very test."""
    units = units[:-1] + [replace(units[-1], self_discharge_per_h=0.0)]
    more = solve(units, prods, energy).total_revenue
    fewer = solve(units[:-1], prods, energy).total_revenue
    assert more >= fewer - 1e-6 * max(1.0, abs(fewer))


@settings(max_examples=30)
@given(units=fleets(), prods=products(), energy=prices, limit=st.floats(20, 400), factor=st.floats(1.0, 3.0))
def test_relaxing_a_limit_never_lowers_revenue(units, prods, energy, limit, factor):
    tight = solve(units, prods, energy, limit).total_revenue
    loose = solve(units, prods, energy, limit * factor).total_revenue
    assert loose >= tight - 1e-6 * max(1.0, abs(tight))
    wider = [replace(u, soc_min=u.soc_min * 0.5, soc_max=min(1.0, u.soc_max + 0.05), initial_soc=u.initial_soc) for u in units]
    assert solve(wider, prods, energy, limit).total_revenue >= tight - 1e-6 * max(1.0, abs(tight))


@settings(max_examples=25)
@given(units=fleets(max_units=1), energy=prices, n=st.integers(2, 6), caps=cap_prices)
def test_n_identical_units_earn_n_times_one_unit(units, energy, n, caps):
    idx = hours(T)
    prods = [product("reg_up", ProductKind.REGULATION_UP, caps, idx, deployment_fraction=0.2), product("reg_down", ProductKind.REGULATION_DOWN, caps, idx, deployment_fraction=0.1)]
    one = solve(units, prods, energy).total_revenue
    many = [replace(units[0], id=f"c{k}", site_id="s0") for k in range(n)]
    assert solve(many, prods, energy).total_revenue == pytest.approx(n * one, rel=1e-6, abs=1e-6)


def test_revenue_of_reserve_capacity_is_priced_per_mw_per_hour():
    """A 15-minute interval earns a quarter of the hourly capacity price (the DER-VET pitfall)."""
    idx = hours(4, step_min=15)
    u = unit(energy_kwh=1000.0, initial_soc=0.5)
    prods = [product("reg_up", ProductKind.REGULATION_UP, [20.0] * 4, idx, sustain_h=0.25)]
    p = problem([u], sites(), market([0.0] * 4, idx, prods), idx)
    s = optimize(p, EXACT)
    assert_schedule_feasible(p, s)
    # Energy is free, so the unit charges at 100 kW and offers 100 kW by stopping plus 100 kW by discharging.
    assert s.bids_kw["reg_up"] == pytest.approx(np.full(4, 200.0))
    # 200 kW × 4 intervals × 0.25 h × 20 per MW-h / 1000 = 4.0 (not 16.0, which forgetting Δt would give)
    assert s.revenue["reg_up"] == pytest.approx(4.0)
