"""One unit, energy prices only: the optimizer must equal an LP written here from scratch, to 1e-6 relative.

The reference is formulated independently (variables [ch, dis, soc] per hour,
equality rows built by hand) and solved by scipy (``linprog``, or ``milp`` with a
charge-mode binary when prices can be negative).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as so
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizers.model import optimize
from tests.builders import hours, market, problem, unit, wholesale_site
from tests.invariants import assert_schedule_feasible
from vpp.schedule import SolverOptions


def reference_revenue(prices, p_kw, e_kwh, soc_min, soc_max, eta_c, eta_d, soc0_frac, sigma=0.0, with_binaries=False) -> float:
    T = len(prices)
    n = 3 * T + (T if with_binaries else 0)
    ch = lambda t: t  # noqa: E731
    dis = lambda t: T + t  # noqa: E731
    soc = lambda t: 2 * T + t  # noqa: E731 (end of hour t)
    c = np.zeros(n)
    for t, price in enumerate(prices):
        c[dis(t)] = -price / 1000.0  # minimize the negative revenue
        c[ch(t)] = price / 1000.0
    a_eq, b_eq = [], []
    soc0 = soc0_frac * e_kwh
    keep = 1 - sigma
    for t in range(T):
        row = np.zeros(n)
        row[soc(t)] = 1.0
        row[ch(t)] = -eta_c
        row[dis(t)] = 1.0 / eta_d
        if t > 0:
            row[soc(t - 1)] = -keep
        a_eq.append(row)
        b_eq.append(keep * soc0 if t == 0 else 0.0)
    a_ub, b_ub = [], []
    row = np.zeros(n)
    row[soc(T - 1)] = -1.0
    a_ub.append(row)
    b_ub.append(-soc0)  # end at least where we started
    bounds = [(0, p_kw)] * (2 * T) + [(soc_min * e_kwh, soc_max * e_kwh)] * T
    if not with_binaries:
        res = so.linprog(c, A_ub=np.array(a_ub), b_ub=b_ub, A_eq=np.array(a_eq), b_eq=b_eq, bounds=bounds, method="highs")
        assert res.status == 0
        return -res.fun
    for t in range(T):  # ch <= P·m, dis <= P·(1 - m)
        r1 = np.zeros(n); r1[ch(t)] = 1.0; r1[3 * T + t] = -p_kw
        r2 = np.zeros(n); r2[dis(t)] = 1.0; r2[3 * T + t] = p_kw
        a_ub += [r1, r2]
        b_ub += [0.0, p_kw]
    bounds += [(0, 1)] * T
    integrality = np.r_[np.zeros(3 * T), np.ones(T)]
    cons = [so.LinearConstraint(np.array(a_ub), -np.inf, b_ub), so.LinearConstraint(np.array(a_eq), b_eq, b_eq)]
    res = so.milp(c, constraints=cons, integrality=integrality, bounds=so.Bounds(*np.array(bounds).T), options={"mip_rel_gap": 1e-9})
    assert res.status == 0
    return -res.fun


# Revenues near zero are compared absolutely: the MIP's own absolute gap is 1e-6 currency units.
NEAR_ZERO = 1e-5


def solve_one(prices, exclusivity="lazy", **unit_kw):
    idx = hours(len(prices))
    p = problem([unit(**unit_kw)], [wholesale_site()], market(prices, idx), idx)
    s = optimize(p, SolverOptions(exclusivity=exclusivity, mip_gap=1e-7))
    assert_schedule_feasible(p, s, exclusive=exclusivity in ("lazy", "binary"))
    return s


def test_one_unit_energy_only_equals_independent_lp_on_a_recorded_caiso_day():
    prices = [27.2, 25.1, 24.0, 23.6, 24.4, 27.9, 31.5, 30.2, 26.0, 22.1, 19.8, 18.7, 18.9, 20.4, 23.8, 29.5, 38.7, 61.2, 88.4, 71.0, 52.3, 41.8, 35.0, 30.1]
    s = solve_one(prices, energy_kwh=400.0)
    ref = reference_revenue(prices, 100.0, 400.0, 0.1, 0.9, 0.95, 0.95, 0.5)
    assert s.total_revenue == pytest.approx(ref, rel=1e-6)
    assert s.stats.objective == pytest.approx(ref, rel=1e-6)


prices_st = st.lists(st.floats(min_value=-50, max_value=300, allow_nan=False, allow_infinity=False), min_size=2, max_size=24)


@settings(max_examples=40, deadline=None)
@given(prices=prices_st, eta=st.floats(0.8, 1.0), soc0=st.floats(0.1, 0.9), e_kwh=st.floats(50, 1000))
def test_one_unit_matches_reference_milp_for_any_prices_including_negative(prices, eta, soc0, e_kwh):
    s = solve_one(prices, energy_kwh=e_kwh, eta_charge=eta, eta_discharge=eta, initial_soc=soc0)
    ref = reference_revenue(prices, 100.0, e_kwh, 0.1, 0.9, eta, eta, soc0, with_binaries=True)
    assert s.total_revenue == pytest.approx(ref, rel=1e-6, abs=NEAR_ZERO)


@settings(max_examples=30, deadline=None)
@given(prices=st.lists(st.floats(min_value=1, max_value=300), min_size=2, max_size=24), sigma=st.floats(0, 0.01))
def test_positive_prices_need_no_binaries_and_match_the_plain_lp(prices, sigma):
    s = solve_one(prices, self_discharge_per_h=sigma)
    ref = reference_revenue(prices, 100.0, 200.0, 0.1, 0.9, 0.95, 0.95, 0.5, sigma=sigma)
    assert s.total_revenue == pytest.approx(ref, rel=1e-6, abs=NEAR_ZERO)
    assert s.stats.exclusivity_binaries == 0
