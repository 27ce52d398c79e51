"""Anytime solves: every size gets a feasible plan when its time limit ends, and more time never less.

Random fleets of 1-60 units with minimum bids and increments (the rules that make the model a MIP):
the plan is feasible by the independent checks, the status is a plan's (never an error: the all-idle
plan is feasible here, so one exists), and the revenue at a 2 s limit is not above the revenue at a
10 s limit by more than the solver's tolerance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizers.model import optimize
from optimizers.lp import ABS_GAP
from tests.builders import dr_event, hours, market, problem, product, unit, wholesale_site
from tests.invariants import assert_schedule_feasible
from vpp.markets import ProductKind
from vpp.schedule import SolverOptions

T = 24


@st.composite
def fleets_with_blocks(draw):
    n = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_sites = max(1, n // 10)
    units = []
    for i in range(n):
        p = float(rng.choice([100, 250, 500, 1000]))
        soc_min = float(rng.uniform(0.05, 0.15))
        soc_max = float(rng.uniform(0.85, 0.95))
        units.append(
            unit(
                f"u{i}",
                site=f"s{i % n_sites}",
                max_charge_kw=p * float(rng.uniform(0.8, 1.0)),
                max_discharge_kw=p,
                energy_kwh=p * float(rng.choice([1.0, 2.0, 4.0])),
                soc_min=soc_min,
                soc_max=soc_max,
                eta_charge=float(rng.uniform(0.9, 0.97)),
                eta_discharge=float(rng.uniform(0.9, 0.97)),
                degradation_cost_per_mwh=float(rng.uniform(5, 25)),
                initial_soc=float(rng.uniform(soc_min, soc_max)),
            )
        )
    idx = hours(T)
    energy = 30 + 40 * np.sin(np.arange(T) / T * 2 * np.pi) + rng.normal(0, 10, T)
    rule = dict(min_bid_kw=float(draw(st.sampled_from([100.0, 500.0, 1000.0]))), increment_kw=100.0)
    products = [
        product("reg_up", ProductKind.REGULATION_UP, rng.uniform(2, 20, T), idx, sustain_h=1.0, deployment_fraction=0.3, **rule),
        product("reg_down", ProductKind.REGULATION_DOWN, rng.uniform(2, 20, T), idx, sustain_h=1.0, deployment_fraction=0.15, **rule),
        product("spin", ProductKind.SPINNING_RESERVE, rng.uniform(1, 10, T), idx, sustain_h=0.5, deployment_fraction=0.02, **rule),
    ]
    events = []
    if draw(st.booleans()):
        start = idx[0] + pd.Timedelta(hours=int(rng.integers(8, 16)))
        events.append(dr_event("dr", start, start + pd.Timedelta(hours=2), [f"s{k}" for k in range(n_sites)], capacity_price_per_kw=5.0, energy_price_per_mwh=200.0, min_kw=500.0, increment_kw=100.0))
    sites = [wholesale_site(f"s{k}") for k in range(n_sites)]
    return problem(units, sites, market(energy, idx, products, events), idx)


@settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fleets_with_blocks())
def test_every_fleet_size_gets_a_feasible_plan_and_more_time_never_earns_less(p):
    short = optimize(p, SolverOptions(time_limit_s=2.0, mip_gap=1e-4))
    long = optimize(p, SolverOptions(time_limit_s=10.0, mip_gap=1e-4))
    for s in (short, long):
        assert s.stats.status in ("optimal", "feasible"), s.stats.status
        assert_schedule_feasible(p, s)
        assert s.total_revenue <= s.stats.bound + max(1e-4 * abs(s.stats.bound), ABS_GAP)  # the bound bounds it
    tolerance = 1e-4 * max(abs(long.stats.bound), 1.0) + ABS_GAP
    assert short.total_revenue <= long.total_revenue + tolerance


def test_a_limit_too_short_for_any_plan_holds_the_fleet_still_instead_of_failing():
    """60 units × 96 intervals, whole model only: its relaxation needs several seconds, the limit gives one."""
    rng = np.random.default_rng(3)
    idx = hours(96, 15)
    units = [unit(f"u{i}", site=f"s{i % 6}", max_charge_kw=500.0, max_discharge_kw=500.0, energy_kwh=1000.0, initial_soc=float(rng.uniform(0.2, 0.8))) for i in range(60)]
    rule = dict(min_bid_kw=1000.0, increment_kw=100.0)
    products = [product("reg_up", ProductKind.REGULATION_UP, rng.uniform(2, 20, 96), idx, deployment_fraction=0.3, **rule)]
    p = problem(units, [wholesale_site(f"s{k}") for k in range(6)], market(30 + rng.normal(0, 20, 96), idx, products), idx)
    s = optimize(p, SolverOptions(time_limit_s=0.01, decomposition="off"))
    assert s.stats.status == "idle"
    assert not s.charge_kw.any() and not s.discharge_kw.any() and not s.bids_kw["reg_up"].any()
    assert_schedule_feasible(p, s)  # no self-discharge here: standing still meets every rule
