"""The named Pyomo formulation against the fast builder: the same optimum on random fleets and markets
(hypothesis), on every example config through the real console script, and in the exported files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizers.lp import new_highs
from optimizers.model import optimize
from optimizers.pyomo_model import build_pyomo, solve_pyomo
from tests.builders import flat_tariff, hours, market, problem
from tests.cli import ROOT, vpp
from tests.invariants import assert_schedule_feasible
from tests.test_optimizer_properties import EXACT, T, fleets, num, prices, products, sites
from vpp.fleet import Site


def same_optimum(a, b) -> bool:
    slack = sum(max(x.stats.mip_gap, 1e-6) * max(1.0, abs(x.total_revenue)) for x in (a, b)) + 1e-5
    return abs(a.total_revenue - b.total_revenue) <= slack


@settings(max_examples=25, deadline=None)
@given(units=fleets(), prods=products(), energy=prices, limit=st.one_of(st.none(), num(50, 800)), retail=st.booleans())
def test_the_pyomo_formulation_and_the_fast_builder_reach_the_same_optimum(units, prods, energy, limit, retail):
    idx = hours(T)
    site_list = sites(limit)
    if retail:  # one site behind the meter: TOU tariff, demand charge, a load to serve
        site_list[1] = Site("s1", "retail", tariff=flat_tariff(0.1, peak_per_kwh=0.4, peak_hours=(3.0, 6.0), demand_charge=2.0), load_kw=60.0)
    p = problem(units, site_list, market(energy, idx, prods), idx)
    fast, reference = optimize(p, EXACT), solve_pyomo(p, EXACT)
    assert_schedule_feasible(p, reference)
    assert same_optimum(fast, reference), (fast.total_revenue, reference.total_revenue)
    assert reference.stats.objective == pytest.approx(reference.total_revenue, rel=1e-7, abs=1e-5)  # revenue recomputed = objective


def test_the_components_carry_the_formulation_s_names():
    idx = hours(4)
    from tests.builders import product, unit, wholesale_site
    from vpp.markets import ProductKind

    up = product("reg_up", ProductKind.REGULATION_UP, [5.0] * 4, idx, min_bid_kw=50.0, increment_kw=10.0, deployment_fraction=0.1)
    down = product("reg_down", ProductKind.REGULATION_DOWN, [5.0] * 4, idx)
    p = problem([unit()], [wholesale_site(import_limit_kw=500.0, export_limit_kw=500.0)], market([10.0, 50.0, 20.0, 80.0], idx, [up, down]), idx)
    m = build_pyomo(p)
    for name in ("charge_kw", "discharge_kw", "soc_kwh", "reserve_kw", "bid_kw", "dr_commit_kw", "import_kw", "export_kw", "soc_balance", "soc_min", "soc_max",
                 "soc_min_with_reserve_start", "soc_max_with_reserve_start", "headroom_up_from_charge", "headroom_up_from_discharge", "headroom_down_from_charge",
                 "headroom_down_from_discharge", "site_balance", "site_import_limit", "site_export_limit", "site_export_room_for_reserves",
                 "site_import_room_for_reserves", "bid_equals_allocations_reg_up", "charge_if_mode", "discharge_if_not_mode", "revenue"):
        assert hasattr(m, name), name
    assert m.charge_kw["u1", 0].ub == pytest.approx(100.0)


@pytest.mark.parametrize("example", ["station_100mw"])
def test_the_cli_s_pyomo_backend_and_its_export_agree_with_the_default(example, tmp_path):
    config = ROOT / "config" / "examples" / f"{example}.yaml"
    fast = json.loads(vpp("optimize", "-c", str(config), "--json").stdout)
    model = tmp_path / "model.mps"
    res = vpp("optimize", "-c", str(config), "--json", "--backend", "pyomo", "--export", str(model), timeout=300)
    assert res.returncode == 0, res.stderr
    reference = json.loads(res.stdout)
    tolerance = (fast["mip_gap"] + reference["mip_gap"] + 1e-6) * abs(fast["total_revenue"])
    assert abs(fast["total_revenue"] - reference["total_revenue"]) <= tolerance
    h = new_highs()
    h.readModel(str(model))
    h.setOptionValue("mip_rel_gap", 1e-3)
    h.setOptionValue("time_limit", 120.0)
    h.run()
    exported = h.getInfo().objective_function_value
    # the MPS file holds the model, so HiGHS alone reaches the same optimum from it (to the gaps)
    assert abs(exported - reference["total_revenue"]) <= tolerance + 1e-3 * abs(exported)
    assert np.isfinite(exported)


def test_a_bad_backend_or_export_name_is_a_usage_error(tmp_path):
    config = ROOT / "config" / "examples" / "station_100mw.yaml"
    res = vpp("optimize", "-c", str(config), "--backend", "cplex")
    assert res.returncode == 2 and "--backend" in res.stderr and "Traceback" not in res.stderr
    res = vpp("optimize", "-c", str(config), "--export", str(tmp_path / "model.txt"))
    assert res.returncode == 2 and ".lp, .mps or .nl" in res.stderr
